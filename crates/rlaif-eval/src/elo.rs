//! Elo scores fitted to pairwise comparisons: the Bradley–Terry model (Bradley & Terry
//! 1952) by maximum likelihood, on the Elo scale, with bootstrap intervals — the measure
//! of the paper's Fig. 2/3/8 (there with crowdworkers, here with any judge).
//!
//! `P(i beats j) = σ(s_i − s_j)`; a tie counts as half a win for each. The strengths are
//! fitted by Newton's method on the log-likelihood with a tiny ridge (1e-6, which only
//! fixes the free shift and keeps a model that won or lost everything finite), then
//! shifted so that their mean is 0, and put on the Elo scale: `elo = 400 / ln 10 · s`
//! (a difference of 400 means 10 : 1 odds). Intervals: the comparisons resampled with
//! replacement (seeded) and refitted; the 2.5 % and 97.5 % quantiles.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rlaif_feedback::math::sigmoid;

/// One comparison: models `a` and `b` (indices) and `score` = 1 if `a` won, 0 if `b`
/// won, 0.5 for a tie (or any soft preference in [0, 1]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Comparison {
    /// The first model.
    pub a: usize,
    /// The second model.
    pub b: usize,
    /// How much `a` won, in [0, 1].
    pub score: f64,
}

/// Elo scores (mean 0) and their bootstrap intervals, by model index.
#[derive(Debug, Clone, PartialEq)]
pub struct EloFit {
    /// The fitted scores.
    pub elo: Vec<f64>,
    /// 2.5 % quantile of the bootstrap fits.
    pub low: Vec<f64>,
    /// 97.5 % quantile of the bootstrap fits.
    pub high: Vec<f64>,
}

const SCALE: f64 = 400.0 / std::f64::consts::LN_10;

/// The maximum-likelihood Bradley–Terry strengths of `models` models, on the Elo scale
/// with mean 0.
pub fn fit_elo(models: usize, comparisons: &[Comparison]) -> Vec<f64> {
    let mut s = vec![0.0f64; models];
    let ridge = 1e-6;
    for _ in 0..100 {
        let mut grad: Vec<f64> = s.iter().map(|&x| -ridge * x).collect();
        let mut hess = vec![vec![0.0f64; models]; models];
        for (i, h) in hess.iter_mut().enumerate() {
            h[i] = ridge;
        }
        for c in comparisons {
            let p = sigmoid(s[c.a] - s[c.b]);
            let g = c.score - p;
            grad[c.a] += g;
            grad[c.b] -= g;
            let w = p * (1.0 - p);
            hess[c.a][c.a] += w;
            hess[c.b][c.b] += w;
            hess[c.a][c.b] -= w;
            hess[c.b][c.a] -= w;
        }
        let step = solve(hess, grad);
        let size = step.iter().map(|x| x.abs()).fold(0.0, f64::max);
        // A damped Newton step: at most 1 (≈ 174 Elo) per coordinate per iteration.
        let damp = if size > 1.0 { 1.0 / size } else { 1.0 };
        for (x, d) in s.iter_mut().zip(&step) {
            *x += damp * d;
        }
        if size < 1e-10 {
            break;
        }
    }
    let mean = s.iter().sum::<f64>() / models.max(1) as f64;
    s.iter().map(|x| (x - mean) * SCALE).collect()
}

/// Gaussian elimination with partial pivoting (the Hessian is symmetric positive definite
/// with the ridge).
fn solve(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Vec<f64> {
    let n = b.len();
    for col in 0..n {
        let piv = (col..n)
            .max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))
            .unwrap_or(col);
        a.swap(col, piv);
        b.swap(col, piv);
        let d = a[col][col];
        if d.abs() < 1e-300 {
            continue;
        }
        let pivot_row = a[col].clone();
        for row in col + 1..n {
            let f = a[row][col] / d;
            for (x, p) in a[row][col..].iter_mut().zip(&pivot_row[col..]) {
                *x -= f * p;
            }
            b[row] -= f * b[col];
        }
    }
    let mut x = vec![0.0; n];
    for row in (0..n).rev() {
        let s: f64 = (row + 1..n).map(|k| a[row][k] * x[k]).sum();
        x[row] = if a[row][row].abs() < 1e-300 {
            0.0
        } else {
            (b[row] - s) / a[row][row]
        };
    }
    x
}

/// [`fit_elo`] with `rounds` bootstrap refits (seeded) for 95 % intervals.
pub fn fit_elo_bootstrap(
    models: usize,
    comparisons: &[Comparison],
    rounds: usize,
    seed: u64,
) -> EloFit {
    let elo = fit_elo(models, comparisons);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut draws: Vec<Vec<f64>> = vec![Vec::with_capacity(rounds); models];
    for _ in 0..rounds {
        let sample: Vec<Comparison> = (0..comparisons.len())
            .map(|_| comparisons[rng.random_range(0..comparisons.len())])
            .collect();
        for (m, x) in fit_elo(models, &sample).into_iter().enumerate() {
            draws[m].push(x);
        }
    }
    let quantile = |v: &mut Vec<f64>, q: f64| -> f64 {
        if v.is_empty() {
            return f64::NAN;
        }
        v.sort_by(f64::total_cmp);
        v[((v.len() - 1) as f64 * q).round() as usize]
    };
    let (mut low, mut high) = (Vec::new(), Vec::new());
    for d in &mut draws {
        low.push(quantile(d, 0.025));
        high.push(quantile(d, 0.975));
    }
    EloFit { elo, low, high }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Comparisons between random pairs of models with planted Elo `truth`.
    fn simulate(truth: &[f64], n: usize, seed: u64, ties: bool) -> Vec<Comparison> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..n)
            .map(|_| {
                let a = rng.random_range(0..truth.len());
                let mut b = rng.random_range(0..truth.len() - 1);
                if b >= a {
                    b += 1;
                }
                let p = sigmoid((truth[a] - truth[b]) / SCALE);
                let u: f64 = rng.random();
                let score = if ties && (u - p).abs() < 0.05 {
                    0.5
                } else if u < p {
                    1.0
                } else {
                    0.0
                };
                Comparison { a, b, score }
            })
            .collect()
    }

    #[test]
    fn the_fit_recovers_planted_strengths_and_the_intervals_contain_them() {
        let truth = [0.0, 100.0, 200.0, -300.0];
        let mean = truth.iter().sum::<f64>() / 4.0;
        let comps = simulate(&truth, 6000, 3, false);
        let fit = fit_elo_bootstrap(4, &comps, 200, 5);
        for (m, &planted) in truth.iter().enumerate() {
            let t = planted - mean;
            assert!(
                (fit.elo[m] - t).abs() < 25.0,
                "model {m}: {:.1} vs {t}",
                fit.elo[m]
            );
            assert!(
                fit.low[m] <= t && t <= fit.high[m],
                "model {m}: {t} outside [{:.1}, {:.1}]",
                fit.low[m],
                fit.high[m]
            );
            assert!(fit.high[m] - fit.low[m] < 80.0);
        }
        // With ties (half wins near even odds) the order and the gaps survive.
        let fit = fit_elo(4, &simulate(&truth, 6000, 4, true));
        assert!(
            fit[3] < fit[0] && fit[0] < fit[1] && fit[1] < fit[2],
            "{fit:?}"
        );
    }

    #[test]
    fn a_model_that_won_everything_stays_finite_and_first() {
        let comps: Vec<Comparison> = (0..20)
            .map(|i| Comparison {
                a: 0,
                b: 1 + i % 2,
                score: 1.0,
            })
            .collect();
        let fit = fit_elo(3, &comps);
        assert!(fit.iter().all(|x| x.is_finite()), "{fit:?}");
        assert!(fit[0] > fit[1] && fit[0] > fit[2]);
    }
}

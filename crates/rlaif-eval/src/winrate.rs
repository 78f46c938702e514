//! Win rates with confidence intervals.
//!
//! A tie counts half a win (the paper's convention for pairwise preference, and
//! Chatbot Arena's): `rate = (wins + ties / 2) / n`. The interval is Wilson's score
//! interval (Wilson 1927) for that proportion with `n` comparisons, which keeps its
//! coverage near the nominal level for small `n` and rates near 0 or 1, where the normal
//! approximation does not.

/// A win rate and its interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WinRate {
    /// Comparisons won.
    pub wins: usize,
    /// Comparisons tied.
    pub ties: usize,
    /// Comparisons lost.
    pub losses: usize,
    /// `(wins + ties / 2) / n` (NaN for no comparisons).
    pub rate: f64,
    /// Lower end of the interval.
    pub low: f64,
    /// Upper end of the interval.
    pub high: f64,
}

/// The z of a two-sided 95 % interval.
pub const Z95: f64 = 1.959_963_984_540_054;

/// The win rate of `wins`, `ties`, `losses` with Wilson's interval at `z` (e.g. [`Z95`]).
pub fn win_rate(wins: usize, ties: usize, losses: usize, z: f64) -> WinRate {
    let n = (wins + ties + losses) as f64;
    if n == 0.0 {
        return WinRate {
            wins,
            ties,
            losses,
            rate: f64::NAN,
            low: 0.0,
            high: 1.0,
        };
    }
    let p = (wins as f64 + 0.5 * ties as f64) / n;
    let (low, high) = wilson(p, n, z);
    WinRate {
        wins,
        ties,
        losses,
        rate: p,
        low,
        high,
    }
}

/// Wilson's score interval for a proportion `p` observed over `n` trials.
pub fn wilson(p: f64, n: f64, z: f64) -> (f64, f64) {
    let z2 = z * z;
    let denom = 1.0 + z2 / n;
    let centre = (p + z2 / (2.0 * n)) / denom;
    let half = z * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt() / denom;
    ((centre - half).max(0.0), (centre + half).min(1.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn intervals_cover_the_truth_at_their_stated_rate() {
        let mut rng = ChaCha8Rng::seed_from_u64(12);
        for (p, n) in [(0.5, 40usize), (0.8, 60), (0.95, 100), (0.3, 25)] {
            let trials = 4000;
            let mut covered = 0;
            for _ in 0..trials {
                let wins = (0..n).filter(|_| rng.random::<f64>() < p).count();
                let w = win_rate(wins, 0, n - wins, Z95);
                covered += usize::from(w.low <= p && p <= w.high);
            }
            let rate = covered as f64 / trials as f64;
            // Wilson's interval is known to hover around the nominal 95 % (within ≈ ±2.5 %).
            assert!(
                (0.925..=0.985).contains(&rate),
                "p {p}, n {n}: coverage {rate}"
            );
        }
    }

    #[test]
    fn ties_count_half_and_edges_stay_in_the_unit_interval() {
        let w = win_rate(3, 2, 5, Z95);
        assert!((w.rate - 0.4).abs() < 1e-12);
        assert!(w.low > 0.0 && w.high < 1.0 && w.low < 0.4 && 0.4 < w.high);
        let all = win_rate(10, 0, 0, Z95);
        assert!((all.high - 1.0).abs() < 1e-12, "{}", all.high);
        assert!(all.low > 0.6 && all.low < 0.8, "{}", all.low);
        assert!(win_rate(0, 0, 0, Z95).rate.is_nan());
    }
}

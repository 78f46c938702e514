//! Picking the next token from one row of logits: greedy, or temperature + top-k + top-p
//! (Holtzman et al. 2019) sampling from a seeded ChaCha stream per prompt
//! (`rlaif_core::seed::stream_rng(seed, prompt index)`).
//!
//! This runs on the host: one `[B, V]` row of logits per step is small next to the forward
//! pass that produced it, and host code keeps the sampler identical on every backend.
//!
//! Top-k, then top-p, as transformers and vLLM apply them: the nucleus is the smallest set
//! of the top-k tokens whose probability *renormalised over the top k* reaches `top_p`.

use crate::LmError;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rlaif_core::SamplingParams;

fn log_sum_exp(z: impl Iterator<Item = f32> + Clone) -> f32 {
    let m = z.clone().fold(f32::NEG_INFINITY, f32::max);
    if m == f32::NEG_INFINITY {
        return m;
    }
    m + z.map(|x| (x - m).exp()).sum::<f32>().ln()
}

/// Picks a token from `logits` (one row, length V). Returns the token and its
/// log-probability under `softmax(logits / T)` (T = 1 when greedy), before any top-k /
/// top-p filtering.
pub(crate) fn pick_token(
    logits: &[f32],
    params: &SamplingParams,
    rng: &mut ChaCha8Rng,
) -> Result<(u32, f32), LmError> {
    if logits.iter().any(|x| x.is_nan()) {
        return Err(LmError::Backend("the model produced NaN logits".into()));
    }
    if params.is_greedy() {
        let (best, &top) =
            logits
                .iter()
                .enumerate()
                .fold((0, &f32::NEG_INFINITY), |acc, (i, x)| {
                    if *x > *acc.1 { (i, x) } else { acc }
                });
        let lse = log_sum_exp(logits.iter().copied());
        return Ok((best as u32, top - lse));
    }
    let inv_t = 1.0 / params.temperature;
    let z = |i: usize| logits[i] * inv_t;
    let lse = log_sum_exp(logits.iter().map(|x| x * inv_t));
    let mut cand: Vec<u32> = (0..logits.len() as u32).collect();
    let desc = |a: &u32, b: &u32| z(*b as usize).total_cmp(&z(*a as usize));
    if let Some(k) = params.top_k
        && (1..cand.len()).contains(&k)
    {
        cand.select_nth_unstable_by(k - 1, desc);
        cand.truncate(k);
    }
    if params.top_p < 1.0 {
        cand.sort_unstable_by(desc);
        // Keep the smallest prefix whose probability mass reaches top_p (at least one),
        // with the probabilities renormalised over the candidates top-k left.
        let kept_lse = log_sum_exp(cand.iter().map(|&i| z(i as usize)));
        let mut mass = 0.0f32;
        let mut keep = 0;
        for &i in &cand {
            keep += 1;
            mass += (z(i as usize) - kept_lse).exp();
            if mass >= params.top_p {
                break;
            }
        }
        cand.truncate(keep);
    }
    let m = cand
        .iter()
        .map(|&i| z(i as usize))
        .fold(f32::NEG_INFINITY, f32::max);
    let w: Vec<f64> = cand
        .iter()
        .map(|&i| ((z(i as usize) - m) as f64).exp())
        .collect();
    let total: f64 = w.iter().sum();
    let mut u = rng.random::<f64>() * total;
    let Some(&last) = cand.last() else {
        return Err(LmError::InvalidRequest("the logit row is empty".into()));
    };
    let mut chosen = last;
    for (&i, &wi) in cand.iter().zip(&w) {
        if u < wi {
            chosen = i;
            break;
        }
        u -= wi;
    }
    Ok((chosen, z(chosen as usize) - lse))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rlaif_core::seed::stream_rng;

    fn prompt_rng(seed: u64, index: usize) -> ChaCha8Rng {
        stream_rng(seed, index as u64)
    }

    fn params(t: f32, k: Option<usize>, p: f32) -> SamplingParams {
        SamplingParams {
            temperature: t,
            top_k: k,
            top_p: p,
            ..Default::default()
        }
    }

    #[test]
    fn greedy_is_argmax_with_its_logprob() {
        let l = [0.0f32, 2.0, 1.0];
        let (t, lp) = pick_token(&l, &SamplingParams::greedy(1), &mut prompt_rng(0, 0)).unwrap();
        assert_eq!(t, 1);
        let want = 2.0 - (1f32 + 2f32.exp() + 1f32.exp()).ln();
        assert!((lp - want).abs() < 1e-6);
    }

    #[test]
    fn sampling_frequencies_follow_the_filtered_distribution() {
        // probabilities ∝ [1, 2, 3, 4] at T = 1
        let l: Vec<f32> = [1f32, 2., 3., 4.].iter().map(|x| x.ln()).collect();
        let mut rng = prompt_rng(7, 0);
        let count = |p: &SamplingParams, rng: &mut ChaCha8Rng| {
            let mut c = [0usize; 4];
            for _ in 0..20000 {
                c[pick_token(&l, p, rng).unwrap().0 as usize] += 1;
            }
            c.map(|x| x as f64 / 20000.0)
        };
        let f = count(&params(1.0, None, 1.0), &mut rng);
        for (i, want) in [0.1, 0.2, 0.3, 0.4].iter().enumerate() {
            assert!((f[i] - want).abs() < 0.015, "{f:?}");
        }
        // top-k 2 keeps {3, 4} → 3/7, 4/7
        let f = count(&params(1.0, Some(2), 1.0), &mut rng);
        assert_eq!(f[0] + f[1], 0.0);
        assert!((f[3] - 4.0 / 7.0).abs() < 0.015, "{f:?}");
        // top-p 0.65: 0.4 + 0.3 = 0.7 ≥ 0.65 → {3, 4}
        let f = count(&params(1.0, None, 0.65), &mut rng);
        assert_eq!(f[0] + f[1], 0.0);
        // low temperature sharpens towards the argmax
        let f = count(&params(0.1, None, 1.0), &mut rng);
        assert!(f[3] > 0.9, "{f:?}");
    }

    #[test]
    fn logprob_ignores_filtering_and_streams_are_reproducible() {
        let l = [0.5f32, 1.5, -1.0, 3.0];
        let p = params(0.7, Some(2), 0.9);
        let (a, lpa) = pick_token(&l, &p, &mut prompt_rng(3, 1)).unwrap();
        let (b, lpb) = pick_token(&l, &p, &mut prompt_rng(3, 1)).unwrap();
        assert_eq!((a, lpa), (b, lpb));
        let z: Vec<f32> = l.iter().map(|x| x / 0.7).collect();
        let lse = log_sum_exp(z.iter().copied());
        assert!((lpa - (z[a as usize] - lse)).abs() < 1e-6);
        let first: Vec<u32> = (0..8)
            .map(|s| {
                pick_token(&l, &params(1.0, None, 1.0), &mut prompt_rng(s, 0))
                    .unwrap()
                    .0
            })
            .collect();
        assert!(
            first.iter().any(|&t| t != first[0]),
            "seeds should differ: {first:?}"
        );
    }

    #[test]
    fn nan_logits_are_an_error() {
        let e = pick_token(
            &[0.0, f32::NAN],
            &SamplingParams::greedy(1),
            &mut prompt_rng(0, 0),
        );
        assert!(e.unwrap_err().to_string().contains("NaN"));
    }

    #[test]
    fn top_p_after_top_k_uses_the_renormalised_top_k() {
        // p = [0.5, 0.3, 0.1, 0.1]. Top-k 2 leaves {0, 1} with renormalised p = [0.625,
        // 0.375]: the 0.6 nucleus is {0} alone. Without renormalising, 0.5 < 0.6 would
        // keep token 1 as well.
        let l: Vec<f32> = [0.5f32, 0.3, 0.1, 0.1].iter().map(|x| x.ln()).collect();
        let p = params(1.0, Some(2), 0.6);
        let mut rng = prompt_rng(11, 0);
        for _ in 0..2000 {
            assert_eq!(pick_token(&l, &p, &mut rng).unwrap().0, 0);
        }
        // With top-p 0.7 the renormalised nucleus needs both: 0.625 < 0.7.
        let p = params(1.0, Some(2), 0.7);
        let ones = (0..4000)
            .filter(|_| pick_token(&l, &p, &mut rng).unwrap().0 == 1)
            .count() as f64
            / 4000.0;
        assert!((ones - 0.375).abs() < 0.03, "{ones}");
    }
}

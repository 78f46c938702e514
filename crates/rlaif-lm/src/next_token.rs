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

use rlaif_kernels::host::{exp_shifted, log_sum_exp, max_and_nan};

/// Picks a token from `logits` (one row, length V). Returns the token and its
/// log-probability under `softmax(logits / T)` (T = 1 when greedy), before any top-k /
/// top-p filtering.
pub(crate) fn pick_token(
    logits: &[f32],
    params: &SamplingParams,
    rng: &mut ChaCha8Rng,
) -> Result<(u32, f32), LmError> {
    let (top, nan) = max_and_nan(logits);
    if nan {
        return Err(LmError::Backend("the model produced NaN logits".into()));
    }
    if logits.is_empty() {
        return Err(LmError::InvalidRequest("the logit row is empty".into()));
    }
    if params.is_greedy() {
        // the first maximal logit (a row of -inf picks token 0)
        let best = logits.iter().position(|&x| x == top).unwrap_or(0);
        return Ok((best as u32, top - log_sum_exp(logits)));
    }
    let inv_t = 1.0 / params.temperature;
    let z: Vec<f32> = logits.iter().map(|x| x * inv_t).collect();
    let lse = log_sum_exp(&z);
    // descending logit, ties by ascending id: a total order, so the candidates kept do not
    // depend on how they were found
    let desc = |a: &u32, b: &u32| z[*b as usize].total_cmp(&z[*a as usize]).then(a.cmp(b));
    let mut cand: Vec<u32> = (0..z.len() as u32).collect();
    if let Some(k) = params.top_k
        && (1..cand.len()).contains(&k)
    {
        cand.select_nth_unstable_by(k - 1, desc);
        cand.truncate(k);
    }
    if params.top_p < 1.0 {
        cand = nucleus(&z, cand, params.top_p);
    }
    let zc: Vec<f32> = cand.iter().map(|&i| z[i as usize]).collect();
    let (m, _) = max_and_nan(&zc);
    let mut w = vec![0f32; zc.len()];
    let total = exp_shifted(&zc, m, &mut w) as f64;
    let mut u = rng.random::<f64>() * total;
    let mut chosen = cand[cand.len() - 1];
    for (&i, &wi) in cand.iter().zip(&w) {
        let wi = wi as f64;
        if u < wi {
            chosen = i;
            break;
        }
        u -= wi;
    }
    Ok((chosen, z[chosen as usize] - lse))
}

/// The top-p nucleus of `cand` (ids into `z`): the smallest set of the most likely candidates
/// whose probability, renormalised over `cand`, reaches `top_p` — the prefix of the candidates
/// sorted by descending logit (ties by ascending id) — found without sorting.
///
/// The mass of `{z ≥ t}` falls as `t` rises, so the nucleus is `{z > t*}` plus, in id order, as
/// many candidates tied at `t*` as the mass needs, where `t*` is the largest logit whose
/// `{z ≥ t*}` still holds `top_p` of the mass. `t*` is found by bisecting the ordered bit
/// patterns of f32 (at most 32 vectorised passes over the row instead of a sort of 49 152
/// entries per token).
fn nucleus(z: &[f32], cand: Vec<u32>, top_p: f32) -> Vec<u32> {
    let zc: Vec<f32> = cand.iter().map(|&i| z[i as usize]).collect();
    let (m, _) = max_and_nan(&zc);
    let mut p = vec![0f32; zc.len()];
    let target = top_p * exp_shifted(&zc, m, &mut p);
    let mass_ge = |t: f32| {
        let mut acc = [0f32; 16];
        let (zs, ps) = (zc.chunks_exact(16), p.chunks_exact(16));
        let tail: f32 = (zs.remainder().iter().zip(ps.remainder()))
            .map(|(&zv, &pv)| if zv >= t { pv } else { 0.0 })
            .sum();
        for (zv, pv) in zs.zip(ps) {
            for l in 0..16 {
                acc[l] += if zv[l] >= t { pv[l] } else { 0.0 };
            }
        }
        acc.iter().sum::<f32>() + tail
    };
    // f32 ↔ a u32 key with the same order (negatives reversed below positives)
    let key = |x: f32| {
        let b = x.to_bits();
        if b >> 31 == 1 { !b } else { b | 1 << 31 }
    };
    let value = |k: u32| f32::from_bits(if k >> 31 == 1 { k & !(1 << 31) } else { !k });
    // invariant: mass_ge(value(lo)) ≥ target > mass_ge(value(hi)) (hi past the maximum)
    let (mut lo, mut hi) = (key(f32::NEG_INFINITY), key(m).saturating_add(1));
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if mass_ge(value(mid)) >= target {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    let t = value(lo);
    // above t*: all in; at t*: in id order until the mass is reached (at least one)
    let mut mass = mass_ge(value(hi));
    let mut ties: Vec<(u32, f32)> = (cand.iter().zip(&zc).zip(&p))
        .filter(|&((_, &zv), _)| zv == t)
        .map(|((&i, _), &pv)| (i, pv))
        .collect();
    ties.sort_unstable_by_key(|&(i, _)| i);
    let mut kept: Vec<u32> = (cand.iter().zip(&zc))
        .filter(|&(_, &zv)| zv > t)
        .map(|(&i, _)| i)
        .collect();
    for (i, pv) in ties {
        if mass >= target && !kept.is_empty() {
            break;
        }
        mass += pv;
        kept.push(i);
    }
    kept
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
        let lse = z.iter().map(|&x| (x as f64).exp()).sum::<f64>().ln() as f32;
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

    /// The nucleus as the plain algorithm defines it: sort every candidate.
    fn nucleus_by_full_sort(z: &[f32], top_p: f32) -> Vec<u32> {
        let mut cand: Vec<u32> = (0..z.len() as u32).collect();
        cand.sort_by(|a, b| z[*b as usize].total_cmp(&z[*a as usize]).then(a.cmp(b)));
        let lse = z.iter().map(|&x| (x as f64).exp()).sum::<f64>().ln();
        let mut mass = 0.0;
        let keep = cand
            .iter()
            .position(|&i| {
                mass += (z[i as usize] as f64 - lse).exp();
                mass >= top_p as f64
            })
            .map_or(cand.len(), |p| p + 1);
        cand.truncate(keep);
        cand
    }

    #[test]
    fn bisected_nucleus_is_the_full_sort_nucleus() {
        // a peaked row (nucleus inside the first window), a flat one (nucleus of thousands:
        // the window grows), and ties at the cut
        let v = 5000usize;
        let peaked: Vec<f32> = (0..v).map(|i| -((i * 7919 % v) as f32) * 0.05).collect();
        let flat: Vec<f32> = (0..v).map(|i| ((i * 7919 % v) as f32) * 1e-4).collect();
        let ties: Vec<f32> = (0..v).map(|i| (i % 3) as f32).collect();
        for (name, row) in [("peaked", &peaked), ("flat", &flat), ("ties", &ties)] {
            for top_p in [0.3f32, 0.9, 0.99] {
                let want = nucleus_by_full_sort(row, top_p);
                // sampling many times only ever returns members of the nucleus, and the
                // nucleus' most and least likely members both occur when it is small
                let p = params(1.0, None, top_p);
                let mut rng = prompt_rng(5, 0);
                let allowed: std::collections::HashSet<u32> = want.iter().copied().collect();
                for _ in 0..300 {
                    let (t, _) = pick_token(row, &p, &mut rng).unwrap();
                    assert!(allowed.contains(&t), "{name} top_p {top_p}: {t} outside");
                }
                assert!(!want.is_empty());
            }
        }
        // the exact set, on a row small enough to enumerate: every member occurs
        let row: Vec<f32> = (0..200).map(|i| ((i * 37 % 200) as f32) * 0.01).collect();
        let want = nucleus_by_full_sort(&row, 0.5);
        assert!(want.len() > 50, "a nucleus of many tokens");
        let p = params(1.0, None, 0.5);
        let mut rng = prompt_rng(9, 0);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..20_000 {
            let (t, _) = pick_token(&row, &p, &mut rng).unwrap();
            assert!(want.contains(&t), "{t} outside the nucleus");
            seen.insert(t);
        }
        assert_eq!(
            seen.len(),
            want.len(),
            "every member of the nucleus is drawn"
        );
    }
}

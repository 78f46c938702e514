//! Vectorised operations on one row of logits in host memory: what a sampler runs on each
//! `[V]` row per decoding step (V = 49 152 for SmolLM2), where a scalar loop with libm's `expf`
//! costs about as much as a batch-1 projection.
//!
//! The exponential is the one of the fused kernels (relative error ≈ 1.2e-7, exactly 0 below
//! −87), compiled for AVX-512, AVX2 + FMA or the baseline and picked at run time; results are
//! the same on every call on one machine.

use crate::simd::{Isa, LANES, fast_exp, isa};

/// The largest element of `x` (`-inf` when empty) and whether any element is NaN.
pub fn max_and_nan(x: &[f32]) -> (f32, bool) {
    let mut mx = [f32::NEG_INFINITY; LANES];
    let mut nan = [false; LANES];
    let mut it = x.chunks_exact(LANES);
    for c in &mut it {
        for l in 0..LANES {
            let v = c[l];
            nan[l] |= v.is_nan();
            mx[l] = if v > mx[l] { v } else { mx[l] };
        }
    }
    let mut m = mx.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    let mut any_nan = nan.iter().any(|&b| b);
    for &v in it.remainder() {
        any_nan |= v.is_nan();
        m = m.max(v);
    }
    (m, any_nan)
}

/// `log Σ exp(x_i)`, stable (shifted by the maximum); `-inf` for an empty row or one of `-inf`
/// only. `x` must hold no NaN (see [`max_and_nan`]).
pub fn log_sum_exp(x: &[f32]) -> f32 {
    let (m, _) = max_and_nan(x);
    if m == f32::NEG_INFINITY {
        return m;
    }
    m + exp_shifted_on(isa(), x, m, &mut []).ln()
}

/// Writes `out_i = exp(x_i − shift)` and returns `Σ out_i`. `out` must be as long as `x`;
/// with `shift ≥ max x` every term is in `[0, 1]` (exactly 0 below −87).
///
/// # Panics
/// If `out` and `x` differ in length.
pub fn exp_shifted(x: &[f32], shift: f32, out: &mut [f32]) -> f32 {
    assert_eq!(
        out.len(),
        x.len(),
        "exp_shifted: out and x differ in length"
    );
    exp_shifted_on(isa(), x, shift, out)
}

/// [`exp_shifted`] on `isa`; with an empty `out` only the sum is computed.
fn exp_shifted_on(isa: Isa, x: &[f32], shift: f32, out: &mut [f32]) -> f32 {
    match isa {
        // SAFETY: the features were detected at run time in `isa()` (or by the tests).
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { exp_shifted_avx512(x, shift, out) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { exp_shifted_avx2(x, shift, out) },
        Isa::Baseline => exp_shifted_impl::<false>(x, shift, out),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx512dq,avx2,fma")]
fn exp_shifted_avx512(x: &[f32], shift: f32, out: &mut [f32]) -> f32 {
    exp_shifted_impl::<true>(x, shift, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn exp_shifted_avx2(x: &[f32], shift: f32, out: &mut [f32]) -> f32 {
    exp_shifted_impl::<true>(x, shift, out)
}

#[inline(always)]
fn exp_shifted_impl<const FMA: bool>(x: &[f32], shift: f32, out: &mut [f32]) -> f32 {
    let exp = |v: f32| fast_exp::<FMA>(v - shift);
    let mut acc = [0f32; LANES];
    if out.is_empty() {
        let mut it = x.chunks_exact(LANES);
        for c in &mut it {
            for l in 0..LANES {
                acc[l] += exp(c[l]);
            }
        }
        return acc.iter().sum::<f32>() + it.remainder().iter().map(|&v| exp(v)).sum::<f32>();
    }
    let mut xs = x.chunks_exact(LANES);
    let mut os = out.chunks_exact_mut(LANES);
    for (c, o) in (&mut xs).zip(&mut os) {
        for l in 0..LANES {
            let e = exp(c[l]);
            o[l] = e;
            acc[l] += e;
        }
    }
    let mut tail = 0f32;
    for (&v, o) in xs.remainder().iter().zip(os.into_remainder()) {
        *o = exp(v);
        tail += *o;
    }
    acc.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> Vec<f32> {
        // 1000 values (62 lanes of 16 and a remainder), with -inf entries
        (0..1000)
            .map(|i| {
                if i % 97 == 3 {
                    f32::NEG_INFINITY
                } else {
                    ((i * 7919) % 1000) as f32 / 37.0 - 13.0
                }
            })
            .collect()
    }

    #[test]
    fn max_and_nan_find_the_maximum_and_any_nan() {
        let mut x = row();
        let want = x.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        assert_eq!(max_and_nan(&x), (want, false));
        x[999] = 100.0; // in the remainder
        assert_eq!(max_and_nan(&x).0, 100.0);
        x[5] = f32::NAN;
        assert!(max_and_nan(&x).1);
        assert_eq!(max_and_nan(&[]), (f32::NEG_INFINITY, false));
    }

    #[test]
    fn log_sum_exp_and_exp_shifted_match_f64_on_every_instruction_set() {
        let x = row();
        let m = x.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        let want: f64 = x.iter().map(|&v| ((v - m) as f64).exp()).sum();
        let got = log_sum_exp(&x) as f64;
        assert!((got - (m as f64 + want.ln())).abs() < 1e-5, "{got}");
        let mut isas = vec![Isa::Baseline, isa()];
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            isas.push(Isa::Avx2);
        }
        for isa in isas {
            let mut out = vec![0f32; x.len()];
            let total = exp_shifted_on(isa, &x, m, &mut out) as f64;
            assert!(
                ((total - want) / want).abs() < 1e-6,
                "{isa:?}: {total} vs {want}"
            );
            for (i, (&o, &v)) in out.iter().zip(&x).enumerate() {
                let e = ((v - m) as f64).exp();
                // the exponential's error grows with |x| (see `simd::fast_exp`)
                let tol = if e == 0.0 {
                    0.0 // -inf in, exactly 0 out
                } else {
                    (3e-7 + 8e-8 * (v - m).abs() as f64) * e
                };
                assert!((o as f64 - e).abs() <= tol, "{isa:?} [{i}]: {o} vs {e}");
            }
            let sum_only = exp_shifted_on(isa, &x, m, &mut []) as f64;
            assert!(((sum_only - want) / want).abs() < 1e-6);
        }
        assert_eq!(log_sum_exp(&[f32::NEG_INFINITY; 3]), f32::NEG_INFINITY);
        assert_eq!(log_sum_exp(&[]), f32::NEG_INFINITY);
    }
}

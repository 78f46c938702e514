//! The vectorisable arithmetic of the fused kernels: a polynomial exponential, FMA, a
//! NaN-keeping clamp, prefetch, and run-time selection of the instruction set.
//!
//! The exponential is `2^k · 2^f` with a degree-6 Taylor polynomial of `2^f` on `[−½, ½]`
//! (relative error ≈ 1.2e-7, plus ≈ |x|·6e-8 from rounding `x·log2 e` to f32), written with
//! integer bit tricks instead of casts so that LLVM vectorises it. Kernels built on these helpers are compiled once per [`Isa`] (generic over
//! `FMA`, wrapped in `#[target_feature]` functions) and picked at run time by [`isa`].

#![cfg_attr(not(feature = "flex"), allow(dead_code))] // without flex only the host helpers use it

/// The bits of the rounding constant 1.5 · 2^23 of the exponentials.
const MAGIC_BITS: u32 = 0x4B40_0000;
/// Accumulator lanes: one AVX-512 register (two AVX2 registers).
pub(crate) const LANES: usize = 16;

/// `a · b + c`, fused where the build has FMA (plain `mul_add` would be a libm call without
/// it).
#[inline(always)]
pub(crate) fn fmadd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA { a.mul_add(b, c) } else { a * b + c }
}

/// `exp(x)` for `x ∈ [−87, 88]` (no range handling; see [`fast_exp`]).
#[inline(always)]
pub(crate) fn exp_core<const FMA: bool>(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const MAGIC: f32 = 12_582_912.0; // 1.5 · 2^23: adding and subtracting rounds to an integer
    let t = x * LOG2E;
    // the bits of t + MAGIC hold round(t) as an integer offset from MAGIC's bits (integer ops
    // vectorise; a saturating `as i32` cast would not)
    let kb = (t + MAGIC).to_bits();
    let k = f32::from_bits(kb) - MAGIC;
    let f = t - k; // in [-1/2, 1/2]
    // 2^f = e^{f ln 2}, Taylor to degree 6 (Horner)
    let p = 1.540_353_1e-4_f32;
    let p = fmadd::<FMA>(p, f, 1.333_355_8e-3);
    let p = fmadd::<FMA>(p, f, 9.618_129e-3);
    let p = fmadd::<FMA>(p, f, 5.550_411e-2);
    let p = fmadd::<FMA>(p, f, 0.240_226_5);
    let p = fmadd::<FMA>(p, f, std::f32::consts::LN_2);
    let p = fmadd::<FMA>(p, f, 1.0);
    let scale = f32::from_bits(kb.wrapping_sub(MAGIC_BITS).wrapping_add(127) << 23); // 2^k
    p * scale
}

/// `exp(x)` for `x ≤ 88`; exactly 0 below −87 (where `exp` is within a factor 2 of
/// `f32::MIN_POSITIVE`), including `-inf`; NaN propagates (it fails every comparison and
/// passes through the clamp and the polynomial).
#[inline(always)]
pub(crate) fn fast_exp<const FMA: bool>(x: f32) -> f32 {
    let y = exp_core::<FMA>(x.clamp(-87.0, 88.0));
    if x < -87.0 { 0.0 } else { y }
}

/// Lower clamp that keeps NaN (`f32::max` would drop it): one `max` instruction.
#[inline(always)]
pub(crate) fn clamp_low(x: f32, lo: f32) -> f32 {
    if x < lo { lo } else { x }
}

/// Hints the CPU to bring the cache line at `p` into L1 (no effect on other targets). Any
/// address is allowed: a prefetch never faults.
#[inline(always)]
pub(crate) fn prefetch(p: *const f32) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: prefetching has no architectural effect and cannot fault.
    #[allow(unused_unsafe)]
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p as *const i8)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Which compiled variant of the kernels this CPU runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Isa {
    /// AVX-512 (F, VL, DQ) with FMA.
    #[cfg(target_arch = "x86_64")]
    Avx512,
    /// AVX2 with FMA.
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// The build's target features (no FMA assumed).
    Baseline,
}

/// The best [`Isa`] of this CPU, detected at run time.
pub(crate) fn isa() -> Isa {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512vl")
            && std::arch::is_x86_feature_detected!("avx512dq")
            && std::arch::is_x86_feature_detected!("fma")
        {
            return Isa::Avx512;
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            return Isa::Avx2;
        }
    }
    Isa::Baseline
}

/// `Σ exp(x_i)` with the lane-wise loop of the forward kernel's exp pass.
#[inline(always)]
fn sum_exp_impl<const FMA: bool>(x: &[f32]) -> f32 {
    let exp = fast_exp::<FMA>;
    let mut se = [0f32; LANES];
    let mut it = x.chunks_exact(LANES);
    for c in &mut it {
        for l in 0..LANES {
            se[l] += exp(c[l]);
        }
    }
    se.iter().sum::<f32>() + it.remainder().iter().map(|&z| exp(z)).sum::<f32>()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx512dq,avx2,fma")]
fn sum_exp_avx512(x: &[f32]) -> f32 {
    sum_exp_impl::<true>(x)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn sum_exp_avx2(x: &[f32]) -> f32 {
    sum_exp_impl::<true>(x)
}

/// `Σ exp(x_i)` on the best instruction set of this CPU (the benchmark's exp-throughput probe).
pub(crate) fn sum_exp(x: &[f32]) -> f32 {
    match isa() {
        // SAFETY: the features were detected at run time in `isa()`.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { sum_exp_avx512(x) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { sum_exp_avx2(x) },
        Isa::Baseline => sum_exp_impl::<false>(x),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every instruction set this CPU has, with the baseline.
    fn isas() -> Vec<Isa> {
        let mut out = vec![Isa::Baseline];
        #[cfg(target_arch = "x86_64")]
        {
            if isa() == Isa::Avx512 {
                out.push(Isa::Avx512);
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                out.push(Isa::Avx2);
            }
        }
        out
    }

    fn sum_exp_on(isa: Isa, x: &[f32]) -> f32 {
        match isa {
            // SAFETY: `isas()` lists only detected instruction sets.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe { sum_exp_avx512(x) },
            // SAFETY: as above.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { sum_exp_avx2(x) },
            Isa::Baseline => sum_exp_impl::<false>(x),
        }
    }

    #[test]
    fn fast_exp_matches_f64_exp_and_handles_the_edges() {
        for k in 0..=20_000 {
            let x = -87.0 + 175.0 * k as f32 / 20_000.0; // [-87, 88]
            let want = (x as f64).exp();
            // the polynomial's error, plus the f32 rounding of x·log2(e) (≈ |x|·2^-24·ln 2·…)
            let tol = 3e-7 + 8e-8 * (x as f64).abs();
            for got in [fast_exp::<false>(x), fast_exp::<true>(x)] {
                let rel = ((got as f64 - want) / want).abs();
                assert!(rel < tol, "exp({x}) = {got}, want {want} (rel {rel:e})");
            }
        }
        for x in [-87.001f32, -100.0, -1e30, f32::NEG_INFINITY] {
            assert_eq!(fast_exp::<true>(x), 0.0, "exp({x})");
        }
        assert!(fast_exp::<true>(f32::NAN).is_nan());
        assert_eq!(clamp_low(-3.0, -2.0), -2.0);
        assert!(clamp_low(f32::NAN, -2.0).is_nan());
    }

    #[test]
    fn sum_exp_agrees_on_every_instruction_set() {
        // 37 elements: two full 16-lane blocks and a remainder
        let x: Vec<f32> = (0..37).map(|i| (i as f32 - 18.0) * 0.37).collect();
        let want: f64 = x.iter().map(|&v| (v as f64).exp()).sum();
        for isa in isas() {
            let got = sum_exp_on(isa, &x) as f64;
            assert!(
                ((got - want) / want).abs() < 1e-6,
                "{isa:?}: {got} vs {want}"
            );
        }
        assert_eq!(sum_exp(&[]), 0.0);
    }
}

//! Fused float32 kernels for the flex CPU backend.
//!
//! `token_stats` makes one pass over each row of logits: the row is cut into chunks that fit
//! in L1; per chunk, a max pass and an exp pass run out of cache, and a running
//! (max, Σ e^{z'−max}, Σ e^{z'−max}(z'−max)) triple is rescaled when the max grows (the
//! "online softmax" of Milakov & Gimelshein 2018). So the logits are read from memory once,
//! each logit costs one exponential, and nothing of size `[N, V]` is written. Rows run in
//! parallel on rayon. The backward recomputes `p = exp(z' − lse)` from the logits and the saved
//! per-row statistics and writes the `[N, V]` gradient once.
//!
//! The exponential is a polynomial (`2^k · 2^f`, degree-6 Taylor of `2^f` on `[−½, ½]`,
//! relative error ≈ 1.2e-7) written so that LLVM vectorises it; the row functions are compiled
//! twice, for the baseline target and for AVX-512, and picked at run time.

use crate::extension::RlKernels;
use burn::backend::Flex;
use burn::backend::flex::FlexTensor;
use burn::prelude::*;
use burn::tensor::DType;
use rayon::prelude::*;

/// Logits per chunk of a row: 4096 f32 = 16 KiB, which stays in L1 between the max pass and
/// the exp pass.
const CHUNK: usize = 4096;
/// The bits of the rounding constant 1.5 · 2^23 of the exponentials.
const MAGIC_BITS: u32 = 0x4B40_0000;
/// Accumulator lanes: one AVX-512 register (two AVX2 registers).
const LANES: usize = 16;

/// `a · b + c`, fused where the build has FMA (plain `mul_add` would be a libm call without
/// it).
#[inline(always)]
fn fmadd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA { a.mul_add(b, c) } else { a * b + c }
}

/// `exp(x)` for `x ∈ [−87, 88]` (no range handling; see [`fast_exp`]).
#[inline(always)]
fn exp_core<const FMA: bool>(x: f32) -> f32 {
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
fn fast_exp<const FMA: bool>(x: f32) -> f32 {
    let y = exp_core::<FMA>(x.clamp(-87.0, 88.0));
    if x < -87.0 { 0.0 } else { y }
}

/// Lower clamp that keeps NaN (`f32::max` would drop it): one `max` instruction.
#[inline(always)]
fn clamp_low(x: f32, lo: f32) -> f32 {
    if x < lo { lo } else { x }
}

/// How far ahead (in floats) the backward prefetches the logits it reads.
const PREFETCH_AHEAD: usize = 1024;

/// Hints the CPU to bring the cache line at `p` into L1 (no effect on other targets). Any
/// address is allowed: a prefetch never faults.
#[inline(always)]
fn prefetch(p: *const f32) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: prefetching has no architectural effect and cannot fault.
    #[allow(unused_unsafe)]
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p as *const i8)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Running statistics of one row, relative to the running max `m` of `z' = s·z`:
/// `sum = Σ e^{z'−m}`, `wsum = Σ e^{z'−m}(z'−m)`.
#[derive(Clone, Copy)]
struct RowAcc {
    m: f32,
    sum: f32,
    wsum: f32,
}

/// One row's `[lp, entropy, lse]` (see [`RlKernels::token_stats`]).
#[inline(always)]
fn row_stats_impl<const FMA: bool>(row: &[f32], label: usize, s: f32) -> [f32; 3] {
    let mut acc = RowAcc {
        m: f32::NEG_INFINITY,
        sum: 0.0,
        wsum: 0.0,
    };
    for chunk in row.chunks(CHUNK) {
        // pass 1: chunk max (lane-wise, so it vectorises)
        let mut mx = [f32::NEG_INFINITY; LANES];
        let mut it = chunk.chunks_exact(LANES);
        for c in &mut it {
            for l in 0..LANES {
                mx[l] = mx[l].max(c[l]);
            }
        }
        let mut cm = mx.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        for &z in it.remainder() {
            cm = cm.max(z);
        }
        let cm = cm * s; // s > 0, so max(s·z) = s·max(z)
        if cm > acc.m {
            if acc.m == f32::NEG_INFINITY {
                acc.sum = 0.0;
                acc.wsum = 0.0;
            } else {
                // re-reference Σe^{z'−m}(z'−m) and Σe^{z'−m} from m to cm
                let delta = acc.m - cm; // < 0
                let a = delta.exp();
                acc.wsum = a * (acc.wsum + delta * acc.sum);
                acc.sum *= a;
            }
            acc.m = cm;
        }
        if acc.m == f32::NEG_INFINITY {
            continue; // every logit so far is -inf
        }
        // pass 2: Σ e^{d}, Σ e^{d}·d with d = s·z − m (from L1)
        let m = acc.m;
        let mut se = [0f32; LANES];
        let mut sw = [0f32; LANES];
        // while the exponentials of this chunk run out of L1, pull the next chunk (of this
        // row or the next one: rows are contiguous) towards the core, one line per step
        let next = chunk.as_ptr().wrapping_add(CHUNK);
        let mut it = chunk.chunks_exact(LANES);
        for (ci, c) in (&mut it).enumerate() {
            prefetch(next.wrapping_add(ci * LANES));
            for l in 0..LANES {
                // d ≤ 0; below −87 (incl. -inf) e^d is taken as e^−87 ≈ 1.6e-38, which cannot
                // matter next to the row max's own term e^0 = 1 in the sum, and keeps
                // 0·(−inf) out of Σ e·d without a select
                let d = clamp_low(fmadd::<FMA>(c[l], s, -m), -87.0);
                let e = exp_core::<FMA>(d);
                se[l] += e;
                sw[l] = fmadd::<FMA>(e, d, sw[l]);
            }
        }
        let mut sum: f32 = se.iter().sum();
        let mut wsum: f32 = sw.iter().sum();
        for &z in it.remainder() {
            let d = clamp_low(fmadd::<FMA>(z, s, -m), -87.0);
            let e = exp_core::<FMA>(d);
            sum += e;
            wsum = fmadd::<FMA>(e, d, wsum);
        }
        acc.sum += sum;
        acc.wsum += wsum;
    }
    if acc.m == f32::NEG_INFINITY {
        return [f32::NEG_INFINITY, 0.0, f32::NEG_INFINITY];
    }
    let log_sum = acc.sum.ln();
    let lse = acc.m + log_sum;
    let lp = row[label] * s - lse;
    // H = lse − E_p[z'] = ln Σe^d − Σe^d·d / Σe^d
    let entropy = (log_sum - acc.wsum / acc.sum).max(0.0);
    [lp, entropy, lse]
}

/// One row of the gradient (see [`RlKernels::token_stats_backward`]).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn row_grad_impl<const FMA: bool>(
    row: &[f32],
    out: &mut [f32],
    label: usize,
    stats: [f32; 3],
    g: [f32; 3],
    s: f32,
) {
    let exp = fast_exp::<FMA>;
    let [_, entropy, lse] = stats;
    let [g_lp, g_h, g_lse] = g;
    if lse == f32::NEG_INFINITY || (g_lp == 0.0 && g_h == 0.0 && g_lse == 0.0) {
        out.fill(0.0);
        return;
    }
    let mu = lse - entropy; // E_p[z']
    let a = g_lp - g_lse;
    let grad = |z: f32| {
        let zs = z * s;
        let p = exp(zs - lse);
        let t = p * (a + g_h * (zs - mu));
        if p > 0.0 { -s * t } else { 0.0 }
    };
    let mut oc = out.chunks_exact_mut(LANES);
    let mut rc = row.chunks_exact(LANES);
    for (ci, (o, r)) in (&mut oc).zip(&mut rc).enumerate() {
        prefetch(row.as_ptr().wrapping_add(ci * LANES + PREFETCH_AHEAD));
        for l in 0..LANES {
            o[l] = grad(r[l]);
        }
    }
    for (o, &z) in oc.into_remainder().iter_mut().zip(rc.remainder()) {
        *o = grad(z);
    }
    out[label] += s * g_lp;
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx512dq,avx2,fma")]
fn row_stats_avx512(row: &[f32], label: usize, s: f32) -> [f32; 3] {
    row_stats_impl::<true>(row, label, s)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx512dq,avx2,fma")]
fn row_grad_avx512(row: &[f32], out: &mut [f32], label: usize, st: [f32; 3], g: [f32; 3], s: f32) {
    row_grad_impl::<true>(row, out, label, st, g, s)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn row_stats_avx2(row: &[f32], label: usize, s: f32) -> [f32; 3] {
    row_stats_impl::<true>(row, label, s)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn row_grad_avx2(row: &[f32], out: &mut [f32], label: usize, st: [f32; 3], g: [f32; 3], s: f32) {
    row_grad_impl::<true>(row, out, label, st, g, s)
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

/// Which compiled variant of the row kernels this CPU runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Isa {
    #[cfg(target_arch = "x86_64")]
    Avx512,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    Baseline,
}

fn isa() -> Isa {
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

fn row_stats(isa: Isa, row: &[f32], label: usize, s: f32) -> [f32; 3] {
    match isa {
        // SAFETY: the features were detected at run time in `isa()`.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { row_stats_avx512(row, label, s) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { row_stats_avx2(row, label, s) },
        Isa::Baseline => row_stats_impl::<false>(row, label, s),
    }
}

fn row_grad(
    isa: Isa,
    row: &[f32],
    out: &mut [f32],
    label: usize,
    st: [f32; 3],
    g: [f32; 3],
    s: f32,
) {
    match isa {
        // SAFETY: the features were detected at run time in `isa()`.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { row_grad_avx512(row, out, label, st, g, s) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { row_grad_avx2(row, out, label, st, g, s) },
        Isa::Baseline => row_grad_impl::<false>(row, out, label, st, g, s),
    }
}

/// Labels as `usize`, checked against the vocabulary size.
fn labels_checked(labels: FlexTensor, v: usize) -> Vec<usize> {
    let lab: Vec<i64> = labels
        .into_data()
        .convert::<i64>()
        .try_into_vec::<i64>()
        .expect("labels converted to i64");
    lab.into_iter()
        .map(|l| {
            assert!(
                (0..v as i64).contains(&l),
                "token_logprobs: label {l} out of range for a vocabulary of {v}"
            );
            l as usize
        })
        .collect()
}

fn f32_vec(t: FlexTensor) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("converted to f32")
}

/// Contiguous float32 logits and their `[N, V]` shape.
fn contiguous_f32(t: FlexTensor) -> (FlexTensor, usize, usize) {
    assert_eq!(t.dtype(), DType::F32, "fused kernels take float32 tensors");
    let t = if t.is_contiguous() {
        t
    } else {
        t.to_contiguous()
    };
    let shape = t.layout().shape();
    let (n, v) = (shape[0], shape[1]);
    (t, n, v)
}

/// Slice-level forward: `[N·V]` logits → `[N·3]` statistics.
pub(crate) fn token_stats_slice(x: &[f32], labels: &[usize], v: usize, s: f32) -> Vec<f32> {
    let isa = isa();
    let mut out = vec![0f32; labels.len() * 3];
    out.par_chunks_mut(3)
        .zip(x.par_chunks(v))
        .zip(labels.par_iter())
        .for_each(|((o, row), &l)| o.copy_from_slice(&row_stats(isa, row, l, s)));
    out
}

/// A zeroed `Vec<f32>` of `len` elements for a large output. The allocator maps fresh pages
/// for it; on Linux they are advised to be transparent huge pages before the first touch, so
/// that writing a 400 MB gradient costs a few hundred page faults instead of ~100 000 (each of
/// which also zeroes its page). The advice is only a hint: errors are ignored.
fn zeroed_output(len: usize) -> Vec<f32> {
    let out = vec![0f32; len]; // calloc: fresh mmapped pages, not yet touched when large
    #[cfg(target_os = "linux")]
    {
        unsafe extern "C" {
            fn madvise(addr: *mut std::ffi::c_void, len: usize, advice: i32) -> i32;
        }
        const HUGE: usize = 2 << 20;
        const MADV_HUGEPAGE: i32 = 14;
        let begin = out.as_ptr() as usize;
        let (start, end) = (
            begin.next_multiple_of(HUGE),
            (begin + 4 * len) / HUGE * HUGE,
        );
        if end > start {
            // SAFETY: [start, end) lies inside the allocation of `out`; MADV_HUGEPAGE changes
            // no contents, only how later faults are served.
            let _ = unsafe { madvise(start as *mut std::ffi::c_void, end - start, MADV_HUGEPAGE) };
        }
    }
    out
}

/// Slice-level backward: `[N·V]` logits, `[N·3]` stats and grads → `[N·V]` gradient.
pub(crate) fn token_stats_backward_slice(
    x: &[f32],
    labels: &[usize],
    stats: &[f32],
    grad: &[f32],
    v: usize,
    s: f32,
) -> Vec<f32> {
    let isa = isa();
    let mut out = zeroed_output(x.len());
    out.par_chunks_mut(v)
        .zip(x.par_chunks(v))
        .enumerate()
        .for_each(|(i, (o, row))| {
            let st = [stats[3 * i], stats[3 * i + 1], stats[3 * i + 2]];
            let g = [grad[3 * i], grad[3 * i + 1], grad[3 * i + 2]];
            row_grad(isa, row, o, labels[i], st, g, s);
        });
    out
}

/// Slice-level GAE on `[B·T]` rows (see [`crate::gae()`]): returns `[2·B·T]`, the advantages
/// then the returns.
pub(crate) fn gae_slice(
    r: &[f32],
    v: &[f32],
    m: &[f32],
    t: usize,
    gamma: f32,
    lambda: f32,
) -> Vec<f32> {
    let n = r.len();
    let mut out = vec![0f32; 2 * n];
    let (adv, ret) = out.split_at_mut(n);
    let row = |a: &mut [f32], ret: &mut [f32], r: &[f32], v: &[f32], m: &[f32]| {
        let mut next_adv = 0f32;
        let mut next_value = 0f32;
        for i in (0..t).rev() {
            if m[i] == 0.0 {
                // padding: a terminal boundary; NaN/inf in the slot never leaks
                a[i] = 0.0;
                ret[i] = 0.0;
                next_adv = 0.0;
                next_value = 0.0;
            } else {
                let delta = r[i] + gamma * next_value - v[i];
                next_adv = delta + gamma * lambda * next_adv;
                next_value = v[i];
                a[i] = next_adv;
                ret[i] = next_adv + v[i];
            }
        }
    };
    if n < 1 << 16 {
        // a few hundred microseconds of work at most: threads would cost more than they save
        let rows = adv.chunks_mut(t).zip(ret.chunks_mut(t));
        for (((a, rt), r), (v, m)) in rows.zip(r.chunks(t)).zip(v.chunks(t).zip(m.chunks(t))) {
            row(a, rt, r, v, m);
        }
    } else {
        let rows = adv.par_chunks_mut(t).zip(ret.par_chunks_mut(t));
        rows.zip(r.par_chunks(t))
            .zip(v.par_chunks(t).zip(m.par_chunks(t)))
            .with_min_len(16)
            .for_each(|(((a, rt), r), (v, m))| row(a, rt, r, v, m));
    }
    out
}

/// Calls of the fused kernels, so tests can prove which implementation ran:
/// `[token_stats, token_stats_backward, gae]`.
#[cfg(test)]
pub(crate) static CALLS: [std::sync::atomic::AtomicUsize; 3] = [
    std::sync::atomic::AtomicUsize::new(0),
    std::sync::atomic::AtomicUsize::new(0),
    std::sync::atomic::AtomicUsize::new(0),
];

#[inline(always)]
fn count(_i: usize) {
    #[cfg(test)]
    CALLS[_i].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

impl RlKernels for Flex {
    fn token_stats(logits: FlexTensor, labels: FlexTensor, inv_temperature: f32) -> FlexTensor {
        count(0);
        let (logits, n, v) = contiguous_f32(logits);
        let lab = labels_checked(labels, v);
        let x: &[f32] = logits.as_slice::<f32>().expect("contiguous f32 logits");
        let out = token_stats_slice(x, &lab, v, inv_temperature);
        FlexTensor::from_data(TensorData::new(out, [n, 3]))
    }

    fn token_stats_backward(
        logits: FlexTensor,
        labels: FlexTensor,
        stats: FlexTensor,
        grad: FlexTensor,
        inv_temperature: f32,
    ) -> FlexTensor {
        count(1);
        let (logits, n, v) = contiguous_f32(logits);
        let lab = labels_checked(labels, v);
        let x: &[f32] = logits.as_slice::<f32>().expect("contiguous f32 logits");
        let (st, g) = (f32_vec(stats), f32_vec(grad));
        let out = token_stats_backward_slice(x, &lab, &st, &g, v, inv_temperature);
        FlexTensor::from_data(TensorData::new(out, [n, v]))
    }

    fn gae(
        rewards: FlexTensor,
        values: FlexTensor,
        mask: FlexTensor,
        gamma: f32,
        lambda: f32,
    ) -> FlexTensor {
        count(2);
        let (rewards, b, t) = contiguous_f32(rewards);
        let (values, mask) = (contiguous_f32(values).0, contiguous_f32(mask).0);
        fn slice(x: &FlexTensor) -> &[f32] {
            x.as_slice::<f32>().expect("contiguous f32")
        }
        let out = if t == 0 || b == 0 {
            Vec::new()
        } else {
            gae_slice(
                slice(&rewards),
                slice(&values),
                slice(&mask),
                t,
                gamma,
                lambda,
            )
        };
        FlexTensor::from_data(TensorData::new(out, [2, b, t]))
    }
}

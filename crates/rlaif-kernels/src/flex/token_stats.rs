//! The fused token statistics (log-prob, entropy, log-partition) of tempered logits, forward
//! and backward, on `[N, V]` float32 rows.
//!
//! The forward makes one pass over each row: the row is cut into chunks that fit in L1; per
//! chunk, a max pass and an exp pass run out of cache, and a running
//! (max, Σ e^{z'−max}, Σ e^{z'−max}(z'−max)) triple is rescaled when the max grows (the
//! "online softmax" of Milakov & Gimelshein 2018). So the logits are read from memory once,
//! each logit costs one exponential, and nothing of size `[N, V]` is written. Rows run in
//! parallel on rayon. The backward recomputes `p = exp(z' − lse)` from the logits and the saved
//! per-row statistics and writes the `[N, V]` gradient once.
//!
//! The row functions are compiled for each [`Isa`] and picked at run time (see
//! [`crate::simd`]).

use super::huge_page_buffer::zeroed_output;
use crate::simd::{Isa, LANES, clamp_low, exp_core, fast_exp, fmadd, isa, prefetch};
use rayon::prelude::*;

/// Logits per chunk of a row: 4096 f32 = 16 KiB, which stays in L1 between the max pass and
/// the exp pass.
const CHUNK: usize = 4096;

/// How far ahead (in floats) the backward prefetches the logits it reads.
const PREFETCH_AHEAD: usize = 1024;

/// Running statistics of one row, relative to the running max `m` of `z' = s·z`:
/// `sum = Σ e^{z'−m}`, `wsum = Σ e^{z'−m}(z'−m)`.
#[derive(Clone, Copy)]
struct RowAcc {
    m: f32,
    sum: f32,
    wsum: f32,
}

/// One row's `[lp, entropy, lse]` (see [`RlKernels::token_stats`](crate::RlKernels::token_stats)).
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

/// One row of the gradient (see [`RlKernels::token_stats_backward`](crate::RlKernels::token_stats_backward)).
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

//! The backward of grouped-query attention, `O = softmax(q kᵀ / √d + bias) v`, for training:
//! the gradients of `Σ dO · O` with respect to `q`, `k` and `v`, skipping the key tiles that
//! the bias masks for a query (the upper half of a causal mask), as the forward does.
//!
//! With `s_rj = q_r · k_j / √d + bias_rj`, `P = softmax_j(s)`, `dO` the gradient of the
//! output and `δ_r = dO_r · O_r` (Dao 2023, FlashAttention-2, Algorithm 2; Dao et al. 2022,
//! Appendix B.2):
//!
//! - `P_rj = exp(s_rj − lse_r)`, from the forward's log-sum-exp `lse_r` (never stored as a
//!   matrix);
//! - `dV_j = Σ_r P_rj dO_r`;
//! - `dP_rj = dO_r · v_j`, `dS_rj = P_rj (dP_rj − δ_r)`;
//! - `dQ_r = Σ_j dS_rj k_j / √d`, `dK_j = Σ_r dS_rj q_r / √d`.
//!
//! One task per sequence and key/value group holds the group's `n_rep · s` query rows (the
//! `n_rep` query heads that share its keys, as in the forward), so its `dK` and `dV` are its
//! own and need no reduction across tasks. Per tile of 64 keys it copies the keys transposed
//! (for the scores), the values transposed (for `dP`) and the keys as rows (for `dQ`); per
//! query row that sees the tile it computes the scores, `P`, `dP` and `dS` in 16-lane
//! registers and adds `dS · K` to the row's `dQ`; then `dV += Pᵀ dO` and `dK += dSᵀ q` over
//! the tile's active rows, two keys at a time. Every gradient is computed by one task in a
//! fixed order, so the results do not depend on the number of threads.

use super::attention::{Dims, KEY_TILE, VECS, accumulate, ranges, scores};
use crate::simd::{Isa, LANES, fast_exp, fmadd, isa};
use rayon::prelude::*;

/// Below this many multiply-adds (`b·h·s·t·d`) the backward runs on the calling thread.
const PARALLEL_WORK: usize = 1 << 20;

/// The inputs every task shares: all contiguous, `q`, `out`, `grad: [b, h, s, d]`,
/// `k`, `v: [b, g, t, d]`, `bias: [b, 1, s, t]`, `lse: [b, h, s]`.
struct Inputs<'a> {
    q: &'a [f32],
    k: &'a [f32],
    v: &'a [f32],
    bias: &'a [f32],
    grad: &'a [f32],
    lse: &'a [f32],
    /// `δ = Σ_c dO · O` per query row, `[b, h, s]`.
    delta: &'a [f32],
    /// Per bias row, the first and one past the last unmasked key.
    ranges: &'a [(usize, usize)],
    dims: Dims,
    /// `d` rounded up to a multiple of 64.
    dp: usize,
    /// `1 / √d`.
    scale: f32,
}

/// The gradients `(dq, dk, dv)` of `Σ grad · attention(q, k, v, bias)`, shapes as `q`, `k`,
/// `v`, packed one after the other in one vector. `out` is the forward's output and `lse`
/// its per-row log-sum-exp of the scores (`-inf` for a row whose bias masks every key: its
/// output was zeros and it contributes nothing).
///
/// # Panics
/// If a slice does not hold its shape or `h` is not a multiple of `g`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn attention_backward(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    bias: &[f32],
    out: &[f32],
    lse: &[f32],
    grad: &[f32],
    dims: Dims,
) -> Vec<f32> {
    let Dims { b, h, g, s, t, d } = dims;
    assert!(
        g > 0 && h % g == 0,
        "attention backward: {h} query heads, {g} key/value heads"
    );
    let (nq, nkv) = (b * h * s * d, b * g * t * d);
    assert_eq!(q.len(), nq, "attention backward: q is not [b, h, s, d]");
    assert_eq!(out.len(), nq, "attention backward: out is not [b, h, s, d]");
    assert_eq!(
        grad.len(),
        nq,
        "attention backward: grad is not [b, h, s, d]"
    );
    assert_eq!(k.len(), nkv, "attention backward: k is not [b, g, t, d]");
    assert_eq!(v.len(), nkv, "attention backward: v is not [b, g, t, d]");
    assert_eq!(
        bias.len(),
        b * s * t,
        "attention backward: bias is not [b, 1, s, t]"
    );
    assert_eq!(
        lse.len(),
        b * h * s,
        "attention backward: lse is not [b, h, s]"
    );
    let mut packed = vec![0f32; nq + 2 * nkv];
    if nq == 0 || t == 0 {
        return packed;
    }
    let parallel = b * h * s * t * d >= PARALLEL_WORK;
    let ranges = ranges(bias, t, parallel);
    let delta: Vec<f32> = if parallel {
        out.par_chunks(d)
            .zip(grad.par_chunks(d))
            .map(row_dot)
            .collect()
    } else {
        out.chunks(d).zip(grad.chunks(d)).map(row_dot).collect()
    };
    let inputs = Inputs {
        q,
        k,
        v,
        bias,
        grad,
        lse,
        delta: &delta,
        ranges: &ranges,
        dims,
        dp: d.div_ceil(KEY_TILE) * KEY_TILE,
        scale: 1.0 / (d as f32).sqrt(),
    };
    let isa = isa();
    let task = |bg: usize| run_task(isa, &inputs, bg / g, bg % g);
    let results: Vec<Grads> = if parallel {
        (0..b * g).into_par_iter().map(task).collect()
    } else {
        (0..b * g).map(task).collect()
    };
    let n_rep = h / g;
    let (dq, rest) = packed.split_at_mut(nq);
    let (dk, dv) = rest.split_at_mut(nkv);
    for (bg, r) in results.iter().enumerate() {
        let (bi, gi) = (bg / g, bg % g);
        // the group's rows rep · s + i are query head gi · n_rep + rep, contiguous in dq
        let q0 = (bi * h + gi * n_rep) * s * d;
        dq[q0..q0 + n_rep * s * d].copy_from_slice(&r.dq);
        let kv0 = (bi * g + gi) * t * d;
        dk[kv0..kv0 + t * d].copy_from_slice(&r.dk);
        dv[kv0..kv0 + t * d].copy_from_slice(&r.dv);
    }
    packed
}

/// `Σ_c a_c b_c` of one row (`δ = dO · O`).
fn row_dot((a, b): (&[f32], &[f32])) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// One task's gradients: `dq: [n_rep, s, d]` (its query heads), `dk`, `dv: [t, d]`.
struct Grads {
    dq: Vec<f32>,
    dk: Vec<f32>,
    dv: Vec<f32>,
}

/// One task on the best instruction set of this CPU.
fn run_task(isa: Isa, x: &Inputs, bi: usize, gi: usize) -> Grads {
    match isa {
        // SAFETY: the features were detected at run time in `isa()`.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { task_avx512(x, bi, gi) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { task_avx2(x, bi, gi) },
        Isa::Baseline => task_impl::<false>(x, bi, gi),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx512dq,avx2,fma")]
fn task_avx512(x: &Inputs, bi: usize, gi: usize) -> Grads {
    task_impl::<true>(x, bi, gi)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn task_avx2(x: &Inputs, bi: usize, gi: usize) -> Grads {
    task_impl::<true>(x, bi, gi)
}

/// The gradients of sequence `bi`, key/value group `gi`.
#[inline(always)]
fn task_impl<const FMA: bool>(x: &Inputs, bi: usize, gi: usize) -> Grads {
    let Dims { h, g, s, t, d, .. } = x.dims;
    let (n_rep, dp) = (h / g, x.dp);
    let rows = n_rep * s;
    // row r = rep · s + i: query head gi · n_rep + rep at position i; q pre-scaled by 1/√d,
    // rows padded to dp with zeros
    let head0 = bi * h + gi * n_rep;
    let mut qs = vec![0f32; rows * dp];
    let mut gs = vec![0f32; rows * dp];
    for r in 0..rows {
        let src = (head0 * s + r) * d;
        for (o, &a) in qs[r * dp..][..d].iter_mut().zip(&x.q[src..src + d]) {
            *o = a * x.scale;
        }
        gs[r * dp..][..d].copy_from_slice(&x.grad[src..src + d]);
    }
    let lse = &x.lse[head0 * s..][..rows];
    let delta = &x.delta[head0 * s..][..rows];
    let range = |r: usize| x.ranges[bi * s + r % s];
    let lo = (0..s).map(|i| x.ranges[bi * s + i].0).min().unwrap_or(t);
    let hi = (0..s).map(|i| x.ranges[bi * s + i].1).max().unwrap_or(0);
    let mut dq = vec![0f32; rows * dp];
    let mut dk = vec![0f32; t * d];
    let mut dv = vec![0f32; t * d];
    let mut kt = vec![0f32; dp * KEY_TILE]; // keys transposed, [dp, 64]
    let mut vt = vec![0f32; dp * KEY_TILE]; // values transposed, [dp, 64]
    let mut kr = vec![0f32; KEY_TILE * dp]; // keys as rows, [64, dp]
    // per active row of a tile: its index, P and dS over the tile's 64 keys
    let mut active: Vec<usize> = Vec::with_capacity(rows);
    let mut p_rows: Vec<[f32; KEY_TILE]> = Vec::with_capacity(rows);
    let mut ds_rows: Vec<[f32; KEY_TILE]> = Vec::with_capacity(rows);
    let kvb = (bi * g + gi) * t * d;
    let mut j0 = lo / KEY_TILE * KEY_TILE;
    while j0 < hi {
        let n = KEY_TILE.min(t - j0);
        let (keys, values) = (&x.k[kvb + j0 * d..][..n * d], &x.v[kvb + j0 * d..][..n * d]);
        kt.fill(0.0);
        vt.fill(0.0);
        kr.fill(0.0);
        for jj in 0..n {
            for c in 0..d {
                kt[c * KEY_TILE + jj] = keys[jj * d + c];
                vt[c * KEY_TILE + jj] = values[jj * d + c];
            }
            kr[jj * dp..][..d].copy_from_slice(&keys[jj * d..(jj + 1) * d]);
        }
        active.clear();
        p_rows.clear();
        ds_rows.clear();
        for r in 0..rows {
            let (rlo, rhi) = range(r);
            if rhi <= j0 || rlo >= j0 + n || lse[r] == f32::NEG_INFINITY {
                continue; // the bias masks this tile (or every key) for this row
            }
            let i = r % s;
            let bias = &x.bias[(bi * s + i) * t + j0..][..n];
            let mut p = scores::<FMA>(&qs[r * dp..(r + 1) * dp], &kt);
            for (pj, &bj) in p[..n].iter_mut().zip(bias) {
                *pj = fast_exp::<FMA>(*pj + bj - lse[r]); // 0 where masked
            }
            p[n..].fill(0.0);
            let dpr = scores::<FMA>(&gs[r * dp..(r + 1) * dp], &vt);
            let mut ds = [0f32; KEY_TILE];
            for w in 0..VECS {
                for lane in 0..LANES {
                    let j = w * LANES + lane;
                    ds[j] = p[j] * (dpr[j] - delta[r]);
                }
            }
            accumulate::<FMA>(&mut dq[r * dp..(r + 1) * dp], &ds, &kr, 1.0);
            active.push(r);
            p_rows.push(p);
            ds_rows.push(ds);
        }
        // dV_j += Σ_r P_rj dO_r, dK_j += Σ_r dS_rj q_r / √d over the active rows
        transposed_product::<FMA>(&p_rows, &active, &gs, dp, &mut dv[j0 * d..], d, n);
        transposed_product::<FMA>(&ds_rows, &active, &qs, dp, &mut dk[j0 * d..], d, n);
        j0 += KEY_TILE;
    }
    // dQ_r = Σ_j dS_rj k_j / √d, unpadded
    let mut dq_rows = vec![0f32; rows * d];
    for r in 0..rows {
        for (o, &a) in dq_rows[r * d..(r + 1) * d].iter_mut().zip(&dq[r * dp..]) {
            *o = a * x.scale;
        }
    }
    Grads {
        dq: dq_rows,
        dk,
        dv,
    }
}

/// `out[j] += Σ_a w[a][j] · rows[active[a]]` for the `n` keys `j` of a tile (`out: [n, d]`
/// rows of `d`, `rows: [·, dp]`): two keys and 64 dimensions (eight registers) at a time, so
/// that each row of `rows` is loaded once per pair of keys.
#[inline(always)]
fn transposed_product<const FMA: bool>(
    w: &[[f32; KEY_TILE]],
    active: &[usize],
    rows: &[f32],
    dp: usize,
    out: &mut [f32],
    d: usize,
    n: usize,
) {
    if active.is_empty() {
        return;
    }
    for j in (0..n).step_by(2) {
        let pair = (n - j).min(2);
        let j1 = (j + 1).min(KEY_TILE - 1); // a lone last key reads a spare weight
        for c0 in (0..d).step_by(KEY_TILE) {
            let mut acc = [[[0f32; LANES]; VECS]; 2];
            for (wa, &r) in w.iter().zip(active) {
                let row = &rows[r * dp + c0..r * dp + c0 + KEY_TILE];
                let (w0, w1) = (wa[j], wa[j1]);
                for v in 0..VECS {
                    for lane in 0..LANES {
                        let x = row[v * LANES + lane];
                        acc[0][v][lane] = fmadd::<FMA>(w0, x, acc[0][v][lane]);
                        acc[1][v][lane] = fmadd::<FMA>(w1, x, acc[1][v][lane]);
                    }
                }
            }
            let width = KEY_TILE.min(d - c0);
            for (jj, a) in acc.iter().enumerate().take(pair) {
                let dst = &mut out[(j + jj) * d + c0..][..width];
                for (c, o) in dst.iter_mut().enumerate() {
                    *o += a[c / LANES][c % LANES];
                }
            }
        }
    }
}

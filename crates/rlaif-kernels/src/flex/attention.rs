//! Grouped-query attention for inference: `softmax(q kᵀ / √D + bias) v`, the query heads of a
//! key/value group read that group's keys and values in place, and key tiles that the bias
//! masks for a whole block of queries are skipped (the upper half of a causal prefill).
//!
//! Work is split into tasks of one sequence, one key/value group and a block of query
//! positions: the `n_rep` query heads of the group at those positions form the block's rows,
//! so each key tile is read once for all of them. Per tile (64 keys) the kernel
//!
//! 1. copies the tile's keys transposed (`[D, 64]`) and values (`[64, D]`), zero-padded to a
//!    multiple of 64 dimensions, so that every inner loop runs over whole registers (the copy
//!    pays for itself over many rows; a decoding step, with `H / G` rows per position, is
//!    left to Burn's attention by [`crate::attention()`]);
//! 2. per row, computes the 64 scores with four 16-lane accumulators, adds the bias, and
//!    updates the online softmax (Milakov & Gimelshein 2018; Dao et al. 2022, FlashAttention
//!    Algorithm 1): running maximum `m`, running sum `l`, output rescaled by `exp(m_old − m)`;
//! 3. adds `Σ_j p_j v_j` to the row's output with four independent accumulators.
//!
//! A query row only visits the tiles that hold a key its bias does not mask (each row's
//! range of unmasked keys is found once per call); a bias entry at or below `f32::MIN`
//! (including `-inf`) counts as masked. Each output is computed by one task in a fixed order,
//! so results do not depend on the number of threads (small calls run on the calling thread). Exponentials are
//! [`crate::simd::fast_exp`] (relative error ≈ 1e-7).

use crate::simd::{Isa, LANES, fast_exp, fmadd, isa};
use rayon::prelude::*;

/// Keys per tile: four 16-lane registers of scores per row.
const KEY_TILE: usize = 64;
/// Registers per tile row (`KEY_TILE / LANES`), and per 64 padded dimensions.
const VECS: usize = KEY_TILE / LANES;
/// Rows (query heads × positions) a task aims for: enough to reuse each key tile, few enough
/// that a causal prefill has many tasks to balance over the threads.
const TARGET_ROWS: usize = 64;
/// Below this many multiply-adds (`b·h·s·t·d`) a call runs on the calling thread: waking the
/// rayon workers costs more than splitting saves (a decoding step at short context).
const PARALLEL_WORK: usize = 1 << 21;

/// The shapes of one call: `q: [b, h, s, d]`, `k, v: [b, g, t, d]`, `bias: [b, 1, s, t]`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Dims {
    /// Sequences.
    pub b: usize,
    /// Query heads (a multiple of `g`).
    pub h: usize,
    /// Key/value heads.
    pub g: usize,
    /// Query positions.
    pub s: usize,
    /// Key positions.
    pub t: usize,
    /// Head width.
    pub d: usize,
}

/// The read-only inputs every task shares.
struct Inputs<'a> {
    q: &'a [f32],
    k: &'a [f32],
    v: &'a [f32],
    bias: &'a [f32],
    /// Per bias row (`b · s` of them), the first and one past the last unmasked key
    /// (`lo ≥ hi` when the row masks every key).
    ranges: &'a [(usize, usize)],
    dims: Dims,
    /// Query positions per task.
    block: usize,
    /// `d` rounded up to a multiple of 64.
    dp: usize,
    /// `1 / √d`.
    scale: f32,
}

/// Whether a bias entry masks its key.
#[inline(always)]
fn masked(x: f32) -> bool {
    x <= f32::MIN
}

/// The first and one past the last unmasked key of a bias row.
fn key_range(row: &[f32]) -> (usize, usize) {
    match row.iter().position(|&x| !masked(x)) {
        Some(lo) => (
            lo,
            row.iter().rposition(|&x| !masked(x)).map_or(lo, |i| i) + 1,
        ),
        None => (row.len(), row.len()),
    }
}

/// `softmax(q kᵀ / √d + bias) v` for the shapes of `dims` (row-major, contiguous slices);
/// returns `[b, h, s, d]`. A query row whose bias masks every key gets zeros.
///
/// # Panics
/// If a slice does not hold its shape or `h` is not a multiple of `g`.
pub(crate) fn attention(q: &[f32], k: &[f32], v: &[f32], bias: &[f32], dims: Dims) -> Vec<f32> {
    let Dims { b, h, g, s, t, d } = dims;
    assert!(
        g > 0 && h % g == 0,
        "attention: {h} query heads, {g} key/value heads"
    );
    assert_eq!(q.len(), b * h * s * d, "attention: q is not [b, h, s, d]");
    assert_eq!(k.len(), b * g * t * d, "attention: k is not [b, g, t, d]");
    assert_eq!(v.len(), k.len(), "attention: v is not [b, g, t, d]");
    assert_eq!(bias.len(), b * s * t, "attention: bias is not [b, 1, s, t]");
    let mut out = vec![0f32; q.len()];
    if out.is_empty() || t == 0 {
        return out;
    }
    let parallel = b * h * s * t * d >= PARALLEL_WORK;
    let ranges: Vec<(usize, usize)> = if parallel {
        bias.par_chunks(t).map(key_range).collect()
    } else {
        bias.chunks(t).map(key_range).collect()
    };
    let n_rep = h / g;
    let block = TARGET_ROWS.div_ceil(n_rep).clamp(1, s);
    let inputs = Inputs {
        q,
        k,
        v,
        bias,
        ranges: &ranges,
        dims,
        block,
        dp: d.div_ceil(KEY_TILE) * KEY_TILE,
        scale: 1.0 / (d as f32).sqrt(),
    };
    let blocks = s.div_ceil(block);
    let isa = isa();
    // tasks (sequence, group, query block), each returning its rows [n_rep, len, d]
    let task = |task: usize| {
        let (bg, blk) = (task / blocks, task % blocks);
        run_task(isa, &inputs, bg / g, bg % g, blk)
    };
    let results: Vec<Vec<f32>> = if parallel {
        (0..b * g * blocks).into_par_iter().map(task).collect()
    } else {
        (0..b * g * blocks).map(task).collect()
    };
    for (task, rows) in results.iter().enumerate() {
        let (bg, blk) = (task / blocks, task % blocks);
        let (bi, gi) = (bg / g, bg % g);
        let (p0, len) = (blk * block, block.min(s - blk * block));
        for rep in 0..n_rep {
            let head = gi * n_rep + rep;
            let dst = ((bi * h + head) * s + p0) * d;
            out[dst..dst + len * d].copy_from_slice(&rows[rep * len * d..(rep + 1) * len * d]);
        }
    }
    out
}

/// One task on the best instruction set of this CPU.
fn run_task(isa: Isa, x: &Inputs, bi: usize, gi: usize, blk: usize) -> Vec<f32> {
    match isa {
        // SAFETY: the features were detected at run time in `isa()`.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { task_avx512(x, bi, gi, blk) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { task_avx2(x, bi, gi, blk) },
        Isa::Baseline => task_impl::<false>(x, bi, gi, blk),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx512dq,avx2,fma")]
fn task_avx512(x: &Inputs, bi: usize, gi: usize, blk: usize) -> Vec<f32> {
    task_impl::<true>(x, bi, gi, blk)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn task_avx2(x: &Inputs, bi: usize, gi: usize, blk: usize) -> Vec<f32> {
    task_impl::<true>(x, bi, gi, blk)
}

/// The rows of sequence `bi`, group `gi`, query block `blk`: `[n_rep, len, d]`.
#[inline(always)]
fn task_impl<const FMA: bool>(x: &Inputs, bi: usize, gi: usize, blk: usize) -> Vec<f32> {
    let Dims { h, g, s, t, d, .. } = x.dims;
    let (n_rep, dp) = (h / g, x.dp);
    let (p0, len) = (blk * x.block, x.block.min(s - blk * x.block));
    let rows = n_rep * len;
    // row r = rep · len + i: query head gi · n_rep + rep at position p0 + i, pre-scaled
    let mut qs = vec![0f32; rows * dp];
    for rep in 0..n_rep {
        for i in 0..len {
            let src = ((bi * h + gi * n_rep + rep) * s + p0 + i) * d;
            let dst = &mut qs[(rep * len + i) * dp..][..d];
            for (o, &q) in dst.iter_mut().zip(&x.q[src..src + d]) {
                *o = q * x.scale;
            }
        }
    }
    let range = |i: usize| x.ranges[bi * s + p0 + i];
    let lo = (0..len).map(|i| range(i).0).min().unwrap_or(t);
    let hi = (0..len).map(|i| range(i).1).max().unwrap_or(0);
    let mut out = vec![0f32; rows * dp];
    let mut m = vec![f32::NEG_INFINITY; rows];
    let mut l = vec![0f32; rows];
    let mut kt = vec![0f32; dp * KEY_TILE]; // keys transposed, [dp, 64]
    let mut vt = vec![0f32; KEY_TILE * dp]; // values, [64, dp]
    let kv = (bi * g + gi) * t * d;
    let mut j0 = lo / KEY_TILE * KEY_TILE;
    while j0 < hi {
        let n = KEY_TILE.min(t - j0);
        let (keys, values) = (&x.k[kv + j0 * d..][..n * d], &x.v[kv + j0 * d..][..n * d]);
        for jj in 0..KEY_TILE {
            for c in 0..d {
                let (kx, vx) = if jj < n {
                    (keys[jj * d + c], values[jj * d + c])
                } else {
                    (0.0, 0.0)
                };
                kt[c * KEY_TILE + jj] = kx;
                vt[jj * dp + c] = vx;
            }
        }
        for r in 0..rows {
            let i = r % len;
            let (rlo, rhi) = range(i);
            if rhi <= j0 || rlo >= j0 + n {
                continue; // the bias masks this tile for this row
            }
            let bias = &x.bias[(bi * s + p0 + i) * t + j0..][..n];
            let mut p = scores::<FMA>(&qs[r * dp..(r + 1) * dp], &kt);
            for (pj, &bj) in p[..n].iter_mut().zip(bias) {
                *pj += bj;
            }
            p[n..].fill(f32::NEG_INFINITY);
            let tile_max = p.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
            if tile_max == f32::NEG_INFINITY {
                continue;
            }
            let new_m = m[r].max(tile_max);
            let correction = fast_exp::<FMA>(m[r] - new_m); // 0 on the row's first tile
            let mut sum = [0f32; LANES];
            for c in p.chunks_exact_mut(LANES) {
                for lane in 0..LANES {
                    c[lane] = fast_exp::<FMA>(c[lane] - new_m);
                    sum[lane] += c[lane];
                }
            }
            l[r] = l[r] * correction + sum.iter().sum::<f32>();
            m[r] = new_m;
            accumulate::<FMA>(&mut out[r * dp..(r + 1) * dp], &p, &vt, correction);
        }
        j0 += KEY_TILE;
    }
    // [n_rep, len, d], normalised
    let mut rows_out = vec![0f32; rows * d];
    for r in 0..rows {
        let inv = if l[r] > 0.0 { 1.0 / l[r] } else { 0.0 };
        for (o, &a) in rows_out[r * d..(r + 1) * d].iter_mut().zip(&out[r * dp..]) {
            *o = a * inv;
        }
    }
    rows_out
}

/// The 64 scores `q · k_j` of one row against a transposed key tile `kt: [dp, 64]`.
#[inline(always)]
fn scores<const FMA: bool>(q: &[f32], kt: &[f32]) -> [f32; KEY_TILE] {
    let mut acc = [[0f32; LANES]; VECS];
    for (c, &qc) in q.iter().enumerate() {
        let row = &kt[c * KEY_TILE..(c + 1) * KEY_TILE];
        for w in 0..VECS {
            for lane in 0..LANES {
                acc[w][lane] = fmadd::<FMA>(qc, row[w * LANES + lane], acc[w][lane]);
            }
        }
    }
    let mut p = [0f32; KEY_TILE];
    for w in 0..VECS {
        p[w * LANES..(w + 1) * LANES].copy_from_slice(&acc[w]);
    }
    p
}

/// `o ← o · correction + Σ_j p_j · vt[j]` for one row (`o: [dp]`, `vt: [64, dp]`), 64
/// dimensions (four registers, four independent chains) at a time.
#[inline(always)]
fn accumulate<const FMA: bool>(o: &mut [f32], p: &[f32; KEY_TILE], vt: &[f32], correction: f32) {
    let dp = o.len();
    for c0 in (0..dp).step_by(KEY_TILE) {
        let mut acc = [[0f32; LANES]; VECS];
        for w in 0..VECS {
            for lane in 0..LANES {
                acc[w][lane] = o[c0 + w * LANES + lane] * correction;
            }
        }
        for (j, &pj) in p.iter().enumerate() {
            let row = &vt[j * dp + c0..j * dp + c0 + KEY_TILE];
            for w in 0..VECS {
                for lane in 0..LANES {
                    acc[w][lane] = fmadd::<FMA>(pj, row[w * LANES + lane], acc[w][lane]);
                }
            }
        }
        for w in 0..VECS {
            o[c0 + w * LANES..c0 + (w + 1) * LANES].copy_from_slice(&acc[w]);
        }
    }
}

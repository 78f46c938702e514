//! Grouped-query attention for inference: `softmax(q kᵀ / √D + bias) v`, the query heads of a
//! key/value group read that group's keys and values in place, and key tiles that the bias
//! masks for a whole block of queries are skipped (the upper half of a causal prefill).
//!
//! Keys and values are read where they lie: each key/value head is `t` contiguous rows of `d`
//! at an offset given by a batch and a group stride ([`KvLayout`]), so a KV cache with room
//! for more positions than it holds is read in place, without being copied to a contiguous
//! tensor first.
//!
//! **Decoding** (at most [`crate::FUSED_MIN_ROWS`] query rows per key/value group: a few new
//! positions times `H / G` query heads) runs one task per query head: the scores of its rows
//! against every visible key, read straight from the cache, an exact softmax (maximum, then
//! exponentials and their sum), and `Σ_j p_j v_j` over the value rows. Nothing is copied.
//!
//! **Prefill and scoring** (more rows per group) split the work into tasks of one sequence, one
//! key/value group and a block of query positions: the `n_rep` query heads of the group at
//! those positions form the block's rows, so each key tile is read once for all of them.
//! Once per call, every tile (64 keys) of every head is copied with its keys transposed
//! (`[D, 64]`) and its values (`[64, D]`), zero-padded to a multiple of 64 dimensions, so that
//! every inner loop runs over whole registers (the copy pays for itself over many rows; a
//! decoding step, with `H / G` rows per position, takes the in-place path above). Per tile
//! the kernel
//!
//! 1. per row, computes the 64 scores with four 16-lane accumulators, adds the bias, and
//!    updates the online softmax (Milakov & Gimelshein 2018; Dao et al. 2022, FlashAttention
//!    Algorithm 1): running maximum `m`, running sum `l`, output rescaled by `exp(m_old − m)`;
//! 2. adds `Σ_j p_j v_j` to the row's output with four independent accumulators.
//!
//! On AVX-512, rows that all visit a tile go through it six at a time ([`GROUP_ROWS`]), with
//! each key or value register serving all six.
//!
//! A query row only visits the tiles that hold a key its bias does not mask (each row's
//! range of unmasked keys is found once per call); a bias entry at or below `f32::MIN`
//! (including `-inf`) counts as masked. Each output is computed by one task in a fixed order,
//! so results do not depend on the number of threads (small calls run on the calling
//! thread). Exponentials are [`crate::simd::fast_exp`] (relative error ≈ 1e-7).

use crate::simd::{Isa, LANES, fast_exp, fmadd, isa};
use rayon::prelude::*;

/// Keys per tile: four 16-lane registers of scores per row.
pub(super) const KEY_TILE: usize = 64;
/// Registers per tile row (`KEY_TILE / LANES`), and per 64 padded dimensions.
pub(super) const VECS: usize = KEY_TILE / LANES;
/// Rows (query heads × positions) a task aims for: enough to reuse each key tile, few enough
/// that a causal prefill has many tasks to balance over the threads.
const TARGET_ROWS: usize = 64;
/// Below this many multiply-adds (`b·h·s·t·d`) a call runs on the calling thread: waking the
/// rayon workers costs more than splitting saves (a decoding step at short context).
const PARALLEL_WORK: usize = 1 << 21;
/// The same for a decoding step, whose tasks copy nothing: from a few hundred cached
/// positions on, splitting the query heads across threads pays.
const DECODE_PARALLEL_WORK: usize = 1 << 17;

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

/// Where the key (or value) rows of each head lie in their buffer: head `gi` of sequence `bi`
/// is `t` contiguous rows of `d` values from `offset + bi · batch + gi · group`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct KvLayout {
    /// The first value of head 0 of sequence 0.
    pub offset: usize,
    /// Values between one sequence's heads and the next's.
    pub batch: usize,
    /// Values between one head and the next.
    pub group: usize,
}

impl KvLayout {
    /// A contiguous `[b, g, t, d]` buffer.
    pub(crate) fn contiguous(dims: Dims) -> Self {
        Self {
            offset: 0,
            batch: dims.g * dims.t * dims.d,
            group: dims.t * dims.d,
        }
    }

    /// The first value of head `gi` of sequence `bi`.
    fn start(&self, bi: usize, gi: usize) -> usize {
        self.offset + bi * self.batch + gi * self.group
    }

    /// Whether every head's `t · d` values lie inside a buffer of `len` values.
    fn fits(&self, dims: Dims, len: usize) -> bool {
        dims.b == 0 || dims.g == 0 || self.start(dims.b - 1, dims.g - 1) + dims.t * dims.d <= len
    }
}

/// The read-only inputs every task shares.
struct Inputs<'a> {
    q: &'a [f32],
    k: &'a [f32],
    v: &'a [f32],
    /// Where the heads of `k` and of `v` lie.
    k_layout: KvLayout,
    v_layout: KvLayout,
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

/// `softmax(q kᵀ / √d + bias) v` for the shapes of `dims`: `q` and `bias` row-major and
/// contiguous, `k` and `v` heads of `t` contiguous rows where their layouts say; returns
/// `[b, h, s, d]`. A query row whose bias masks every key gets zeros.
///
/// # Panics
/// If a slice does not hold its shape or `h` is not a multiple of `g`.
pub(crate) fn attention(
    q: &[f32],
    (k, k_layout): (&[f32], KvLayout),
    (v, v_layout): (&[f32], KvLayout),
    bias: &[f32],
    dims: Dims,
) -> Vec<f32> {
    let Dims { b, h, g, s, t, d } = dims;
    check(q, (k, k_layout), (v, v_layout), bias, dims);
    if q.is_empty() || t == 0 {
        return vec![0f32; q.len()];
    }
    let parallel = b * h * s * t * d >= PARALLEL_WORK;
    let ranges = ranges(bias, t, parallel);
    let inputs = Inputs::new(q, (k, k_layout), (v, v_layout), bias, &ranges, dims);
    let n_rep = h / g;
    let isa = isa();
    if n_rep * s <= crate::FUSED_MIN_ROWS {
        let mut out = vec![0f32; q.len()];
        // decoding: one task per query head, [s, d] each, in the order of `out`
        let task = |task: usize| run_decode(isa, &inputs, task / h, task % h);
        let results: Vec<Vec<f32>> = if b * h * s * t * d >= DECODE_PARALLEL_WORK {
            (0..b * h).into_par_iter().map(task).collect()
        } else {
            (0..b * h).map(task).collect()
        };
        for (o, rows) in out.chunks_exact_mut(s * d).zip(&results) {
            o.copy_from_slice(rows);
        }
        return out;
    }
    let mut packed = tiled(isa, &inputs, parallel);
    packed.truncate(q.len()); // the output without its log-sum-exps
    packed
}

/// [`attention`] through the tiled path whatever the number of rows, with the log-sum-exp of
/// each query row's scores (`[b, h, s]`, `-inf` for a row whose bias masks every key): the
/// forward of training, whose backward
/// ([`attention_backward`](super::attention_backward::attention_backward)) rebuilds the
/// probabilities from it. Returns both in one vector, `out` then `lse`
/// (`[b·h·s·d + b·h·s]`), as the flex extension hands them over.
///
/// # Panics
/// As [`attention`].
pub(crate) fn attention_with_lse(
    q: &[f32],
    (k, k_layout): (&[f32], KvLayout),
    (v, v_layout): (&[f32], KvLayout),
    bias: &[f32],
    dims: Dims,
) -> Vec<f32> {
    let Dims { b, h, s, t, d, .. } = dims;
    check(q, (k, k_layout), (v, v_layout), bias, dims);
    if b * h * s * d == 0 || t == 0 {
        let mut packed = vec![0f32; b * h * s * d];
        packed.resize(b * h * s * (d + 1), f32::NEG_INFINITY);
        return packed;
    }
    let parallel = b * h * s * t * d >= PARALLEL_WORK;
    let ranges = ranges(bias, t, parallel);
    let inputs = Inputs::new(q, (k, k_layout), (v, v_layout), bias, &ranges, dims);
    tiled(isa(), &inputs, parallel)
}

/// The tiled path: tasks (sequence, group, query block); returns the output `[b, h, s, d]`
/// followed by the log-sum-exps `[b, h, s]` in one vector.
fn tiled(isa: Isa, inputs: &Inputs, parallel: bool) -> Vec<f32> {
    let Dims { b, h, g, s, d, .. } = inputs.dims;
    let (n_rep, block) = (h / g, inputs.block);
    let mut packed = vec![0f32; b * h * s * (d + 1)];
    let (out, lse) = packed.split_at_mut(b * h * s * d);
    let blocks = s.div_ceil(block);
    let tiles = Tiles::pack(inputs, parallel);
    // tasks (sequence, group, query block), each returning its rows [n_rep, len, d] and
    // their log-sum-exps [n_rep, len]
    let task = |task: usize| {
        let (bg, blk) = (task / blocks, task % blocks);
        run_task(isa, inputs, &tiles, bg / g, bg % g, blk)
    };
    let results: Vec<(Vec<f32>, Vec<f32>)> = if parallel {
        (0..b * g * blocks).into_par_iter().map(task).collect()
    } else {
        (0..b * g * blocks).map(task).collect()
    };
    for (task, (rows, row_lse)) in results.iter().enumerate() {
        let (bg, blk) = (task / blocks, task % blocks);
        let (bi, gi) = (bg / g, bg % g);
        let (p0, len) = (blk * block, block.min(s - blk * block));
        for rep in 0..n_rep {
            let head = gi * n_rep + rep;
            let dst = ((bi * h + head) * s + p0) * d;
            out[dst..dst + len * d].copy_from_slice(&rows[rep * len * d..(rep + 1) * len * d]);
            let dst = (bi * h + head) * s + p0;
            lse[dst..dst + len].copy_from_slice(&row_lse[rep * len..(rep + 1) * len]);
        }
    }
    packed
}

/// The shape checks of [`attention`] and [`attention_with_lse`].
fn check(
    q: &[f32],
    (k, kl): (&[f32], KvLayout),
    (v, vl): (&[f32], KvLayout),
    bias: &[f32],
    dims: Dims,
) {
    let Dims { b, h, g, s, t, d } = dims;
    assert!(
        g > 0 && h % g == 0,
        "attention: {h} query heads, {g} key/value heads"
    );
    assert_eq!(q.len(), b * h * s * d, "attention: q is not [b, h, s, d]");
    assert!(kl.fits(dims, k.len()), "attention: k is not [b, g, t, d]");
    assert!(vl.fits(dims, v.len()), "attention: v is not [b, g, t, d]");
    assert_eq!(bias.len(), b * s * t, "attention: bias is not [b, 1, s, t]");
}

/// Per bias row (rows of `t`), the first and one past the last unmasked key.
pub(super) fn ranges(bias: &[f32], t: usize, parallel: bool) -> Vec<(usize, usize)> {
    if parallel {
        bias.par_chunks(t).map(key_range).collect()
    } else {
        bias.chunks(t).map(key_range).collect()
    }
}

impl<'a> Inputs<'a> {
    /// The inputs of one call, with a query block of [`TARGET_ROWS`] rows.
    fn new(
        q: &'a [f32],
        (k, k_layout): (&'a [f32], KvLayout),
        (v, v_layout): (&'a [f32], KvLayout),
        bias: &'a [f32],
        ranges: &'a [(usize, usize)],
        dims: Dims,
    ) -> Self {
        let n_rep = dims.h / dims.g;
        Self {
            q,
            k,
            v,
            k_layout,
            v_layout,
            bias,
            ranges,
            dims,
            block: TARGET_ROWS.div_ceil(n_rep).clamp(1, dims.s),
            dp: dims.d.div_ceil(KEY_TILE) * KEY_TILE,
            scale: 1.0 / (dims.d as f32).sqrt(),
        }
    }
}

/// Every key tile of every (sequence, group) transposed (`[dp, 64]`) and every value tile
/// (`[64, dp]`), zero-padded to 64 keys and `dp` dimensions, so that the inner loops run over
/// whole registers. Made once per call and read by all the query blocks of the group: each
/// task copying the tiles it visits copied each tile once per block (47 times for a
/// 1024-token prefill), a fifth of the kernel's time.
struct Tiles {
    /// `[b · g, tiles, dp, 64]`.
    kt: Vec<f32>,
    /// `[b · g, tiles, 64, dp]`.
    vt: Vec<f32>,
    /// Key tiles per head: `⌈t / 64⌉`.
    per_head: usize,
    /// Floats per tile: `dp · 64`.
    size: usize,
}

impl Tiles {
    /// The tiles of `x`'s keys and values, one rayon task per head when `parallel`.
    fn pack(x: &Inputs, parallel: bool) -> Self {
        let Dims { b, g, t, d, .. } = x.dims;
        let (per_head, size) = (t.div_ceil(KEY_TILE), x.dp * KEY_TILE);
        let mut kt = vec![0f32; b * g * per_head * size];
        let mut vt = vec![0f32; b * g * per_head * size];
        let head = |(bg, (kt, vt)): (usize, (&mut [f32], &mut [f32]))| {
            let (kb, vb) = (
                x.k_layout.start(bg / g, bg % g),
                x.v_layout.start(bg / g, bg % g),
            );
            let (keys, values) = (&x.k[kb..][..t * d], &x.v[vb..][..t * d]);
            for (j, (key, value)) in keys.chunks_exact(d).zip(values.chunks_exact(d)).enumerate() {
                let (tile, jj) = (j / KEY_TILE, j % KEY_TILE);
                let kt = &mut kt[tile * size..][..size];
                for (c, &kx) in key.iter().enumerate() {
                    kt[c * KEY_TILE + jj] = kx;
                }
                vt[tile * size + jj * x.dp..][..d].copy_from_slice(value);
            }
        };
        let chunk = (per_head * size).max(1);
        if parallel {
            let heads = kt.par_chunks_mut(chunk).zip(vt.par_chunks_mut(chunk));
            heads.enumerate().for_each(head);
        } else {
            let heads = kt.chunks_mut(chunk).zip(vt.chunks_mut(chunk));
            heads.enumerate().for_each(head);
        }
        Self {
            kt,
            vt,
            per_head,
            size,
        }
    }

    /// Key tile `tile` of head `bg` (`bi · g + gi`) transposed, and its value tile.
    fn tile(&self, bg: usize, tile: usize) -> (&[f32], &[f32]) {
        let at = (bg * self.per_head + tile) * self.size;
        (&self.kt[at..][..self.size], &self.vt[at..][..self.size])
    }
}

/// One task on the best instruction set of this CPU.
fn run_task(
    isa: Isa,
    x: &Inputs,
    tiles: &Tiles,
    bi: usize,
    gi: usize,
    blk: usize,
) -> (Vec<f32>, Vec<f32>) {
    match isa {
        // SAFETY: the features were detected at run time in `isa()`.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { task_avx512(x, tiles, bi, gi, blk) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { task_avx2(x, tiles, bi, gi, blk) },
        Isa::Baseline => task_impl::<false, false>(x, tiles, bi, gi, blk),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx512dq,avx2,fma")]
fn task_avx512(
    x: &Inputs,
    tiles: &Tiles,
    bi: usize,
    gi: usize,
    blk: usize,
) -> (Vec<f32>, Vec<f32>) {
    task_impl::<true, true>(x, tiles, bi, gi, blk)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn task_avx2(x: &Inputs, tiles: &Tiles, bi: usize, gi: usize, blk: usize) -> (Vec<f32>, Vec<f32>) {
    task_impl::<true, false>(x, tiles, bi, gi, blk)
}

/// The rows of sequence `bi`, group `gi`, query block `blk`: `[n_rep, len, d]`, and their
/// log-sum-exps `[n_rep, len]` (`-inf` for a row whose bias masks every key). `WIDE` (the
/// AVX-512 path only) takes [`GROUP_ROWS`] rows at a time through the tiles that all of them
/// visit; the other rows, and every row elsewhere, go one at a time. Both give the same bits.
#[inline(always)]
fn task_impl<const FMA: bool, const WIDE: bool>(
    x: &Inputs,
    tiles: &Tiles,
    bi: usize,
    gi: usize,
    blk: usize,
) -> (Vec<f32>, Vec<f32>) {
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
    let mut j0 = lo / KEY_TILE * KEY_TILE;
    while j0 < hi {
        let n = KEY_TILE.min(t - j0);
        let (kt, vt) = tiles.tile(bi * g + gi, j0 / KEY_TILE);
        // whether the bias leaves row r a key in this tile
        let visits = |r: usize| {
            let (rlo, rhi) = range(r % len);
            rhi > j0 && rlo < j0 + n
        };
        let bias_of = |r: usize| &x.bias[(bi * s + p0 + r % len) * t + j0..][..n];
        let mut r = 0;
        while r < rows {
            #[cfg(target_arch = "x86_64")]
            if WIDE && r + GROUP_ROWS <= rows && (r..r + GROUP_ROWS).all(visits) {
                // GROUP_ROWS rows at once: each key and value register loaded serves all of
                // them, and their chains are independent (see `wide::scores_rows`)
                let q = &qs[r * dp..][..GROUP_ROWS * dp];
                // SAFETY: `WIDE` is true only on the AVX-512 path (`task_avx512`)
                let mut ps = unsafe { wide::scores_rows::<GROUP_ROWS>(q, kt) };
                let mut corrections = [None; GROUP_ROWS];
                for (gr, (p, c)) in ps.iter_mut().zip(&mut corrections).enumerate() {
                    *c = online_softmax::<FMA, WIDE>(
                        p,
                        bias_of(r + gr),
                        &mut m[r + gr],
                        &mut l[r + gr],
                    );
                }
                let o = &mut out[r * dp..][..GROUP_ROWS * dp];
                // SAFETY: as above
                unsafe { wide::accumulate_rows::<GROUP_ROWS>(o, &ps, vt, corrections) };
                r += GROUP_ROWS;
                continue;
            }
            if visits(r) {
                let mut p = scores::<FMA>(&qs[r * dp..(r + 1) * dp], kt);
                if let Some(c) =
                    online_softmax::<FMA, WIDE>(&mut p, bias_of(r), &mut m[r], &mut l[r])
                {
                    accumulate::<FMA>(&mut out[r * dp..(r + 1) * dp], &p, vt, c);
                }
            }
            r += 1;
        }
        j0 += KEY_TILE;
    }
    // [n_rep, len, d], normalised
    let mut rows_out = vec![0f32; rows * d];
    let mut lse = vec![f32::NEG_INFINITY; rows];
    for r in 0..rows {
        let inv = if l[r] > 0.0 { 1.0 / l[r] } else { 0.0 };
        for (o, &a) in rows_out[r * d..(r + 1) * d].iter_mut().zip(&out[r * dp..]) {
            *o = a * inv;
        }
        if l[r] > 0.0 {
            lse[r] = m[r] + l[r].ln();
        }
    }
    (rows_out, lse)
}

/// One decoding task on the best instruction set of this CPU.
fn run_decode(isa: Isa, x: &Inputs, bi: usize, hi: usize) -> Vec<f32> {
    match isa {
        // SAFETY: the features were detected at run time in `isa()`.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { decode_avx512(x, bi, hi) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { decode_avx2(x, bi, hi) },
        Isa::Baseline => decode_impl::<false>(x, bi, hi),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx512dq,avx2,fma")]
fn decode_avx512(x: &Inputs, bi: usize, hi: usize) -> Vec<f32> {
    // SAFETY: AVX-512F is enabled on this function.
    match x.dims.d {
        64 => unsafe { decode_registers::<4>(x, bi, hi) },
        128 => unsafe { decode_registers::<8>(x, bi, hi) },
        _ => decode_impl::<true>(x, bi, hi),
    }
}

/// [`decode_impl`] for a head width of `16 · V` with the query row and the output row held in
/// `V` registers each: scores sixteen keys at a time (independent chains), the exponentials
/// sixteen at a time, and `Σ_j p_j v_j` into two sets of accumulators (even and odd keys).
///
/// # Safety
/// AVX-512F must be available; `x.dims.d == 16 · V`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx512dq,avx2,fma")]
unsafe fn decode_registers<const V: usize>(x: &Inputs, bi: usize, hi: usize) -> Vec<f32> {
    use std::arch::x86_64::*;
    let Dims { h, g, s, t, d, .. } = x.dims;
    debug_assert_eq!(d, 16 * V);
    let gi = hi / (h / g);
    let (kb, vb) = (x.k_layout.start(bi, gi), x.v_layout.start(bi, gi));
    let mut out = vec![0f32; s * d];
    let mut p = vec![f32::NEG_INFINITY; t.next_multiple_of(LANES)];
    // SAFETY (every load below): key and value rows j < t lie inside `x.k` / `x.v` (checked
    // by `KvLayout::fits`), `q` rows inside `x.q`, and `p` holds t rounded up to 16.
    unsafe {
        for (i, o) in out.chunks_exact_mut(d).enumerate() {
            let qp = x.q.as_ptr().add(((bi * h + hi) * s + i) * d);
            let qv: [__m512; V] = std::array::from_fn(|c| {
                _mm512_mul_ps(_mm512_loadu_ps(qp.add(16 * c)), _mm512_set1_ps(x.scale))
            });
            let bias = &x.bias[(bi * s + i) * t..][..t];
            let (lo, hi) = x.ranges[bi * s + i];
            let mut max = f32::NEG_INFINITY;
            let mut j0 = lo;
            while j0 < hi {
                let n = LANES.min(hi - j0);
                for jj in 0..n {
                    let j = j0 + jj;
                    let kp = x.k.as_ptr().add(kb + j * d);
                    let mut acc = _mm512_mul_ps(qv[0], _mm512_loadu_ps(kp));
                    for (c, q) in qv.iter().enumerate().skip(1) {
                        acc = _mm512_fmadd_ps(*q, _mm512_loadu_ps(kp.add(16 * c)), acc);
                    }
                    let sj = if masked(bias[j]) {
                        f32::NEG_INFINITY
                    } else {
                        _mm512_reduce_add_ps(acc) + bias[j]
                    };
                    p[j] = sj;
                    max = max.max(sj);
                }
                j0 += n;
            }
            if max == f32::NEG_INFINITY {
                continue; // every key masked: zeros
            }
            let mut sum = 0f32;
            for pj in &mut p[lo..hi] {
                *pj = fast_exp::<true>(*pj - max); // 0 for a masked key
                sum += *pj;
            }
            let mut even = [_mm512_setzero_ps(); V];
            let mut odd = [_mm512_setzero_ps(); V];
            let mut j = lo;
            while j < hi {
                let vp = x.v.as_ptr().add(vb + j * d);
                let pj = _mm512_set1_ps(p[j]);
                for (c, a) in even.iter_mut().enumerate() {
                    *a = _mm512_fmadd_ps(pj, _mm512_loadu_ps(vp.add(16 * c)), *a);
                }
                if j + 1 < hi {
                    let vp = vp.add(d);
                    let pj = _mm512_set1_ps(p[j + 1]);
                    for (c, a) in odd.iter_mut().enumerate() {
                        *a = _mm512_fmadd_ps(pj, _mm512_loadu_ps(vp.add(16 * c)), *a);
                    }
                }
                j += 2;
            }
            let inv = _mm512_set1_ps(1.0 / sum);
            for c in 0..V {
                let r = _mm512_mul_ps(_mm512_add_ps(even[c], odd[c]), inv);
                _mm512_storeu_ps(o.as_mut_ptr().add(16 * c), r);
            }
        }
    }
    out
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn decode_avx2(x: &Inputs, bi: usize, hi: usize) -> Vec<f32> {
    decode_impl::<true>(x, bi, hi)
}

/// The `s` rows of query head `hi` of sequence `bi`, `[s, d]`: scores against the visible
/// keys read in place, an exact softmax, then the weighted sum of the value rows.
#[inline(always)]
fn decode_impl<const FMA: bool>(x: &Inputs, bi: usize, hi: usize) -> Vec<f32> {
    let Dims { h, g, s, t, d, .. } = x.dims;
    let gi = hi / (h / g);
    let (kb, vb) = (x.k_layout.start(bi, gi), x.v_layout.start(bi, gi));
    let mut out = vec![0f32; s * d];
    let mut p = vec![0f32; t];
    for (i, o) in out.chunks_exact_mut(d).enumerate() {
        let q = &x.q[((bi * h + hi) * s + i) * d..][..d];
        let bias = &x.bias[(bi * s + i) * t..][..t];
        let (lo, hi) = x.ranges[bi * s + i];
        let mut max = f32::NEG_INFINITY;
        for j in lo..hi {
            p[j] = if masked(bias[j]) {
                f32::NEG_INFINITY
            } else {
                dot::<FMA>(q, &x.k[kb + j * d..][..d]) * x.scale + bias[j]
            };
            max = max.max(p[j]);
        }
        if max == f32::NEG_INFINITY {
            continue; // every key masked: zeros
        }
        let mut sum = 0f32;
        for pj in &mut p[lo..hi] {
            *pj = fast_exp::<FMA>(*pj - max); // 0 for a masked key
            sum += *pj;
        }
        for (j, &pj) in p.iter().enumerate().take(hi).skip(lo) {
            if pj != 0.0 {
                let row = &x.v[vb + j * d..][..d];
                for (oc, &vc) in o.iter_mut().zip(row) {
                    *oc = fmadd::<FMA>(pj, vc, *oc);
                }
            }
        }
        let inv = 1.0 / sum;
        for oc in o.iter_mut() {
            *oc *= inv;
        }
    }
    out
}

/// `a · b` with `LANES` independent sums (one register).
#[inline(always)]
fn dot<const FMA: bool>(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let whole = a.len() / LANES * LANES;
    for (ca, cb) in a[..whole]
        .chunks_exact(LANES)
        .zip(b[..whole].chunks_exact(LANES))
    {
        for lane in 0..LANES {
            acc[lane] = fmadd::<FMA>(ca[lane], cb[lane], acc[lane]);
        }
    }
    let mut sum: f32 = acc.iter().sum();
    for (&ai, &bi) in a[whole..].iter().zip(&b[whole..]) {
        sum = fmadd::<FMA>(ai, bi, sum);
    }
    sum
}

/// One step of the online softmax (Dao et al. 2022, Algorithm 1, lines 9–10) for one row and
/// one key tile: adds the bias to the first `bias.len()` scores (the rest are past the last
/// key and become `-inf`), turns the scores into `exp(p − m_new)`, and updates the running
/// maximum `m` and sum `l`. Returns the factor `exp(m_old − m_new)` for the row's output (0
/// on its first tile), or `None` when the bias masks every key of the tile (nothing changes).
#[inline(always)]
fn online_softmax<const FMA: bool, const WIDE: bool>(
    p: &mut [f32; KEY_TILE],
    bias: &[f32],
    m: &mut f32,
    l: &mut f32,
) -> Option<f32> {
    let n = bias.len();
    for (pj, &bj) in p[..n].iter_mut().zip(bias) {
        *pj += bj;
    }
    p[n..].fill(f32::NEG_INFINITY);
    let tile_max = tile_max::<WIDE>(p);
    if tile_max == f32::NEG_INFINITY {
        return None;
    }
    let new_m = m.max(tile_max);
    let correction = fast_exp::<FMA>(*m - new_m);
    let mut sum = [0f32; LANES];
    for c in p.chunks_exact_mut(LANES) {
        for lane in 0..LANES {
            c[lane] = fast_exp::<FMA>(c[lane] - new_m);
            sum[lane] += c[lane];
        }
    }
    *l = *l * correction + sum.iter().sum::<f32>();
    *m = new_m;
    Some(correction)
}

/// The largest score of a tile, NaNs skipped: in registers on the AVX-512 path (`WIDE`),
/// where it is the same number as the in-order fold up to the sign of a zero, which
/// `exp(p − m)` does not see.
#[inline(always)]
fn tile_max<const WIDE: bool>(p: &[f32; KEY_TILE]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if WIDE {
        // SAFETY: `WIDE` is true only on the AVX-512 path (`task_avx512`)
        return unsafe { wide::max(p) };
    }
    p.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b))
}

/// Rows the AVX-512 prefill path takes together against a key tile ([`wide`]): six rows hold
/// 24 accumulators, which with the four key (or value) registers and a broadcast fit in
/// AVX-512's 32 registers. A task's 66 rows (3 query heads × 22 positions for SmolLM2) are
/// eleven groups.
const GROUP_ROWS: usize = 6;

/// [`scores`] and [`accumulate`] for several rows at once, in AVX-512 registers: each key or
/// value register loaded serves every row, and the rows' chains are independent, where one
/// row's four chains of dependent multiply-adds wait on the multiply-add latency (one row at
/// a time ran at about 100 GFLOP/s on the Intel Xeon, 2026-12-04). Each row's sums are formed
/// in the same order, with the same fused multiply-adds, as the one-row functions, so the
/// results are the same bits.
#[cfg(target_arch = "x86_64")]
mod wide {
    use super::{KEY_TILE, LANES, VECS};
    use std::arch::x86_64::*;

    /// The largest of `p`, NaNs skipped (`-inf` if all are NaN or `-inf`).
    ///
    /// # Safety
    /// AVX-512F must be available.
    #[inline(always)]
    pub(super) unsafe fn max(p: &[f32; KEY_TILE]) -> f32 {
        // SAFETY: AVX-512F by the contract; the loads cover `p`'s 64 floats
        unsafe {
            let mut m = _mm512_set1_ps(f32::NEG_INFINITY);
            for w in 0..VECS {
                // `max_ps(a, b)` gives `b` when `a` is NaN
                m = _mm512_max_ps(_mm512_loadu_ps(p.as_ptr().add(w * LANES)), m);
            }
            _mm512_reduce_max_ps(m)
        }
    }

    /// The scores of `R` consecutive rows `q: [R, dp]` against `kt: [dp, 64]`.
    ///
    /// # Safety
    /// AVX-512F must be available.
    #[inline(always)]
    pub(super) unsafe fn scores_rows<const R: usize>(
        q: &[f32],
        kt: &[f32],
    ) -> [[f32; KEY_TILE]; R] {
        let dp = q.len() / R;
        assert!(
            q.len() == R * dp && kt.len() >= dp * KEY_TILE,
            "q is [R, dp], kt [dp, 64]"
        );
        let (qp, kp) = (q.as_ptr(), kt.as_ptr());
        let mut p = [[0f32; KEY_TILE]; R];
        // SAFETY: AVX-512F by the contract; every load lies inside `q` (r·dp + c < R·dp) or
        // `kt` (c·64 + 64 ≤ dp·64), every store inside `p`
        unsafe {
            let mut acc = [[_mm512_setzero_ps(); VECS]; R];
            for c in 0..dp {
                let row = kp.add(c * KEY_TILE);
                let mut kv = [_mm512_setzero_ps(); VECS];
                for (w, v) in kv.iter_mut().enumerate() {
                    *v = _mm512_loadu_ps(row.add(w * LANES));
                }
                for (r, a) in acc.iter_mut().enumerate() {
                    let qc = _mm512_set1_ps(*qp.add(r * dp + c));
                    for w in 0..VECS {
                        a[w] = _mm512_fmadd_ps(qc, kv[w], a[w]);
                    }
                }
            }
            for (pr, a) in p.iter_mut().zip(&acc) {
                for (w, v) in a.iter().enumerate() {
                    _mm512_storeu_ps(pr.as_mut_ptr().add(w * LANES), *v);
                }
            }
        }
        p
    }

    /// `o[r] ← o[r] · correction[r] + Σ_j p[r][j] · vt[j]` for `R` consecutive rows
    /// (`o: [R, dp]`, `vt: [64, dp]`); a row whose correction is `None` (the bias masked the
    /// whole tile) is left as it is.
    ///
    /// # Safety
    /// AVX-512F must be available.
    #[inline(always)]
    pub(super) unsafe fn accumulate_rows<const R: usize>(
        o: &mut [f32],
        p: &[[f32; KEY_TILE]; R],
        vt: &[f32],
        corrections: [Option<f32>; R],
    ) {
        let dp = o.len() / R;
        assert!(
            o.len() == R * dp && dp.is_multiple_of(KEY_TILE) && vt.len() >= KEY_TILE * dp,
            "o is [R, dp], vt [64, dp], dp whole tiles"
        );
        let (op, vp) = (o.as_mut_ptr(), vt.as_ptr());
        // SAFETY: AVX-512F by the contract; c0 + 64 ≤ dp keeps every access to row r of `o`
        // inside it and every load of row j of `vt` inside `vt`
        unsafe {
            for c0 in (0..dp).step_by(KEY_TILE) {
                let mut acc = [[_mm512_setzero_ps(); VECS]; R];
                for (r, a) in acc.iter_mut().enumerate() {
                    let correction = _mm512_set1_ps(corrections[r].unwrap_or(1.0));
                    for (w, v) in a.iter_mut().enumerate() {
                        let old = _mm512_loadu_ps(op.add(r * dp + c0 + w * LANES));
                        *v = _mm512_mul_ps(old, correction);
                    }
                }
                for j in 0..KEY_TILE {
                    let row = vp.add(j * dp + c0);
                    let mut vv = [_mm512_setzero_ps(); VECS];
                    for (w, v) in vv.iter_mut().enumerate() {
                        *v = _mm512_loadu_ps(row.add(w * LANES));
                    }
                    for (a, pr) in acc.iter_mut().zip(p) {
                        let pj = _mm512_set1_ps(pr[j]);
                        for w in 0..VECS {
                            a[w] = _mm512_fmadd_ps(pj, vv[w], a[w]);
                        }
                    }
                }
                for (r, a) in acc.iter().enumerate() {
                    if corrections[r].is_some() {
                        for (w, v) in a.iter().enumerate() {
                            _mm512_storeu_ps(op.add(r * dp + c0 + w * LANES), *v);
                        }
                    }
                }
            }
        }
    }
}

/// The 64 scores `q · k_j` of one row against a transposed key tile `kt: [dp, 64]`.
#[inline(always)]
pub(super) fn scores<const FMA: bool>(q: &[f32], kt: &[f32]) -> [f32; KEY_TILE] {
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
pub(super) fn accumulate<const FMA: bool>(
    o: &mut [f32],
    p: &[f32; KEY_TILE],
    vt: &[f32],
    correction: f32,
) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flex::spread_values as values;

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn rows_taken_together_give_the_bits_of_rows_taken_one_by_one() {
        if isa() != Isa::Avx512 {
            return; // the AVX-512 path alone takes rows together
        }
        // dp = 128: two passes of `accumulate`'s 64 dimensions
        let dp = 128;
        let (q, kt, vt) = (
            values(GROUP_ROWS * dp, 1),
            values(dp * KEY_TILE, 2),
            values(KEY_TILE * dp, 3),
        );
        // SAFETY: AVX-512F checked above
        let together = unsafe { wide::scores_rows::<GROUP_ROWS>(&q, &kt) };
        for (r, row) in together.iter().enumerate() {
            assert_eq!(
                row,
                &scores::<true>(&q[r * dp..(r + 1) * dp], &kt),
                "row {r}"
            );
        }
        // row 2 is masked on this tile: `accumulate_rows` leaves it as it was
        let mut p = [[0f32; KEY_TILE]; GROUP_ROWS];
        for (r, pr) in p.iter_mut().enumerate() {
            pr.copy_from_slice(&values(KEY_TILE, 10 + r as u32));
        }
        let corrections = [
            Some(0.5),
            Some(0.0),
            None,
            Some(1.0),
            Some(0.25),
            Some(0.75),
        ];
        let start = values(GROUP_ROWS * dp, 4);
        let mut grouped = start.clone();
        // SAFETY: as above
        unsafe { wide::accumulate_rows::<GROUP_ROWS>(&mut grouped, &p, &vt, corrections) };
        for r in 0..GROUP_ROWS {
            let mut alone = start[r * dp..(r + 1) * dp].to_vec();
            if let Some(c) = corrections[r] {
                accumulate::<true>(&mut alone, &p[r], &vt, c);
            }
            assert_eq!(&grouped[r * dp..(r + 1) * dp], &alone[..], "row {r}");
        }
        assert_ne!(grouped[..dp], start[..dp], "the rows were accumulated");
    }
}

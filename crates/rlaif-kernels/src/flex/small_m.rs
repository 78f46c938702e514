//! `x · W` for a few rows of `x` (`[M, K]·[K, N]`, `M ≤ 8`): the products of a decoding step,
//! where every weight is read once per step and used by at most eight rows.
//!
//! Such a product is bound by reading `W` (`4·K·N` bytes; 540 MB per step for SmolLM2-135M in
//! f32), not by arithmetic. gemm's `M = 1` path has no parallel route and flex runs products
//! below 192³ operations on one thread, so a decoding step read every weight on one core. Here
//! the columns of `W` are split into contiguous ranges, one rayon task each, and every range is
//! swept in column tiles: for each row `k` of `W` the tile's segment (`R` vectors of 16 floats,
//! contiguous) is multiplied by the `M` scalars `x[·, k]` into `M · R` accumulators that stay in
//! registers, 16 rows of `W` at a time. Each output element is the sum over `k` in order,
//! whatever the number of threads, so the result does not depend on the machine's core count.

use crate::simd::{Isa, LANES, isa};
use rayon::prelude::*;

/// The most rows of `x` this kernel takes; larger products go to gemm.
pub(crate) const MAX_ROWS: usize = crate::SMALL_M_MAX_ROWS;

/// Below this many weights (`K · N`, 256 KiB of f32) a product runs on the calling thread: the
/// rayon hand-off costs more than splitting saves. SmolLM2's key and value projections
/// (576 × 192, 442 KiB) are above it: splitting them too made batch-1 decoding 2 % faster on
/// the Intel Xeon (2026-12-04) than the earlier 1 MiB threshold.
const PARALLEL_WEIGHTS: usize = 1 << 16;

/// Whether this CPU runs the kernel (AVX-512F); elsewhere the products stay with gemm.
pub(crate) fn available() -> bool {
    isa() == Isa::Avx512
}

/// `y = x · w` for `x: [m, k]`, `w: [k, n]` (row-major, contiguous), `1 ≤ m ≤ MAX_ROWS`;
/// returns `y: [m, n]`.
///
/// # Panics
/// If the slices do not hold the stated shapes, or the CPU lacks AVX-512 ([`available`]).
pub(crate) fn matmul_small_m(x: &[f32], w: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
    assert!((1..=MAX_ROWS).contains(&m), "small-M product with {m} rows");
    let op = Operands { x, w, m, k, n }; // shapes and the CPU are checked by `run`
    let mut y = vec![0f32; m * n];
    if n == 0 || k == 0 {
        return y;
    }
    let chunk = chunk_width(n, k);
    if chunk >= n {
        run(op, 0, n, &mut y);
        return y;
    }
    // Column ranges [c0, c0 + width) computed into [m, width] blocks laid out one after the
    // other, then moved to [m, n] (for m = 1 the two layouts are the same).
    let mut blocks = vec![0f32; m * n];
    blocks
        .par_chunks_mut(m * chunk)
        .enumerate()
        .for_each(|(i, out)| run(op, i * chunk, out.len() / m, out));
    if m == 1 {
        return blocks;
    }
    for (i, block) in blocks.chunks(m * chunk).enumerate() {
        let (c0, width) = (i * chunk, block.len() / m);
        for r in 0..m {
            y[r * n + c0..r * n + c0 + width].copy_from_slice(&block[r * width..(r + 1) * width]);
        }
    }
    y
}

/// The width of each parallel column range: the whole of `n` for small weights, else about
/// `n / threads` (at least two ranges) rounded up to whole vectors.
///
/// One range per thread rather than two: each row of `w` is then read in one run as long as
/// possible, which the memory system streams better. On the Intel Xeon (2 cores, 2026-12-04)
/// decoding went from 42.4 to 45.6 tokens/s at batch 1 and from 216 to 234 at batch 8; the
/// products are bound by reading `w`, so the balance two ranges per thread gave was not worth
/// the shorter runs.
fn chunk_width(n: usize, k: usize) -> usize {
    if k * n < PARALLEL_WEIGHTS {
        return n;
    }
    let ranges = rayon::current_num_threads().max(2);
    n.div_ceil(ranges).next_multiple_of(LANES).min(n)
}

/// The operands of one product: `x: [m, k]` and `w: [k, n]`, row-major.
#[derive(Clone, Copy)]
struct Operands<'a> {
    x: &'a [f32],
    w: &'a [f32],
    m: usize,
    k: usize,
    n: usize,
}

/// Columns `[c0, c0 + width)` of `x · w` into `out` (`[m, width]`).
fn run(op: Operands<'_>, c0: usize, width: usize, out: &mut [f32]) {
    let Operands { x, w, m, k, n } = op;
    assert!(
        x.len() == m * k && w.len() == k * n,
        "x is [m, k], w is [k, n]"
    );
    assert!(
        c0 + width <= n && out.len() == m * width,
        "out is [m, width] inside n"
    );
    assert!(available(), "the small-row kernel needs AVX-512");
    #[cfg(target_arch = "x86_64")]
    // SAFETY: AVX-512F and the bounds that keep every load inside `x` and `w` and every store
    // inside `out` are asserted just above.
    unsafe {
        avx512::columns(op, c0, width, out)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (c0, out);
        unreachable!("`available` is false off x86-64")
    }
}

/// The AVX-512 tiles, written with intrinsics so that the accumulators are registers (an array
/// of floats indexed in a loop stays in memory, and every multiply-add becomes a load and a
/// store).
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{LANES, Operands};
    use std::arch::x86_64::*;

    /// Dispatches on the row count; `R` (vectors per tile row) keeps the `M · R` accumulators,
    /// the `R` weight vectors and a broadcast within the 32 registers.
    ///
    /// # Safety
    /// AVX-512F; `x: [m, k]`, `w: [k, n]`, `out: [m, width]`, `c0 + width ≤ n`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn columns(op: Operands<'_>, c0: usize, width: usize, out: &mut [f32]) {
        let Operands { x, w, m, k, n } = op;
        let (x, w, o) = (x.as_ptr(), w.as_ptr(), out.as_mut_ptr());
        // SAFETY: forwarded from the caller.
        unsafe {
            match m {
                1 => tiles::<1, 8>(x, w, k, n, c0, width, o),
                2 => tiles::<2, 8>(x, w, k, n, c0, width, o),
                3 => tiles::<3, 7>(x, w, k, n, c0, width, o),
                4 => tiles::<4, 6>(x, w, k, n, c0, width, o),
                5 => tiles::<5, 4>(x, w, k, n, c0, width, o),
                6 => tiles::<6, 4>(x, w, k, n, c0, width, o),
                7 => tiles::<7, 3>(x, w, k, n, c0, width, o),
                8 => tiles::<8, 3>(x, w, k, n, c0, width, o),
                _ => unreachable!("checked by matmul_small_m"),
            }
        }
    }

    /// Rows of `w` taken per sweep across the columns: the sweep reads `K_BLOCK` rows side by
    /// side, each front to back (streams the prefetcher follows, a handful of pages for the
    /// TLB), and the partial sums go back to `out` between sweeps.
    const K_BLOCK: usize = 16;

    /// With five or more rows, each row of a tile asks for the same row of the next tile
    /// (`PREFETCH_TILES` tiles ahead along the sweep) before it is needed. With that many rows
    /// a tile spends long enough on arithmetic that the hardware prefetcher alone left the
    /// loads waiting on memory: on the Intel Xeon (2 cores, 2026-12-04) decoding at batch 8
    /// went from 159 to 216 tokens/s, at batch 5 and 6 9–13 % faster. With one or two rows it
    /// was 13–32 % slower (the extra loads compete with the hardware's own prefetching) and
    /// with four level, so fewer rows go without. One tile ahead beat two (190 tokens/s) and
    /// four (173).
    const PREFETCH_TILES: usize = 1;
    /// The fewest rows of `x` whose tiles prefetch (see [`PREFETCH_TILES`]).
    const PREFETCH_FROM_ROWS: usize = 5;

    /// For each block of `K_BLOCK` rows of `w`: tiles of `R` vectors, then of one vector, then
    /// single columns.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn tiles<const M: usize, const R: usize>(
        x: *const f32,
        w: *const f32,
        k: usize,
        n: usize,
        c0: usize,
        width: usize,
        out: *mut f32,
    ) {
        let mut k0 = 0;
        while k0 < k {
            let k1 = (k0 + K_BLOCK).min(k);
            let mut t = 0;
            // SAFETY (all three loops): columns c0 + t .. c0 + t + tile lie inside
            // [c0, c0 + width), rows k0..k1 inside 0..k.
            unsafe {
                while width - t >= R * LANES {
                    tile::<M, R>(x, w, k, n, k0, k1, c0 + t, out.add(t), width);
                    t += R * LANES;
                }
                while width - t >= LANES {
                    tile::<M, 1>(x, w, k, n, k0, k1, c0 + t, out.add(t), width);
                    t += LANES;
                }
                for j in t..width {
                    for r in 0..M {
                        let o = out.add(r * width + j);
                        let mut acc = if k0 == 0 { 0f32 } else { *o };
                        for kk in k0..k1 {
                            acc = (*x.add(r * k + kk)).mul_add(*w.add(kk * n + c0 + j), acc);
                        }
                        *o = acc;
                    }
                }
            }
            k0 = k1;
        }
    }

    /// `out[r, ..R·16] += Σ_{k0 ≤ k < k1} x[r, k] · w[k, col .. col + R·16]` for the `M` rows
    /// (`=` when `k0 = 0`), summed over `k` in order: the blocks continue one chain of
    /// multiply-adds, so the result is the plain in-order sum.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile<const M: usize, const R: usize>(
        x: *const f32,
        w: *const f32,
        k: usize,
        n: usize,
        k0: usize,
        k1: usize,
        col: usize,
        out: *mut f32,
        out_stride: usize,
    ) {
        // SAFETY: the caller's bounds (see `tiles`).
        unsafe {
            let mut acc = [[_mm512_setzero_ps(); R]; M];
            if k0 > 0 {
                for (r, a) in acc.iter_mut().enumerate() {
                    for (j, v) in a.iter_mut().enumerate() {
                        *v = _mm512_loadu_ps(out.add(r * out_stride + j * LANES));
                    }
                }
            }
            let mut row = w.add(k0 * n + col);
            for kk in k0..k1 {
                if M >= PREFETCH_FROM_ROWS {
                    let ahead = row.wrapping_add(PREFETCH_TILES * R * LANES);
                    for j in 0..R {
                        _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(j * LANES) as *const i8);
                    }
                }
                let mut wv = [_mm512_setzero_ps(); R];
                for (j, v) in wv.iter_mut().enumerate() {
                    *v = _mm512_loadu_ps(row.add(j * LANES));
                }
                for (r, a) in acc.iter_mut().enumerate() {
                    let xv = _mm512_set1_ps(*x.add(r * k + kk));
                    for j in 0..R {
                        a[j] = _mm512_fmadd_ps(xv, wv[j], a[j]);
                    }
                }
                row = row.add(n);
            }
            for (r, a) in acc.iter().enumerate() {
                for (j, v) in a.iter().enumerate() {
                    _mm512_storeu_ps(out.add(r * out_stride + j * LANES), *v);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flex::spread_values as values;

    /// The product in f64, summed in order.
    fn reference(x: &[f32], w: &[f32], m: usize, k: usize, n: usize) -> Vec<f64> {
        let mut y = vec![0f64; m * n];
        for r in 0..m {
            for j in 0..n {
                y[r * n + j] = (0..k)
                    .map(|i| x[r * k + i] as f64 * w[i * n + j] as f64)
                    .sum();
            }
        }
        y
    }

    #[test]
    fn matches_the_f64_product_for_every_row_count_and_ragged_widths() {
        if !available() {
            return; // the products stay with gemm on this CPU
        }
        // n = 700: tiles of 256, 128, 32, 16 and single columns; k·n large enough to split
        // the columns across threads (k = 400: 280 000 weights)
        for (k, n) in [(3, 5), (17, 33), (400, 700)] {
            for m in 1..=MAX_ROWS {
                let (x, w) = (values(m * k, 7), values(k * n, 11));
                let got = matmul_small_m(&x, &w, m, k, n);
                let want = reference(&x, &w, m, k, n);
                for (i, (&g, &e)) in got.iter().zip(&want).enumerate() {
                    let tol = 1e-5 * (k as f64).sqrt() + 1e-6 * e.abs();
                    assert!(
                        (g as f64 - e).abs() <= tol,
                        "m {m} k {k} n {n} at {i}: {g} vs {e}"
                    );
                }
            }
        }
    }

    #[test]
    fn splitting_across_threads_changes_no_bit() {
        if !available() {
            return;
        }
        // the same columns computed in one range and in parallel ranges sum in the same order
        let (m, k, n) = (3, 512, 1024);
        let (x, w) = (values(m * k, 1), values(k * n, 2));
        assert!(chunk_width(n, k) < n, "this shape is split");
        let split = matmul_small_m(&x, &w, m, k, n);
        let mut whole = vec![0f32; m * n];
        run(
            Operands {
                x: &x,
                w: &w,
                m,
                k,
                n,
            },
            0,
            n,
            &mut whole,
        );
        assert_eq!(split, whole);
    }

    #[test]
    fn empty_inner_dimension_gives_zeros() {
        if !available() {
            return;
        }
        assert_eq!(matmul_small_m(&[], &[], 2, 0, 3), vec![0.0; 6]);
        assert!(matmul_small_m(&[1.0], &[], 1, 1, 0).is_empty());
    }
}

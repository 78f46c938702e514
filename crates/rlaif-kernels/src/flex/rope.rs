//! Rotary position embedding in Hugging Face's `rotate_half` layout, forward and backward, in
//! one pass over rows that may lie strided in their buffer.
//!
//! Per row `x = [x₁, x₂]` (two halves of `d/2`) with its position's `c = [c₁, c₂]` and
//! `s = [s₁, s₂]`, the forward is `x·c + rotate_half(x)·s` with `rotate_half(x) = [−x₂, x₁]`:
//!
//! - `o₁ = x₁ c₁ − x₂ s₁`, `o₂ = x₂ c₂ + x₁ s₂`;
//!
//! and its backward (the transpose of `rotate_half` is `[y₂, −y₁]`) for an output gradient `g`:
//!
//! - `∂x₁ = g₁ c₁ + g₂ s₂`, `∂x₂ = g₂ c₂ − g₁ s₁`.
//!
//! Flex's plain ops make seven passes (two slices, a negation, a concatenation, two products
//! and a sum), each a separate op on a small tensor in a decoding step; the query and key rows
//! also arrive as a transposed view (`[B, S, H, D]` read as `[B, H, S, D]`), which the kernel
//! reads where it lies and writes as a contiguous `[B, H, S, D]`, the layout attention reads.

use rayon::prelude::*;

/// Rows per rayon task; calls of at most one task's rows run on the calling thread (a
/// decoding step's few heads).
const ROWS_PER_TASK: usize = 256;

/// Where the rows of a `[b, h, s, d]` tensor lie: row `(bi, hi, si)` is `d` contiguous values
/// from `offset + bi · strides[0] + hi · strides[1] + si · strides[2]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RowLayout {
    /// The first value of row `(0, 0, 0)`.
    pub offset: usize,
    /// Values between consecutive indices of the first three dimensions.
    pub strides: [usize; 3],
}

/// The forward (`backward = false`) or the backward (`backward = true`, `x` the output
/// gradient) of RoPE on `x: [b, h, s, d]` laid out as `layout` says, with `cos` and `sin`
/// contiguous `[b, s, d]` (shared by the heads); returns a contiguous `[b, h, s, d]`.
///
/// # Panics
/// If `d` is odd, a row lies outside `x`, or `cos`/`sin` do not hold `[b, s, d]`.
pub(crate) fn rope(
    x: &[f32],
    layout: RowLayout,
    cos: &[f32],
    sin: &[f32],
    dims: [usize; 4],
    backward: bool,
) -> Vec<f32> {
    let mut out = vec![0f32; dims.iter().product()];
    rope_into(x, layout, cos, sin, dims, backward, &mut out, dims[2], 0);
    out
}

/// [`rope`] written into `out`, a contiguous `[b, h, capacity, d]` (a KV cache), at the
/// positions `start..start + s` of each head; the other positions are left as they are.
///
/// # Panics
/// As [`rope`], and if `out` is not `[b, h, capacity, d]` or `start + s > capacity`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn rope_into(
    x: &[f32],
    layout: RowLayout,
    cos: &[f32],
    sin: &[f32],
    [b, h, s, d]: [usize; 4],
    backward: bool,
    out: &mut [f32],
    capacity: usize,
    start: usize,
) {
    assert!(d % 2 == 0, "rope: the head width {d} is odd");
    assert_eq!(cos.len(), b * s * d, "rope: cos is not [b, 1, s, d]");
    assert_eq!(sin.len(), b * s * d, "rope: sin is not [b, 1, s, d]");
    assert_eq!(
        out.len(),
        b * h * capacity * d,
        "rope: out is not [b, h, capacity, d]"
    );
    assert!(
        start + s <= capacity,
        "rope: positions {start}..{} past the capacity {capacity}",
        start + s
    );
    let rows = b * h * s;
    if rows == 0 || d == 0 {
        return;
    }
    let [sb, sh, ss] = layout.strides;
    let last = layout.offset + (b - 1) * sb + (h - 1) * sh + (s - 1) * ss + d;
    assert!(
        last <= x.len(),
        "rope: x is not [b, h, s, d] where its layout says"
    );
    // the rows `first..` of head `bh` (= bi · h + hi) into `o`, row after row
    let rows_of_head = |bh: usize, first: usize, o: &mut [f32]| {
        let (bi, hi) = (bh / h, bh % h);
        for (i, o) in o.chunks_exact_mut(d).enumerate() {
            let si = first + i;
            let src = &x[layout.offset + bi * sb + hi * sh + si * ss..][..d];
            let at = (bi * s + si) * d;
            rotate(src, &cos[at..at + d], &sin[at..at + d], o, backward);
        }
    };
    // each head's `s` rows are contiguous in `out`, from position `start`
    let heads = out
        .chunks_exact_mut(capacity * d)
        .map(|plane| &mut plane[start * d..(start + s) * d]);
    if rows <= ROWS_PER_TASK {
        for (bh, o) in heads.enumerate() {
            rows_of_head(bh, 0, o);
        }
    } else {
        let heads: Vec<&mut [f32]> = heads.collect();
        heads.into_par_iter().enumerate().for_each(|(bh, o)| {
            o.par_chunks_mut(ROWS_PER_TASK * d)
                .enumerate()
                .for_each(|(task, o)| rows_of_head(bh, task * ROWS_PER_TASK, o));
        });
    }
}

/// One row (see the [module docs](self)); the halves are independent lanes, so the loop
/// vectorises.
#[inline(always)]
fn rotate(x: &[f32], c: &[f32], s: &[f32], o: &mut [f32], backward: bool) {
    let half = x.len() / 2;
    let (x1, x2) = x.split_at(half);
    let (c1, c2) = c.split_at(half);
    let (s1, s2) = s.split_at(half);
    let (o1, o2) = o.split_at_mut(half);
    if backward {
        for i in 0..half {
            o1[i] = x1[i] * c1[i] + x2[i] * s2[i];
            o2[i] = x2[i] * c2[i] - x1[i] * s1[i];
        }
    } else {
        for i in 0..half {
            o1[i] = x1[i] * c1[i] - x2[i] * s1[i];
            o2[i] = x2[i] * c2[i] + x1[i] * s2[i];
        }
    }
}

//! Rotary position embedding (Su et al. 2021, RoFormer eq. 34) in the `rotate_half` layout
//! of Hugging Face's Llama, where dimension `i` pairs with `i + d/2`:
//! `x · cos + rotate_half(x) · sin` with `rotate_half([x₁, x₂]) = [−x₂, x₁]`.
//!
//! On flex (float32) [`rope`] is one pass per row that reads the rows where they lie (the
//! queries and keys arrive as a transposed view of the projection) and writes a contiguous
//! `[B, H, S, D]`, with a backward of one pass; flex's plain ops make seven (two slices, a
//! negation, a concatenation, two products and a sum), each its own op, which in a decoding
//! step of the 135M model is 420 small ops per token. The results are bit for bit those of
//! [`rope_default`] (the same products and sums, in the same order). Elsewhere it is
//! [`rope_default`].
//!
//! A decoding step rotates its new keys and appends them to the KV cache;
//! [`rope_into_cache`] writes the rotated rows straight into the cache's buffer (on flex, when
//! nothing else holds it), instead of a rotated tensor and then a `slice_assign`.

use crate::error::{Result, check_arg, check_shape};
use crate::extension::{dispatch_rope, dispatch_rope_into, fused_available};
use burn::prelude::*;

/// `x · cos + rotate_half(x) · sin` for `x: [B, H, S, D]` and `cos`, `sin: [B, 1, S, D]`
/// (the tables at each sequence's positions, shared by the heads); returns `[B, H, S, D]`;
/// differentiable in `x` (the tables are constants: a tracked `cos` or `sin` takes
/// [`rope_default`]).
///
/// On flex (float32) this is the fused [`RlKernels::rope`](crate::RlKernels::rope) kernel,
/// with its own backward ([`RlKernels::rope_backward`](crate::RlKernels::rope_backward)).
///
/// # Errors
/// [`KernelError::ShapeMismatch`](crate::KernelError::ShapeMismatch) if `cos` or `sin` is
/// not `[B, 1, S, D]`; [`KernelError::InvalidArgument`](crate::KernelError::InvalidArgument)
/// if `D` is odd.
pub fn rope(x: Tensor<4>, cos: Tensor<4>, sin: Tensor<4>) -> Result<Tensor<4>> {
    let [b, _, s, d] = x.dims();
    check_shape("rope", "cos [B, 1, S, D]", &cos.dims(), &[b, 1, s, d])?;
    check_shape("rope", "sin [B, 1, S, D]", &sin.dims(), &[b, 1, s, d])?;
    check_arg("rope", d % 2 == 0, || format!("the head width {d} is odd"))?;
    let same_dtype = cos.dtype() == x.dtype() && sin.dtype() == x.dtype();
    let constant_tables = !cos.is_require_grad() && !sin.is_require_grad();
    if same_dtype && constant_tables && fused_available(&x.device(), x.dtype()) {
        Ok(dispatch_rope(x, cos, sin))
    } else {
        Ok(rope_default(x, cos, sin))
    }
}

/// [`rope`]'s default body in Burn tensor ops, on every backend:
/// `x * cos + cat([−x₂, x₁]) * sin`.
///
/// # Panics
/// If the shapes do not fit (see [`rope`], which checks them).
pub fn rope_default(x: Tensor<4>, cos: Tensor<4>, sin: Tensor<4>) -> Tensor<4> {
    let d = x.dims()[3];
    let x1 = x.clone().slice_dim(3, 0..d / 2);
    let x2 = x.clone().slice_dim(3, d / 2..d);
    x * cos + Tensor::cat(vec![-x2, x1], 3) * sin
}

/// `cache` with `rope(x, cos, sin)` written at the positions `start..start + S`:
/// `x: [B, G, S, D]` (new keys), `cache: [B, G, C, D]` with `start + S ≤ C`, tables as for
/// [`rope`]; the cache's other positions are unchanged. Differentiable in `x` and `cache`.
///
/// On flex (float32), when neither `x` nor `cache` is tracked by autodiff (a KV cache
/// during inference), this is the fused [`RlKernels::rope_into`](crate::RlKernels::rope_into)
/// kernel: the rotated rows go straight into the cache's buffer, in place when the cache is
/// contiguous and this is its only handle (otherwise into a copy), bit for bit
/// [`rope_into_cache_default`]. Otherwise the cache's `slice_assign` of [`rope`] (whose own
/// kernel and backward serve tracked keys on flex).
///
/// # Errors
/// As [`rope`], and [`KernelError::ShapeMismatch`](crate::KernelError::ShapeMismatch) if
/// the cache's batch, heads or head width differ from `x`'s;
/// [`KernelError::InvalidArgument`](crate::KernelError::InvalidArgument) if the positions run
/// past the cache's capacity.
pub fn rope_into_cache(
    cache: Tensor<4>,
    start: usize,
    x: Tensor<4>,
    cos: Tensor<4>,
    sin: Tensor<4>,
) -> Result<Tensor<4>> {
    let [b, g, s, d] = x.dims();
    let [_, _, capacity, _] = cache.dims();
    check_shape(
        "rope_into_cache",
        "cache [B, G, C, D] (against x)",
        &cache.dims(),
        &[b, g, capacity, d],
    )?;
    check_arg("rope_into_cache", start + s <= capacity, || {
        format!(
            "positions {start}..{} run past the cache's capacity {capacity}",
            start + s
        )
    })?;
    check_shape(
        "rope_into_cache",
        "cos [B, 1, S, D]",
        &cos.dims(),
        &[b, 1, s, d],
    )?;
    check_shape(
        "rope_into_cache",
        "sin [B, 1, S, D]",
        &sin.dims(),
        &[b, 1, s, d],
    )?;
    check_arg("rope_into_cache", d % 2 == 0, || {
        format!("the head width {d} is odd")
    })?;
    let same_dtype = [cos.dtype(), sin.dtype(), cache.dtype()]
        .iter()
        .all(|&t| t == x.dtype());
    let constant_tables = !cos.is_tracked() && !sin.is_tracked();
    let untracked = !x.is_tracked() && !cache.is_tracked();
    if same_dtype && constant_tables && untracked && fused_available(&x.device(), x.dtype()) {
        Ok(dispatch_rope_into(cache, x, cos, sin, start))
    } else {
        Ok(cache.slice_assign([0..b, 0..g, start..start + s, 0..d], rope(x, cos, sin)?))
    }
}

/// [`rope_into_cache`]'s default body in Burn tensor ops, on every backend:
/// `cache.slice_assign(positions, rope_default(x, cos, sin))`.
///
/// # Panics
/// If the shapes do not fit (see [`rope_into_cache`], which checks them).
pub fn rope_into_cache_default(
    cache: Tensor<4>,
    start: usize,
    x: Tensor<4>,
    cos: Tensor<4>,
    sin: Tensor<4>,
) -> Tensor<4> {
    let [b, g, s, d] = x.dims();
    cache.slice_assign(
        [0..b, 0..g, start..start + s, 0..d],
        rope_default(x, cos, sin),
    )
}

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

use crate::error::{Result, check_arg, check_shape};
use crate::extension::{dispatch_rope, fused_available};
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

//! Root-mean-square layer normalisation (Zhang & Sennrich 2019), the norm of Llama-family
//! models: `x / √(mean(x²) + eps) · w` over the last dimension.
//!
//! On flex (float32) [`rms_norm`] is one pass per row instead of flex's six serial passes
//! (square, mean, add, square root, divide, scale), with a backward of one pass that
//! recomputes the row's scale instead of storing it; elsewhere it is [`rms_norm_default`].
//!
//! A pre-norm decoder adds each sub-layer's output to the residual stream and normalises the
//! sum for the next sub-layer; [`add_rms_norm`] does both in one pass when nothing is
//! tracked (decoding, scoring, rollouts), reading the two addends once and writing the sum
//! and its norm.

use crate::error::{Result, check_arg, check_shape};
use crate::extension::{dispatch_add_rms_norm, dispatch_rms_norm, fused_available};
use burn::prelude::*;

/// `x / √(mean(x²) + eps) · weight` over the last dimension of `x` (`weight` has its
/// length); differentiable in `x` and `weight`.
///
/// On flex (float32) this is the fused [`RlKernels::rms_norm`](crate::RlKernels::rms_norm)
/// kernel, with its own backward
/// ([`RlKernels::rms_norm_backward`](crate::RlKernels::rms_norm_backward)); elsewhere
/// [`rms_norm_default`]. The kernel's results differ from the default body's by rounding
/// (another summation order for `mean(x²)`).
///
/// # Errors
/// [`KernelError::ShapeMismatch`](crate::KernelError::ShapeMismatch) if `weight` does not
/// have the last dimension's length;
/// [`KernelError::InvalidArgument`](crate::KernelError::InvalidArgument) if `eps` is
/// negative or not finite.
pub fn rms_norm<const D: usize>(x: Tensor<D>, weight: Tensor<1>, eps: f64) -> Result<Tensor<D>> {
    let dims = x.dims();
    let d = dims[D - 1];
    check_shape(
        "rms_norm",
        "weight (against the last dimension of x)",
        &weight.dims(),
        &[d],
    )?;
    check_arg("rms_norm", eps.is_finite() && eps >= 0.0, || {
        format!("eps is {eps}; it must be finite and not negative")
    })?;
    let rows = dims.iter().product::<usize>() / d.max(1);
    if d > 0 && rows > 0 && weight.dtype() == x.dtype() && fused_available(&x.device(), x.dtype()) {
        Ok(dispatch_rms_norm(x.reshape([rows, d]), weight, eps as f32).reshape(dims))
    } else {
        Ok(rms_norm_default(x, weight, eps))
    }
}

/// [`rms_norm`]'s default body in Burn tensor ops, on every backend:
/// `x / (mean(x²) + eps).sqrt() * weight`.
///
/// # Panics
/// If `weight` does not have the last dimension's length (see [`rms_norm`], which checks
/// it).
pub fn rms_norm_default<const D: usize>(x: Tensor<D>, weight: Tensor<1>, eps: f64) -> Tensor<D> {
    let rms = (x.clone().square().mean_dim(D - 1) + eps).sqrt();
    x / rms * weight.unsqueeze::<D>()
}

/// The residual sum `h = x + delta` and `rms_norm(h, weight, eps)`, returned as `(h, y)`:
/// what a pre-norm block computes between its sub-layers. Differentiable in all three inputs.
///
/// On flex (float32), when none of the inputs is tracked by autodiff (inference), this is
/// the fused [`RlKernels::add_rms_norm`](crate::RlKernels::add_rms_norm) kernel: one pass
/// per row that writes both results, bit for bit the add and [`rms_norm`]. Tracked inputs
/// (training) take the add and [`rms_norm`] with its own backward (one op cannot return two
/// tensors without packing them, and unpacking under autodiff costs more than the pass it
/// saves). Elsewhere [`add_rms_norm_default`].
///
/// # Errors
/// [`KernelError::ShapeMismatch`](crate::KernelError::ShapeMismatch) if `delta` is not
/// shaped as `x` or `weight` does not have the last dimension's length;
/// [`KernelError::InvalidArgument`](crate::KernelError::InvalidArgument) if `eps` is
/// negative or not finite.
pub fn add_rms_norm<const D: usize>(
    x: Tensor<D>,
    delta: Tensor<D>,
    weight: Tensor<1>,
    eps: f64,
) -> Result<(Tensor<D>, Tensor<D>)> {
    let dims = x.dims();
    check_shape("add_rms_norm", "delta (against x)", &delta.dims(), &dims)?;
    let d = dims[D - 1];
    check_shape(
        "add_rms_norm",
        "weight (against the last dimension of x)",
        &weight.dims(),
        &[d],
    )?;
    check_arg("add_rms_norm", eps.is_finite() && eps >= 0.0, || {
        format!("eps is {eps}; it must be finite and not negative")
    })?;
    let rows = dims.iter().product::<usize>() / d.max(1);
    let untracked = !x.is_tracked() && !delta.is_tracked() && !weight.is_tracked();
    let same_dtype = delta.dtype() == x.dtype() && weight.dtype() == x.dtype();
    if d > 0 && rows > 0 && untracked && same_dtype && fused_available(&x.device(), x.dtype()) {
        let n = dims[0];
        let packed = dispatch_add_rms_norm(x, delta, weight, eps as f32);
        // views of the packed buffer
        Ok((
            packed.clone().slice_dim(0, 0..n),
            packed.slice_dim(0, n..2 * n),
        ))
    } else {
        let h = x + delta;
        let y = rms_norm(h.clone(), weight, eps)?;
        Ok((h, y))
    }
}

/// [`add_rms_norm`]'s default body in Burn tensor ops, on every backend:
/// `h = x + delta`, then [`rms_norm_default`] of `h`.
///
/// # Panics
/// If the shapes do not fit (see [`add_rms_norm`], which checks them).
pub fn add_rms_norm_default<const D: usize>(
    x: Tensor<D>,
    delta: Tensor<D>,
    weight: Tensor<1>,
    eps: f64,
) -> (Tensor<D>, Tensor<D>) {
    let h = x + delta;
    let y = rms_norm_default(h.clone(), weight, eps);
    (h, y)
}

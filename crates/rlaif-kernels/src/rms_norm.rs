//! Root-mean-square layer normalisation (Zhang & Sennrich 2019), the norm of Llama-family
//! models: `x / √(mean(x²) + eps) · w` over the last dimension.
//!
//! On flex (float32) [`rms_norm`] is one pass per row instead of flex's six serial passes
//! (square, mean, add, square root, divide, scale), with a backward of one pass that
//! recomputes the row's scale instead of storing it; elsewhere it is [`rms_norm_default`].

use crate::error::{Result, check_arg, check_shape};
use crate::extension::{dispatch_rms_norm, fused_available};
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

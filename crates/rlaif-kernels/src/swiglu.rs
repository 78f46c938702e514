//! SwiGLU's gating, `silu(gate) · up` (Shazeer 2020, "GLU variants improve transformer"), the
//! feed-forward nonlinearity of Llama-family models: `down(silu(gate(x)) · up(x))`.
//!
//! On flex (float32) [`swiglu`] is one pass that reads `gate` and `up` once, with a
//! vectorised exponential, split across threads, and a backward that computes both
//! gradients in one more pass; flex's plain ops make three serial passes with a libm `expf`
//! per element (and autodiff keeps the sigmoid and the product for the backward). Elsewhere
//! it is [`swiglu_default`].

use crate::error::{Result, check_shape};
use crate::extension::{dispatch_swiglu, fused_available};
use burn::prelude::*;
use burn::tensor::activation::silu;

/// `silu(gate) · up = gate · σ(gate) · up` elementwise, for tensors of the same shape;
/// differentiable.
///
/// On flex (float32) this is the fused
/// [`RlKernels::swiglu`](crate::RlKernels::swiglu) kernel, with its own backward
/// ([`RlKernels::swiglu_backward`](crate::RlKernels::swiglu_backward)); elsewhere
/// [`swiglu_default`]. The kernel's results differ from the default body's by rounding
/// (its exponential has a relative error of about 1e-7).
///
/// # Errors
/// [`KernelError::ShapeMismatch`](crate::KernelError::ShapeMismatch) if the shapes differ.
pub fn swiglu<const D: usize>(gate: Tensor<D>, up: Tensor<D>) -> Result<Tensor<D>> {
    let dims = gate.dims();
    check_shape("swiglu", "up (against gate)", &up.dims(), &dims)?;
    let n: usize = dims.iter().product();
    if n > 0 && up.dtype() == gate.dtype() && fused_available(&gate.device(), gate.dtype()) {
        Ok(dispatch_swiglu(gate.reshape([n]), up.reshape([n])).reshape(dims))
    } else {
        Ok(swiglu_default(gate, up))
    }
}

/// [`swiglu`]'s default body: `silu(gate) * up` in Burn tensor ops, on every backend.
///
/// # Panics
/// If the shapes differ (see [`swiglu`], which checks them).
pub fn swiglu_default<const D: usize>(gate: Tensor<D>, up: Tensor<D>) -> Tensor<D> {
    silu(gate) * up
}

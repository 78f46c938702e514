//! The product of a language model's projections, `x · W` with `x: [M, K]`, `W: [K, N]`.
//!
//! Decoding feeds one new token per sequence, so a step's products have as many rows as the
//! batch has sequences (`M ≤ 8` here) and read every weight for a handful of multiply-adds:
//! they are bound by memory bandwidth, and gemm's `M = 1` route and flex's small products
//! run on one thread. On flex (float32), [`linear`] sends such products to a kernel that
//! splits the columns of `W` across threads and keeps the accumulators in registers; every
//! other product (prefill, training, other backends) is Burn's `matmul`.
//!
//! [`linear_with`] takes a [`MatmulPrecision`]: with [`MatmulPrecision::Bf16`] the products
//! of more than eight rows (prefill, scoring, training) round both inputs to bfloat16 and
//! run on the AMX tile unit with float32 sums and a float32 result ([`crate::amx`]), forward
//! and backward, as PyTorch's `torch.autocast("cpu", dtype=torch.bfloat16)` does for
//! `nn.Linear`; the weights stay float32 (the optimizer's master copy).

use crate::error::{Result, check_shape};
use crate::extension::{dispatch_project, dispatch_project_bf16, fused_available};
use burn::prelude::*;
use burn::tensor::DType;

/// The most rows of `x` that [`linear`] sends to the small-row kernel.
pub const SMALL_M_MAX_ROWS: usize = 8;

/// `x · w` for `x: [M, K]` and `w: [K, N]`, returns `[M, N]`; differentiable.
///
/// With at most [`SMALL_M_MAX_ROWS`] rows on flex (float32) this is the small-row kernel of
/// the [`RlKernels`](crate::RlKernels) extension (under autodiff only when nothing needs a
/// gradient); otherwise `x.matmul(w)`. The kernel sums each output over `k` in order, so its
/// results differ from gemm's blocked sums by rounding only (a relative 1e-6 or so).
///
/// # Errors
/// [`KernelError::ShapeMismatch`](crate::KernelError::ShapeMismatch) if the inner dimensions
/// differ.
pub fn linear(x: Tensor<2>, w: Tensor<2>) -> Result<Tensor<2>> {
    let [m, k] = x.dims();
    let [kw, n] = w.dims();
    check_shape("linear", "w (against x [M, K])", &[kw, n], &[k, n])?;
    let small = (1..=SMALL_M_MAX_ROWS).contains(&m);
    if small && fused_available(&x.device(), x.dtype()) && w.dtype() == x.dtype() {
        Ok(dispatch_project(x, w))
    } else {
        Ok(x.matmul(w))
    }
}

/// How [`linear_with`] multiplies (see the [module docs](self)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MatmulPrecision {
    /// Float32 inputs and sums (the default).
    #[default]
    F32,
    /// Inputs rounded to bfloat16 (8 significant bits), products and sums in float32, on the
    /// AMX tile unit; only where [`bf16_available`] says so (flex on a CPU with AMX-BF16),
    /// and only for products of more than [`SMALL_M_MAX_ROWS`] rows: decoding steps stay
    /// float32 (they are bound by reading the weights, which stay float32).
    Bf16,
}

/// Whether [`MatmulPrecision::Bf16`] products run on `device`: a flex device and a CPU
/// whose AMX tile unit this process may use ([`crate::amx::available`]).
pub fn bf16_available(device: &Device) -> bool {
    fused_available(device, DType::F32) && crate::amx::available()
}

/// [`linear`] with a choice of [`MatmulPrecision`]: with [`MatmulPrecision::Bf16`], where
/// [`bf16_available`], a product of more than [`SMALL_M_MAX_ROWS`] float32 rows is the bf16
/// product of the [`RlKernels`](crate::RlKernels) extension (differentiable, with bf16
/// products in its backward too); every other product is [`linear`]'s.
///
/// # Errors
/// [`KernelError::ShapeMismatch`](crate::KernelError::ShapeMismatch) if the inner dimensions
/// differ.
pub fn linear_with(x: Tensor<2>, w: Tensor<2>, precision: MatmulPrecision) -> Result<Tensor<2>> {
    let [m, k] = x.dims();
    let [kw, n] = w.dims();
    check_shape("linear", "w (against x [M, K])", &[kw, n], &[k, n])?;
    let bf16 = precision == MatmulPrecision::Bf16
        && m > SMALL_M_MAX_ROWS
        && x.dtype() == DType::F32
        && w.dtype() == DType::F32
        && bf16_available(&x.device());
    if bf16 {
        Ok(dispatch_project_bf16(x, w))
    } else {
        linear(x, w)
    }
}

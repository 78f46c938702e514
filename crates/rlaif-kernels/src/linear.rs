//! The product of a language model's projections, `x · W` with `x: [M, K]`, `W: [K, N]`.
//!
//! Decoding feeds one new token per sequence, so a step's products have as many rows as the
//! batch has sequences (`M ≤ 8` here) and read every weight for a handful of multiply-adds:
//! they are bound by memory bandwidth, and gemm's `M = 1` route and flex's small products
//! run on one thread. On flex (float32), [`linear`] sends such products to a kernel that
//! splits the columns of `W` across threads and keeps the accumulators in registers; every
//! other product (prefill, training, other backends) is Burn's `matmul`.

use crate::error::{Result, check_shape};
use crate::extension::{dispatch_project, fused_available};
use burn::prelude::*;

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

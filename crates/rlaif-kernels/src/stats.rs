//! Masked statistics over a 0/1 mask, NaN-safe in masked slots.
//!
//! Masked slots are *replaced* (`mask_fill`) rather than multiplied by zero before any
//! arithmetic, so a NaN or ±inf in a padded position can poison neither the value nor the
//! gradient (`NaN · 0 = NaN`, and the same holds for the backward pass of a product).
//! A slot is real where the mask is nonzero. Statistics are over all real slots of the tensor
//! (as in TRL's `masked_mean` / `masked_var` / `masked_whiten`).
//!
//! - `mean = Σ_real x / n` with `n` the number of real slots; 0 when `n = 0`.
//! - `var = Σ_real (x − mean)² / (n − 1)` (unbiased, Bessel) or `/ n`; 0 when `n ≤ 1`
//!   (unbiased) or `n = 0`.
//! - `whiten(x) = (x − mean) / sqrt(var + ε)` (+ `mean` again when `shift_mean` is false):
//!   the advantage normalisation of PPO implementations (Huang et al. 2022, "The 37
//!   implementation details of PPO", detail 7); masked slots come out as 0.

use crate::error::{Result, check_shape};
use burn::prelude::*;

/// Options of [`masked_whiten`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WhitenConfig {
    /// Subtract the mean (default `true`); when false the mean is added back after scaling,
    /// which keeps the sign of e.g. rewards (TRL's `shift_mean=False`).
    pub shift_mean: bool,
    /// Use the unbiased (n − 1) variance (default `true`, as TRL).
    pub unbiased: bool,
    /// Added to the variance under the square root (default `1e-8`).
    pub eps: f32,
}

impl Default for WhitenConfig {
    fn default() -> Self {
        Self {
            shift_mean: true,
            unbiased: true,
            eps: 1e-8,
        }
    }
}

/// `(x with masked slots set to 0, pad mask, count of real slots as a [1] tensor)`.
fn prepare<const D: usize>(
    op: &'static str,
    x: Tensor<D>,
    mask: Tensor<D>,
) -> Result<(Tensor<D>, Tensor<D, Bool>, Tensor<1>)> {
    check_shape(op, "mask (against x)", &mask.dims(), &x.dims())?;
    let pad = mask.equal_elem(0.0);
    let count = pad.clone().bool_not().float().sum();
    Ok((x.mask_fill(pad.clone(), 0.0), pad, count))
}

/// Sum of `x` over the real slots of `mask` (same shape); returns a one-element tensor.
///
/// # Errors
/// [`KernelError::ShapeMismatch`](crate::KernelError::ShapeMismatch) if the shapes differ.
pub fn masked_sum<const D: usize>(x: Tensor<D>, mask: Tensor<D>) -> Result<Tensor<1>> {
    let (x, _, _) = prepare("masked_sum", x, mask)?;
    Ok(x.sum())
}

/// Mean of `x` over the real slots of `mask`; 0 if there are none. One-element tensor.
///
/// # Errors
/// [`KernelError::ShapeMismatch`](crate::KernelError::ShapeMismatch) if the shapes differ.
pub fn masked_mean<const D: usize>(x: Tensor<D>, mask: Tensor<D>) -> Result<Tensor<1>> {
    let (x, _, count) = prepare("masked_mean", x, mask)?;
    Ok(x.sum() / count.clamp_min(1.0))
}

/// Variance of `x` over the real slots of `mask` (unbiased with `n − 1` when `unbiased`); 0 if
/// there are too few real slots. One-element tensor.
///
/// # Errors
/// [`KernelError::ShapeMismatch`](crate::KernelError::ShapeMismatch) if the shapes differ.
pub fn masked_var<const D: usize>(
    x: Tensor<D>,
    mask: Tensor<D>,
    unbiased: bool,
) -> Result<Tensor<1>> {
    let (x, pad, count) = prepare("masked_var", x, mask)?;
    Ok(var_of(x, pad, count, unbiased).1)
}

/// `(mean, var)` of pre-masked `x`.
fn var_of<const D: usize>(
    x: Tensor<D>,
    pad: Tensor<D, Bool>,
    count: Tensor<1>,
    unbiased: bool,
) -> (Tensor<1>, Tensor<1>) {
    let mean = x.clone().sum() / count.clone().clamp_min(1.0);
    let centered = (x - mean.clone().reshape([1; D])).mask_fill(pad, 0.0);
    let denom = if unbiased { count - 1.0 } else { count };
    (mean, centered.powi_scalar(2).sum() / denom.clamp_min(1.0))
}

/// Whitens `x` over the real slots of `mask` (see the [module docs](self)); masked slots are 0.
///
/// # Errors
/// [`KernelError::ShapeMismatch`](crate::KernelError::ShapeMismatch) if the shapes differ.
pub fn masked_whiten<const D: usize>(
    x: Tensor<D>,
    mask: Tensor<D>,
    config: WhitenConfig,
) -> Result<Tensor<D>> {
    let (x, pad, count) = prepare("masked_whiten", x, mask)?;
    let (mean, var) = var_of(x.clone(), pad.clone(), count, config.unbiased);
    let mean = mean.reshape([1; D]);
    let scale = (var + config.eps).sqrt().recip().reshape([1; D]);
    let mut w = (x - mean.clone()) * scale;
    if !config.shift_mean {
        w = w + mean;
    }
    Ok(w.mask_fill(pad, 0.0))
}

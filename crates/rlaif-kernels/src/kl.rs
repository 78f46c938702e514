//! Per-token estimators of KL(π ‖ π_ref) from log-probs of tokens sampled from π.
//!
//! With `log r = log π_ref(x) − log π(x)` for `x ~ π` (Schulman 2020, "Approximating KL
//! divergence", <http://joschu.net/blog/kl-approx.html>):
//!
//! - `k1 = −log r`: unbiased, high variance, can be negative (the per-token penalty of
//!   Ziegler et al. 2019 and Ouyang et al. 2022).
//! - `k2 = ½ (log r)²`: biased, low variance, always ≥ 0; its gradient is the gradient of the
//!   reverse KL at `π = π_ref` (used by GRPO-style losses as a regulariser).
//! - `k3 = (r − 1) − log r`: unbiased and always ≥ 0 (since `log r ≤ r − 1`); Schulman's
//!   recommended estimator (used as PPO's `approx_kl` by CleanRL, and by GRPO, Shao et al. 2024).
//!
//! Masking is the caller's business (see [`crate::masked_mean`]); positions where both
//! log-probs are finite give finite estimates.

use crate::error::{Result, check_shape};
use burn::prelude::*;

/// Which KL estimator [`kl_estimate`] computes (see the [module docs](self)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KlEstimator {
    /// `k1 = log π − log π_ref`.
    K1,
    /// `k2 = ½ (log π − log π_ref)²`.
    K2,
    /// `k3 = exp(log π_ref − log π) − 1 − (log π_ref − log π)` (the default).
    #[default]
    K3,
}

/// The per-token estimate of KL(π ‖ π_ref) from `logp = log π(x)` and `ref_logp = log π_ref(x)`
/// of the same shape; differentiable in both.
///
/// # Errors
/// [`KernelError::ShapeMismatch`](crate::KernelError::ShapeMismatch) if the shapes differ.
pub fn kl_estimate<const D: usize>(
    logp: Tensor<D>,
    ref_logp: Tensor<D>,
    estimator: KlEstimator,
) -> Result<Tensor<D>> {
    check_shape(
        "kl_estimate",
        "ref_logp (against logp)",
        &ref_logp.dims(),
        &logp.dims(),
    )?;
    let log_r = ref_logp - logp; // log(π_ref/π)
    Ok(match estimator {
        KlEstimator::K1 => -log_r,
        KlEstimator::K2 => log_r.powi_scalar(2).mul_scalar(0.5),
        KlEstimator::K3 => log_r.clone().exp() - 1.0 - log_r,
    })
}

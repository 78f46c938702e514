//! PPO losses: the clipped surrogate and the clipped value loss, over masked tokens.
//!
//! Policy (Schulman et al. 2017, "Proximal policy optimization algorithms", eq. 7), with
//! `ρ_t = exp(log π(a_t) − log π_old(a_t))`:
//! `L^CLIP = −E_t[min(ρ_t Â_t, clip(ρ_t, 1 − ε, 1 + ε) Â_t)]`, written (as in CleanRL) as
//! `E_t[max(−Â_t ρ_t, −Â_t clip(ρ_t, 1 − ε, 1 + ε))]`.
//!
//! Value (the clipped value loss of OpenAI baselines' PPO2, "37 implementation details",
//! detail 9): `V^clip = V_old + clip(V − V_old, −ε_v, ε_v)`,
//! `L^V = ½ E_t[max((V − R)², (V^clip − R)²)]`.
//!
//! Statistics (no gradient): mean ratio, `approx_kl = E_t[(ρ − 1) − log ρ]` (the k3
//! estimator of KL(π_old ‖ π), Schulman 2020, as CleanRL), and the clip fractions
//! `E_t[|ρ − 1| > ε]` and `E_t[|V − V_old| > ε_v]`. Every expectation is a
//! [`masked_mean`](crate::masked_mean()) over the real tokens; masked slots are replaced before any
//! arithmetic, so a NaN/inf there reaches neither the loss nor its gradient.

use crate::error::{Result, check_arg, check_shape};
use crate::stats::masked_mean;
use burn::prelude::*;

/// Clipping parameters of the PPO losses.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PpoConfig {
    /// Policy ratio clip ε (default 0.2, Schulman et al. 2017).
    pub clip_ratio: f32,
    /// Value clip ε_v (default 0.2, TRL's `cliprange_value`).
    pub clip_value: f32,
}

impl Default for PpoConfig {
    fn default() -> Self {
        Self {
            clip_ratio: 0.2,
            clip_value: 0.2,
        }
    }
}

/// The clipped surrogate loss and its statistics.
#[derive(Debug, Clone)]
pub struct PolicyLoss {
    /// `L^CLIP`, one element, differentiable in `logp`.
    pub loss: Tensor<1>,
    /// Mean ratio `E[ρ]` (detached).
    pub ratio_mean: Tensor<1>,
    /// `E[(ρ − 1) − log ρ]` (detached).
    pub approx_kl: Tensor<1>,
    /// Fraction of tokens with `|ρ − 1| > ε` (detached).
    pub clip_fraction: Tensor<1>,
}

/// The clipped value loss and its statistics.
#[derive(Debug, Clone)]
pub struct ValueLoss {
    /// `L^V`, one element, differentiable in `values`.
    pub loss: Tensor<1>,
    /// Fraction of tokens where `|V − V_old| > ε_v` (detached).
    pub clip_fraction: Tensor<1>,
}

fn check_clip(op: &'static str, eps: f32) -> Result<()> {
    check_arg(op, eps.is_finite() && eps >= 0.0, || {
        format!("clip range must be finite and ≥ 0, got {eps}")
    })
}

/// PPO's clipped surrogate over `[B, T]` token log-probs under the current policy (`logp`,
/// tracked) and the behaviour policy (`old_logp`), advantages and a 0/1 mask.
///
/// # Errors
/// [`KernelError::ShapeMismatch`](crate::KernelError::ShapeMismatch) if the shapes differ,
/// [`KernelError::InvalidArgument`](crate::KernelError::InvalidArgument) for a negative clip.
pub fn ppo_policy_loss(
    logp: Tensor<2>,
    old_logp: Tensor<2>,
    advantages: Tensor<2>,
    mask: Tensor<2>,
    config: PpoConfig,
) -> Result<PolicyLoss> {
    const OP: &str = "ppo_policy_loss";
    let dims = logp.dims();
    check_shape(OP, "old_logp (against logp)", &old_logp.dims(), &dims)?;
    check_shape(OP, "advantages (against logp)", &advantages.dims(), &dims)?;
    check_shape(OP, "mask (against logp)", &mask.dims(), &dims)?;
    check_clip(OP, config.clip_ratio)?;
    let pad = mask.clone().equal_elem(0.0);
    let eps = config.clip_ratio;
    let log_ratio = logp.mask_fill(pad.clone(), 0.0) - old_logp.mask_fill(pad.clone(), 0.0);
    let adv = advantages.mask_fill(pad, 0.0);
    let ratio = log_ratio.clone().exp();
    let pg1 = -adv.clone() * ratio.clone();
    let pg2 = -adv * ratio.clone().clamp(1.0 - eps, 1.0 + eps);
    let loss = masked_mean(pg1.max_pair(pg2), mask.clone())?;
    let (ratio, log_ratio) = (ratio.detach(), log_ratio.detach());
    let approx_kl = masked_mean((ratio.clone() - 1.0) - log_ratio, mask.clone())?;
    let clipped = (ratio.clone() - 1.0).abs().greater_elem(eps).float();
    Ok(PolicyLoss {
        loss,
        ratio_mean: masked_mean(ratio, mask.clone())?,
        approx_kl,
        clip_fraction: masked_mean(clipped, mask)?,
    })
}

/// PPO's clipped value loss over `[B, T]` values (tracked), the values at rollout time, the
/// returns and a 0/1 mask.
///
/// # Errors
/// [`KernelError::ShapeMismatch`](crate::KernelError::ShapeMismatch) if the shapes differ,
/// [`KernelError::InvalidArgument`](crate::KernelError::InvalidArgument) for a negative clip.
pub fn ppo_value_loss(
    values: Tensor<2>,
    old_values: Tensor<2>,
    returns: Tensor<2>,
    mask: Tensor<2>,
    config: PpoConfig,
) -> Result<ValueLoss> {
    const OP: &str = "ppo_value_loss";
    let dims = values.dims();
    check_shape(OP, "old_values (against values)", &old_values.dims(), &dims)?;
    check_shape(OP, "returns (against values)", &returns.dims(), &dims)?;
    check_shape(OP, "mask (against values)", &mask.dims(), &dims)?;
    check_clip(OP, config.clip_value)?;
    let pad = mask.clone().equal_elem(0.0);
    let eps = config.clip_value;
    let v = values.mask_fill(pad.clone(), 0.0);
    let v_old = old_values.mask_fill(pad.clone(), 0.0);
    let ret = returns.mask_fill(pad, 0.0);
    let dv = v.clone() - v_old.clone();
    let v_clipped = v_old + dv.clone().clamp(-eps, eps);
    let l1 = (v - ret.clone()).powi_scalar(2);
    let l2 = (v_clipped - ret).powi_scalar(2);
    let loss = masked_mean(l1.max_pair(l2), mask.clone())?.mul_scalar(0.5);
    let clipped = dv.detach().abs().greater_elem(eps).float();
    Ok(ValueLoss {
        loss,
        clip_fraction: masked_mean(clipped, mask)?,
    })
}

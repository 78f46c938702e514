//! The loss of one (micro-)batch of an update.
//!
//! `L = L^CLIP + c_v · L^V − c_e · H` (Schulman et al. 2017, eq. 9), each term a masked
//! mean over the batch's response tokens: the clipped surrogate (eq. 7) and PPO2's
//! clipped value loss from `rlaif_kernels`, the entropy `H` of π_T. Masked slots are
//! replaced before any arithmetic in the kernels, so a NaN in padding reaches neither the
//! loss nor its gradient (OpenRLHF PR #1240).

use crate::config::PpoConfig;
use crate::error::Result;
use burn::prelude::*;
use rlaif_kernels::{PolicyLoss, ValueLoss, masked_mean, ppo_policy_loss, ppo_value_loss};

/// What the rollout fixed for a batch, `[n, R]` each.
#[derive(Debug, Clone)]
pub struct BatchTargets {
    /// log π_old of the response tokens (at T).
    pub old_logp: Tensor<2>,
    /// The critic's values at rollout time.
    pub old_values: Tensor<2>,
    /// Advantages (whitened when configured).
    pub advantages: Tensor<2>,
    /// Returns `Â + V_old`.
    pub returns: Tensor<2>,
    /// 1 = real response token.
    pub mask: Tensor<2>,
}

/// The loss and its parts.
#[derive(Debug, Clone)]
pub struct LossParts {
    /// `L^CLIP + c_v · L^V − c_e · H`.
    pub total: Tensor<1>,
    /// The clipped surrogate and its statistics.
    pub policy: PolicyLoss,
    /// The clipped value loss and its clip fraction.
    pub value: ValueLoss,
    /// Mean entropy per response token (detached).
    pub entropy: Tensor<1>,
}

/// The loss of a batch from the current policy's log-probs and entropies and the
/// critic's values (all `[n, R]`, tracked).
pub fn ppo_loss(
    logp: Tensor<2>,
    entropy: Tensor<2>,
    values: Tensor<2>,
    targets: &BatchTargets,
    config: &PpoConfig,
) -> Result<LossParts> {
    let clip = rlaif_kernels::PpoConfig {
        clip_ratio: config.clip_ratio,
        clip_value: config.clip_value,
    };
    let policy = ppo_policy_loss(
        logp,
        targets.old_logp.clone(),
        targets.advantages.clone(),
        targets.mask.clone(),
        clip,
    )?;
    let value = ppo_value_loss(
        values,
        targets.old_values.clone(),
        targets.returns.clone(),
        targets.mask.clone(),
        clip,
    )?;
    let entropy = masked_mean(entropy, targets.mask.clone())?;
    let mut total = policy.loss.clone() + value.loss.clone().mul_scalar(config.vf_coef);
    if config.entropy_coef > 0.0 {
        total = total - entropy.clone().mul_scalar(config.entropy_coef);
    }
    Ok(LossParts {
        total,
        policy,
        value,
        entropy: entropy.detach(),
    })
}

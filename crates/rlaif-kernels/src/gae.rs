//! Generalised advantage estimation over masked `[B, T]` token sequences.
//!
//! Schulman et al. 2016, "High-dimensional continuous control using generalized advantage
//! estimation", eq. 16: `Â_t = Σ_l (γλ)^l δ_{t+l}` with `δ_t = r_t + γ V_{t+1} − V_t`, computed
//! by the backward recursion `Â_t = δ_t + γλ Â_{t+1}`. Returns are `R_t = Â_t + V_t` (the
//! value-function target of PPO, Schulman et al. 2017).
//!
//! Masking: position `t` is real where `mask[t] ≠ 0`. A masked position ends the episode: it
//! gets `Â = R = 0` and the real position before it bootstraps from nothing (`V_{t+1} := 0`,
//! `Â_{t+1} := 0`). For a response mask (real tokens then padding) this makes the last real
//! token (the EOS) terminal, so a sequence-level score must sit there: see
//! [`rewards_at_eos`]. NaN or inf in masked slots never reaches the output.
//!
//! The fused flex kernel runs the recursion per row (rayon over rows); the default body
//! ([`gae_default`]) is a reverse loop over time of `[B, 1]` Burn tensor ops.

use crate::error::{Result, check_arg, check_shape};
use crate::extension::{dispatch_gae, fused_available};
use burn::prelude::*;
use burn::tensor::IndexingUpdateOp;

/// Discount and GAE parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GaeConfig {
    /// Discount γ (default 1.0, as in RLHF over tokens: Ouyang et al. 2022, TRL).
    pub gamma: f32,
    /// GAE λ (default 0.95, TRL's `lam`).
    pub lambda: f32,
}

impl Default for GaeConfig {
    fn default() -> Self {
        Self {
            gamma: 1.0,
            lambda: 0.95,
        }
    }
}

/// Advantages and returns of [`gae`].
#[derive(Debug, Clone)]
pub struct GaeOutput {
    /// `Â [B, T]`, 0 in masked slots.
    pub advantages: Tensor<2>,
    /// `R = Â + V [B, T]`, 0 in masked slots.
    pub returns: Tensor<2>,
}

fn check(
    rewards: &Tensor<2>,
    values: &Tensor<2>,
    mask: &Tensor<2>,
    config: GaeConfig,
) -> Result<()> {
    let dims = rewards.dims();
    check_shape("gae", "values (against rewards)", &values.dims(), &dims)?;
    check_shape("gae", "mask (against rewards)", &mask.dims(), &dims)?;
    check_arg(
        "gae",
        config.gamma.is_finite() && config.lambda.is_finite(),
        || {
            format!(
                "gamma and lambda must be finite, got {} and {}",
                config.gamma, config.lambda
            )
        },
    )
}

/// GAE advantages and returns over `[B, T]` rewards, values and a 0/1 mask (see the
/// [module docs](self)). The inputs are treated as constants (no gradient flows through GAE);
/// the outputs are on the input device, untracked. Uses the fused kernel when
/// [`fused_available`], the default body otherwise.
///
/// # Errors
/// [`KernelError::ShapeMismatch`](crate::KernelError::ShapeMismatch) if the shapes differ,
/// [`KernelError::InvalidArgument`](crate::KernelError::InvalidArgument) if γ or λ is not finite.
pub fn gae(
    rewards: Tensor<2>,
    values: Tensor<2>,
    mask: Tensor<2>,
    config: GaeConfig,
) -> Result<GaeOutput> {
    check(&rewards, &values, &mask, config)?;
    let same = rewards.dtype() == values.dtype() && rewards.dtype() == mask.dtype();
    let [b, t] = rewards.dims();
    if !same || b * t == 0 || !fused_available(&rewards.device(), rewards.dtype()) {
        return gae_default(rewards, values, mask, config);
    }
    let out = dispatch_gae(
        rewards.detach(),
        values.detach(),
        mask.detach(),
        config.gamma,
        config.lambda,
    );
    Ok(GaeOutput {
        advantages: out.clone().slice_dim(0, 0..1).reshape([b, t]),
        returns: out.slice_dim(0, 1..2).reshape([b, t]),
    })
}

/// Default body of [`gae`]: the reverse recursion over time in `[B, 1]` Burn tensor ops (one
/// small op sequence per time step; runs on every backend). Inputs are detached.
///
/// # Errors
/// As [`gae`].
pub fn gae_default(
    rewards: Tensor<2>,
    values: Tensor<2>,
    mask: Tensor<2>,
    config: GaeConfig,
) -> Result<GaeOutput> {
    check(&rewards, &values, &mask, config)?;
    let [b, t] = rewards.dims();
    let device = rewards.device();
    let pad = mask.detach().equal_elem(0.0);
    let real = pad.clone().bool_not().float();
    let rewards = rewards.detach().mask_fill(pad.clone(), 0.0);
    let values = values.detach().mask_fill(pad.clone(), 0.0);
    let (gamma, gl) = (config.gamma, config.gamma * config.lambda);
    let mut next_adv = Tensor::<2>::zeros([b, 1], &device);
    let mut next_value = Tensor::<2>::zeros([b, 1], &device);
    let mut cols = Vec::with_capacity(t);
    for i in (0..t).rev() {
        let (r, v, m) = (
            rewards.clone().slice_dim(1, i..i + 1),
            values.clone().slice_dim(1, i..i + 1),
            real.clone().slice_dim(1, i..i + 1),
        );
        let delta = r + next_value.mul_scalar(gamma) - v.clone();
        let adv = (delta + next_adv.mul_scalar(gl)) * m;
        // masked slots have v = 0 and adv = 0, so the next real step bootstraps from nothing
        next_value = v;
        next_adv = adv.clone();
        cols.push(adv);
    }
    cols.reverse();
    let advantages = if t == 0 {
        Tensor::zeros([b, 0], &device)
    } else {
        Tensor::cat(cols, 1)
    };
    let returns = (advantages.clone() + values).mask_fill(pad, 0.0);
    Ok(GaeOutput {
        advantages,
        returns,
    })
}

/// Places sequence-level `scores [B]` at the last real token of each row of `mask [B, T]`
/// (the EOS of a response), optionally added to per-token rewards (e.g. a KL penalty,
/// Ziegler et al. 2019). Rows without a real token get no score; padding after the last real
/// token gets nothing, and masked slots of `per_token` are zeroed. Returns `[B, T]`.
///
/// # Errors
/// [`KernelError::ShapeMismatch`](crate::KernelError::ShapeMismatch) on inconsistent shapes.
pub fn rewards_at_eos(
    scores: Tensor<1>,
    mask: Tensor<2>,
    per_token: Option<Tensor<2>>,
) -> Result<Tensor<2>> {
    let [b, t] = mask.dims();
    check_shape(
        "rewards_at_eos",
        "scores (against mask [B, T])",
        &scores.dims(),
        &[b],
    )?;
    if let Some(p) = &per_token {
        check_shape(
            "rewards_at_eos",
            "per_token (against mask)",
            &p.dims(),
            &[b, t],
        )?;
    }
    let device = mask.device();
    if t == 0 {
        return Ok(Tensor::zeros([b, 0], &device));
    }
    let pad = mask.equal_elem(0.0);
    let real = pad.clone().bool_not().float();
    // last real index = argmax_t (t + 1)·real_t; rows without a real token get weight 0
    let pos = Tensor::<1, Int>::arange(1..t as i64 + 1, &device)
        .float()
        .unsqueeze::<2>();
    let last = (real.clone() * pos).argmax(1); // [B, 1]
    let none = real.max_dim(1).equal_elem(0.0); // [B, 1]: the row has no real token
    let scores = scores.reshape([b, 1]).mask_fill(none, 0.0);
    let placed =
        Tensor::<2>::zeros([b, t], &device).scatter(1, last, scores, IndexingUpdateOp::Add);
    Ok(match per_token {
        Some(p) => placed + p.mask_fill(pad, 0.0),
        None => placed,
    })
}

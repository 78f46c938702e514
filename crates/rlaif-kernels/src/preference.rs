//! Preference (reward-model) loss: Bradley–Terry with soft targets, margin and centring.
//!
//! Bradley & Terry 1952 model `P(a ≻ b) = σ(r_a − r_b)`; reward models are trained by maximum
//! likelihood on it (Christiano et al. 2017; Stiennon et al. 2020; Ouyang et al. 2022, eq. 1).
//! With a soft target `p = P(a ≻ b) ∈ [0, 1]` (e.g. an AI labeller's probability, Bai et al.
//! 2022b "Constitutional AI", §4.1; Lee et al. 2023 "RLAIF") and `d = r_a − r_b`, the loss is the
//! binary cross-entropy
//!
//! `L = −[p · log σ(d − m) + (1 − p) · log σ(−d − m)] + η · (r_a + r_b)²`
//!
//! averaged over pairs, where
//! - `m ≥ 0` is a margin (Touvron et al. 2023, "Llama 2", eq. 2: `−log σ(r_c − r_r − m)`),
//!   applied in the direction of each side of the target;
//! - `η ≥ 0` weights the reward-centring term of Eisenstein et al. 2023 ("Helping or herding?",
//!   auxiliary loss `(r_a + r_b)²`), which pins the otherwise free offset of the rewards near 0
//!   (Ouyang et al. 2022 instead shift the trained model by a bias so that demonstrations score 0).
//!
//! `log σ` is evaluated stably (`log σ(x) = −softplus(−x)`).

use crate::error::{Result, check_arg, check_shape};
use burn::prelude::*;
use burn::tensor::activation::log_sigmoid;

/// Options of [`bradley_terry_loss`].
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct PreferenceConfig {
    /// Margin `m` (default 0).
    pub margin: f32,
    /// Weight `η` of the centring term `(r_a + r_b)²` (default 0: off).
    pub center_coef: f32,
}

/// The preference loss and its statistics.
#[derive(Debug, Clone)]
pub struct PreferenceLoss {
    /// `L`, one element, differentiable in both rewards.
    pub loss: Tensor<1>,
    /// Fraction of pairs where the sign of `r_a − r_b` agrees with the target
    /// (`p > ½` ⇒ `r_a > r_b`, `p < ½` ⇒ `r_a < r_b`; pairs with `p = ½` are not counted)
    /// (detached).
    pub accuracy: Tensor<1>,
}

/// Bradley–Terry loss over `[N]` rewards of the two responses of each pair and soft targets
/// `p = P(a ≻ b) ∈ [0, 1]` (see the [module docs](self)).
///
/// # Errors
/// [`KernelError::ShapeMismatch`](crate::KernelError::ShapeMismatch) if the shapes differ,
/// [`KernelError::InvalidArgument`](crate::KernelError::InvalidArgument) for a negative or
/// non-finite margin or coefficient.
pub fn bradley_terry_loss(
    reward_a: Tensor<1>,
    reward_b: Tensor<1>,
    target: Tensor<1>,
    config: PreferenceConfig,
) -> Result<PreferenceLoss> {
    const OP: &str = "bradley_terry_loss";
    check_shape(
        OP,
        "reward_b (against reward_a)",
        &reward_b.dims(),
        &reward_a.dims(),
    )?;
    check_shape(
        OP,
        "target (against reward_a)",
        &target.dims(),
        &reward_a.dims(),
    )?;
    check_arg(
        OP,
        config.margin.is_finite() && config.margin >= 0.0,
        || format!("margin must be finite and ≥ 0, got {}", config.margin),
    )?;
    check_arg(
        OP,
        config.center_coef.is_finite() && config.center_coef >= 0.0,
        || {
            format!(
                "center_coef must be finite and ≥ 0, got {}",
                config.center_coef
            )
        },
    )?;
    let d = reward_a.clone() - reward_b.clone();
    let p = target;
    let nll = -(p.clone() * log_sigmoid(d.clone() - config.margin)
        + (-p.clone() + 1.0) * log_sigmoid(-d.clone() - config.margin));
    let mut loss = nll.mean();
    if config.center_coef > 0.0 {
        loss = loss
            + (reward_a + reward_b)
                .powi_scalar(2)
                .mean()
                .mul_scalar(config.center_coef);
    }
    // accuracy over decided pairs
    let d = d.detach();
    let decided = p.clone().not_equal_elem(0.5).float();
    let agree = d
        .clone()
        .greater_elem(0.0)
        .bool_and(p.clone().greater_elem(0.5))
        .bool_or(d.lower_elem(0.0).bool_and(p.lower_elem(0.5)))
        .float();
    let accuracy = agree.sum() / decided.sum().clamp_min(1.0);
    Ok(PreferenceLoss { loss, accuracy })
}

//! The reward: a model ([`rlaif_core::RewardModel`], e.g. the preference model) or a plain
//! Rust function of (prompt, response); how its score becomes per-token rewards.
//!
//! Per rollout (every detail named):
//!
//! 1. The raw score `s` of (prompt, response text). A non-finite score is an error naming
//!    the rollout, never a silent NaN in the update.
//! 2. Normalised with fixed statistics when the reward has them and `normalize_scores` is
//!    on: `(s − mean) / std` with the preference model's `reward_stats.json` (the scores of
//!    the SL model's own samples), so one unit of reward means the same across runs.
//! 3. Clipped to `±score_clip` (OpenRLHF's `reward_clip_range`).
//! 4. The missing-EOS penalty: a response that reached `max_new_tokens` without an
//!    end-of-sequence token has `missing_eos_penalty` subtracted from its (normalised,
//!    clipped) score (TRL's `missing_eos_penalty`), so the policy is not paid for rambling
//!    past the budget.
//! 5. Per-token rewards ([`token_rewards`]): `−β · KL_t` at every response token (the KL
//!    estimator of the config, Ziegler et al. 2019, eq. 2) plus the score at the **last real
//!    response token** (the EOS when there is one), never on padding
//!    (`rlaif_kernels::rewards_at_eos`; the fix of TRL issue #3750).

use crate::config::PpoConfig;
use crate::error::{PpoError, Result};
use burn::prelude::*;
use rlaif_core::{Prompt, RewardModel};
use rlaif_kernels::{KlEstimator, kl_estimate, rewards_at_eos};
use rlaif_pm::{PreferenceModel, RewardStats};

/// A plain reward function of (prompt, response text).
pub type RewardFn<'a> = dyn Fn(&Prompt, &str) -> f32 + Sync + 'a;

/// What PPO maximises.
pub enum Reward<'a> {
    /// A reward model (any [`RewardModel`]) with the statistics of a reference set for
    /// normalisation, if it has them.
    Model {
        /// The model.
        model: &'a dyn RewardModel,
        /// Score statistics (`None`: scores are used as they are).
        stats: Option<RewardStats>,
    },
    /// A rule, e.g. `|_, r| r.matches("sorry").count() as f32`.
    Function(&'a RewardFn<'a>),
}

impl<'a> Reward<'a> {
    /// The preference model, normalised with its stored statistics.
    pub fn preference_model(pm: &'a PreferenceModel) -> Self {
        Self::Model {
            model: pm,
            stats: pm.reward_stats.clone(),
        }
    }

    /// A plain function.
    pub fn function(f: &'a RewardFn<'a>) -> Self {
        Self::Function(f)
    }

    /// The normalisation statistics, if any.
    pub fn stats(&self) -> Option<&RewardStats> {
        match self {
            Self::Model { stats, .. } => stats.as_ref(),
            Self::Function(_) => None,
        }
    }

    /// Raw scores of (prompt, response) pairs (step 1 of the [module docs](self)).
    pub fn raw_scores(&self, pairs: &[(Prompt, String)]) -> Result<Vec<f32>> {
        let scores = match self {
            Self::Model { model, .. } => model
                .score(pairs)
                .map_err(|e| PpoError::Reward(e.to_string()))?,
            Self::Function(f) => pairs.iter().map(|(p, r)| f(p, r)).collect(),
        };
        if scores.len() != pairs.len() {
            return Err(PpoError::Reward(format!(
                "{} scores for {} responses",
                scores.len(),
                pairs.len()
            )));
        }
        if let Some(i) = scores.iter().position(|s| !s.is_finite()) {
            return Err(PpoError::Reward(format!(
                "the score of response {i} ({:?}) is {}",
                pairs[i].1, scores[i]
            )));
        }
        Ok(scores)
    }
}

/// Steps 2–4 of the [module docs](self): normalise, clip, penalise a missing EOS.
pub fn shape_scores(
    raw: &[f32],
    ended_with_eos: &[bool],
    stats: Option<&RewardStats>,
    config: &PpoConfig,
) -> Vec<f32> {
    raw.iter()
        .zip(ended_with_eos)
        .map(|(&s, &eos)| {
            let mut x = match stats {
                Some(st) if config.normalize_scores => st.normalize(s),
                _ => s,
            };
            if let Some(c) = config.score_clip {
                x = x.clamp(-c, c);
            }
            if !eos && let Some(p) = config.missing_eos_penalty {
                x -= p;
            }
            x
        })
        .collect()
}

/// Per-token rewards and their parts, `[B, R]` over response tokens.
#[derive(Debug, Clone)]
pub struct TokenRewards {
    /// `−β·KL_t` everywhere plus the score at the last real token; 0 on padding.
    pub rewards: Tensor<2>,
    /// The per-token KL estimate (0 on padding).
    pub kl: Tensor<2>,
    /// `−β·KL_t` (0 on padding).
    pub non_score: Tensor<2>,
}

/// Step 5 of the [module docs](self): `scores [B]`, the policy's and the reference's
/// log-probs of the response tokens `[B, R]` and the response mask `[B, R]` (1 = real
/// token) → per-token rewards. NaN or inf in a padded slot of the log-probs reaches
/// nothing.
pub fn token_rewards(
    scores: Tensor<1>,
    logp: Tensor<2>,
    ref_logp: Tensor<2>,
    mask: Tensor<2>,
    beta: f64,
    estimator: KlEstimator,
) -> Result<TokenRewards> {
    let pad = mask.clone().equal_elem(0.0);
    let kl = kl_estimate(
        logp.mask_fill(pad.clone(), 0.0),
        ref_logp.mask_fill(pad.clone(), 0.0),
        estimator,
    )?
    .mask_fill(pad, 0.0);
    let non_score = kl.clone().mul_scalar(-beta);
    let rewards = rewards_at_eos(scores, mask, Some(non_score.clone()))?;
    Ok(TokenRewards {
        rewards,
        kl,
        non_score,
    })
}

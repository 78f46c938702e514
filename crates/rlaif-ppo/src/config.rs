//! [`PpoConfig`]: every setting of a PPO run, with profiles for the paper's settings and
//! for TRL's former defaults.

use crate::error::{PpoError, Result};
use rlaif_kernels::KlEstimator;
use rlaif_train::OptimConfig;
use rlaif_train::schedule::LrSchedule;
use serde::{Deserialize, Serialize};

/// Which per-token KL estimator the penalty uses (`rlaif_kernels::kl_estimate`; Schulman
/// 2020, "Approximating KL divergence").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KlKind {
    /// `log π − log π_ref`: unbiased, can be negative per token (Ziegler et al. 2019;
    /// TRL's `kl_estimator = "k1"`, its default).
    K1,
    /// `(r − 1) − log r` with `r = π_ref/π`: unbiased and never negative (TRL's `"k3"`).
    K3,
}

impl KlKind {
    /// The kernel's estimator.
    pub fn estimator(self) -> KlEstimator {
        match self {
            Self::K1 => KlEstimator::K1,
            Self::K3 => KlEstimator::K3,
        }
    }
}

/// The adaptive KL controller of Ziegler et al. 2019 (§2.2, "Fine-tuning language models
/// from human preferences"): after each iteration with measured KL `KL`,
/// `e = clip(KL / target − 1, −0.2, 0.2)` and `β ← β · (1 + e · n / horizon)`, `n` the
/// episodes of the iteration.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdaptiveKl {
    /// The KL (nats per response, summed over its tokens) the controller steers to
    /// (Ziegler et al.: 6.0; TRL's former `target`: 6).
    pub target: f64,
    /// Episodes over which a relative error is corrected (Ziegler et al. and TRL: 10000).
    pub horizon: f64,
}

/// Named sets of defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Profile {
    /// Sized for SmolLM2-135M on a 2-core CPU: minutes per run (see [`PpoConfig::default`]).
    Default,
    /// Bai et al. 2022a (§4.1, App. B.1) as used by Constitutional AI (§4.2): β = 0.001,
    /// ε = 0.2, γ = 1, no entropy bonus, up to 128 new tokens, sampling at T = 1.
    Paper,
    /// TRL's former `PPOConfig` defaults (before its PPO trainer was removed, 2026-09):
    /// β = 0.05 (k1), λ = 0.95, γ = 1, value coefficient 0.1, 4 epochs, T = 0.7,
    /// 53 new tokens, learning rate 3e-6 with linear decay, ε = ε_v = 0.2.
    Trl,
}

/// Every setting of a PPO run. The defaults ([`Profile::Default`]) are sized for
/// SmolLM2-135M on a CPU; [`PpoConfig::profile`] gives the paper's and TRL's.
///
/// | field | default | paper | TRL | source / meaning |
/// |---|---|---|---|---|
/// | `iterations` | 12 | | | rollout + update cycles |
/// | `rollouts_per_iteration` | 8 | | 512 (`batch_size`) | prompts answered per iteration |
/// | `minibatch_size` | 4 | | 128 | rollouts per optimizer update |
/// | `micro_batch_size` | 4 | | | rows per forward pass (gradient accumulation inside a minibatch); divides `minibatch_size` |
/// | `ppo_epochs` | 2 | | 4 | passes over the rollouts per iteration |
/// | `temperature` | 0.7 | 1.0 | 0.7 | sampling; every log-prob divides the logits by it |
/// | `max_new_tokens` | 48 | 128 | 53 | |
/// | `kl_coef` (β) | 0.05 | 0.001 | 0.05 | per-token penalty −β·KL |
/// | `kl_estimator` | k3 | k1 | k1 | k3 is never negative per token (a small-batch k1 mean can be: TRL #351) |
/// | `adaptive_kl` | none | none | none | Ziegler et al.'s controller |
/// | `gamma`, `lam` | 1.0, 0.95 | 1.0, 0.95 | 1.0, 0.95 | GAE (Schulman et al. 2016) |
/// | `clip_ratio` (ε) | 0.2 | 0.2 | 0.2 | PPO (Schulman et al. 2017, eq. 7) |
/// | `clip_value` | 0.2 | 0.2 | 0.2 | PPO2's value clipping |
/// | `vf_coef` | 0.1 | 0.1 | 0.1 | |
/// | `entropy_coef` | 0.0 | 0.0 | 0.0 | bonus (logged always) |
/// | `policy_lr`, `critic_lr` | 1e-5, 1e-5 | | 3e-6, 3e-6 | |
/// | `lr_schedule` | constant | | linear | over iterations |
/// | `max_grad_norm` | 1.0 | | 1.0 | per model, global L2 |
/// | `adam_epsilon` | 1e-5 | | 1e-8 | CleanRL's 1e-5 ("37 details", detail 3) |
/// | `whiten_advantages` | true | true | true | |
/// | `whiten_rewards` | false | false | false | |
/// | `normalize_scores` | true | true | — | `(s − mean)/std` with the PM's `reward_stats.json` |
/// | `score_clip` | 10.0 | | — | after normalisation, as OpenRLHF's `reward_clip_range` |
/// | `missing_eos_penalty` | 1.0 | none | none | subtracted from the normalised score of a response without EOS |
/// | `approx_kl_stop` | none | | none | an epoch stops when the mean approx-KL of its updates exceeds it |
/// | `ratio_threshold` | 10.0 | | 10.0 | a minibatch whose mean ratio exceeds it is skipped (TRL's former `ratio_threshold`) |
/// | `samples_every` | 4 | | | greedy answers to the held-out prompts (and their scores) every N iterations |
/// | `sample_max_new_tokens` | 48 | | | |
/// | `checkpoint_every` | none | | | a checkpoint every N iterations (always at the end and when stopped) |
/// | `keep_checkpoints` | 1 | | | |
/// | `seed` | 0 | | | every random draw derives from it and the iteration |
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PpoConfig {
    /// Rollout + update cycles.
    pub iterations: usize,
    /// Prompts answered (episodes) per iteration.
    pub rollouts_per_iteration: usize,
    /// Rollouts per optimizer update.
    pub minibatch_size: usize,
    /// Rows per forward pass inside a minibatch (gradients accumulated exactly).
    pub micro_batch_size: usize,
    /// Passes over an iteration's rollouts.
    pub ppo_epochs: usize,
    /// Sampling temperature of the rollouts (> 0).
    pub temperature: f32,
    /// Most tokens generated per response.
    pub max_new_tokens: usize,
    /// β of the per-token KL penalty (the initial β when adaptive).
    pub kl_coef: f64,
    /// The estimator of the penalty.
    pub kl_estimator: KlKind,
    /// Adapt β to a target KL (`None`: fixed β).
    pub adaptive_kl: Option<AdaptiveKl>,
    /// Discount γ.
    pub gamma: f32,
    /// GAE λ.
    pub lam: f32,
    /// Policy ratio clip ε.
    pub clip_ratio: f32,
    /// Value clip.
    pub clip_value: f32,
    /// Weight of the value loss.
    pub vf_coef: f64,
    /// Weight of the entropy bonus (0: none; entropy is logged either way).
    pub entropy_coef: f64,
    /// Learning rate of the policy.
    pub policy_lr: f64,
    /// Learning rate of the critic.
    pub critic_lr: f64,
    /// Learning-rate decay over iterations (no warm-up).
    pub lr_schedule: LrSchedule,
    /// Global L2 clip of each model's gradient (`None`: none).
    pub max_grad_norm: Option<f64>,
    /// Adam ε.
    pub adam_epsilon: f64,
    /// Whiten advantages over the iteration's response tokens.
    pub whiten_advantages: bool,
    /// Whiten the per-token rewards (keeping their mean) before GAE.
    pub whiten_rewards: bool,
    /// Normalise scores with the reward statistics (when the reward has them).
    pub normalize_scores: bool,
    /// Clip (normalised) scores to `±score_clip` (`None`: no clip).
    pub score_clip: Option<f32>,
    /// Subtracted from the (normalised, clipped) score of a response that reached
    /// `max_new_tokens` without an end-of-sequence token (`None`: no penalty).
    pub missing_eos_penalty: Option<f32>,
    /// Stop an epoch early when the mean approx-KL of its updates so far exceeds this.
    pub approx_kl_stop: Option<f64>,
    /// Skip (and log) a minibatch whose mean ratio π/π_old exceeds this.
    pub ratio_threshold: f64,
    /// Greedy answers to the held-out prompts every this many iterations (0: never).
    pub samples_every: usize,
    /// Tokens per held-out answer.
    pub sample_max_new_tokens: usize,
    /// Checkpoint every this many iterations (`None`: only at the end and when stopped).
    pub checkpoint_every: Option<usize>,
    /// Checkpoints kept.
    pub keep_checkpoints: usize,
    /// The seed every random draw derives from.
    pub seed: u64,
}

impl Default for PpoConfig {
    fn default() -> Self {
        Self {
            iterations: 12,
            rollouts_per_iteration: 8,
            minibatch_size: 4,
            micro_batch_size: 4,
            ppo_epochs: 2,
            temperature: 0.7,
            max_new_tokens: 48,
            kl_coef: 0.05,
            kl_estimator: KlKind::K3,
            adaptive_kl: None,
            gamma: 1.0,
            lam: 0.95,
            clip_ratio: 0.2,
            clip_value: 0.2,
            vf_coef: 0.1,
            entropy_coef: 0.0,
            policy_lr: 1e-5,
            critic_lr: 1e-5,
            lr_schedule: LrSchedule::Constant,
            max_grad_norm: Some(1.0),
            adam_epsilon: 1e-5,
            whiten_advantages: true,
            whiten_rewards: false,
            normalize_scores: true,
            score_clip: Some(10.0),
            missing_eos_penalty: Some(1.0),
            approx_kl_stop: None,
            ratio_threshold: 10.0,
            samples_every: 4,
            sample_max_new_tokens: 48,
            checkpoint_every: None,
            keep_checkpoints: 1,
            seed: 0,
        }
    }
}

/// Settings that may change when a run is resumed: they do not change what is trained
/// (the held-out answers draw no random numbers).
pub const RESUMABLE_FIELDS: [&str; 4] = [
    "checkpoint_every",
    "keep_checkpoints",
    "samples_every",
    "sample_max_new_tokens",
];

impl PpoConfig {
    /// The defaults of a profile.
    pub fn profile(profile: Profile) -> Self {
        let base = Self::default();
        match profile {
            Profile::Default => base,
            Profile::Paper => Self {
                kl_estimator: KlKind::K1,
                temperature: 1.0,
                max_new_tokens: 128,
                kl_coef: 0.001,
                missing_eos_penalty: None,
                ..base
            },
            Profile::Trl => Self {
                kl_estimator: KlKind::K1,
                rollouts_per_iteration: 512,
                minibatch_size: 128,
                ppo_epochs: 4,
                max_new_tokens: 53,
                policy_lr: 3e-6,
                critic_lr: 3e-6,
                lr_schedule: LrSchedule::Linear,
                adam_epsilon: 1e-8,
                normalize_scores: false,
                score_clip: None,
                missing_eos_penalty: None,
                ..base
            },
        }
    }

    /// Checks the ranges; the error names the field.
    pub fn validate(&self) -> Result<()> {
        let bad = |field, message: String| Err(PpoError::Config { field, message });
        let positive = [
            ("iterations", self.iterations),
            ("rollouts_per_iteration", self.rollouts_per_iteration),
            ("minibatch_size", self.minibatch_size),
            ("micro_batch_size", self.micro_batch_size),
            ("ppo_epochs", self.ppo_epochs),
            ("max_new_tokens", self.max_new_tokens),
            ("keep_checkpoints", self.keep_checkpoints),
        ];
        for (field, v) in positive {
            if v == 0 {
                return bad(field, "must be at least 1".into());
            }
        }
        if self.minibatch_size > self.rollouts_per_iteration {
            return bad(
                "minibatch_size",
                format!(
                    "{} is more than rollouts_per_iteration ({})",
                    self.minibatch_size, self.rollouts_per_iteration
                ),
            );
        }
        if !self.minibatch_size.is_multiple_of(self.micro_batch_size) {
            return bad(
                "micro_batch_size",
                format!(
                    "must divide minibatch_size ({}): minibatches are made of whole micro-batches, got {}",
                    self.minibatch_size, self.micro_batch_size
                ),
            );
        }
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            return bad(
                "temperature",
                format!(
                    "must be finite and > 0 (PPO samples from π_T), got {}",
                    self.temperature
                ),
            );
        }
        for (field, v) in [
            ("kl_coef", self.kl_coef),
            ("vf_coef", self.vf_coef),
            ("entropy_coef", self.entropy_coef),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return bad(field, format!("must be finite and ≥ 0, got {v}"));
            }
        }
        for (field, v) in [("policy_lr", self.policy_lr), ("critic_lr", self.critic_lr)] {
            if !(v > 0.0 && v <= 1.0) {
                return bad(field, format!("must be in (0, 1], got {v}"));
            }
        }
        for (field, v) in [("gamma", self.gamma), ("lam", self.lam)] {
            if !(0.0..=1.0).contains(&v) {
                return bad(field, format!("must be in [0, 1], got {v}"));
            }
        }
        for (field, v) in [
            ("clip_ratio", self.clip_ratio),
            ("clip_value", self.clip_value),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return bad(field, format!("must be finite and > 0, got {v}"));
            }
        }
        if let Some(a) = self.adaptive_kl
            && !(a.target > 0.0 && a.target.is_finite() && a.horizon > 0.0 && a.horizon.is_finite())
        {
            return bad(
                "adaptive_kl",
                format!(
                    "target and horizon must be finite and > 0, got {} and {}",
                    a.target, a.horizon
                ),
            );
        }
        if let Some(c) = self.score_clip
            && !(c.is_finite() && c > 0.0)
        {
            return bad("score_clip", format!("must be finite and > 0, got {c}"));
        }
        if let Some(p) = self.missing_eos_penalty
            && !p.is_finite()
        {
            return bad("missing_eos_penalty", format!("must be finite, got {p}"));
        }
        if let Some(k) = self.approx_kl_stop
            && !(k.is_finite() && k > 0.0)
        {
            return bad("approx_kl_stop", format!("must be finite and > 0, got {k}"));
        }
        if !(self.ratio_threshold.is_finite() && self.ratio_threshold > 1.0) {
            return bad(
                "ratio_threshold",
                format!("must be finite and > 1, got {}", self.ratio_threshold),
            );
        }
        if self.checkpoint_every == Some(0) {
            return bad("checkpoint_every", "must be at least 1 (or none)".into());
        }
        self.optim().validate()?;
        Ok(())
    }

    /// The optimizer settings of the shared trainer: AdamW without weight decay (TRL,
    /// CleanRL), Adam ε, the schedule over iterations without warm-up; `learning_rate` is
    /// the policy's (the critic's follows the same schedule, scaled).
    pub fn optim(&self) -> OptimConfig {
        OptimConfig {
            learning_rate: self.policy_lr,
            schedule: self.lr_schedule,
            warmup_ratio: 0.0,
            warmup_steps: Some(0),
            min_lr_ratio: 0.0,
            weight_decay: 0.0,
            adam_beta1: 0.9,
            adam_beta2: 0.999,
            adam_epsilon: self.adam_epsilon,
            max_grad_norm: self.max_grad_norm,
        }
    }

    /// The learning rates `(policy, critic)` of iteration `it` (from 0).
    pub fn learning_rates(&self, it: usize) -> (f64, f64) {
        let f = self.optim().lr_at(it, self.iterations) / self.policy_lr;
        (self.policy_lr * f, self.critic_lr * f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_hold_their_sources_settings_and_validate() {
        let paper = PpoConfig::profile(Profile::Paper);
        assert_eq!(
            (
                paper.kl_coef,
                paper.clip_ratio,
                paper.gamma,
                paper.entropy_coef
            ),
            (0.001, 0.2, 1.0, 0.0)
        );
        assert_eq!(paper.max_new_tokens, 128);
        let trl = PpoConfig::profile(Profile::Trl);
        assert_eq!(
            (
                trl.kl_coef,
                trl.lam,
                trl.vf_coef,
                trl.ppo_epochs,
                trl.temperature
            ),
            (0.05, 0.95, 0.1, 4, 0.7)
        );
        for c in [PpoConfig::default(), paper, trl] {
            c.validate().unwrap();
        }
    }

    #[test]
    fn bad_settings_name_their_field() {
        for (c, field) in [
            (
                PpoConfig {
                    temperature: 0.0,
                    ..Default::default()
                },
                "temperature",
            ),
            (
                PpoConfig {
                    minibatch_size: 9,
                    ..Default::default()
                },
                "minibatch_size",
            ),
            (
                PpoConfig {
                    ratio_threshold: 0.5,
                    ..Default::default()
                },
                "ratio_threshold",
            ),
            (
                PpoConfig {
                    adaptive_kl: Some(AdaptiveKl {
                        target: 0.0,
                        horizon: 1.0,
                    }),
                    ..Default::default()
                },
                "adaptive_kl",
            ),
        ] {
            match c.validate() {
                Err(PpoError::Config { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: {other:?}"),
            }
        }
    }

    #[test]
    fn linear_decay_scales_both_learning_rates() {
        let c = PpoConfig {
            lr_schedule: LrSchedule::Linear,
            iterations: 4,
            policy_lr: 1e-5,
            critic_lr: 2e-5,
            ..Default::default()
        };
        let (p0, c0) = c.learning_rates(0);
        let (p2, c2) = c.learning_rates(2);
        assert!((p0 - 1e-5).abs() < 1e-12 && (c0 - 2e-5).abs() < 1e-12);
        assert!((c2 / p2 - 2.0).abs() < 1e-9 && p2 < p0);
    }
}

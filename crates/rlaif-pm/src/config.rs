//! The configuration of a preference-model run.

use crate::error::{PmError, Result};
use rlaif_train::OptimConfig;
use rlaif_train::schedule::LrSchedule;
use serde::{Deserialize, Serialize};

/// What to do with a comparison whose prompt does not fit the length limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LengthPolicy {
    /// Stop with [`PmError::PromptTooLong`] naming the file, line and id.
    #[default]
    Error,
    /// Leave the comparison out and count it.
    Skip,
}

/// Everything that shapes a preference-model run. The defaults are those of the reward
/// trainers of OpenRLHF and TRL where they have one (learning rate of the order of 1e-5,
/// one epoch, a short warm-up, cosine decay, clipping at 1.0):
///
/// | field | default | note |
/// |---|---|---|
/// | `learning_rate` | 1e-5 | peak |
/// | `schedule` | cosine | decay after warm-up |
/// | `warmup_ratio` | 0.03 | of the total steps, rounded up (OpenRLHF's; ignored when `warmup_steps` is set) |
/// | `warmup_steps` | none | |
/// | `min_lr_ratio` | 0.0 | the decay's floor, as a fraction of the peak |
/// | `weight_decay` | 0.0 | decoupled (AdamW); never applied to norms and biases |
/// | `adam_beta1`, `adam_beta2` | 0.9, 0.999 | PyTorch's |
/// | `adam_epsilon` | 1e-8 | PyTorch's |
/// | `max_grad_norm` | 1.0 | global L2 norm; `None` disables clipping |
/// | `batch_size` | 4 | comparisons per forward/backward pass (8 sequences) |
/// | `grad_accum_steps` | 1 | micro-batches per optimizer step |
/// | `epochs` | 1 | passes over the training comparisons |
/// | `max_steps` | none | overrides `epochs` |
/// | `max_seq_len` | 1024 | prompt ⊕ response tokens; longer responses are cut, keeping their end-of-turn token |
/// | `length_policy` | error | what to do with a prompt that alone reaches `max_seq_len` |
/// | `margin` | 0.0 | `m` of the Bradley–Terry loss (Llama 2's margin), in reward units |
/// | `center_coef` | 0.0 | `η` of the reward-centring term `η·(r_a + r_b)²` (Eisenstein et al. 2023 use 0.01) |
/// | `eval_every` | 50 | optimizer steps between held-out evaluations (also before the first step and after the last) |
/// | `eval_batch_size` | 8 | comparisons per evaluation batch |
/// | `decisive_threshold` | 0.1 | accuracy counts the held-out pairs whose label is decisive, `\|p − ½\| > threshold` |
/// | `calibration_bins` | 10 | equal-width reliability bins of the expected calibration error |
/// | `checkpoint_every` | 50 | optimizer steps between checkpoints (also after the last step and on interruption) |
/// | `keep_checkpoints` | 2 | the newest are kept, older ones deleted |
/// | `reward_stats_max` | 1024 | most responses scored for the reward statistics (a seeded sample when there are more) |
/// | `seed` | 0 | data order, the sample of the reward statistics |
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PmConfig {
    /// Peak learning rate.
    pub learning_rate: f64,
    /// Decay after warm-up.
    pub schedule: LrSchedule,
    /// Warm-up length as a fraction of the total steps (rounded up).
    pub warmup_ratio: f64,
    /// Warm-up length in steps; overrides `warmup_ratio`.
    pub warmup_steps: Option<usize>,
    /// The learning rate at the end of the decay, as a fraction of the peak.
    pub min_lr_ratio: f64,
    /// Decoupled weight decay (AdamW), not applied to norm weights and biases.
    pub weight_decay: f64,
    /// Adam β₁.
    pub adam_beta1: f64,
    /// Adam β₂.
    pub adam_beta2: f64,
    /// Adam ε.
    pub adam_epsilon: f64,
    /// Clip gradients to this global L2 norm (`None`: no clipping).
    pub max_grad_norm: Option<f64>,
    /// Comparisons per micro-batch.
    pub batch_size: usize,
    /// Micro-batches per optimizer step (the effective batch is
    /// `batch_size · grad_accum_steps` comparisons).
    pub grad_accum_steps: usize,
    /// Passes over the training comparisons.
    pub epochs: usize,
    /// Stop after this many optimizer steps in all (overrides `epochs`).
    pub max_steps: Option<usize>,
    /// Longest prompt ⊕ response, in tokens (also bounded by the model's positions).
    pub max_seq_len: usize,
    /// What to do with prompts that alone reach `max_seq_len`.
    pub length_policy: LengthPolicy,
    /// Margin `m` of the Bradley–Terry loss.
    pub margin: f64,
    /// Weight `η` of the reward-centring term `(r_a + r_b)²`.
    pub center_coef: f64,
    /// Evaluate every this many steps (`None`: only before and after).
    pub eval_every: Option<usize>,
    /// Comparisons per evaluation batch.
    pub eval_batch_size: usize,
    /// A held-out pair counts for accuracy when `|p − ½|` exceeds this.
    pub decisive_threshold: f64,
    /// Reliability bins of the calibration error.
    pub calibration_bins: usize,
    /// Write a checkpoint every this many steps (`None`: only at the end and on
    /// interruption).
    pub checkpoint_every: Option<usize>,
    /// How many checkpoints to keep (at least 1).
    pub keep_checkpoints: usize,
    /// The most responses scored for the reward statistics.
    pub reward_stats_max: usize,
    /// Seed of the data order and of the reward-statistics sample.
    pub seed: u64,
}

impl Default for PmConfig {
    fn default() -> Self {
        Self {
            learning_rate: 1e-5,
            schedule: LrSchedule::Cosine,
            warmup_ratio: 0.03,
            warmup_steps: None,
            min_lr_ratio: 0.0,
            weight_decay: 0.0,
            adam_beta1: 0.9,
            adam_beta2: 0.999,
            adam_epsilon: 1e-8,
            max_grad_norm: Some(1.0),
            batch_size: 4,
            grad_accum_steps: 1,
            epochs: 1,
            max_steps: None,
            max_seq_len: 1024,
            length_policy: LengthPolicy::Error,
            margin: 0.0,
            center_coef: 0.0,
            eval_every: Some(50),
            eval_batch_size: 8,
            decisive_threshold: 0.1,
            calibration_bins: 10,
            checkpoint_every: Some(50),
            keep_checkpoints: 2,
            reward_stats_max: 1024,
            seed: 0,
        }
    }
}

/// Fields that may change between a run and its resumption: they change what is observed,
/// not what is trained.
pub(crate) const RESUMABLE_FIELDS: [&str; 7] = [
    "eval_every",
    "eval_batch_size",
    "decisive_threshold",
    "calibration_bins",
    "checkpoint_every",
    "keep_checkpoints",
    "reward_stats_max",
];

impl PmConfig {
    /// The optimizer settings, for the shared trainer.
    pub fn optim(&self) -> OptimConfig {
        OptimConfig {
            learning_rate: self.learning_rate,
            schedule: self.schedule,
            warmup_ratio: self.warmup_ratio,
            warmup_steps: self.warmup_steps,
            min_lr_ratio: self.min_lr_ratio,
            weight_decay: self.weight_decay,
            adam_beta1: self.adam_beta1,
            adam_beta2: self.adam_beta2,
            adam_epsilon: self.adam_epsilon,
            max_grad_norm: self.max_grad_norm,
        }
    }

    /// Checks the ranges; the error names the field.
    pub fn validate(&self) -> Result<()> {
        self.optim().validate()?;
        let bad = |field, message: &str| {
            Err(PmError::Config {
                field,
                message: message.to_string(),
            })
        };
        for (field, v) in [
            ("batch_size", self.batch_size),
            ("grad_accum_steps", self.grad_accum_steps),
            ("eval_batch_size", self.eval_batch_size),
            ("keep_checkpoints", self.keep_checkpoints),
            ("calibration_bins", self.calibration_bins),
        ] {
            if v == 0 {
                return bad(field, "must be at least 1");
            }
        }
        if self.max_steps.is_none() && self.epochs == 0 {
            return bad("epochs", "must be at least 1 (or set max_steps)");
        }
        if self.max_steps == Some(0) {
            return bad("max_steps", "must be at least 1");
        }
        if self.max_seq_len < 2 {
            return bad("max_seq_len", "must be at least 2");
        }
        for (field, v) in [("margin", self.margin), ("center_coef", self.center_coef)] {
            if !(v.is_finite() && v >= 0.0) {
                return bad(field, "must be finite and ≥ 0");
            }
        }
        if !(0.0..0.5).contains(&self.decisive_threshold) {
            return bad("decisive_threshold", "must be in [0, 0.5)");
        }
        for (field, v) in [
            ("eval_every", self.eval_every),
            ("checkpoint_every", self.checkpoint_every),
        ] {
            if v == Some(0) {
                return bad(field, "must be at least 1 (or none)");
            }
        }
        Ok(())
    }

    /// Comparisons per optimizer step.
    pub fn effective_batch(&self) -> usize {
        self.batch_size * self.grad_accum_steps
    }

    /// Optimizer steps for `n` training comparisons.
    pub fn total_steps(&self, n: usize) -> usize {
        self.max_steps
            .unwrap_or_else(|| self.epochs * n.div_ceil(self.effective_batch()))
    }
}

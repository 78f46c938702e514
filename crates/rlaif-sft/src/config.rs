//! The configuration of a supervised fine-tuning run.

use crate::encode::LengthPolicy;
use crate::error::{Result, SftError};
use rlaif_train::OptimConfig;
use rlaif_train::schedule::LrSchedule;
use serde::{Deserialize, Serialize};

/// Everything that shapes an SFT run. The defaults follow TRL's `SFTConfig` / Hugging Face's
/// `TrainingArguments` where those have one, so results are comparable:
///
/// | field | default | note |
/// |---|---|---|
/// | `learning_rate` | 2e-5 | peak, TRL's default |
/// | `schedule` | cosine | decay after warm-up |
/// | `warmup_ratio` | 0.1 | of the total steps, rounded up (ignored when `warmup_steps` is set) |
/// | `warmup_steps` | none | |
/// | `min_lr_ratio` | 0.0 | the decay's floor, as a fraction of the peak |
/// | `weight_decay` | 0.0 | decoupled (AdamW); never applied to norms and biases |
/// | `adam_beta1`, `adam_beta2` | 0.9, 0.999 | PyTorch's |
/// | `adam_epsilon` | 1e-8 | PyTorch's (Burn's own default is 1e-5) |
/// | `max_grad_norm` | 1.0 | global L2 norm; `None` disables clipping |
/// | `batch_size` | 4 | examples per forward/backward pass (micro-batch) |
/// | `grad_accum_steps` | 1 | micro-batches per optimizer step |
/// | `epochs` | 1 | passes over the training set |
/// | `max_steps` | none | overrides `epochs` |
/// | `max_seq_len` | 1024 | prompt + completion tokens (TRL's `max_length`); completions are cut to fit |
/// | `length_policy` | error | what to do with a prompt that alone reaches `max_seq_len` |
/// | `eval_every` | 50 | optimizer steps between held-out evaluations (also before the first step and after the last) |
/// | `eval_batch_size` | 8 | |
/// | `checkpoint_every` | 50 | optimizer steps between checkpoints (also after the last step and on interruption) |
/// | `keep_checkpoints` | 2 | the newest are kept, older ones deleted |
/// | `seed` | 0 | data order |
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SftConfig {
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
    /// Examples per micro-batch.
    pub batch_size: usize,
    /// Micro-batches per optimizer step (the effective batch is
    /// `batch_size · grad_accum_steps`).
    pub grad_accum_steps: usize,
    /// Passes over the training set.
    pub epochs: usize,
    /// Stop after this many optimizer steps in all (overrides `epochs`).
    pub max_steps: Option<usize>,
    /// Longest prompt + completion, in tokens (also bounded by the model's positions).
    pub max_seq_len: usize,
    /// What to do with prompts that alone reach `max_seq_len`.
    pub length_policy: LengthPolicy,
    /// Evaluate the held-out loss every this many steps (`None`: only before and after).
    pub eval_every: Option<usize>,
    /// Examples per evaluation batch.
    pub eval_batch_size: usize,
    /// Write a checkpoint every this many steps (`None`: only at the end and on
    /// interruption).
    pub checkpoint_every: Option<usize>,
    /// How many checkpoints to keep (at least 1).
    pub keep_checkpoints: usize,
    /// Seed of the data order.
    pub seed: u64,
}

impl Default for SftConfig {
    fn default() -> Self {
        Self {
            learning_rate: 2e-5,
            schedule: LrSchedule::Cosine,
            warmup_ratio: 0.1,
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
            eval_every: Some(50),
            eval_batch_size: 8,
            checkpoint_every: Some(50),
            keep_checkpoints: 2,
            seed: 0,
        }
    }
}

/// Fields that may change between a run and its resumption: they don't change what is
/// computed.
pub(crate) const RESUMABLE_FIELDS: [&str; 4] = [
    "eval_every",
    "eval_batch_size",
    "checkpoint_every",
    "keep_checkpoints",
];

impl SftConfig {
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
            Err(SftError::Config {
                field,
                message: message.to_string(),
            })
        };
        for (field, v) in [
            ("batch_size", self.batch_size),
            ("grad_accum_steps", self.grad_accum_steps),
            ("eval_batch_size", self.eval_batch_size),
            ("keep_checkpoints", self.keep_checkpoints),
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

    /// Examples per optimizer step.
    pub fn effective_batch(&self) -> usize {
        self.batch_size * self.grad_accum_steps
    }

    /// Optimizer steps for `n` training examples.
    pub fn total_steps(&self, n: usize) -> usize {
        self.max_steps
            .unwrap_or_else(|| self.epochs * n.div_ceil(self.effective_batch()))
    }

    /// Warm-up steps out of `total` (at most `total − 1`, so the peak is reached).
    pub fn warmup(&self, total: usize) -> usize {
        self.optim().warmup(total)
    }
}

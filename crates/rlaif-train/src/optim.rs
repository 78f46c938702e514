//! The optimizer settings every stage shares, and the AdamW they build.

use crate::error::{Result, TrainError};
use crate::schedule::{LrSchedule, learning_rate};
use burn::module::ParamGroup;
use burn::optim::{AdamWState, AdaptiveMomentumState, LearningRate, ModuleOptimizer, Optimizer};
use burn::prelude::*;
use rlaif_kernels::{AdamWStep, adamw_step};
use serde::{Deserialize, Serialize};

/// AdamW, the learning-rate schedule and gradient clipping. The defaults follow PyTorch and
/// Hugging Face's `TrainingArguments` where those have one:
///
/// | field | default | note |
/// |---|---|---|
/// | `learning_rate` | 2e-5 | peak |
/// | `schedule` | cosine | decay after warm-up |
/// | `warmup_ratio` | 0.1 | of the total steps, rounded up (ignored when `warmup_steps` is set) |
/// | `warmup_steps` | none | |
/// | `min_lr_ratio` | 0.0 | the decay's floor, as a fraction of the peak |
/// | `weight_decay` | 0.0 | decoupled (AdamW); never applied to norms and biases |
/// | `adam_beta1`, `adam_beta2` | 0.9, 0.999 | PyTorch's |
/// | `adam_epsilon` | 1e-8 | PyTorch's (Burn's own default is 1e-5) |
/// | `max_grad_norm` | 1.0 | global L2 norm; `None` disables clipping |
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OptimConfig {
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
}

impl Default for OptimConfig {
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
        }
    }
}

impl OptimConfig {
    /// Checks the ranges; the error names the field.
    pub fn validate(&self) -> Result<()> {
        let bad = |field, message: &str| {
            Err(TrainError::Config {
                field,
                message: message.to_string(),
            })
        };
        if !(self.learning_rate > 0.0 && self.learning_rate <= 1.0) {
            return bad("learning_rate", "must be in (0, 1]");
        }
        if !(0.0..1.0).contains(&self.warmup_ratio) {
            return bad("warmup_ratio", "must be in [0, 1)");
        }
        if !(0.0..=1.0).contains(&self.min_lr_ratio) {
            return bad("min_lr_ratio", "must be in [0, 1]");
        }
        if !(self.weight_decay >= 0.0 && self.weight_decay < 1.0) {
            return bad("weight_decay", "must be in [0, 1)");
        }
        for (field, b) in [
            ("adam_beta1", self.adam_beta1),
            ("adam_beta2", self.adam_beta2),
        ] {
            if !(0.0..1.0).contains(&b) {
                return bad(field, "must be in [0, 1)");
            }
        }
        if !(self.adam_epsilon > 0.0 && self.adam_epsilon.is_finite()) {
            return bad("adam_epsilon", "must be positive and finite");
        }
        if let Some(m) = self.max_grad_norm
            && !(m > 0.0 && m.is_finite())
        {
            return bad("max_grad_norm", "must be positive and finite (or none)");
        }
        Ok(())
    }

    /// Warm-up steps out of `total` (at most `total − 1`, so the peak is reached).
    pub fn warmup(&self, total: usize) -> usize {
        self.warmup_steps
            .unwrap_or_else(|| (self.warmup_ratio * total as f64).ceil() as usize)
            .min(total.saturating_sub(1))
    }

    /// The learning rate of optimizer step `step` (from 0) of a run of `total` steps.
    pub fn lr_at(&self, step: usize, total: usize) -> f64 {
        learning_rate(
            self.schedule,
            self.learning_rate,
            self.warmup(total),
            total,
            self.min_lr_ratio,
            step,
        )
    }

    /// The AdamW optimizer (Loshchilov & Hutter 2019: decoupled weight decay); parameters
    /// whose module path names a norm or a bias get no weight decay, as in Hugging Face's
    /// `Trainer` and nanoGPT.
    ///
    /// The optimizer is [`FusedAdamW`]: Burn's `AdamW`, step for step and bit for bit, with
    /// each parameter's update in one pass of [`rlaif_kernels::adamw_step`] on flex.
    pub fn adamw(&self) -> ModuleOptimizer {
        let adamw = |wd: f64| FusedAdamW {
            beta1: self.adam_beta1 as f32,
            beta2: self.adam_beta2 as f32,
            epsilon: self.adam_epsilon as f32,
            weight_decay: wd as f32,
        };
        let optim = ModuleOptimizer::from(adamw(self.weight_decay));
        if self.weight_decay > 0.0 {
            // Module paths: `layers.0.input_layernorm.weight`, `norm.weight`, `...q_proj.bias`.
            let no_decay = ParamGroup::from_any_regexes(vec![r"norm\.", r"(^|\.)bias$"])
                .expect("constant regexes compile");
            optim.with_group(no_decay, adamw(0.0), None)
        } else {
            optim
        }
    }
}

/// AdamW (Loshchilov & Hutter 2019) as a Burn [`Optimizer`]: Burn's `AdamW` (without
/// AMSGrad or cautious decay) computed by [`rlaif_kernels::adamw_step`], which on flex runs
/// a parameter's update as one parallel pass instead of about fifteen serial tensor ops.
/// Its state is Burn's own [`AdamWState`] record (step count and both moments).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FusedAdamW {
    /// β₁.
    pub beta1: f32,
    /// β₂.
    pub beta2: f32,
    /// ε.
    pub epsilon: f32,
    /// Decoupled weight decay λ.
    pub weight_decay: f32,
}

impl Optimizer for FusedAdamW {
    type State<const D: usize> = AdamWState<D>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<D>, Option<Self::State<D>>) {
        let (time, moments) = match state {
            Some(s) => (
                s.momentum.time + 1,
                Some((s.momentum.moment_1, s.momentum.moment_2)),
            ),
            None => (1, None),
        };
        let h = AdamWStep {
            lr,
            beta1: self.beta1,
            beta2: self.beta2,
            epsilon: self.epsilon,
            weight_decay: self.weight_decay,
            time,
        };
        let out = adamw_step(tensor, grad, moments, &h)
            .expect("a parameter, its gradient and its moments have one shape");
        let momentum = AdaptiveMomentumState::new(time, out.moment_1, out.moment_2);
        (out.param, Some(AdamWState::new(momentum)))
    }

    fn to_device<const D: usize>(mut state: Self::State<D>, device: &Device) -> Self::State<D> {
        state.momentum = state.momentum.to_device(device);
        state
    }
}

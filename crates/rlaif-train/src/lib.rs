//! What every training stage of rlaif shares (supervised fine-tuning, the preference
//! model, PPO): generic over the Burn module being trained and over the stage's own saved
//! state.
//!
//! - [`OptimConfig`]: AdamW (ε, betas, decoupled weight decay with norms and biases
//!   excluded), the learning-rate [`schedule`] (warm-up, then constant / linear / cosine),
//!   global-norm gradient [`clip`]ping.
//! - [`Trainer`]: exact gradient accumulation over micro-batches, the non-finite guard,
//!   the optimizer step, [`checkpoint`]s (atomic; model + optimizer + a serde state of the
//!   stage's choosing; `latest`, `prune`), resume with a [`RunIdentity`] check that
//!   refuses a changed setting or changed data with the field named, and the [`RunLog`]
//!   (one JSON line per step or evaluation, appended and flushed, read back across
//!   resumed sessions).
//!
//! # Example
//!
//! A least-squares fit of `y = 2x − 1`, in two micro-batches per step, resumable from
//! `out`:
//!
//! ```
//! use burn::module::{Module, Param};
//! use burn::prelude::*;
//! use rlaif_train::{LogEntry, OptimConfig, RunIdentity, Trainer, TrainerConfig, schedule::LrSchedule};
//!
//! #[derive(Module, Debug)]
//! struct Line {
//!     w: Param<Tensor<1>>,
//!     b: Param<Tensor<1>>,
//! }
//!
//! #[derive(serde::Serialize, serde::Deserialize)]
//! struct Entry { step: usize, loss: f64 }
//! impl LogEntry for Entry {
//!     fn step(&self) -> usize { self.step }
//! }
//!
//! let device = Device::default().autodiff();
//! let line = Line {
//!     w: Param::from_tensor(Tensor::zeros([1], &device)),
//!     b: Param::from_tensor(Tensor::zeros([1], &device)),
//! };
//! let xs: Vec<f32> = (0..8).map(|i| i as f32 / 4.0).collect();
//! let config = TrainerConfig {
//!     optim: OptimConfig { learning_rate: 0.1, schedule: LrSchedule::Constant, max_grad_norm: None, ..Default::default() },
//!     total_steps: 300,
//!     checkpoint_every: None,
//!     keep_checkpoints: 1,
//! };
//! let out = tempfile::tempdir()?;
//! let identity = RunIdentity::new(&config.optim, &[])?;
//! let mut trainer = Trainer::open(line, config, out.path(), identity, ())?.trainer;
//! while !trainer.is_done() {
//!     let stats = trainer.step(2, |m: &Line, i| {
//!         let x = Tensor::<1>::from_floats(&xs[i * 4..i * 4 + 4], &device);
//!         let y = x.clone().mul_scalar(2.0).sub_scalar(1.0);
//!         let pred = x * m.w.val() + m.b.val();
//!         // Each micro-batch's squared error divided by the step's 8 examples.
//!         Ok::<_, rlaif_train::TrainError>((pred - y).square().sum().div_scalar(8.0))
//!     })?;
//!     trainer.log(&Entry { step: stats.step, loss: stats.loss })?;
//! }
//! trainer.checkpoint()?;
//! let (line, ()) = trainer.into_parts();
//! let w: f32 = line.w.val().into_scalar();
//! assert!((w - 2.0).abs() < 0.05, "w = {w}");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod checkpoint;
pub mod clip;
mod error;
mod log;
mod optim;
mod resume;
pub mod schedule;
mod trainer;

pub use error::{Result, TrainError};
pub use log::{LOG_FILE, LogEntry, RunLog};
pub use optim::{FusedAdamW, OptimConfig};
pub use resume::RunIdentity;
pub use trainer::{
    Accumulated, Opened, StepStats, Trainer, TrainerConfig, UpdateGroup, take_grads,
};

#[cfg(test)]
mod tests;

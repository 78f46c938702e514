//! The supervised stage of Constitutional AI (SL-CAI; Bai et al. 2022, arXiv 2212.08073,
//! §3): fine-tune the model on its own revised responses to red-team prompts, mixed with
//! helpful samples so that it stays helpful.
//!
//! - Data: examples from JSON Lines ([`read_examples`]: records of `rlaif-revision`,
//!   Hugging Face `messages`, TRL `prompt`/`completion`), a seeded held-out split, mixing
//!   helpful samples in by a ratio ([`SftData::build`] with a [`DataConfig`]).
//! - Encoding: rendering through the chat template and tokenizing, with the boundary
//!   between prompt and completion; the loss covers completion tokens only.
//! - [`train()`]: the completion-only loss on the shared trainer of `rlaif-train` (AdamW,
//!   warm-up then cosine / linear / constant decay, global-norm clipping, exact gradient
//!   accumulation, the non-finite guard, atomic resumable checkpoints, the run log), a
//!   held-out loss, and a Hugging Face model directory out (loads in transformers).
//!   [`SftConfig`] documents every default; progress and stop requests go through an
//!   [`Observer`](rlaif_core::progress::Observer).
//!
//! The model is an `rlaif_lm::LanguageModel` on any Burn device: training runs on the
//! device's autodiff twin.
//!
//! # Example
//!
//! A tiny random model learns a fixed reply (a real run loads SmolLM2 with
//! `LanguageModel::load_default` and reads `revisions.jsonl` with [`read_examples`]):
//!
//! ```
//! use burn::prelude::Device;
//! use rlaif_sft::{DataConfig, SftConfig, SftData, SftExample, train};
//! use std::sync::atomic::AtomicBool;
//!
//! let lm = rlaif_lm::tiny::tiny_lm(&rlaif_lm::tiny::tiny_config(), 0, &Device::default())?;
//! let examples: Vec<SftExample> = (0..8)
//!     .map(|i| SftExample::chat(format!("ex{i}"), &format!("question {i}"), "I can't help with that."))
//!     .collect();
//! let split = DataConfig { helpful_ratio: 0.0, eval_fraction: 0.25, seed: 0 };
//! let data = SftData::build(examples, vec![], &split);
//! let config = SftConfig { learning_rate: 3e-3, batch_size: 2, epochs: 4, ..Default::default() };
//! let out = tempfile::tempdir()?;
//! let run = train(lm, &data, &config, out.path(), &AtomicBool::new(false))?;
//! let (before, after) = (&run.report.evals[0], run.report.evals.last().unwrap());
//! assert!(after.loss < before.loss, "held-out loss {} → {}", before.loss, after.loss);
//! assert!(out.path().join("model/model.safetensors").exists());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod batch;
mod config;
mod data;
mod encode;
mod error;
mod train;

pub use config::SftConfig;
pub use data::{
    DataConfig, Origin, SftData, SftExample, mix, parse_examples, read_examples, split_eval,
};
pub use encode::{EncodeStats, EncodedExample, LengthPolicy, encode_all};
pub use error::{Result, SftError};
pub use rlaif_train::schedule::LrSchedule;
pub use train::{EvalResult, LogEntry, SftOutcome, SftReport, evaluate, train};

#[cfg(test)]
mod tests;

//! The supervised stage of Constitutional AI (SL-CAI; Bai et al. 2022, arXiv 2212.08073,
//! §3): fine-tune the model on its own revised responses to red-team prompts, mixed with
//! helpful samples so that it stays helpful.
//!
//! - [`data`]: examples from JSON Lines (records of `rlaif-revision`, Hugging Face
//!   `messages`, TRL `prompt`/`completion`), a seeded held-out split, mixing helpful
//!   samples in by a ratio ([`SftData::build`]).
//! - [`encode`]: rendering through the chat template and tokenizing, with the boundary
//!   between prompt and completion; the loss covers completion tokens only.
//! - [`train()`]: AdamW, warm-up then cosine / linear / constant decay ([`schedule`]),
//!   global-norm clipping ([`clip`]), gradient accumulation, held-out loss, atomic
//!   resumable [`checkpoint`]s, a JSON Lines log and a Hugging Face model directory out
//!   (loads in transformers). [`SftConfig`] documents every default.
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
//! use rlaif_sft::{SftConfig, SftData, SftExample, train};
//! use std::sync::atomic::AtomicBool;
//!
//! let lm = rlaif_lm::tiny::tiny_lm(&rlaif_lm::tiny::tiny_config(), 0, &Device::default())?;
//! let examples: Vec<SftExample> = (0..8)
//!     .map(|i| SftExample::chat(format!("ex{i}"), &format!("question {i}"), "I can't help with that."))
//!     .collect();
//! let data = SftData::build(examples, vec![], 0.0, 0.25, 0);
//! let config = SftConfig { learning_rate: 3e-3, batch_size: 2, epochs: 4, progress: false, ..Default::default() };
//! let out = tempfile::tempdir()?;
//! let run = train(lm, &data, &config, out.path(), &AtomicBool::new(false))?;
//! let (before, after) = (&run.report.evals[0], run.report.evals.last().unwrap());
//! assert!(after.loss < before.loss, "held-out loss {} → {}", before.loss, after.loss);
//! assert!(out.path().join("model/model.safetensors").exists());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod batch;
pub mod checkpoint;
pub mod clip;
mod config;
pub mod data;
pub mod encode;
mod error;
pub mod schedule;
mod train;

pub use config::SftConfig;
pub use data::{SftData, SftExample, mix, read_examples, split_eval};
pub use encode::{EncodeStats, EncodedExample, LengthPolicy, encode_all};
pub use error::{Result, SftError};
pub use schedule::LrSchedule;
pub use train::{
    EvalResult, LogEntry, SftOutcome, SftReport, evaluate, fingerprint, optimizer, train,
};

#[cfg(test)]
mod tests;

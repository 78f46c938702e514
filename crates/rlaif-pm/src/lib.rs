//! The preference model of Constitutional AI (RL-CAI; Bai et al. 2022, arXiv 2212.08073,
//! §4): the language model with a scalar head, trained on comparisons labelled by AI
//! feedback (soft labels) and by people (hard labels), whose score is the reward of PPO.
//!
//! - Model: [`PreferenceModel`] = the decoder of an [`rlaif_lm::LanguageModel`] (a Hugging
//!   Face directory or a GGUF file: by default the SL model) plus a head `[hidden, 1]`
//!   without bias ([`HeadInit`]: small normal or zeros, so initial scores are near 0), read
//!   at the last real token of prompt ⊕ response rendered as a whole conversation ending
//!   with the assistant's end-of-turn token; padding is never read. It implements
//!   [`rlaif_core::RewardModel`].
//! - Data: comparisons from JSON Lines ([`read_comparisons`]: AI-labelled `prompt`,
//!   `response_a`, `response_b`, `p_a`; TRL `prompt` / `chosen` / `rejected`), several
//!   files mixed with a loss weight each, a seeded held-out split by prompt
//!   ([`PmData::build`]), reference pairs for the reward statistics ([`read_reference`]).
//! - [`train()`]: the Bradley–Terry loss against soft labels, with an optional margin and
//!   reward-centring term (`rlaif_kernels::bradley_terry_loss`), on the shared trainer of
//!   `rlaif-train` (AdamW, schedule, global-norm clipping, exact gradient accumulation by
//!   the step's weighted pair count, the non-finite guard, atomic resumable checkpoints,
//!   the run log); [`PmConfig`] documents every default; progress and stop requests go
//!   through an [`Observer`](rlaif_core::progress::Observer).
//! - Evaluation ([`evaluate`], before training, every `eval_every` steps and after the
//!   last): held-out loss, accuracy on decisive pairs, expected calibration error with a
//!   reliability diagram, score mean and spread, per source; `report.json` and SVG
//!   pictures (`calibration.svg`, `curves.svg`).
//! - Out and in: the reward statistics of a reference set ([`RewardStats`], in
//!   `reward_stats.json`) so PPO can normalise rewards;
//!   [`PreferenceModel::save_pretrained`] writes a Hugging Face
//!   `LlamaForSequenceClassification` directory that transformers loads with the same
//!   scores, [`PreferenceModel::load`] reads it back.
//!
//! # Example
//!
//! A tiny random model learns that replies mentioning "sorry" are better (a real run
//! starts from the SL model with `LanguageModel::load` and reads `comparisons.jsonl` with
//! [`read_comparisons`]):
//!
//! ```
//! use burn::prelude::Device;
//! use rlaif_pm::{Comparison, DataConfig, HeadInit, PmConfig, PmData, PreferenceModel, train};
//! use std::sync::atomic::AtomicBool;
//!
//! let lm = rlaif_lm::tiny::tiny_lm(&rlaif_lm::tiny::tiny_config(), 0, &Device::default())?;
//! let pm = PreferenceModel::from_lm(lm, HeadInit::default())?;
//! let comparisons: Vec<Comparison> = (0..24)
//!     .map(|i| {
//!         let (good, bad) = (format!("sorry, no {i}"), format!("sure, here {i}"));
//!         // Which response is listed first alternates; p_a says which one is better.
//!         if i % 2 == 0 {
//!             Comparison::chat(format!("c{i}"), &format!("question {i}"), good, bad, 1.0)
//!         } else {
//!             Comparison::chat(format!("c{i}"), &format!("question {i}"), bad, good, 0.0)
//!         }
//!     })
//!     .collect();
//! let data = PmData::build(vec![comparisons], &DataConfig { eval_fraction: 0.25, seed: 0 });
//! let config = PmConfig { learning_rate: 3e-3, epochs: 6, ..Default::default() };
//! let out = tempfile::tempdir()?;
//! let run = train(pm, &data, &config, out.path(), &AtomicBool::new(false))?;
//! let last = run.report.evals.last().unwrap();
//! assert!(last.accuracy.unwrap() > 0.9, "held-out accuracy {:?}", last.accuracy);
//! assert!(out.path().join("model/model.safetensors").exists());
//! assert!(out.path().join("calibration.svg").exists());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod config;
mod data;
mod encode;
mod error;
pub mod eval;
pub mod hf_dir;
mod model;
pub mod plot;
mod train;

pub use config::{LengthPolicy, PmConfig};
pub use data::{
    Comparison, DataConfig, Origin, PmData, ScoredText, parse_comparisons, parse_reference,
    read_comparisons, read_reference, split_eval,
};
pub use encode::{EncodeStats, encode_comparisons};
pub use error::{PmError, Result};
pub use eval::{EncodedPair, EvalResult, ReliabilityBin, SourceEval, evaluate};
pub use hf_dir::REWARD_STATS_FILE;
pub use model::{EncodedText, HeadInit, PreferenceModel, RewardNet, RewardStats, rewards};
pub use rlaif_train::schedule::LrSchedule;
pub use train::{LogEntry, PmOutcome, PmReport, train};

#[cfg(test)]
mod tests;

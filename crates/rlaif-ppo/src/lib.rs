//! PPO of Constitutional AI (RL-CAI; Bai et al. 2022, arXiv 2212.08073, §4.2, with the RL
//! settings of Bai et al. 2022a, §4.1 and App. B.1): the SL model fine-tuned against a
//! reward (the preference model, or a plain Rust function) with a per-token KL penalty to
//! the frozen SL model.
//!
//! - Models ([`PpoModels`]): the SL model, which is the frozen reference and the policy's
//!   start; a critic (a scalar head read at every position) on a decoder of its own,
//!   started from the preference model ([`CriticInit::RewardModel`], as TRL and OpenRLHF)
//!   or from the policy with a zero head, or on the policy's own decoder
//!   ([`CriticInit::SharedTrunk`]: one forward pass for log-probs and values).
//! - The reward ([`Reward`]): any [`rlaif_core::RewardModel`] with its normalisation
//!   statistics (the preference model's `reward_stats.json`), or a function of (prompt,
//!   response); the score lands on the last real response token, never on padding, with a
//!   missing-EOS penalty ([`reward`]).
//! - Rollouts ([`rollout`]): prompts mixed from several files ([`PromptMix`]), sampled at
//!   temperature T; every log-probability divides the logits by the same T, and the update
//!   reproduces the rollout's log-probabilities exactly (ratio 1 before the first update).
//! - The update ([`train()`]): KL penalty k1 or k3 with β fixed or adaptive
//!   ([`KlController`], Ziegler et al. 2019), GAE (the fused kernel of `rlaif_kernels`),
//!   whitening, clipped surrogate and value losses, entropy, separate learning rates for
//!   policy and critic, global-norm clipping, approx-KL early stop, ratio-threshold skips;
//!   on the shared trainer of `rlaif_train` (atomic checkpoints of both models, both
//!   optimizer states, β and the data position; a resumed run equals an uninterrupted one
//!   bitwise; the non-finite guard).
//! - Out: `log.jsonl` under TRL's metric names ([`IterationLog`]), held-out greedy answers
//!   with their scores (`samples.jsonl`), `curves.svg`, `report.json`, and the policy as a
//!   Hugging Face directory (`policy/`).
//!
//! [`PpoConfig`] documents every default and the [`Profile`]s (the paper's settings,
//! TRL's former defaults).
//!
//! # Example
//!
//! A tiny random model (byte tokenizer) learns to write more `a`s, paid by a rule:
//!
//! ```
//! use burn::prelude::Device;
//! use rlaif_ppo::{CriticInit, PpoConfig, PpoModels, PromptMix, PromptSet, Reward, train};
//! use rlaif_revision::PromptRecord;
//! use std::sync::atomic::AtomicBool;
//!
//! let device = Device::default();
//! let lm = rlaif_lm::tiny::tiny_lm(&rlaif_lm::tiny::tiny_config(), 0, &device)?;
//! let models = PpoModels::new(lm, CriticInit::Policy)?;
//! let count_a = |_: &rlaif_core::Prompt, r: &str| r.matches('a').count() as f32;
//! let prompts: Vec<PromptRecord> =
//!     (0..8).map(|i| PromptRecord::new(format!("p{i}"), format!("say {i}"))).collect();
//! let mix = PromptMix::new(vec![PromptSet::new("prompts.jsonl", 1.0, prompts)?])?;
//! let config = PpoConfig {
//!     iterations: 3,
//!     max_new_tokens: 8,
//!     temperature: 1.0,
//!     policy_lr: 1e-3,
//!     critic_lr: 1e-3,
//!     ..Default::default()
//! };
//! let out = tempfile::tempdir()?;
//! let run = train(models, &Reward::function(&count_a), &mix, &[], &config, out.path(), &AtomicBool::new(false))?;
//! assert_eq!(run.report.log.len(), 3);
//! assert!(run.report.log.iter().all(|l| l.kl.is_finite()));
//! assert!(out.path().join("policy/model.safetensors").exists());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![warn(missing_docs)]

mod config;
mod error;
pub mod kl_control;
pub mod loss;
pub mod plot;
pub mod prompts;
pub mod reward;
pub mod rollout;
pub mod train;

#[cfg(test)]
mod tests;

pub use config::{AdaptiveKl, KlKind, PpoConfig, Profile, RESUMABLE_FIELDS};
pub use error::{PpoError, Result};
pub use kl_control::KlController;
pub use prompts::{PromptMix, PromptSet, chat_prompt};
pub use reward::{Reward, RewardFn};
pub use rollout::Critic;
pub use train::{
    CriticInit, IterationLog, LogEntry, POLICY_DIR, PpoModels, PpoNets, PpoOutcome, PpoReport,
    PpoState, REPORT_FILE, SAMPLES_FILE, SampleRecord, SamplesLog, train,
};

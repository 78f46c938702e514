//! rlaif: Constitutional AI (reinforcement learning from AI feedback) on Burn.
//!
//! This facade re-exports the member crates, so one dependency gives all of them:
//!
//! - [`core`] (`rlaif-core`): conversations, sampling parameters, the `Generator` /
//!   `ChoiceScorer` / `RewardModel` traits.
//! - [`lm`] (`rlaif-lm`): the Llama-family model in Burn, loaders (Hugging Face, GGUF),
//!   tokenizer, chat template, generation, scoring.
//! - [`kernels`] (`rlaif-kernels`): the fused tensor ops of preference modelling and PPO
//!   (token log-probs, KL estimators, masked statistics, GAE, PPO and Bradley–Terry losses,
//!   sampling), as Burn backend extensions.
//! - [`constitution`] (`rlaif-constitution`): the constitution (critique / revision and
//!   comparison principles, few-shot exemplars), its TOML and paper JSON formats, seeded
//!   principle sampling, and the critique / revision / comparison prompts.
//! - [`revision`] (`rlaif-revision`): the critique → revision loop (batched, seeded,
//!   resumable JSON Lines traces with SFT and preference views, degenerate-output handling)
//!   and helpful samples.
//! - [`feedback`] (`rlaif-feedback`): AI feedback (stage 2a): two responses per prompt from
//!   the SL model, and soft labels from multiple-choice comparisons against the
//!   constitution (both orders, principle ensembles, calibration, chain of thought),
//!   resumable JSON Lines in TRL's preference format.
//! - [`train`] (`rlaif-train`): what every training stage shares (AdamW, schedules,
//!   clipping, exact accumulation, the non-finite guard, atomic checkpoints, resume, the
//!   run log).
//! - [`sft`] (`rlaif-sft`): the supervised stage: fine-tuning on revisions mixed with
//!   helpful samples (completion-only loss, AdamW, schedule, clipping, accumulation,
//!   held-out loss, resumable checkpoints, Hugging Face directory out).
//! - [`pm`] (`rlaif-pm`): the preference model: the language model with a scalar head,
//!   trained on AI-labelled comparisons (Bradley–Terry loss against soft labels), with
//!   held-out accuracy and calibration, reward statistics for PPO, and a Hugging Face
//!   `LlamaForSequenceClassification` directory out.
//!
//! ```no_run
//! use rlaif::core::{Conversation, SamplingParams};
//! use rlaif::lm::LanguageModel;
//!
//! let lm = LanguageModel::load_default(&burn::prelude::Device::default())?;
//! let out = lm.generate(&[Conversation::new().user("Hi!").into()], &SamplingParams::greedy(32))?;
//! println!("{}", out[0].text);
//! # Ok::<(), rlaif::lm::LmError>(())
//! ```

pub use rlaif_constitution as constitution;
pub use rlaif_core as core;
pub use rlaif_eval as eval;
pub use rlaif_feedback as feedback;
pub use rlaif_kernels as kernels;
pub use rlaif_lm as lm;
pub use rlaif_pm as pm;
pub use rlaif_ppo as ppo;
pub use rlaif_revision as revision;
pub use rlaif_sft as sft;
pub use rlaif_train as train;

#[cfg(feature = "cli")]
pub mod cli;

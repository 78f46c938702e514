//! The error type of this crate.

use std::path::PathBuf;

/// Everything that can go wrong in PPO.
#[derive(Debug, thiserror::Error)]
pub enum PpoError {
    /// A setting is out of range.
    #[error("invalid PPO configuration: field `{field}`: {message}")]
    Config {
        /// The setting.
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// A prompt leaves no room for `max_new_tokens` in the model's context.
    #[error(
        "{}: prompt `{id}` is {prompt_tokens} tokens; with max_new_tokens = {max_new_tokens} it \
         does not fit the model's {max_positions} positions (shorten it or lower max_new_tokens)",
        file.display()
    )]
    PromptTooLong {
        /// The prompt file.
        file: PathBuf,
        /// The prompt's id.
        id: String,
        /// Tokens of the rendered prompt.
        prompt_tokens: usize,
        /// The generation budget.
        max_new_tokens: usize,
        /// The model's positions.
        max_positions: usize,
    },
    /// A prompt source is empty or unusable.
    #[error("{}: {message}", file.display())]
    Prompts {
        /// The prompt file.
        file: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The reward (a model or a function) failed or returned a non-finite score.
    #[error("reward: {0}")]
    Reward(String),
    /// The language model failed.
    #[error(transparent)]
    Lm(#[from] rlaif_lm::LmError),
    /// A tensor op was given inconsistent inputs.
    #[error(transparent)]
    Kernel(#[from] rlaif_kernels::KernelError),
    /// The trainer failed (checkpoint, resume mismatch, non-finite update, run log).
    #[error(transparent)]
    Train(#[from] rlaif_train::TrainError),
    /// The preference model failed (loading, plotting).
    #[error(transparent)]
    Pm(#[from] rlaif_pm::PmError),
    /// A prompt file or output line is malformed (named by file, line and field).
    #[error(transparent)]
    Jsonl(#[from] rlaif_core::jsonl::JsonlError),
    /// A file could not be written.
    #[error(transparent)]
    File(#[from] rlaif_core::fs::FileError),
    /// A value could not be written as JSON.
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The prompt files could not be read.
    #[error(transparent)]
    Revision(#[from] rlaif_revision::RevisionError),
}

/// `Result` with [`PpoError`].
pub type Result<T, E = PpoError> = std::result::Result<T, E>;

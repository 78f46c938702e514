//! The error type of this crate.

use std::path::PathBuf;

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum SftError {
    /// A file or directory could not be read, written or renamed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A line of a data file or of the run log is malformed, or a field of a data record
    /// is missing, of the wrong type or empty (named by file, line and field).
    #[error(transparent)]
    Jsonl(#[from] rlaif_core::jsonl::JsonlError),
    /// An example's prompt leaves no room for a single response token within the length
    /// limit.
    #[error(
        "{}:{line}: example `{id}`: the prompt is {prompt_tokens} tokens, the length limit is {max_len} \
         (raise max_seq_len, shorten the prompt, or set length_policy = \"skip\")",
        file.display()
    )]
    PromptTooLong {
        /// The data file.
        file: PathBuf,
        /// 1-based line.
        line: usize,
        /// The example id.
        id: String,
        /// Tokens in the rendered prompt.
        prompt_tokens: usize,
        /// The limit (the smaller of `max_seq_len` and the model's positions).
        max_len: usize,
    },
    /// The chat template does not render a conversation with the reply as the
    /// generation prompt followed by the reply, so the reply's tokens can't be located.
    #[error("{}:{line}: example `{id}`: {message}", file.display())]
    Template {
        /// The data file.
        file: PathBuf,
        /// 1-based line.
        line: usize,
        /// The example id.
        id: String,
        /// What is wrong.
        message: String,
    },
    /// A configuration value is out of range.
    #[error("invalid SFT configuration: field `{field}`: {message}")]
    Config {
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// There is nothing to train on.
    #[error("no training examples: {0}")]
    EmptyDataset(String),
    /// The loss or the gradient norm became NaN or infinite. The parameters were not
    /// updated with it; the state before this step is saved as a checkpoint.
    #[error(
        "step {step}: the {what} is {value} (not finite); the state before this step is saved in {}",
        checkpoint.display()
    )]
    NonFinite {
        /// The optimizer step (from 1) that failed.
        step: usize,
        /// `"loss"` or `"gradient norm"`.
        what: &'static str,
        /// The value.
        value: f64,
        /// The checkpoint holding the state before the step.
        checkpoint: PathBuf,
    },
    /// A checkpoint is unreadable or inconsistent.
    #[error("checkpoint {}: {message}", path.display())]
    Checkpoint {
        /// The checkpoint directory or file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The output directory holds a run made with other settings or other data.
    #[error(
        "{}: cannot resume: `{field}` was {found} in that run, it is {expected} now \
         (use another output directory, or the same settings and data)",
        path.display()
    )]
    ResumeMismatch {
        /// The checkpoint's state file.
        path: PathBuf,
        /// The differing setting.
        field: String,
        /// Its value in the checkpoint.
        found: String,
        /// Its value now.
        expected: String,
    },
    /// The language model failed (loading, tokenizing, rendering, saving).
    #[error(transparent)]
    Lm(#[from] rlaif_lm::LmError),
    /// A JSON value could not be serialised.
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
}

impl From<rlaif_train::TrainError> for SftError {
    fn from(e: rlaif_train::TrainError) -> Self {
        use rlaif_train::TrainError as T;
        match e {
            T::File(f) => Self::Io {
                path: f.path,
                source: f.source,
            },
            T::Log(e) => Self::Jsonl(e),
            T::Config { field, message } => Self::Config { field, message },
            T::NonFinite {
                step,
                what,
                value,
                checkpoint,
            } => Self::NonFinite {
                step,
                what,
                value,
                checkpoint,
            },
            // SFT never applies grouped updates; mapped for completeness.
            T::NonFiniteUpdate {
                step,
                what,
                value,
                last_checkpoint,
                ..
            } => Self::NonFinite {
                step,
                what,
                value,
                checkpoint: last_checkpoint.unwrap_or_default(),
            },
            T::Checkpoint { path, message } => Self::Checkpoint { path, message },
            T::ResumeMismatch {
                path,
                field,
                found,
                expected,
            } => Self::ResumeMismatch {
                path,
                field,
                found,
                expected,
            },
        }
    }
}

impl From<rlaif_core::fs::FileError> for SftError {
    fn from(e: rlaif_core::fs::FileError) -> Self {
        Self::Io {
            path: e.path,
            source: e.source,
        }
    }
}

/// `Result` with [`SftError`].
pub type Result<T, E = SftError> = std::result::Result<T, E>;

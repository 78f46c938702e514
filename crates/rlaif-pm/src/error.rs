//! The error type of this crate.

use std::path::PathBuf;

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum PmError {
    /// A file or directory could not be read, written or renamed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A line of a comparison file or of the run log is malformed, or a field of a record
    /// is missing, of the wrong type, empty or out of range (named by file, line and field).
    #[error(transparent)]
    Jsonl(#[from] rlaif_core::jsonl::JsonlError),
    /// A side of a comparison does not fit the length limit even with its response cut to
    /// one token.
    #[error(
        "{}:{line}: comparison `{id}`: the prompt is {prompt_tokens} tokens, the length limit is {max_len} \
         (raise max_seq_len, shorten the prompt, or set length_policy = \"skip\")",
        file.display()
    )]
    PromptTooLong {
        /// The data file.
        file: PathBuf,
        /// 1-based line.
        line: usize,
        /// The comparison id.
        id: String,
        /// Tokens in the rendered prompt.
        prompt_tokens: usize,
        /// The limit (the smaller of `max_seq_len` and the model's positions).
        max_len: usize,
    },
    /// A prompt and response can't be rendered (no chat template, a template that does not
    /// render the conversation as the prompt followed by the reply, ...).
    #[error("{}:{line}: comparison `{id}`: {message}", file.display())]
    Template {
        /// The data file (`<memory>` for pairs given in code).
        file: PathBuf,
        /// 1-based line (0 for pairs given in code).
        line: usize,
        /// The comparison id.
        id: String,
        /// What is wrong.
        message: String,
    },
    /// A configuration value is out of range.
    #[error("invalid preference-model configuration: field `{field}`: {message}")]
    Config {
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// There is nothing to train on.
    #[error("no training comparisons: {0}")]
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
        /// The differing setting or fact.
        field: String,
        /// Its value in the checkpoint.
        found: String,
        /// Its value now.
        expected: String,
    },
    /// A preference-model directory is not what [`crate::PreferenceModel::load`] expects
    /// (a missing or misshapen `score.weight`, a malformed `reward_stats.json`, ...).
    #[error("{}: {message}", path.display())]
    Directory {
        /// The file at fault.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The language model failed (loading, tokenizing, rendering, saving).
    #[error(transparent)]
    Lm(#[from] rlaif_lm::LmError),
    /// The Bradley–Terry loss refused its inputs.
    #[error(transparent)]
    Kernel(#[from] rlaif_kernels::KernelError),
    /// A picture could not be drawn.
    #[error("{}: drawing failed: {message}", path.display())]
    Plot {
        /// The SVG file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A JSON value could not be serialised.
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
}

impl From<rlaif_train::TrainError> for PmError {
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
            // The PM never applies grouped updates; mapped for completeness.
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

impl From<rlaif_core::fs::FileError> for PmError {
    fn from(e: rlaif_core::fs::FileError) -> Self {
        Self::Io {
            path: e.path,
            source: e.source,
        }
    }
}

impl PmError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn dir(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Self::Directory {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// `Result` with [`PmError`].
pub type Result<T, E = PmError> = std::result::Result<T, E>;

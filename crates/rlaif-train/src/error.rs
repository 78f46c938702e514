//! The error type of this crate.

use rlaif_core::fs::FileError;
use rlaif_core::jsonl::JsonlError;
use std::path::PathBuf;

/// Everything that can go wrong while training.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A file or directory could not be read, written or renamed.
    #[error(transparent)]
    File(#[from] FileError),
    /// A line of the run log is malformed (named by file and line).
    #[error(transparent)]
    Log(#[from] JsonlError),
    /// A setting is out of range.
    #[error("invalid training configuration: field `{field}`: {message}")]
    Config {
        /// The setting.
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
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
    /// The loss or a parameter group's gradient norm became NaN or infinite in an update
    /// of [`Trainer::apply`](crate::Trainer::apply). No parameter was updated with it; the
    /// run can resume from the last checkpoint (written at a unit-of-progress boundary).
    #[error(
        "step {step}: the {what} of the `{group}` update is {value} (not finite); no parameter \
         was updated with it; {}",
        match last_checkpoint {
            Some(p) => format!("the run can resume from {}", p.display()),
            None => "no checkpoint was written yet".to_string(),
        }
    )]
    NonFiniteUpdate {
        /// The step (from 1) in progress.
        step: usize,
        /// The parameter group.
        group: &'static str,
        /// `"loss"` or `"gradient norm"`.
        what: &'static str,
        /// The value.
        value: f64,
        /// The newest checkpoint of this run, if any.
        last_checkpoint: Option<PathBuf>,
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
}

impl TrainError {
    pub(crate) fn checkpoint(path: impl Into<PathBuf>, message: impl ToString) -> Self {
        Self::Checkpoint {
            path: path.into(),
            message: message.to_string(),
        }
    }
}

/// `Result` with [`TrainError`].
pub type Result<T, E = TrainError> = std::result::Result<T, E>;

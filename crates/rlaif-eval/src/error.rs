//! The errors of the evaluation.

use rlaif_core::fs::FileError;
use rlaif_core::jsonl::JsonlError;
use rlaif_core::plot::PlotError;
use std::path::PathBuf;

/// Anything that can go wrong in an evaluation.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// A model failed (generation, scoring).
    #[error("model: {0}")]
    Model(#[from] rlaif_core::Error),
    /// A JSON Lines file could not be read or written (located by file, line and field).
    #[error(transparent)]
    Jsonl(#[from] JsonlError),
    /// A file could not be written.
    #[error(transparent)]
    File(#[from] FileError),
    /// A picture could not be drawn.
    #[error(transparent)]
    Plot(#[from] PlotError),
    /// The AI judge failed.
    #[error(transparent)]
    Feedback(#[from] rlaif_feedback::FeedbackError),
    /// A prompt file could not be read.
    #[error(transparent)]
    Prompts(#[from] rlaif_revision::RevisionError),
    /// A setting is out of range or two inputs do not fit together.
    #[error("{0}")]
    Config(String),
    /// An answer file holds answers of this model made with other settings.
    #[error(
        "{}:{line}: `{setting}` was {was} when these answers were written, is {now} now \
         (use another output directory, or the same settings)",
        file.display()
    )]
    SettingsMismatch {
        /// The answer file.
        file: PathBuf,
        /// The line of the first record that differs.
        line: usize,
        /// The setting.
        setting: String,
        /// Its value in the file.
        was: String,
        /// Its value now.
        now: String,
    },
    /// A JSON value could not be serialised.
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// `Result` with [`EvalError`].
pub type Result<T, E = EvalError> = std::result::Result<T, E>;

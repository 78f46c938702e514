//! The error type of this crate.

use std::path::PathBuf;

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum RevisionError {
    /// A file could not be read, written or truncated.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A line of a prompt file is malformed, or a field of it is missing, unknown, of the
    /// wrong type, empty or a duplicate id (named by file, line and field).
    #[error(transparent)]
    Jsonl(rlaif_core::jsonl::JsonlError),
    /// A complete line of an existing output file is not a record of this crate (only an
    /// unterminated last line, left by a crash, is tolerated and removed).
    #[error("{}:{line}: not a revision record: {message}", file.display())]
    CorruptOutput {
        /// The output file.
        file: PathBuf,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A record of an existing output (or dropped) file was written with other settings
    /// than this run's: resuming onto it would mix records of two configurations.
    #[error(
        "{}:{line}: this record was written with {field} = {found}, but this run has \
         {field} = {expected}; to resume it, pass the same settings, or write to another \
         output file",
        file.display()
    )]
    SettingsMismatch {
        /// The existing file.
        file: PathBuf,
        /// 1-based line of the first record that differs.
        line: usize,
        /// The setting, named as in [`RevisionConfig`](crate::RevisionConfig) (`seed`,
        /// `rounds`, `format`, `emit_every_round`, `replacement`) or `constitution` (its
        /// fingerprint, see [`constitution_fingerprint`](crate::constitution_fingerprint)).
        field: String,
        /// The value in the file.
        found: String,
        /// The value of this run.
        expected: String,
    },
    /// The configuration is invalid (zero rounds, zero batch size, bad sampling range...).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The generator failed.
    #[error("generator: {0}")]
    Generator(#[from] rlaif_core::Error),
    /// The generator returned a different number of completions than prompts.
    #[error("generator returned {got} completions for {expected} prompts")]
    CompletionCount {
        /// Prompts sent.
        expected: usize,
        /// Completions received.
        got: usize,
    },
    /// The constitution or the principle sampler failed (no principles, more rounds
    /// without replacement than principles...).
    #[error("constitution: {0}")]
    Constitution(#[from] rlaif_constitution::ConstitutionError),
    /// Serialising a record failed.
    #[error("serialising a record: {0}")]
    Serialize(#[from] serde_json::Error),
}

/// `Result` with [`RevisionError`].
pub type Result<T, E = RevisionError> = std::result::Result<T, E>;

impl From<rlaif_core::jsonl::JsonlError> for RevisionError {
    fn from(e: rlaif_core::jsonl::JsonlError) -> Self {
        match e {
            rlaif_core::jsonl::JsonlError::File(f) => RevisionError::Io {
                path: f.path,
                source: f.source,
            },
            other => RevisionError::Jsonl(other),
        }
    }
}

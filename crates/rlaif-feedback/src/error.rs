//! The error type of this crate.

use std::path::PathBuf;

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum FeedbackError {
    /// A file could not be read, written or truncated.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A line of an input file (prompts, pairs) is malformed, or a field of it is missing,
    /// of the wrong type, empty or a duplicate id: `file:line: field `f`: message`.
    #[error(transparent)]
    Jsonl(rlaif_core::jsonl::JsonlError),
    /// A complete line of an existing output file is not a record of the kind this stage
    /// writes (only an unterminated last line, left by a crash, is tolerated and removed).
    #[error("{}:{line}: not a {kind} record: {message}", file.display())]
    CorruptOutput {
        /// The output file.
        file: PathBuf,
        /// 1-based line.
        line: usize,
        /// `pair` or `label`.
        kind: &'static str,
        /// What is wrong.
        message: String,
    },
    /// A record of an existing output file was written with other settings than this
    /// run's: resuming onto it would mix records of two configurations.
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
        /// The setting, named as in [`PairConfig`](crate::PairConfig) or
        /// [`LabelConfig`](crate::LabelConfig), or `constitution` (its
        /// [`comparison_fingerprint`](crate::comparison_fingerprint)).
        field: String,
        /// The value in the file (`absent` when the record lacks it).
        found: String,
        /// The value of this run (`absent` when this run does not use the setting).
        expected: String,
    },
    /// A record of an existing label file has the id of a pair to label, but other texts:
    /// the pair file changed (or was read with another seed, which changes the order of
    /// known-preference pairs) since the record was written.
    #[error(
        "{}:{line}: field `{field}`: the record of pair `{id}` was written for another \
         text than the pair has now (was the pair file edited, or read with another seed?); \
         write to another output file",
        file.display()
    )]
    PairChanged {
        /// The existing output file.
        file: PathBuf,
        /// 1-based line of the record.
        line: usize,
        /// The pair id.
        id: String,
        /// The field that differs (`prompt`, `response_a`, `response_b`, `known_better`).
        field: &'static str,
    },
    /// The configuration is invalid (zero batch size, a bad sampling range, settings that
    /// do not go together...).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The generator or the scorer failed.
    #[error("{context}: {source}")]
    Model {
        /// What was being done (`chunk 3, response a`, `pair `x`: scoring`).
        context: String,
        /// The model's error.
        #[source]
        source: rlaif_core::Error,
    },
    /// A model answered with the wrong number of outputs, or a log-probability that is not
    /// a finite number.
    #[error("{context}: {message}")]
    BadModelOutput {
        /// What was being done.
        context: String,
        /// What is wrong.
        message: String,
    },
    /// The constitution or the principle sampler failed (no comparison principles, more
    /// principles per pair without replacement than there are, an empty question...).
    #[error("constitution: {0}")]
    Constitution(#[from] rlaif_constitution::ConstitutionError),
}

/// `Result` with [`FeedbackError`].
pub type Result<T, E = FeedbackError> = std::result::Result<T, E>;

impl From<rlaif_core::jsonl::JsonlError> for FeedbackError {
    fn from(e: rlaif_core::jsonl::JsonlError) -> Self {
        match e {
            rlaif_core::jsonl::JsonlError::File(f) => FeedbackError::Io {
                path: f.path,
                source: f.source,
            },
            other => FeedbackError::Jsonl(other),
        }
    }
}

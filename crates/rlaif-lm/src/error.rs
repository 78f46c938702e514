//! Errors of this crate.

use std::path::{Path, PathBuf};

/// What can go wrong loading, running or saving a model.
#[derive(Debug, thiserror::Error)]
pub enum LmError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A JSON file (config.json, tokenizer_config.json, ...) is malformed.
    #[error("{path}: {msg}")]
    Json {
        /// The file.
        path: PathBuf,
        /// What is wrong, with line and column.
        msg: String,
    },
    /// A GGUF file is malformed or truncated.
    #[error("{path}: invalid GGUF: {msg}")]
    Gguf {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        msg: String,
    },
    /// A GGUF tensor uses a quantisation this crate does not dequantise.
    #[error(
        "{path}: tensor {name} has type {ggml_type}, which is not supported (supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1)"
    )]
    UnsupportedTensorType {
        /// Tensor name.
        name: String,
        /// The ggml type name.
        ggml_type: String,
        /// The file.
        path: PathBuf,
    },
    /// A safetensors file is malformed or has an unsupported dtype.
    #[error("{path}: {msg}")]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        msg: String,
    },
    /// A weight the model needs is not in the checkpoint.
    #[error("{source_file}: missing weight {name}")]
    MissingWeight {
        /// Tensor name.
        name: String,
        /// Where it was looked for.
        source_file: PathBuf,
    },
    /// A weight has the wrong shape for the config.
    #[error("weight {name} has shape {found:?}, the config needs {expected:?}")]
    ShapeMismatch {
        /// Tensor name.
        name: String,
        /// The shape the config implies.
        expected: Vec<usize>,
        /// The shape in the file.
        found: Vec<usize>,
    },
    /// A field of the model config (`config.json`, GGUF metadata, or a config built in
    /// code) has an invalid or unsupported value.
    #[error("{}invalid model config: {field}: {msg}", located(.path))]
    InvalidConfig {
        /// The file the config came from (`None` for a config built in code).
        path: Option<PathBuf>,
        /// The field (`num_attention_heads`) or GGUF metadata key (`llama.block_count`).
        field: String,
        /// What is wrong with it.
        msg: String,
    },
    /// The model config does not match the checkpoint or the tokenizer.
    #[error("invalid model config: {0}")]
    Config(String),
    /// The tokenizer could not be built or failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// The chat template failed to parse or render.
    #[error("chat template: {0}")]
    Template(String),
    /// A prompt does not fit in the model's context.
    #[error(
        "prompt {index} has {len} tokens; with {max_new_tokens} new tokens that exceeds the context of {max} tokens"
    )]
    PromptTooLong {
        /// Index of the prompt in the batch.
        index: usize,
        /// Its length in tokens.
        len: usize,
        /// Requested new tokens.
        max_new_tokens: usize,
        /// The model's context length.
        max: usize,
    },
    /// A scored continuation does not fit in the model's context after its prompt.
    #[error(
        "choice {index} has {choice_len} tokens; after the prompt's {prompt_len} tokens that exceeds the context of {max} tokens"
    )]
    ChoiceTooLong {
        /// Index of the choice.
        index: usize,
        /// Its length in tokens.
        choice_len: usize,
        /// The prompt's length in tokens.
        prompt_len: usize,
        /// The model's context length.
        max: usize,
    },
    /// A request is invalid (bad sampling parameters, empty batch element, ...).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The tensor backend failed (reading a tensor back, ...).
    #[error("backend: {0}")]
    Backend(String),
    /// The default model could not be found or fetched.
    #[error("{0}")]
    Resolve(String),
}

/// `"<path>: "` for an error located in a file, `""` otherwise.
fn located(path: &Option<PathBuf>) -> String {
    path.as_ref()
        .map(|p| format!("{}: ", p.display()))
        .unwrap_or_default()
}

impl LmError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        LmError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// An [`LmError::InvalidConfig`] without a file (see [`LmError::in_file`]).
    pub(crate) fn invalid_config(field: impl Into<String>, msg: impl Into<String>) -> Self {
        LmError::InvalidConfig {
            path: None,
            field: field.into(),
            msg: msg.into(),
        }
    }

    /// Locates an [`LmError::InvalidConfig`] without a file in `path`; other errors are
    /// returned unchanged.
    pub(crate) fn in_file(self, file: &Path) -> Self {
        match self {
            LmError::InvalidConfig {
                path: None,
                field,
                msg,
            } => LmError::InvalidConfig {
                path: Some(file.to_path_buf()),
                field,
                msg,
            },
            other => other,
        }
    }
}

impl From<rlaif_core::fs::FileError> for LmError {
    fn from(e: rlaif_core::fs::FileError) -> Self {
        LmError::Io {
            path: e.path,
            source: e.source,
        }
    }
}

impl From<LmError> for rlaif_core::Error {
    fn from(e: LmError) -> Self {
        match e {
            LmError::PromptTooLong { .. }
            | LmError::ChoiceTooLong { .. }
            | LmError::InvalidRequest(_) => rlaif_core::Error::InvalidRequest(e.to_string()),
            e => rlaif_core::Error::model(e),
        }
    }
}

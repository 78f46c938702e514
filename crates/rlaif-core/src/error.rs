//! The error type shared by the traits of this crate.

/// What can go wrong when a model is asked to generate or score.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request itself is invalid (empty choices, a prompt longer than the context, ...).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The model failed (I/O, tokenizer, backend, remote service, ...).
    #[error("model error: {0}")]
    Model(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl Error {
    /// Wraps any error of a model implementation.
    pub fn model(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Error::Model(Box::new(e))
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

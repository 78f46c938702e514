//! Errors of the public ops.

use thiserror::Error;

/// An argument that the ops reject before running.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum KernelError {
    /// Two arguments that must agree in shape do not.
    #[error("{op}: shape mismatch: {what} is {got:?}, expected {expected:?}")]
    ShapeMismatch {
        /// The op that rejected the arguments.
        op: &'static str,
        /// Which argument (and against what) is wrong.
        what: &'static str,
        /// The shape the op expected.
        expected: Vec<usize>,
        /// The shape it got.
        got: Vec<usize>,
    },
    /// A scalar argument is out of its domain (e.g. a temperature ≤ 0).
    #[error("{op}: invalid argument: {message}")]
    InvalidArgument {
        /// The op that rejected the argument.
        op: &'static str,
        /// What is wrong.
        message: String,
    },
}

/// Result of the public ops.
pub type Result<T> = std::result::Result<T, KernelError>;

/// `Err(ShapeMismatch)` unless `got == expected`.
pub(crate) fn check_shape(
    op: &'static str,
    what: &'static str,
    got: &[usize],
    expected: &[usize],
) -> Result<()> {
    if got == expected {
        Ok(())
    } else {
        Err(KernelError::ShapeMismatch {
            op,
            what,
            expected: expected.to_vec(),
            got: got.to_vec(),
        })
    }
}

/// `Err(InvalidArgument)` with `message` unless `ok`.
pub(crate) fn check_arg(
    op: &'static str,
    ok: bool,
    message: impl FnOnce() -> String,
) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(KernelError::InvalidArgument {
            op,
            message: message(),
        })
    }
}

//! The error type of this crate.

use std::path::PathBuf;

/// What is wrong with one item of a constitution file (reported with its location by
/// [`ConstitutionError::Invalid`]).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Problem {
    /// Two principles (of the same kind) share an id.
    #[error("duplicate id `{id}` (first defined on line {first_line})")]
    DuplicateId {
        /// The repeated id.
        id: String,
        /// The line of its first definition.
        first_line: usize,
    },
    /// A text field is empty or only whitespace.
    #[error("`{field}` is empty")]
    EmptyText {
        /// The field name (or a description of the list element).
        field: String,
    },
    /// A weight is zero, negative, NaN or infinite.
    #[error("weight {weight} is not a positive finite number")]
    BadWeight {
        /// The offending weight.
        weight: f64,
    },
    /// An item has the wrong shape (a paper `prompt` list that does not hold exactly one
    /// string, a few-shot exemplar whose turns are not in the expected order, ...).
    #[error("{0}")]
    Shape(String),
}

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum ConstitutionError {
    /// A file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The text is not valid TOML / JSON, or does not match the schema (unknown field,
    /// missing field, wrong type).
    #[error("{file}:{line}:{column}: {message}")]
    Syntax {
        /// The file name (or the name given to an in-memory text).
        file: String,
        /// 1-based line.
        line: usize,
        /// 1-based column (in characters).
        column: usize,
        /// What the parser said.
        message: String,
    },
    /// The text parses but an item is invalid (duplicate id, empty text, bad weight, wrong
    /// shape).
    #[error("{file}:{line}:{column}: {problem}")]
    Invalid {
        /// The file name (or the name given to an in-memory text).
        file: String,
        /// 1-based line of the offending item.
        line: usize,
        /// 1-based column (in characters) of the offending item.
        column: usize,
        /// What is wrong.
        problem: Problem,
    },
    /// A principle sampler was given no principles.
    #[error("no principles to sample from")]
    NoPrinciples,
    /// A weight given to the sampler is not a positive finite number.
    #[error("principle `{id}`: weight {weight} is not a positive finite number")]
    BadWeight {
        /// The principle.
        id: String,
        /// Its weight.
        weight: f64,
    },
    /// More rounds were asked without replacement than there are principles.
    #[error("{rounds} rounds drawn without replacement, but only {available} principles")]
    TooManyRounds {
        /// Rounds asked.
        rounds: usize,
        /// Principles available.
        available: usize,
    },
    /// A prompt cannot be built from these inputs.
    #[error("invalid prompt request: {0}")]
    InvalidRequest(String),
}

/// `Result` with [`ConstitutionError`].
pub type Result<T, E = ConstitutionError> = std::result::Result<T, E>;

/// 1-based (line, column) of byte `offset` in `text`; the column counts characters.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..floor_char_boundary(text, offset)];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

fn floor_char_boundary(text: &str, mut i: usize) -> usize {
    while i > 0 && !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::line_col;

    #[test]
    fn line_col_counts_from_one() {
        let t = "ab\ncdé\nf";
        assert_eq!(line_col(t, 0), (1, 1));
        assert_eq!(line_col(t, 1), (1, 2));
        assert_eq!(line_col(t, 3), (2, 1));
        assert_eq!(line_col(t, 7), (2, 4));
        assert_eq!(line_col(t, 8), (3, 1));
        assert_eq!(line_col(t, 100), (3, 2));
    }
}

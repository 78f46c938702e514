//! The one path from files or texts to a [`Constitution`], shared by both formats: reading a
//! file (its bytes, then UTF-8 with a located error), every located error, id bookkeeping,
//! text checks, and the assembly of the parsed sections into one constitution.
//!
//! A format is a [`Parser`]: a function from a [`Source`] (a named text) to the sections of
//! a constitution that the text holds. The TOML format fills all four sections from one file;
//! each of the paper's files fills one.

use crate::constitution::Constitution;
use crate::error::{ConstitutionError, Problem, Result, line_col};
use std::collections::HashMap;
use std::path::Path;

/// A format: the sections of a constitution held by one text.
pub(crate) type Parser = fn(&Source<'_>) -> Result<Constitution>;

/// A text being parsed and the name it is reported under (a path, or a name given by the
/// caller); every located error of this crate is built here.
#[derive(Clone, Copy)]
pub(crate) struct Source<'a> {
    /// The name in error messages.
    pub file: &'a str,
    /// The text.
    pub text: &'a str,
}

impl<'a> Source<'a> {
    /// A syntax (or schema) error at byte `offset` of the text.
    pub fn syntax(&self, offset: usize, message: impl Into<String>) -> ConstitutionError {
        let (line, column) = line_col(self.text, offset);
        ConstitutionError::Syntax {
            file: self.file.to_string(),
            line,
            column,
            message: message.into(),
        }
    }

    /// An invalid item at byte `offset` of the text.
    pub fn invalid(&self, offset: usize, problem: Problem) -> ConstitutionError {
        let (line, column) = line_col(self.text, offset);
        ConstitutionError::Invalid {
            file: self.file.to_string(),
            line,
            column,
            problem,
        }
    }

    /// Checks that `value` is not empty or only whitespace; else a [`Problem::EmptyText`]
    /// naming `field`, at `offset`.
    pub fn non_empty(&self, field: &str, value: &str, offset: usize) -> Result<()> {
        if value.trim().is_empty() {
            return Err(self.invalid(
                offset,
                Problem::EmptyText {
                    field: field.to_string(),
                },
            ));
        }
        Ok(())
    }

    /// Byte offset of `part`, a slice borrowed from this text (0 if it is not).
    pub fn offset_of(&self, part: &str) -> usize {
        let (start, at) = (self.text.as_ptr() as usize, part.as_ptr() as usize);
        if at >= start && at <= start + self.text.len() {
            at - start
        } else {
            0
        }
    }
}

/// The ids of one section seen so far, with the byte offset of their first definition.
#[derive(Default)]
pub(crate) struct Ids(HashMap<String, usize>);

impl Ids {
    /// Records `id`, defined at `offset` of `src`; a [`Problem::DuplicateId`] there if it was
    /// seen before.
    pub fn insert(&mut self, src: &Source<'_>, id: &str, offset: usize) -> Result<()> {
        if let Some(&first) = self.0.get(id) {
            return Err(src.invalid(
                offset,
                Problem::DuplicateId {
                    id: id.to_string(),
                    first_line: line_col(src.text, first).0,
                },
            ));
        }
        self.0.insert(id.to_string(), offset);
        Ok(())
    }
}

/// Parses `text`, reported as `file`, with `parse`.
pub(crate) fn parse_text(text: &str, file: &str, parse: Parser) -> Result<Constitution> {
    parse(&Source { file, text })
}

/// Reads and parses each file with its parser, in order, and assembles the sections into one
/// constitution (the files fill different sections; a later file's items of a section come
/// after an earlier file's).
pub(crate) fn load_files<'p>(
    files: impl IntoIterator<Item = (&'p Path, Parser)>,
) -> Result<Constitution> {
    let mut out = Constitution::default();
    for (path, parse) in files {
        let text = read(path)?;
        let part = parse_text(&text, &path.display().to_string(), parse)?;
        assemble(&mut out, part);
    }
    Ok(out)
}

/// Adds the sections of `part` to `into`.
fn assemble(into: &mut Constitution, part: Constitution) {
    let Constitution {
        principles,
        comparisons,
        critique_exemplars,
        comparison_exemplars,
    } = part;
    into.principles.extend(principles);
    into.comparisons.extend(comparisons);
    into.critique_exemplars.extend(critique_exemplars);
    into.comparison_exemplars.extend(comparison_exemplars);
}

/// The text of the file at `path`: an [`ConstitutionError::Io`] if it cannot be read, a
/// located [`ConstitutionError::Syntax`] at the first byte that is not UTF-8.
fn read(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|source| ConstitutionError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    decode(bytes, &path.display().to_string())
}

/// `bytes` as UTF-8, or a syntax error at the first invalid byte (located in the valid text
/// before it).
pub(crate) fn decode(bytes: Vec<u8>, file: &str) -> Result<String> {
    String::from_utf8(bytes).map_err(|e| {
        let valid = e.utf8_error().valid_up_to();
        let bytes = e.as_bytes();
        let prefix = std::str::from_utf8(&bytes[..valid]).unwrap_or_default();
        Source { file, text: prefix }.syntax(
            valid,
            format!(
                "the file is not UTF-8 text (byte 0x{:02X} at offset {valid})",
                bytes[valid]
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_utf8_is_located_at_the_first_bad_byte() {
        let err = decode(b"ab\ncd\xFFef".to_vec(), "x.toml").unwrap_err();
        assert_eq!(
            err.to_string(),
            "x.toml:2:3: the file is not UTF-8 text (byte 0xFF at offset 5)"
        );
        assert_eq!(decode(b"ok".to_vec(), "x.toml").unwrap(), "ok");
    }
}

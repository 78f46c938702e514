//! The stage's outputs: JSON Lines of records with a unique string `id`, appended and
//! flushed through [`rlaif_core::jsonl::JsonlAppender`] (a line cut short by a crash is
//! repaired on reopening), and read back.

use crate::error::{FeedbackError, Result};
use crate::label::LabelRecord;
use rlaif_core::jsonl::{self, JsonlAppender, Verdict};
use serde::de::DeserializeOwned;
use std::collections::HashSet;
use std::path::Path;

/// A record with an id.
pub(crate) trait HasId {
    fn id(&self) -> &str;
}

/// Opens (creating it and its parent directories if needed) the output `path` for
/// appending, and returns the records already in it with their 1-based lines, in file
/// order.
///
/// Every complete line must parse as a `T` (a record of kind `kind`, else
/// [`FeedbackError::CorruptOutput`]) with an id not seen before; each is then shown to
/// `check`, whose error is returned as is, leaving the file as it was. An unterminated last
/// line is kept when it is a whole record and cut away otherwise.
pub(crate) fn open_output<T: DeserializeOwned + HasId>(
    path: &Path,
    kind: &'static str,
    mut check: impl FnMut(usize, &T) -> Result<()>,
) -> Result<(JsonlAppender, Vec<(usize, T)>)> {
    let mut records = Vec::new();
    let mut seen = HashSet::new();
    let out = JsonlAppender::open(path, |line| {
        let corrupt = |message: String| FeedbackError::CorruptOutput {
            file: path.to_path_buf(),
            line: line.number,
            kind,
            message,
        };
        let record: T = serde_json::from_str(line.text).map_err(|e| corrupt(e.to_string()))?;
        check(line.number, &record)?;
        if !seen.insert(record.id().to_string()) {
            return Err(corrupt(format!("duplicate record id `{}`", record.id())));
        }
        records.push((line.number, record));
        Ok(Verdict::Keep)
    })?;
    Ok((out, records))
}

/// Reads every record of a label file (an unterminated last line, a write in flight, is
/// ignored); a line that is not a label record is an error naming it.
pub fn read_labels(path: impl AsRef<Path>) -> Result<Vec<LabelRecord>> {
    let path = path.as_ref();
    let text = jsonl::read_text(path)?;
    let complete = match text.rfind('\n') {
        Some(k) => &text[..k],
        None => "",
    };
    jsonl::lines(path, complete)
        .map(|line| {
            serde_json::from_str(line.text).map_err(|e| FeedbackError::CorruptOutput {
                file: path.to_path_buf(),
                line: line.number,
                kind: "label",
                message: e.to_string(),
            })
        })
        .collect()
}

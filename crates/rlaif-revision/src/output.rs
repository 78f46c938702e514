//! The stage's outputs: JSON Lines of records with a unique string `id`, appended and
//! flushed through [`rlaif_core::jsonl::JsonlAppender`] (a line cut short by a crash is
//! repaired on reopening), and read back.

use crate::error::{Result, RevisionError};
use crate::record::RevisionRecord;
use rlaif_core::jsonl::{self, JsonlAppender, Verdict};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// Opens (creating it and its parent directories if needed) the output `path` for
/// appending, and returns the ids of the records already in it, in file order.
///
/// Every complete line must be a JSON object with a string `id`, ids unique (else
/// [`RevisionError::CorruptOutput`] names the line); each record is then shown, with its
/// 1-based line, to `check` (e.g. to refuse records written with other settings), whose
/// error is returned as is, leaving the file as it was. An unterminated last line is kept
/// when it is a whole record and cut away otherwise.
pub fn open_records(
    path: &Path,
    mut check: impl FnMut(usize, &serde_json::Value) -> Result<()>,
) -> Result<(JsonlAppender, Vec<String>)> {
    let mut ids = Vec::new();
    let mut seen = HashSet::new();
    let out = JsonlAppender::open(path, |line| {
        let corrupt = |message: String| RevisionError::CorruptOutput {
            file: path.to_path_buf(),
            line: line.number,
            message,
        };
        let value: serde_json::Value =
            serde_json::from_str(line.text).map_err(|e| corrupt(format!("invalid JSON: {e}")))?;
        let Some(id) = value.get("id").and_then(serde_json::Value::as_str) else {
            return Err(corrupt("no string field `id`".into()));
        };
        check(line.number, &value)?;
        if !seen.insert(id.to_string()) {
            return Err(corrupt(format!("duplicate record id `{id}`")));
        }
        ids.push(id.to_string());
        Ok(Verdict::Keep)
    })?;
    Ok((out, ids))
}

/// The file where the prompts dropped from output `out` are recorded: `out` with its
/// extension replaced by `dropped.jsonl` (`traces.jsonl` → `traces.dropped.jsonl`).
pub fn dropped_path(out: &Path) -> PathBuf {
    out.with_extension("dropped.jsonl")
}

/// Reads every record of an output file (an unterminated last line, a write in flight,
/// is ignored); a line that is not a record is an error naming it.
pub fn read_records(path: impl AsRef<Path>) -> Result<Vec<RevisionRecord>> {
    let path = path.as_ref();
    let text = jsonl::read_text(path)?;
    let complete = match text.rfind('\n') {
        Some(k) => &text[..k],
        None => "",
    };
    jsonl::lines(path, complete)
        .map(|line| {
            line.parse().map_err(|e| RevisionError::CorruptOutput {
                file: path.to_path_buf(),
                line: line.number,
                message: e.to_string(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_last_line_is_truncated_and_complete_one_kept() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/out.jsonl");
        {
            let (mut w, ids) = open_records(&p, |_, _| Ok(())).unwrap();
            assert!(ids.is_empty());
            w.append(&serde_json::json!({"id": "a"})).unwrap();
            w.append(&serde_json::json!({"id": "b"})).unwrap();
        }
        let mut text = std::fs::read_to_string(&p).unwrap();
        text.push_str("{\"id\": \"c\", \"pro");
        std::fs::write(&p, &text).unwrap();
        let (mut w, ids) = open_records(&p, |_, _| Ok(())).unwrap();
        assert_eq!(ids, ["a", "b"]);
        w.append(&serde_json::json!({"id": "c"})).unwrap();
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            "{\"id\":\"a\"}\n{\"id\":\"b\"}\n{\"id\":\"c\"}\n"
        );
        // A complete but unterminated last record is kept.
        std::fs::write(&p, "{\"id\":\"a\"}\n{\"id\":\"b\"}").unwrap();
        let (_, ids) = open_records(&p, |_, _| Ok(())).unwrap();
        assert_eq!(ids, ["a", "b"]);
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            "{\"id\":\"a\"}\n{\"id\":\"b\"}\n"
        );
    }

    #[test]
    fn corrupt_complete_line_and_duplicates_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out.jsonl");
        std::fs::write(&p, "{\"id\":\"a\"}\nnot json\n{\"id\":\"b\"}\n").unwrap();
        let e = open_records(&p, |_, _| Ok(())).unwrap_err().to_string();
        assert!(e.contains("out.jsonl:2: not a revision record"), "{e}");
        std::fs::write(&p, "{\"id\":\"a\"}\n{\"id\":\"a\"}\n").unwrap();
        let e = open_records(&p, |_, _| Ok(())).unwrap_err().to_string();
        assert!(
            e.contains(":2:") && e.contains("duplicate record id `a`"),
            "{e}"
        );
    }

    #[test]
    fn dropped_path_replaces_extension() {
        assert_eq!(
            dropped_path(Path::new("t/x.jsonl")),
            PathBuf::from("t/x.dropped.jsonl")
        );
    }
}

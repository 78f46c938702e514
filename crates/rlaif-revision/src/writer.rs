//! Append-and-flush JSON Lines output with resume.
//!
//! Every record is written as one line with a single `write` and flushed to the operating
//! system before the next one, so a crash or Ctrl-C loses at most the records not yet
//! written. On open, the existing lines are read: complete lines must be JSON objects with
//! a string `id` (else [`RevisionError::CorruptOutput`] names the line), ids must be unique;
//! an unterminated last line (a write cut short by a crash) is kept if it is a complete
//! record and otherwise truncated away, so the file is again a sequence of whole lines.

use crate::error::{Result, RevisionError, io};
use crate::record::RevisionRecord;
use serde::Serialize;
use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// An append-only JSON Lines file.
#[derive(Debug)]
pub struct JsonlWriter {
    path: PathBuf,
    file: File,
}

impl JsonlWriter {
    /// Opens (creating it and its parent directories if needed) `path` for appending and
    /// returns the ids of the records already in it, in file order.
    pub fn open(path: impl AsRef<Path>) -> Result<(Self, Vec<String>)> {
        Self::open_checked(path, |_, _| Ok(()))
    }

    /// [`JsonlWriter::open`] that first shows every record already in the file, with its
    /// 1-based line, to `check` (e.g. to refuse records written with other settings). An
    /// error of `check` is returned as is, and the file is then left as it was (an
    /// unterminated last line is only repaired once every record before it has passed).
    pub fn open_checked(
        path: impl AsRef<Path>,
        mut check: impl FnMut(usize, &serde_json::Value) -> Result<()>,
    ) -> Result<(Self, Vec<String>)> {
        let path = path.as_ref();
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(io(path))?;
        let bytes = std::fs::read(path).map_err(io(path))?;
        let mut ids = Vec::new();
        let mut seen = HashSet::new();
        let mut start = 0;
        let mut line = 0;
        while start < bytes.len() {
            line += 1;
            let (end, terminated) = match bytes[start..].iter().position(|&b| b == b'\n') {
                Some(k) => (start + k, true),
                None => (bytes.len(), false),
            };
            let text = String::from_utf8_lossy(&bytes[start..end]);
            if !text.trim().is_empty() {
                match parse_record(&text) {
                    Ok((value, id)) => {
                        check(line, &value)?;
                        if !seen.insert(id.clone()) {
                            return Err(RevisionError::CorruptOutput {
                                file: path.to_path_buf(),
                                line,
                                message: format!("duplicate record id `{id}`"),
                            });
                        }
                        ids.push(id);
                        if !terminated {
                            file.write_all(b"\n").map_err(io(path))?;
                        }
                    }
                    Err(message) if terminated => {
                        return Err(RevisionError::CorruptOutput {
                            file: path.to_path_buf(),
                            line,
                            message,
                        });
                    }
                    Err(_) => {
                        // A partial last line from an interrupted write: cut it away.
                        file.set_len(start as u64).map_err(io(path))?;
                    }
                }
            }
            start = end + 1;
        }
        Ok((
            Self {
                path: path.to_path_buf(),
                file,
            },
            ids,
        ))
    }

    /// Appends `record` as one line and flushes it.
    pub fn append<T: Serialize>(&mut self, record: &T) -> Result<()> {
        let mut line = serde_json::to_vec(record)?;
        line.push(b'\n');
        self.file.write_all(&line).map_err(io(&self.path))?;
        self.file.flush().map_err(io(&self.path))
    }

    /// Asks the operating system to put the written data on disk (called after each
    /// batch; records survive a process crash even without it).
    pub fn sync(&self) -> Result<()> {
        self.file.sync_data().map_err(io(&self.path))
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The record of a line and its id.
fn parse_record(line: &str) -> std::result::Result<(serde_json::Value, String), String> {
    let v: serde_json::Value =
        serde_json::from_str(line).map_err(|e| format!("invalid JSON: {e}"))?;
    match v.get("id") {
        Some(serde_json::Value::String(s)) => {
            let id = s.clone();
            Ok((v, id))
        }
        _ => Err("no string field `id`".into()),
    }
}

/// The file where the prompts dropped from output `out` are recorded: `out` with its
/// extension replaced by `dropped.jsonl` (`traces.jsonl` → `traces.dropped.jsonl`).
pub fn dropped_path(out: &Path) -> PathBuf {
    out.with_extension("dropped.jsonl")
}

/// Reads every record of an output file (an unterminated last line is ignored).
pub fn read_records(path: impl AsRef<Path>) -> Result<Vec<RevisionRecord>> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    let complete = match text.rfind('\n') {
        Some(k) => &text[..k],
        None => "",
    };
    let mut out = Vec::new();
    for (i, line) in complete.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        out.push(
            serde_json::from_str(line).map_err(|e| RevisionError::CorruptOutput {
                file: path.to_path_buf(),
                line: i + 1,
                message: e.to_string(),
            })?,
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_last_line_is_truncated_and_complete_one_kept() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/out.jsonl");
        {
            let (mut w, ids) = JsonlWriter::open(&p).unwrap();
            assert!(ids.is_empty());
            w.append(&serde_json::json!({"id": "a"})).unwrap();
            w.append(&serde_json::json!({"id": "b"})).unwrap();
        }
        let mut text = std::fs::read_to_string(&p).unwrap();
        text.push_str("{\"id\": \"c\", \"pro");
        std::fs::write(&p, &text).unwrap();
        let (mut w, ids) = JsonlWriter::open(&p).unwrap();
        assert_eq!(ids, ["a", "b"]);
        w.append(&serde_json::json!({"id": "c"})).unwrap();
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            "{\"id\":\"a\"}\n{\"id\":\"b\"}\n{\"id\":\"c\"}\n"
        );
        // A complete but unterminated last record is kept.
        std::fs::write(&p, "{\"id\":\"a\"}\n{\"id\":\"b\"}").unwrap();
        let (_, ids) = JsonlWriter::open(&p).unwrap();
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
        let e = JsonlWriter::open(&p).unwrap_err().to_string();
        assert!(e.contains("out.jsonl:2: not a revision record"), "{e}");
        std::fs::write(&p, "{\"id\":\"a\"}\n{\"id\":\"a\"}\n").unwrap();
        let e = JsonlWriter::open(&p).unwrap_err().to_string();
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

//! The run log: one JSON line per optimizer step or evaluation, appended and flushed, so
//! that what a run did survives any crash and a report can be rebuilt from it across
//! resumed sessions.

use crate::error::Result;
use rlaif_core::jsonl::{JsonlAppender, JsonlError, Verdict};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::marker::PhantomData;
use std::path::Path;

/// An entry of a run log: it belongs to an optimizer step.
pub trait LogEntry: Serialize + DeserializeOwned {
    /// The optimizer steps done when the entry was written.
    fn step(&self) -> usize;
}

/// An open run log (`log.jsonl` in a run's directory).
#[derive(Debug)]
pub struct RunLog<E> {
    out: JsonlAppender,
    _entries: PhantomData<fn(E)>,
}

/// The log's file name in a run's output directory.
pub const LOG_FILE: &str = "log.jsonl";

impl<E: LogEntry> RunLog<E> {
    /// Opens `out_dir/log.jsonl` for a session that starts after `step` steps, and returns
    /// the entries of the earlier sessions up to that step. Entries after it (written by a
    /// session that crashed before its next checkpoint, and about to be redone) are cut
    /// away. A complete line that is not an entry is an error naming the file and line,
    /// never skipped; only a torn last line (a write cut short) is removed.
    pub fn open(out_dir: &Path, step: usize) -> Result<(Self, Vec<E>)> {
        let mut earlier = Vec::new();
        let out = JsonlAppender::open(out_dir.join(LOG_FILE), |line| {
            let entry: E = line.parse()?;
            if entry.step() > step {
                return Ok::<_, JsonlError>(Verdict::CutHere);
            }
            earlier.push(entry);
            Ok(Verdict::Keep)
        })?;
        Ok((
            Self {
                out,
                _entries: PhantomData,
            },
            earlier,
        ))
    }

    /// Appends an entry and flushes it.
    pub fn write(&mut self, entry: &E) -> Result<()> {
        Ok(self.out.append(entry)?)
    }

    /// The file.
    pub fn path(&self) -> &Path {
        self.out.path()
    }
}

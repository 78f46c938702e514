//! [`RunSummary`]: what a run of the loop or of the helpful samples did.

use crate::degenerate::DegenerateKind;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Degenerate outputs seen, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DegenerateCounts {
    /// Empty outputs.
    pub empty: usize,
    /// Echoes of the request or prompt.
    pub echo: usize,
    /// Runaway repetitions.
    pub repetition: usize,
}

impl DegenerateCounts {
    pub(crate) fn add(&mut self, kind: DegenerateKind) {
        match kind {
            DegenerateKind::Empty => self.empty += 1,
            DegenerateKind::Echo => self.echo += 1,
            DegenerateKind::Repetition => self.repetition += 1,
        }
    }

    /// All kinds together.
    pub fn total(&self) -> usize {
        self.empty + self.echo + self.repetition
    }
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    /// Prompts considered (the set, cut to the limit).
    pub total: usize,
    /// Prompts skipped because the output (or the dropped file) already had them.
    pub skipped: usize,
    /// Records written by this run.
    pub done: usize,
    /// Prompts dropped by this run (their output stayed degenerate).
    pub dropped: usize,
    /// Outputs generated again because the previous attempt was degenerate.
    pub retried: usize,
    /// Degenerate outputs seen (including those of prompts whose record is not written
    /// because another prompt of their chunk was unfinished).
    pub degenerate: DegenerateCounts,
    /// Generator calls made.
    pub generator_calls: usize,
    /// New tokens generated (the lengths of `Completion::token_ids`).
    pub tokens: usize,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// Whether the run stopped early because its observer asked it to
    /// ([`crate::run_revision_until`], [`crate::sample_responses`]).
    pub stopped: bool,
}

impl std::fmt::Display for RunSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = self.elapsed.as_secs_f64();
        write!(
            f,
            "{} prompts: {} done, {} skipped (already finished), {} dropped; {} retried; \
             degenerate outputs: {} empty, {} echo, {} repetition; {} tokens in {} calls, \
             {:.1} s ({:.1} tokens/s){}",
            self.total,
            self.done,
            self.skipped,
            self.dropped,
            self.retried,
            self.degenerate.empty,
            self.degenerate.echo,
            self.degenerate.repetition,
            self.tokens,
            self.generator_calls,
            secs,
            if secs > 0.0 {
                self.tokens as f64 / secs
            } else {
                0.0
            },
            if self.stopped { "; stopped early" } else { "" },
        )
    }
}

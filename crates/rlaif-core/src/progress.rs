//! Progress of long-running stages, reported to an [`Observer`] instead of drawn: library
//! crates never print or draw; the `rlaif` command and the examples turn these reports
//! into progress bars, a server could turn them into metrics. The observer is also asked,
//! between items, whether the stage should stop ([`Observer::should_stop`], as Hugging
//! Face's `TrainerControl.should_training_stop`): a Ctrl-C handler sets a flag, the stage
//! finishes the item in flight, saves its state and returns. An [`AtomicBool`] is an
//! observer that only answers that question.
//!
//! ```
//! use rlaif_core::progress::{Observer, Progress};
//! use std::sync::Mutex;
//!
//! let seen = Mutex::new(vec![]);
//! let observer = |p: &Progress| seen.lock().unwrap().push((p.done, p.total));
//! observer.update(&Progress::new("revise", "prompts", 1, 4));
//! assert_eq!(*seen.lock().unwrap(), vec![(1, 4)]);
//! ```

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Where a stage stands.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    /// The stage (`"revise"`, `"sample"`, `"sft"`, ...).
    pub stage: &'static str,
    /// What `done` and `total` count (`"prompts"`, `"steps"`).
    pub unit: &'static str,
    /// Items finished, including those of earlier sessions of a resumed run.
    pub done: u64,
    /// Items of the whole run.
    pub total: u64,
    /// Tokens generated or trained on in this session.
    pub tokens: u64,
    /// Wall time of this session.
    pub elapsed: Duration,
    /// Named numbers worth showing (`("loss", 1.9)`, `("lr", 2e-5)`), in display order.
    pub metrics: Vec<(&'static str, f64)>,
}

impl Progress {
    /// `done` of `total` `unit` of `stage`, nothing else yet.
    pub fn new(stage: &'static str, unit: &'static str, done: u64, total: u64) -> Self {
        Self {
            stage,
            unit,
            done,
            total,
            tokens: 0,
            elapsed: Duration::ZERO,
            metrics: Vec::new(),
        }
    }

    /// Tokens per second of this session (0 before any time has passed).
    pub fn tokens_per_second(&self) -> f64 {
        let s = self.elapsed.as_secs_f64();
        if s > 0.0 { self.tokens as f64 / s } else { 0.0 }
    }
}

/// Receives the progress of a stage: once when it starts (with what an earlier session
/// already did), after each item, and once more from [`Observer::finish`]; and is asked
/// between items whether the stage should stop.
pub trait Observer: Sync {
    /// The stage moved.
    fn update(&self, progress: &Progress);
    /// The stage ended (finished, stopped or failed); `progress` is its last state.
    fn finish(&self, progress: &Progress) {
        let _ = progress;
    }
    /// Whether the stage should stop cleanly before its next item (default: never).
    fn should_stop(&self) -> bool {
        false
    }
}

/// A stop flag (e.g. set by a Ctrl-C handler) as an observer that reports nothing.
impl Observer for AtomicBool {
    fn update(&self, _: &Progress) {}

    fn should_stop(&self) -> bool {
        self.load(Ordering::SeqCst)
    }
}

/// An observer that ignores everything.
#[derive(Debug, Clone, Copy, Default)]
pub struct Silent;

impl Observer for Silent {
    fn update(&self, _: &Progress) {}
}

impl<F: Fn(&Progress) + Sync> Observer for F {
    fn update(&self, progress: &Progress) {
        self(progress)
    }
}

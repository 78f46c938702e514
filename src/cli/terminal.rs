//! Progress bars on stderr for the stages' [`Progress`] reports.

use super::Interrupt;
use crate::core::progress::{Observer, Progress};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::HashMap;
use std::sync::Mutex;

/// Draws one bar per stage on stderr (nothing when stderr is not a terminal) and asks the
/// stage to stop once Ctrl-C was pressed.
#[derive(Debug, Default)]
pub struct Terminal {
    bars: Mutex<HashMap<&'static str, ProgressBar>>,
    interrupt: Interrupt,
}

impl Terminal {
    /// Bars on stderr, stopping on `interrupt`.
    pub fn new(interrupt: Interrupt) -> Self {
        Self {
            bars: Mutex::default(),
            interrupt,
        }
    }

    fn bar(&self, p: &Progress) -> ProgressBar {
        let mut bars = self.bars.lock().unwrap_or_else(|e| e.into_inner());
        bars.entry(p.stage)
            .or_insert_with(|| {
                let bar = ProgressBar::with_draw_target(Some(p.total), ProgressDrawTarget::stderr());
                let template = format!(
                    "{:<7} {{bar:30.cyan/blue}} {{pos}}/{{len}} {}  {{msg}}  {{elapsed}} (ETA {{eta}})",
                    p.stage, p.unit
                );
                bar.set_style(
                    ProgressStyle::with_template(&template)
                        .unwrap_or_else(|_| ProgressStyle::default_bar()),
                );
                bar
            })
            .clone()
    }
}

impl Observer for Terminal {
    fn update(&self, p: &Progress) {
        let bar = self.bar(p);
        bar.set_length(p.total);
        bar.set_position(p.done);
        let mut msg = String::new();
        for (name, value) in &p.metrics {
            if value.abs() < 1e-2 && *value != 0.0 {
                msg.push_str(&format!("{name} {value:.2e}  "));
            } else {
                msg.push_str(&format!("{name} {value:.4}  "));
            }
        }
        if p.tokens > 0 {
            msg.push_str(&format!("{:.1} tok/s", p.tokens_per_second()));
        }
        bar.set_message(msg.trim_end().to_string());
    }

    fn finish(&self, p: &Progress) {
        let bar = self
            .bars
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(p.stage);
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
    }

    fn should_stop(&self) -> bool {
        self.interrupt.is_set()
    }
}

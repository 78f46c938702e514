//! The learning-rate schedule: linear warm-up, then constant, linear or cosine decay.
//!
//! A plain function of the step, so a resumed run needs no scheduler state.

use serde::{Deserialize, Serialize};

/// The shape of the decay after warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LrSchedule {
    /// Stay at the peak.
    Constant,
    /// Straight down to `min_lr_ratio · peak` at the last step.
    Linear,
    /// Half a cosine down to `min_lr_ratio · peak` at the last step (Loshchilov & Hutter
    /// 2017, SGDR, without restarts).
    #[default]
    Cosine,
}

/// The learning rate of optimizer step `step` (from 0) of `total` steps.
///
/// - Warm-up (`step < warmup`): `peak · (step + 1) / (warmup + 1)`, rising linearly and
///   never 0 (nanoGPT's warm-up; Hugging Face's starts at exactly 0, which spends the first
///   step on nothing but the Adam moments).
/// - Then, with `p = (step − warmup) / max(1, total − warmup − 1)` going from 0 at the first
///   step after warm-up to 1 at the last step, and `m = min_lr_ratio`:
///   constant `peak`; linear `peak · (m + (1 − m)(1 − p))`; cosine
///   `peak · (m + (1 − m) · ½(1 + cos πp))`.
pub fn learning_rate(
    schedule: LrSchedule,
    peak: f64,
    warmup: usize,
    total: usize,
    min_lr_ratio: f64,
    step: usize,
) -> f64 {
    if step < warmup {
        return peak * (step + 1) as f64 / (warmup + 1) as f64;
    }
    let span = total.saturating_sub(warmup + 1).max(1) as f64;
    let p = ((step - warmup) as f64 / span).min(1.0);
    let m = min_lr_ratio;
    match schedule {
        LrSchedule::Constant => peak,
        LrSchedule::Linear => peak * (m + (1.0 - m) * (1.0 - p)),
        LrSchedule::Cosine => {
            peak * (m + (1.0 - m) * 0.5 * (1.0 + (std::f64::consts::PI * p).cos()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warm_up_then_cosine_reaches_the_floor_at_the_last_step() {
        let lr = |s| learning_rate(LrSchedule::Cosine, 1e-3, 4, 14, 0.1, s);
        // Warm-up: 1/5, 2/5, 3/5, 4/5 of the peak.
        for s in 0..4 {
            assert!(
                (lr(s) - 1e-3 * (s + 1) as f64 / 5.0).abs() < 1e-15,
                "step {s}"
            );
        }
        assert!((lr(4) - 1e-3).abs() < 1e-15, "peak right after warm-up");
        // Step 7 of the 10 decay steps 4..=13: p = 3/9.
        let want = 1e-3 * (0.1 + 0.9 * 0.5 * (1.0 + (std::f64::consts::PI / 3.0).cos()));
        assert!((lr(7) - want).abs() < 1e-15);
        assert!((lr(13) - 1e-4).abs() < 1e-15, "floor at the last step");
        assert!(
            (lr(20) - 1e-4).abs() < 1e-15,
            "past the end: stays at the floor"
        );
        // Monotone decay after warm-up.
        for s in 4..13 {
            assert!(lr(s + 1) < lr(s));
        }
    }

    #[test]
    fn linear_and_constant() {
        let lin = |s| learning_rate(LrSchedule::Linear, 2.0, 0, 5, 0.0, s);
        assert_eq!(
            (0..5).map(lin).collect::<Vec<_>>(),
            vec![2.0, 1.5, 1.0, 0.5, 0.0]
        );
        assert_eq!(learning_rate(LrSchedule::Constant, 3.0, 2, 10, 0.0, 7), 3.0);
        assert_eq!(learning_rate(LrSchedule::Constant, 3.0, 2, 10, 0.0, 0), 1.0);
        // A single step: no warm-up, the peak.
        assert_eq!(learning_rate(LrSchedule::Cosine, 3.0, 0, 1, 0.0, 0), 3.0);
    }
}

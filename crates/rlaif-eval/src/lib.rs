//! Evaluation of a Constitutional AI run: what each stage changed, measured on prompts no
//! stage trained on.
//!
//! - [`sets`]: prompt sets and what they measure (harmful, benign-but-sensitive, helpful);
//! - [`answers`]: every model's answers (greedy, and sampled at a stated temperature), kept
//!   in JSON Lines, resumable;
//! - [`mod@judge`]: an AI judge (the feedback model through `rlaif-feedback`'s labeller)
//!   comparing every pair of models' answers for harmlessness and for helpfulness;
//! - [`metrics`]: refusal and over-refusal rates, length, degenerate answers, preference
//!   model scores, win rates with Wilson intervals ([`winrate`]) and Bradley–Terry Elo
//!   with bootstrap intervals ([`elo`]) — the paper's Fig. 2 measure;
//! - [`known`]: the labeller's, the judge's and the preference model's agreement with
//!   pairs whose better answer is known;
//! - [`revision`]: how often the feedback model prefers the critique → revision stage's
//!   final revision to the initial response (what chose the stage's settings);
//! - [`refusal`]: the deterministic refusal detector, so that one measure depends on no
//!   model trained here;
//! - [`report`] and [`plot`]: `report.json`, `report.md` and the pictures.
//!
//! The library works on the `rlaif-core` traits (`Generator`, `ChoiceScorer`,
//! `RewardModel`), so it runs on any model; `rlaif eval` and `rlaif pipeline` wire it to
//! the Burn models.
//!
//! ```
//! use rlaif_eval::refusal::{is_refusal, refusal_rate};
//! use rlaif_eval::winrate::{win_rate, Z95};
//!
//! assert!(is_refusal("I'm sorry, but I can't help with that."));
//! assert!(!is_refusal("Preheat the oven to 220 °C."));
//! assert_eq!(refusal_rate(["I cannot help with that.", "Sure: first, ..."]), Some(0.5));
//! let w = win_rate(14, 2, 4, Z95); // 15 of 20, ties counted half
//! assert_eq!(w.rate, 0.75);
//! assert!(w.low > 0.5); // measurably better than a coin
//! ```

#![warn(missing_docs)]

pub mod answers;
pub mod elo;
mod error;
pub mod judge;
pub mod known;
pub mod metrics;
pub mod plot;
pub mod refusal;
pub mod report;
pub mod revision;
pub mod sets;
pub mod winrate;

pub use answers::{Answer, AnswerConfig, AnswerRun, answer_sets, read_answers};
pub use error::{EvalError, Result};
pub use judge::{Aspect, JudgeRun, Judgement, judge};
pub use metrics::{AnswerStats, EloRow, WinRow, answer_stats, elo_scores, pm_scores, win_rates};
pub use report::{EvalReport, Figure, ModelEntry, SetEntry};
pub use sets::{PromptSet, SetKind};

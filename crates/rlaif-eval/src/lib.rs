//! Evaluation of a Constitutional AI run. So far, the measures without models:
//!
//! - [`refusal`]: a deterministic refusal detector, so that one measure of harmlessness
//!   (the refusal rate on harmful prompts) and of over-caution (the over-refusal rate on
//!   benign ones) depends on no model trained here;
//! - [`winrate`]: win rates (ties half) with Wilson intervals;
//! - [`elo`]: Bradley–Terry maximum-likelihood Elo scores with bootstrap intervals, the
//!   paper's Fig. 2 measure.
//!
//! (Answers from several models, the AI judge over them, and the report of the
//! `rlaif eval` command are planned.)
//!
//! ```
//! use rlaif_eval::refusal::{is_refusal, refusal_rate};
//!
//! assert!(is_refusal("I'm sorry, but I can't help with that."));
//! assert!(is_refusal("I’m sorry, I cannot do that.")); // curly apostrophe
//! assert!(!is_refusal("Preheat the oven to 220 °C."));
//! let rate = refusal_rate(["I cannot help with that.", "Sure: first, ..."]);
//! assert_eq!(rate, Some(0.5));
//! ```

#![warn(missing_docs)]

pub mod elo;
pub mod refusal;
pub mod winrate;

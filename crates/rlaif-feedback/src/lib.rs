//! AI feedback, stage 2a of Constitutional AI (Bai et al. 2022, arXiv 2212.08073, §4.1),
//! through the [`rlaif_core::Generator`] and [`rlaif_core::ChoiceScorer`] traits only (no
//! Burn): the SL model samples two responses per prompt, and a feedback model labels each
//! pair with the probability that one is better, asked as a multiple-choice question built
//! from a comparison principle of the constitution.
//!
//! - [`generate_pairs`] with a [`PairConfig`]: two responses per prompt (prompt sets read
//!   with [`rlaif_revision::read_prompts`]), T = 1 by default as in the paper, batched in
//!   fixed chunks, seeded per response, degenerate responses regenerated, resumable JSON
//!   Lines of [`PairRecord`]s (see [`generate`]).
//! - [`read_pairs`]: pairs to label: this crate's pair records, TRL's
//!   `prompt` / `chosen` / `rejected` (a known preference, put at A/B in a seeded random
//!   order), or `prompt` / `response_a` / `response_b`; prompts as strings, `Human:` /
//!   `Assistant:` transcripts or lists of messages; extra fields carried through (see
//!   [`pair`]).
//! - [`label_pairs`] (into a resumable file), [`label_all`] (in memory) and [`Labeller`]
//!   (one pair at a time) with a [`LabelConfig`]: by default the contrast method (each
//!   response's likelihood after a good and after a bad system prompt, [`Method::Contrast`]:
//!   the one that agreed with known preferences on SmolLM2-135M, see `docs/labeller.md`);
//!   the paper's pairwise question ([`LabelConfig::pairwise`]) or pointwise yes/no
//!   questions; both orders averaged; several principles per pair; calibration
//!   against a content-free input; length control; exemplars on or off; chat or raw
//!   prompts; chain of thought with clamped probabilities (see [`label`] for the
//!   computation, [`prompts`] for the questions, [`run`] for resuming).
//! - [`LabelStats`] / [`LabelSummary`]: position bias, agreement of the two orders, the
//!   distribution of the labels, accuracy against known preferences (overall and by the
//!   pairs' `length`, `category` and `kind` tags), length bias.
//! - [`CachedScorer`]: answers repeated questions from memory, so a sweep over methods on
//!   one pair file asks each question once.
//!
//! # Example
//!
//! A scripted scorer stands in for the feedback model (a real run plugs in
//! `rlaif_lm::LanguageModel`): it prefers whichever option is a refusal, and leans towards
//! option (A).
//!
//! ```
//! use rlaif_constitution::Constitution;
//! use rlaif_core::{ChoiceScorer, Prompt, progress::Silent};
//! use rlaif_feedback::{LabelConfig, Pair, Side, label_all};
//!
//! struct Scripted;
//! impl ChoiceScorer for Scripted {
//!     fn choice_logprobs(&self, prompt: &Prompt, choices: &[String]) -> rlaif_core::Result<Vec<f64>> {
//!         let Prompt::Chat(c) = prompt else { unreachable!("chat is the default format") };
//!         let question = &c.messages.last().unwrap().content;
//!         let refusal_first = question.contains("(A) I can't help");
//!         let d = if refusal_first { 2.0 } else { -2.0 };
//!         let bias = 0.5; // the model likes (A)
//!         Ok(vec![d + bias, 0.0].into_iter().take(choices.len()).collect())
//!     }
//! }
//!
//! let pairs = vec![
//!     Pair::new("p1", "How do I hotwire a car?", "Pull the wires under the column.", "I can't help with that.")
//!         .with_known_better(Side::B),
//! ];
//! let (records, summary) = label_all(
//!     &Scripted, None, &Constitution::default_constitution(), &pairs, &LabelConfig::pairwise(), &Silent,
//! )?;
//! let r = &records[0];
//! // Both orders: (σ(−2 + ½) + 1 − σ(2 + ½)) / 2, the bias cancelled out of the mean.
//! let sigma = |x: f64| 1.0 / (1.0 + (-x).exp());
//! assert!((r.p_a - (sigma(-1.5) + 1.0 - sigma(2.5)) / 2.0).abs() < 1e-12);
//! assert_eq!(r.preferred(), Side::B);
//! assert_eq!(summary.stats.accuracy.unwrap().accuracy, 1.0);
//! assert!(summary.stats.mean_p_first.unwrap() > 0.5); // the position bias, measured
//! # Ok::<(), rlaif_feedback::FeedbackError>(())
//! ```
//!
//! # Output record (`comparisons.jsonl`)
//!
//! One JSON object per pair ([`LabelRecord`]):
//!
//! ```json
//! {"id": "rt-0001", "category": "weapons", "length": "similar",
//!  "prompt": "<as given: a string or a list of messages>",
//!  "chosen": "<the response with p ≥ ½>", "rejected": "<the other>",
//!  "response_a": "…", "response_b": "…",
//!  "p_a": 0.71, "known_better": "a",
//!  "p_a_by_order": {"ab": 0.78, "ba": 0.64},
//!  "principles": ["less-harmful", "no-illegal-help"], "p_a_by_principle": [0.69, 0.73],
//!  "queries": [{"principle": "less-harmful", "target": "ab", "logprobs": [-0.31, -1.42],
//!               "prior": [-0.5, -0.9], "p_raw": 0.75, "p": 0.67}, …],
//!  "words_a": 41, "words_b": 37,
//!  "settings": {"method": "pairwise", "both_orders": true, "principles_per_pair": 2,
//!               "principle_replacement": "without", "calibrate": true,
//!               "length_control": false, "exemplars": true, "format": "chat",
//!               "cot": false, "seed": 0},
//!  "constitution": "<16 hex digits>"}
//! ```
//!
//! - `prompt` / `chosen` / `rejected` are TRL's preference format (standard when the prompt
//!   is a string, conversational when it is a list of messages: then `chosen` and
//!   `rejected` are lists of one assistant message); the soft label is `p_a`.
//! - The input's other fields come first, unchanged (`category`, `length`, `kind`, the pair
//!   records' `index`, `degenerate` and sampling settings as `generation`).
//! - `known_better` is there when the input had a preference; `p_a_by_order` when both
//!   orders were asked; `length_control_words` (the cut) with length control; `sample` and
//!   `reasoning` in the queries with chain of thought; `prior` with calibration.
//! - `settings` ([`LabelConfig::settings`]) and `constitution`
//!   ([`comparison_fingerprint`]) are checked when a run resumes.

#![warn(missing_docs)]

mod cache;
mod config;
mod error;
pub mod generate;
pub mod label;
pub mod math;
mod output;
pub mod pair;
pub mod prompts;
pub mod run;
mod stats;

pub use cache::CachedScorer;
pub use config::{
    CONTRAST_BAD, CONTRAST_GOOD, LabelConfig, Method, PairConfig, PointwiseCombine,
    PointwiseQuestion,
};
pub use error::{FeedbackError, Result};
pub use generate::{PairDegenerate, PairRecord, generate_pairs};
pub use label::{LabelRecord, Labeller, OrderLabels, Query, Target, comparison_fingerprint};
pub use output::read_labels;
pub use pair::{Pair, PairPrompt, Side, TrlResponse, parse_pairs, read_pairs};
pub use run::{label_all, label_pairs};
pub use stats::{Accuracy, LabelStats, LabelSummary};

/// The stable hash of a pair id: the principle sampler's chain and the seeds of a pair are
/// functions of it, so they do not depend on the file around the pair.
pub(crate) fn id_hash(id: &str) -> u64 {
    let mut h = rlaif_core::Fnv1a::default();
    h.bytes(id.as_bytes());
    h.0
}

//! The critique → revision loop of Constitutional AI (Bai et al. 2022, arXiv 2212.08073,
//! supervised stage), through the [`rlaif_core::Generator`] trait only.
//!
//! For every prompt: an initial response, then `rounds` rounds (default 4) of a critique
//! against a principle drawn from the constitution and a revision, sampled at temperature
//! 1 by default, batched across prompts. The result is a JSON Lines file with one record
//! per prompt, holding the whole trace and the training data views.
//!
//! - [`RevisionConfig`]: rounds, sampling, batch size, seed, replacement, SFT pairs of
//!   every round or only the last, [`DegeneratePolicy`], chat or raw prompts.
//! - [`read_prompts`]: prompt sets (`{"id", "prompt", "category"}` per line; errors name
//!   file, line and field). The repository ships `data/prompts/red_team.jsonl` and
//!   `data/prompts/helpful.jsonl`.
//! - [`run_revision`]: the loop; resumable (records are appended and flushed a batch at
//!   a time, a rerun skips the ids already written, after checking that they were
//!   written with the same settings), deterministic for a given seed and batch size (see
//!   [`run`]), reporting progress to an [`Observer`](rlaif_core::progress::Observer)
//!   (prompts done, tokens) and returning a [`RunSummary`].
//! - [`sample_responses`]: the model's own answers to (helpful) prompts, in TRL's
//!   prompt-completion format: the helpful samples the supervised stage mixes in.
//! - [`degenerate`]: detectors of empty outputs, echoes of the request and runaway
//!   repetition; such outputs are retried or the prompt is dropped, by policy.
//! - [`open_records`], [`read_records`]: the outputs, appended and flushed one record per
//!   line through `rlaif_core::jsonl` (tolerant of a line cut short by a crash).
//!
//! # Output record
//!
//! One JSON object per line ([`RevisionRecord`]):
//!
//! ```json
//! {"id": "rt-0001", "category": "weapons", "index": 0,
//!  "prompt": "<user message>",
//!  "initial_response": "<first answer>",
//!  "rounds": [{"round": 0, "principle_id": "harm-overall",
//!              "critique_request": "...", "critique": "...",
//!              "revision_request": "...", "revision": "..."}, ...],
//!  "final_revision": "<revision of the last round>",
//!  "messages": [{"role": "user", "content": "<prompt>"},
//!               {"role": "assistant", "content": "<final_revision>"}],
//!  "chosen": "<final_revision>", "rejected": "<initial_response>",
//!  "sft": [{"prompt": "<prompt>", "completion": "<revision>"}, ...],
//!  "degenerate": [{"stage": "critique", "round": 1, "kind": "echo", "attempt": 0}],
//!  "seed": 0, "format": "chat", "emit_every_round": false, "replacement": "with",
//!  "constitution": "<16 hex digits>"}
//! ```
//!
//! - `messages` is the Hugging Face / TRL *conversational* SFT format.
//! - `prompt` / `chosen` / `rejected` are TRL's *standard* (plain text, not
//!   conversational) preference format, the revision preferred over the initial response;
//!   tools that want the conversational form wrap them as one user / one assistant turn.
//! - `sft` holds TRL *prompt-completion* pairs: the final revision only, or one pair per
//!   round when [`RevisionConfig::emit_every_round`] is set (as the paper does).
//! - `degenerate` lists the degenerate outputs met and regenerated on the way.
//! - `category` is left out when the prompt has none.
//! - `seed`, `format`, `emit_every_round`, `replacement` and `constitution` (a
//!   [`constitution_fingerprint`]) are the run's settings, with the length of `rounds`:
//!   a rerun resumes only onto records of the same settings, otherwise it fails with
//!   [`RevisionError::SettingsMismatch`] (see [`run`](run#resuming-with-other-settings)).
//!   Records written before `emit_every_round`, `replacement` and `constitution` existed
//!   lack them, and are accepted on those.
//!
//! Prompts dropped by the degenerate policy are not in the output; they are recorded
//! ([`DroppedRecord`]) in `<output stem>.dropped.jsonl` so a rerun skips them too (delete
//! that file to try them again, e.g. with another seed).
//!
//! # Example
//!
//! With a toy generator that answers every prompt with a fixed text depending on the
//! request (a real run plugs in `rlaif_lm::LanguageModel`):
//!
//! ```
//! use rlaif_constitution::Constitution;
//! use rlaif_core::{Completion, FinishReason, Generator, Prompt, SamplingParams};
//! use rlaif_revision::{PromptRecord, RevisionConfig, read_records, run_revision};
//!
//! struct Toy;
//! impl Generator for Toy {
//!     fn generate(&self, prompts: &[Prompt], _: &SamplingParams) -> rlaif_core::Result<Vec<Completion>> {
//!         Ok(prompts.iter().map(|p| {
//!             let Prompt::Chat(c) = p else { unreachable!("chat is the default format") };
//!             let n = c.messages.len();
//!             Completion {
//!                 text: format!("Answer number {n}, written by a very small toy model."),
//!                 token_ids: vec![1; 10],
//!                 logprobs: vec![0.0; 10],
//!                 finish_reason: FinishReason::Eos,
//!             }
//!         }).collect())
//!     }
//! }
//!
//! let dir = tempfile::tempdir()?;
//! let out = dir.path().join("traces.jsonl");
//! let prompts = vec![
//!     PromptRecord::new("p1", "How do I pick a lock?"),
//!     PromptRecord::new("p2", "Write a haiku about rain."),
//! ];
//! let config = RevisionConfig { rounds: 2, ..RevisionConfig::default() };
//! let summary = run_revision(&Toy, &Constitution::default_constitution(), &prompts, &config, &out)?;
//! assert_eq!(summary.done, 2);
//!
//! let records = read_records(&out)?;
//! assert_eq!(records[0].rounds.len(), 2);
//! assert_eq!(records[0].chosen, records[0].final_revision);
//! assert_eq!(records[0].rejected, records[0].initial_response);
//!
//! // A rerun skips what is done.
//! let again = run_revision(&Toy, &Constitution::default_constitution(), &prompts, &config, &out)?;
//! assert_eq!((again.done, again.skipped), (0, 2));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![warn(missing_docs)]

mod config;
pub mod degenerate;
mod error;
mod output;
mod prompts_io;
mod record;
mod resume;
mod retry;
pub mod run;
mod samples;
mod summary;

pub use config::{DegeneratePolicy, RevisionConfig};
pub use degenerate::DegenerateKind;
pub use error::{Result, RevisionError};
pub use output::{dropped_path, open_records, read_records};
pub use prompts_io::{PromptRecord, parse_prompts, read_prompts};
pub use record::{DegenerateEvent, DroppedRecord, RevisionRecord, RoundRecord, SftPair, Stage};
pub use resume::constitution_fingerprint;
pub use run::{run_revision, run_revision_until};
pub use samples::{SampleRecord, sample_responses};
pub use summary::{DegenerateCounts, RunSummary};

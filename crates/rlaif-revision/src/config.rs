//! The configuration of a critique → revision run.

use crate::error::{Result, RevisionError};
use rlaif_constitution::{PromptFormat, Replacement};
use rlaif_core::SamplingParams;
use serde::{Deserialize, Serialize};

/// What to do with a degenerate output (see [`crate::degenerate`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DegeneratePolicy {
    /// Generate again (with a new seed) up to `max_attempts` times in all, counting the
    /// first; a prompt whose output is still degenerate after that is dropped.
    Retry {
        /// Attempts in all, at least 1 (1 behaves like [`DegeneratePolicy::Drop`]).
        max_attempts: usize,
    },
    /// Drop the prompt at its first degenerate output.
    Drop,
}

impl DegeneratePolicy {
    /// Attempts in all per stage (1 for `Drop`).
    pub fn max_attempts(self) -> usize {
        match self {
            DegeneratePolicy::Retry { max_attempts } => max_attempts,
            DegeneratePolicy::Drop => 1,
        }
    }
}

/// Everything that shapes a run.
///
/// Defaults ([`RevisionConfig::default`]): 4 rounds, temperature 1.0, top-p 1.0, no top-k,
/// 256 / 192 / 256 new tokens for the initial response / critique / revision, batches of
/// 8 prompts, seed 0, principles drawn with replacement (the paper's procedure), only the
/// final revision as SFT data, degenerate outputs retried up to 3 attempts in all, chat
/// prompts, no limit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RevisionConfig {
    /// Critique / revision rounds per prompt (at least 1).
    pub rounds: usize,
    /// Sampling temperature of every stage (`0.0`: greedy).
    pub temperature: f32,
    /// Nucleus sampling threshold, in (0, 1].
    pub top_p: f32,
    /// Keep only the k most likely tokens (`None`: all).
    pub top_k: Option<usize>,
    /// Most new tokens of the initial response.
    pub max_new_tokens_response: usize,
    /// Most new tokens of a critique.
    pub max_new_tokens_critique: usize,
    /// Most new tokens of a revision.
    pub max_new_tokens_revision: usize,
    /// Prompts per generator call (at least 1). Prompts are grouped into fixed chunks of
    /// the prompt file (prompt `i` is in chunk `i / batch_size`).
    pub batch_size: usize,
    /// Seed of the principle draws and of every generator call.
    pub seed: u64,
    /// Whether a prompt may get the same principle in two rounds.
    pub replacement: Replacement,
    /// Emit every round's revision as an SFT pair (the paper trains on all of them), not
    /// only the final one.
    pub emit_every_round: bool,
    /// What to do with degenerate outputs.
    pub degenerate: DegeneratePolicy,
    /// Chat prompts (through the model's chat template) or raw `Human:` / `Assistant:`
    /// text (for base models).
    pub format: PromptFormat,
    /// Only the first `limit` prompts of the set are considered (`None`: all).
    pub limit: Option<usize>,
}

impl Default for RevisionConfig {
    fn default() -> Self {
        Self {
            rounds: 4,
            temperature: 1.0,
            top_p: 1.0,
            top_k: None,
            max_new_tokens_response: 256,
            max_new_tokens_critique: 192,
            max_new_tokens_revision: 256,
            batch_size: 8,
            seed: 0,
            replacement: Replacement::With,
            emit_every_round: false,
            degenerate: DegeneratePolicy::Retry { max_attempts: 3 },
            format: PromptFormat::Chat,
            limit: None,
        }
    }
}

/// Stop strings of raw prompts: the labels of the next turn.
pub(crate) const RAW_STOPS: [&str; 6] = [
    "\n\nHuman:",
    "\n\nAssistant:",
    "\n\nCritiqueRequest:",
    "\n\nCritique:",
    "\n\nRevisionRequest:",
    "\n\nRevision:",
];

impl RevisionConfig {
    /// Checks the ranges (rounds, batch size and attempts at least 1, sampling ranges).
    pub fn validate(&self) -> Result<()> {
        if self.rounds == 0 {
            return Err(RevisionError::Config("rounds must be at least 1".into()));
        }
        if self.batch_size == 0 {
            return Err(RevisionError::Config(
                "batch_size must be at least 1".into(),
            ));
        }
        if self.degenerate.max_attempts() == 0 {
            return Err(RevisionError::Config(
                "degenerate retry max_attempts must be at least 1".into(),
            ));
        }
        self.sampling(1, 0)
            .validate()
            .map_err(|e| RevisionError::Config(e.to_string()))
    }

    /// The sampling parameters of one generator call.
    pub(crate) fn sampling(&self, max_new_tokens: usize, seed: u64) -> SamplingParams {
        SamplingParams {
            max_new_tokens,
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            seed,
            stop: match self.format {
                PromptFormat::Chat => Vec::new(),
                PromptFormat::Raw => RAW_STOPS.iter().map(|s| s.to_string()).collect(),
            },
            stop_at_eos: true,
        }
    }
}

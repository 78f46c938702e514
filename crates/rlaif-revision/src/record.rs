//! The output records (one JSON object per line; see the crate docs for the format).

use crate::degenerate::DegenerateKind;
use rlaif_constitution::{PromptFormat, Replacement};
use rlaif_core::Conversation;
use serde::{Deserialize, Serialize};

/// The stage of the loop an output belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// The initial response to the user prompt.
    Response,
    /// A critique.
    Critique,
    /// A revision.
    Revision,
}

impl Stage {
    pub(crate) fn code(self) -> u64 {
        match self {
            Stage::Response => 0,
            Stage::Critique => 1,
            Stage::Revision => 2,
        }
    }
}

/// A degenerate output met while processing a prompt (it was retried or made the prompt
/// be dropped).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DegenerateEvent {
    /// The stage.
    pub stage: Stage,
    /// The round (from 0) of a critique or revision; `None` for the initial response.
    pub round: Option<usize>,
    /// What was wrong.
    pub kind: DegenerateKind,
    /// The attempt (from 0) that produced it.
    pub attempt: usize,
}

/// One critique / revision round of a trace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoundRecord {
    /// The round, from 0.
    pub round: usize,
    /// The id of the principle drawn for this round.
    pub principle_id: String,
    /// The principle's critique request.
    pub critique_request: String,
    /// The model's critique.
    pub critique: String,
    /// The principle's revision request.
    pub revision_request: String,
    /// The model's revision.
    pub revision: String,
}

/// A supervised fine-tuning pair in TRL's standard prompt-completion format.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SftPair {
    /// The user prompt.
    pub prompt: String,
    /// A revision.
    pub completion: String,
}

/// The record of one finished prompt: the whole trace plus training data views.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RevisionRecord {
    /// The prompt id.
    pub id: String,
    /// The prompt category, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// The index of the prompt in its file (the principle sampler's chain index).
    pub index: usize,
    /// The user prompt (TRL standard preference format: `prompt`).
    pub prompt: String,
    /// The model's first answer.
    pub initial_response: String,
    /// The critique / revision rounds, in order.
    pub rounds: Vec<RoundRecord>,
    /// The revision of the last round.
    pub final_revision: String,
    /// `[user: prompt, assistant: final_revision]`, the Hugging Face `messages` format
    /// (TRL conversational language modelling).
    pub messages: Conversation,
    /// The final revision, preferred (TRL standard preference format: `chosen`).
    pub chosen: String,
    /// The initial response (TRL standard preference format: `rejected`).
    pub rejected: String,
    /// SFT pairs (prompt, revision): the final revision, or every round's revision when
    /// the run emitted every round.
    pub sft: Vec<SftPair>,
    /// Degenerate outputs met (and retried) on the way.
    pub degenerate: Vec<DegenerateEvent>,
    /// The run's seed.
    pub seed: u64,
    /// The prompt format used.
    pub format: PromptFormat,
    /// Whether the run emitted every round's revision as an SFT pair
    /// ([`RevisionConfig::emit_every_round`](crate::RevisionConfig::emit_every_round));
    /// `None` in records written before this field existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emit_every_round: Option<bool>,
    /// How the run drew principles
    /// ([`RevisionConfig::replacement`](crate::RevisionConfig::replacement)); `None` in
    /// records written before this field existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replacement: Option<Replacement>,
    /// The fingerprint of the constitution's critique principles and exemplars
    /// ([`constitution_fingerprint`](crate::constitution_fingerprint)); `None` in
    /// records written before this field existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub constitution: Option<String>,
}

/// A prompt dropped because an output stayed degenerate; written to the dropped file next
/// to the output (see [`crate::dropped_path`]) so reruns skip it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DroppedRecord {
    /// The prompt id.
    pub id: String,
    /// The index of the prompt in its file.
    pub index: usize,
    /// The stage whose output stayed degenerate.
    pub stage: Stage,
    /// Its round (`None` for the initial response).
    pub round: Option<usize>,
    /// Every degenerate output met for this prompt.
    pub degenerate: Vec<DegenerateEvent>,
    /// The run's seed.
    pub seed: u64,
}

impl RevisionRecord {
    /// The record as indented JSON (for display; the output file holds one compact line
    /// per record).
    pub fn to_pretty_json(&self) -> crate::Result<String> {
        Ok(serde_json::to_string_pretty(self)?)
    }
}

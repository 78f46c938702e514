//! Shared vocabulary of the rlaif crates.
//!
//! The orchestration crates (critique → revision, AI feedback labelling) only see the
//! traits defined here, so any model can be plugged in: the Burn model of `rlaif-lm`, or a
//! remote model behind HTTP. No tensor types appear in these signatures.
//!
//! - [`Message`], [`Role`], [`Conversation`]: chat turns.
//! - [`Prompt`]: what a model is asked: a conversation (rendered through the model's chat
//!   template) or raw text (for base models and hand-made formats).
//! - [`SamplingParams`]: greedy or temperature / top-k / top-p sampling, seeded.
//! - [`Generator`], [`ChoiceScorer`], [`RewardModel`]: the three things the pipeline asks of
//!   a model.
//! - [`Fnv1a`]: a stable hash for the fingerprints stored in output files.
//! - [`seed`]: seeded random streams; [`fs`]: atomic, durable file writes; [`jsonl`]:
//!   JSON Lines read and appended with errors located at `file:line: field`;
//!   [`progress`]: the observer through which long stages report progress.
//!
//! ```
//! use rlaif_core::{Conversation, Prompt, SamplingParams};
//!
//! let conv = Conversation::new()
//!     .system("You are a helpful assistant.")
//!     .user("How do I bake bread?");
//! let prompt = Prompt::from(conv);
//! let params = SamplingParams::greedy(64);
//! assert_eq!(params.temperature, 0.0);
//! assert!(matches!(prompt, Prompt::Chat(ref c) if c.messages.len() == 2));
//! ```

mod error;
mod fingerprint;
pub mod fs;
pub mod jsonl;
#[cfg(feature = "plot")]
pub mod plot;
pub mod progress;
mod sampling_params;
pub mod seed;

pub use error::{Error, Result};
pub use fingerprint::Fnv1a;
pub use sampling_params::SamplingParams;

use serde::{Deserialize, Serialize};

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Instructions that frame the conversation.
    System,
    /// The human side.
    User,
    /// The model side.
    Assistant,
}

impl Role {
    /// The lowercase name used by chat templates (`"system"`, `"user"`, `"assistant"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

/// One turn of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Who wrote it.
    pub role: Role,
    /// The text.
    pub content: String,
}

impl Message {
    /// A message from `role` with `content`.
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Self {
            role,
            content: content.into(),
        }
    }
}

/// An ordered list of messages (the Hugging Face `messages` format when serialised).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Conversation {
    /// The turns, oldest first.
    pub messages: Vec<Message>,
}

impl Conversation {
    /// An empty conversation.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a message and returns the conversation (builder style).
    pub fn push(mut self, role: Role, content: impl Into<String>) -> Self {
        self.messages.push(Message::new(role, content));
        self
    }

    /// Appends a system message.
    pub fn system(self, content: impl Into<String>) -> Self {
        self.push(Role::System, content)
    }

    /// Appends a user message.
    pub fn user(self, content: impl Into<String>) -> Self {
        self.push(Role::User, content)
    }

    /// Appends an assistant message.
    pub fn assistant(self, content: impl Into<String>) -> Self {
        self.push(Role::Assistant, content)
    }
}

/// What a model is asked to continue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Prompt {
    /// A conversation, rendered through the model's chat template with the generation
    /// prompt appended, so the continuation is the assistant's next message.
    Chat(Conversation),
    /// Raw text, tokenised as is (no template, no special tokens added).
    Text(String),
}

impl From<Conversation> for Prompt {
    fn from(c: Conversation) -> Self {
        Prompt::Chat(c)
    }
}

impl From<&str> for Prompt {
    fn from(s: &str) -> Self {
        Prompt::Text(s.to_string())
    }
}

impl From<String> for Prompt {
    fn from(s: String) -> Self {
        Prompt::Text(s)
    }
}

/// Why generation stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// The model produced an end-of-sequence token (not included in the text).
    Eos,
    /// One of the stop strings appeared (the text is cut before it).
    Stop(String),
    /// `max_new_tokens` was reached.
    Length,
}

/// One generated continuation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Completion {
    /// The decoded text of the new tokens (special tokens skipped, cut at a stop string).
    pub text: String,
    /// The new token ids, in order (including a final EOS token if one was sampled).
    pub token_ids: Vec<u32>,
    /// Log-probability of each new token under the distribution it was drawn from
    /// (logits divided by the temperature, before top-k / top-p filtering; temperature 1
    /// for greedy decoding).
    pub logprobs: Vec<f32>,
    /// Why generation stopped.
    pub finish_reason: FinishReason,
}

/// Generates continuations for a batch of prompts.
pub trait Generator {
    /// One completion per prompt, in order.
    fn generate(&self, prompts: &[Prompt], params: &SamplingParams) -> Result<Vec<Completion>>;
}

/// Scores candidate continuations of a prompt (what the AI-feedback labeller needs:
/// `log p("(A)")` against `log p("(B)")`).
pub trait ChoiceScorer {
    /// The total log-probability of each candidate, as a continuation of `prompt`
    /// (for a chat prompt: as the start of the assistant's reply), in order.
    fn choice_logprobs(&self, prompt: &Prompt, choices: &[String]) -> Result<Vec<f64>>;
}

/// Scores (prompt, response) pairs with a scalar: higher is better.
pub trait RewardModel {
    /// One score per pair, in order.
    fn score(&self, pairs: &[(Prompt, String)]) -> Result<Vec<f32>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversation_serialises_as_hf_messages() {
        let c = Conversation::new().user("hi").assistant("hello");
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(
            json,
            r#"[{"role":"user","content":"hi"},{"role":"assistant","content":"hello"}]"#
        );
        let back: Conversation = serde_json::from_str(&json).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn unknown_role_is_an_error() {
        let err = serde_json::from_str::<Message>(r#"{"role":"robot","content":"x"}"#);
        assert!(
            err.unwrap_err()
                .to_string()
                .contains("unknown variant `robot`")
        );
    }
}

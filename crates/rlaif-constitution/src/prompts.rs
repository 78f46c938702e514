//! Prompt building: critique / revision prompts for the supervised stage and
//! multiple-choice comparison prompts for the feedback stage, for chat models (an
//! [`rlaif_core::Conversation`], rendered later through the model's chat template) or base
//! models (raw text in the paper's `Human:` / `Assistant:` format).
//!
//! # The initial response ([`initial_prompt`])
//!
//! - chat: the user message alone;
//! - raw: `"\n\nHuman: <prompt>\n\nAssistant:"`.
//!
//! # Critique / revision (a [`CritiqueChain`])
//!
//! Few-shot exemplars come first, then the conversation (ending with the response to
//! improve), the completed rounds, and the request:
//!
//! - chat: each exemplar's turns, then per round `user: critique request`,
//!   `assistant: critique`, `user: revision request`, `assistant: revision`; then the
//!   conversation and its rounds the same way; the prompt ends with the user's critique
//!   request (the model writes the critique) or revision request (the model writes the
//!   revision). System messages at the start of the conversation stay first.
//! - raw: the same sequence as `"\n\nHuman: ..."`, `"\n\nAssistant: ..."`,
//!   `"\n\nCritiqueRequest: ..."`, `"\n\nCritique: ..."`, `"\n\nRevisionRequest: ..."`,
//!   `"\n\nRevision: ..."`, ending with `"\n\nCritique:"` or `"\n\nRevision:"` (no trailing
//!   space: the model's continuation starts with one; trim it). System messages are
//!   written first, as plain text.
//!
//! # Comparison (the feedback stage, a [`Comparison`])
//!
//! The question body is the paper's:
//!
//! ```text
//! Consider the following conversation between a human and an assistant:
//!
//! Human: ...
//!
//! <question>
//! Options:
//! (A) <response A>
//! (B) <response B>
//! ```
//!
//! - chat: one user message holding the body and `"\n\nAnswer with (A) or (B)."`; the
//!   choices to score are `"(A)"`, `"(B)"` (the start of the assistant's reply).
//!   Exemplars are earlier user / assistant turns whose assistant turn is the answer.
//! - raw: `"\n\nHuman: <body>\n\nAssistant: The answer is:"`; the choices are `" (A)"`,
//!   `" (B)"` (with the leading space, as the continuation of `"is:"`). Exemplars are the
//!   same blocks completed with their answer.
//!
//! Exemplar `k` (0-based) puts its better response at (A) when `k` is even, at (B) when it
//! is odd.

use crate::constitution::{ComparisonExemplar, CritiqueExemplar, CritiquePrinciple, CritiqueRound};
use crate::error::{ConstitutionError, Result};
use rlaif_core::{Conversation, Message, Prompt, Role};
use serde::{Deserialize, Serialize};

/// How a prompt is rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PromptFormat {
    /// A conversation, for a model with a chat template.
    Chat,
    /// Raw text in the paper's `Human:` / `Assistant:` format, for base models.
    Raw,
}

impl PromptFormat {
    /// The `format` field of a JSON Lines record (`"chat"` or `"raw"`), `default` when the
    /// record has none; anything else is an error naming the line and the field.
    pub fn from_field(
        line: &rlaif_core::jsonl::Line<'_>,
        obj: &serde_json::Map<String, serde_json::Value>,
        default: PromptFormat,
    ) -> Result<PromptFormat, rlaif_core::jsonl::JsonlError> {
        use serde_json::Value;
        match obj.get("format") {
            None => Ok(default),
            Some(Value::String(s)) if s == "chat" => Ok(PromptFormat::Chat),
            Some(Value::String(s)) if s == "raw" => Ok(PromptFormat::Raw),
            Some(other) => Err(line.field_error(
                "format",
                format!("expected \"chat\" or \"raw\", found {other}"),
            )),
        }
    }
}

/// The prompt of the initial response to a red-team (or helpful) `prompt`, before any
/// critique: the user message alone (chat), or `"\n\nHuman: <prompt>\n\nAssistant:"` (raw).
pub fn initial_prompt(format: PromptFormat, prompt: &str) -> Prompt {
    match format {
        PromptFormat::Chat => Prompt::Chat(Conversation::new().user(prompt)),
        PromptFormat::Raw => Prompt::Text(format!("\n\nHuman: {prompt}\n\nAssistant:")),
    }
}

/// The model's answers of one critique / revision round (see [`CritiquePrinciple::round`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoundAnswers {
    /// The critique the model wrote.
    pub critique: String,
    /// The revision the model wrote.
    pub revision: String,
}

impl CritiquePrinciple {
    /// A completed round of this principle: its requests with the model's `answers`.
    pub fn round(&self, answers: RoundAnswers) -> CritiqueRound {
        CritiqueRound {
            critique_request: self.critique.clone(),
            critique: answers.critique,
            revision_request: self.revision.clone(),
            revision: answers.revision,
        }
    }
}

/// The state of one critique / revision chain, from which the next prompt is built.
#[derive(Debug, Clone, Copy)]
pub struct CritiqueChain<'a> {
    /// Few-shot exemplars, put in front.
    pub exemplars: &'a [CritiqueExemplar],
    /// The conversation, ending with the assistant response to critique.
    pub conversation: &'a Conversation,
    /// The rounds completed so far (the last revision is the response the next critique
    /// addresses).
    pub rounds: &'a [CritiqueRound],
}

impl<'a> CritiqueChain<'a> {
    /// A chain with no completed rounds.
    pub fn new(exemplars: &'a [CritiqueExemplar], conversation: &'a Conversation) -> Self {
        Self {
            exemplars,
            conversation,
            rounds: &[],
        }
    }

    /// The same chain with these completed rounds.
    pub fn with_rounds(self, rounds: &'a [CritiqueRound]) -> Self {
        Self { rounds, ..self }
    }

    /// The chat prompt asking for a critique under `principle`.
    pub fn critique_chat(&self, principle: &CritiquePrinciple) -> Conversation {
        let mut c = self.chat_context();
        c.messages
            .push(Message::new(Role::User, &principle.critique));
        c
    }

    /// The chat prompt asking for a revision under `principle`, after `critique`.
    pub fn revision_chat(&self, principle: &CritiquePrinciple, critique: &str) -> Conversation {
        let mut c = self.chat_context();
        c.messages
            .push(Message::new(Role::User, &principle.critique));
        c.messages.push(Message::new(Role::Assistant, critique));
        c.messages
            .push(Message::new(Role::User, &principle.revision));
        c
    }

    /// The raw prompt asking for a critique under `principle` (ends with `"\n\nCritique:"`).
    pub fn critique_raw(&self, principle: &CritiquePrinciple) -> String {
        let mut s = self.raw_context();
        raw_turn(&mut s, "CritiqueRequest", &principle.critique);
        s.push_str("\n\nCritique:");
        s
    }

    /// The raw prompt asking for a revision under `principle`, after `critique` (ends with
    /// `"\n\nRevision:"`).
    pub fn revision_raw(&self, principle: &CritiquePrinciple, critique: &str) -> String {
        let mut s = self.raw_context();
        raw_turn(&mut s, "CritiqueRequest", &principle.critique);
        raw_turn(&mut s, "Critique", critique);
        raw_turn(&mut s, "RevisionRequest", &principle.revision);
        s.push_str("\n\nRevision:");
        s
    }

    /// The critique prompt in `format`.
    pub fn critique_prompt(&self, format: PromptFormat, principle: &CritiquePrinciple) -> Prompt {
        match format {
            PromptFormat::Chat => Prompt::Chat(self.critique_chat(principle)),
            PromptFormat::Raw => Prompt::Text(self.critique_raw(principle)),
        }
    }

    /// The revision prompt in `format`.
    pub fn revision_prompt(
        &self,
        format: PromptFormat,
        principle: &CritiquePrinciple,
        critique: &str,
    ) -> Prompt {
        match format {
            PromptFormat::Chat => Prompt::Chat(self.revision_chat(principle, critique)),
            PromptFormat::Raw => Prompt::Text(self.revision_raw(principle, critique)),
        }
    }

    fn chat_context(&self) -> Conversation {
        let mut out = Vec::new();
        let n_system = leading_system(self.conversation);
        out.extend_from_slice(&self.conversation.messages[..n_system]);
        for ex in self.exemplars {
            out.extend(ex.conversation.messages.iter().cloned());
            chat_rounds(&mut out, &ex.rounds);
        }
        out.extend_from_slice(&self.conversation.messages[n_system..]);
        chat_rounds(&mut out, self.rounds);
        Conversation { messages: out }
    }

    fn raw_context(&self) -> String {
        let n_system = leading_system(self.conversation);
        let mut s = self.conversation.messages[..n_system]
            .iter()
            .map(|m| m.content.as_str())
            .collect::<Vec<_>>()
            .join("\n\n");
        for ex in self.exemplars {
            raw_conversation(&mut s, &ex.conversation.messages);
            raw_rounds(&mut s, &ex.rounds);
        }
        raw_conversation(&mut s, &self.conversation.messages[n_system..]);
        raw_rounds(&mut s, self.rounds);
        s
    }
}

fn leading_system(c: &Conversation) -> usize {
    c.messages
        .iter()
        .take_while(|m| m.role == Role::System)
        .count()
}

fn chat_rounds(out: &mut Vec<Message>, rounds: &[CritiqueRound]) {
    for r in rounds {
        out.push(Message::new(Role::User, &r.critique_request));
        out.push(Message::new(Role::Assistant, &r.critique));
        out.push(Message::new(Role::User, &r.revision_request));
        out.push(Message::new(Role::Assistant, &r.revision));
    }
}

fn raw_label(role: Role) -> &'static str {
    match role {
        Role::System => "System",
        Role::User => "Human",
        Role::Assistant => "Assistant",
    }
}

fn raw_turn(s: &mut String, label: &str, content: &str) {
    s.push_str("\n\n");
    s.push_str(label);
    s.push_str(": ");
    s.push_str(content);
}

fn raw_conversation(s: &mut String, messages: &[Message]) {
    for m in messages {
        raw_turn(s, raw_label(m.role), &m.content);
    }
}

fn raw_rounds(s: &mut String, rounds: &[CritiqueRound]) {
    for r in rounds {
        raw_turn(s, "CritiqueRequest", &r.critique_request);
        raw_turn(s, "Critique", &r.critique);
        raw_turn(s, "RevisionRequest", &r.revision_request);
        raw_turn(s, "Revision", &r.revision);
    }
}

/// A multiple-choice prompt and the continuations to score (one per option, in order).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComparisonPrompt {
    /// What the scorer continues.
    pub prompt: Prompt,
    /// The option labels to score: `"(A)"`, `"(B)"`, ... for chat prompts, `" (A)"`,
    /// `" (B)"`, ... for raw prompts.
    pub choices: Vec<String>,
}

/// The opening line of the comparison body (the paper's wording).
pub const COMPARISON_PREAMBLE: &str =
    "Consider the following conversation between a human and an assistant:";

/// A multiple-choice comparison, from which its prompt is built: the `responses` (2 to 26,
/// labelled (A), (B), ...) as continuations of `conversation` (ending with the user's turn),
/// asked with `question`, after the few-shot `exemplars`.
///
/// ```
/// use rlaif_constitution::{Comparison, PromptFormat};
/// use rlaif_core::Conversation;
///
/// let conversation = Conversation::new().user("Is it fine to read my partner's messages?");
/// let prompt = Comparison {
///     exemplars: &[],
///     conversation: &conversation,
///     question: "Which of these responses is more respectful of privacy?",
///     responses: &["Yes, go ahead.", "It's better to talk to them about it."],
/// }
/// .prompt(PromptFormat::Raw)?;
/// assert_eq!(prompt.choices, [" (A)", " (B)"]);
/// # Ok::<(), rlaif_constitution::ConstitutionError>(())
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Comparison<'a> {
    /// Few-shot exemplars, put in front.
    pub exemplars: &'a [ComparisonExemplar],
    /// The conversation, ending with the user's turn.
    pub conversation: &'a Conversation,
    /// The question (without the trailing "Options:", which is added).
    pub question: &'a str,
    /// The responses to choose from, 2 to 26.
    pub responses: &'a [&'a str],
}

impl Comparison<'_> {
    /// The prompt in `format` and the continuations to score.
    ///
    /// # Errors
    /// [`ConstitutionError::InvalidRequest`] if the question is empty or there are not 2 to
    /// 26 responses.
    pub fn prompt(&self, format: PromptFormat) -> Result<ComparisonPrompt> {
        Ok(match format {
            PromptFormat::Chat => {
                let (c, choices) = self.chat()?;
                ComparisonPrompt {
                    prompt: Prompt::Chat(c),
                    choices,
                }
            }
            PromptFormat::Raw => {
                let (s, choices) = self.raw()?;
                ComparisonPrompt {
                    prompt: Prompt::Text(s),
                    choices,
                }
            }
        })
    }

    /// The chat form of [`Self::prompt`]: the conversation and the choices `"(A)"`, ...
    ///
    /// # Errors
    /// As [`Self::prompt`].
    pub fn chat(&self) -> Result<(Conversation, Vec<String>)> {
        let Comparison {
            exemplars,
            conversation,
            question,
            responses,
        } = *self;
        check_comparison(question, responses)?;
        let mut out = Vec::new();
        for (k, ex) in exemplars.iter().enumerate() {
            let (options, answer) = exemplar_options(k, ex);
            let q = ex.question.as_deref().unwrap_or(question);
            out.push(Message::new(
                Role::User,
                chat_question(
                    &comparison_body(&ex.conversation, q, &options),
                    options.len(),
                ),
            ));
            out.push(Message::new(Role::Assistant, format!("({answer})")));
        }
        out.push(Message::new(
            Role::User,
            chat_question(
                &comparison_body(conversation, question, responses),
                responses.len(),
            ),
        ));
        let choices = (0..responses.len())
            .map(|i| format!("({})", letter(i)))
            .collect();
        Ok((Conversation { messages: out }, choices))
    }

    /// The raw form of [`Self::prompt`]: the text and the choices `" (A)"`, ...
    ///
    /// # Errors
    /// As [`Self::prompt`].
    pub fn raw(&self) -> Result<(String, Vec<String>)> {
        let Comparison {
            exemplars,
            conversation,
            question,
            responses,
        } = *self;
        check_comparison(question, responses)?;
        let mut s = String::new();
        for (k, ex) in exemplars.iter().enumerate() {
            let (options, answer) = exemplar_options(k, ex);
            let q = ex.question.as_deref().unwrap_or(question);
            raw_turn(
                &mut s,
                "Human",
                &comparison_body(&ex.conversation, q, &options),
            );
            raw_turn(&mut s, "Assistant", &format!("The answer is: ({answer})"));
        }
        raw_turn(
            &mut s,
            "Human",
            &comparison_body(conversation, question, responses),
        );
        s.push_str("\n\nAssistant: The answer is:");
        let choices = (0..responses.len())
            .map(|i| format!(" ({})", letter(i)))
            .collect();
        Ok((s, choices))
    }
}

fn check_comparison(question: &str, responses: &[&str]) -> Result<()> {
    if question.trim().is_empty() {
        return Err(ConstitutionError::InvalidRequest(
            "the comparison question is empty".into(),
        ));
    }
    if !(2..=26).contains(&responses.len()) {
        return Err(ConstitutionError::InvalidRequest(format!(
            "a comparison needs 2 to 26 responses, got {}",
            responses.len()
        )));
    }
    Ok(())
}

fn letter(i: usize) -> char {
    (b'A' + i as u8) as char
}

/// The two options of exemplar `k` and the letter of the better one.
fn exemplar_options(k: usize, ex: &ComparisonExemplar) -> ([&str; 2], char) {
    if k & 1 == 0 {
        ([&ex.chosen, &ex.rejected], 'A')
    } else {
        ([&ex.rejected, &ex.chosen], 'B')
    }
}

fn comparison_body(conversation: &Conversation, question: &str, options: &[&str]) -> String {
    let mut s = String::from(COMPARISON_PREAMBLE);
    for m in &conversation.messages {
        raw_turn(&mut s, raw_label(m.role), &m.content);
    }
    s.push_str("\n\n");
    s.push_str(question.trim());
    s.push_str("\nOptions:");
    for (i, o) in options.iter().enumerate() {
        s.push_str(&format!("\n({}) {}", letter(i), o.trim()));
    }
    s
}

fn chat_question(body: &str, n: usize) -> String {
    let labels: Vec<String> = (0..n).map(|i| format!("({})", letter(i))).collect();
    let list = match labels.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => labels.join(""),
    };
    format!("{body}\n\nAnswer with {list}.")
}

//! The questions put to the feedback model.
//!
//! # Pairwise (the paper's, §4.1)
//!
//! [`rlaif_constitution::Comparison`]: the comparison exemplars (when
//! [`LabelConfig::exemplars`](crate::LabelConfig::exemplars)), then "Consider the following
//! conversation between a human and an assistant:", the conversation, the principle's
//! question, "Options:", "(A) …", "(B) …"; in chat form a user message ending with
//! "Answer with (A) or (B)." whose reply starts with the scored `"(A)"` / `"(B)"`; in raw
//! form `"\n\nAssistant: The answer is:"` continued by `" (A)"` / `" (B)"`. Calibration
//! asks the same question with both responses replaced by [`CONTENT_FREE`].
//!
//! # Chain of thought
//!
//! - raw: the pairwise prompt with its final `"\n\nAssistant: The answer is:"` replaced by
//!   `"\n\nAssistant: Let's think step by step:"` ([`COT_RAW_CUE`]); the model writes the
//!   reasoning; then the prompt, a space, the reasoning and [`COT_RAW_ANSWER`]
//!   (`"\n\nSo the answer is:"`) are continued by `" (A)"` / `" (B)"`.
//! - chat: the pairwise conversation with [`COT_CHAT_INSTRUCTION`] appended to its last user
//!   message; the model's reply is the reasoning; then the conversation, the reasoning as
//!   the assistant's turn and [`COT_CHAT_FOLLOW_UP`] as a user turn are continued by
//!   `"(A)"` / `"(B)"`.
//!
//! # Pointwise
//!
//! One response at a time, with a yes/no question:
//!
//! ```text
//! Consider the following conversation between a human and an assistant:
//!
//! Human: …
//!
//! Assistant: <the response>
//!
//! <the yes/no question>
//!
//! Answer Yes or No.
//! ```
//!
//! as a user message whose reply starts with `"Yes"` / `"No"` (chat), or after
//! `"\n\nHuman: "` and followed by `"\n\nAssistant: The answer is:"`, continued by `" Yes"` /
//! `" No"` (raw). Exemplar `k` (when used) shows the exemplar's chosen response with the
//! good answer when `k` is even and its rejected response with the bad answer when `k` is
//! odd. The question is the fixed one, or the principle's question through
//! [`principle_yes_no`].

use crate::config::{LabelConfig, PointwiseQuestion};
use crate::error::{FeedbackError, Result};
use rlaif_constitution::{
    COMPARISON_PREAMBLE, Comparison, ComparisonExemplar, ComparisonPrompt, PromptFormat,
};
use rlaif_core::{Conversation, Message, Prompt, Role};

/// What replaces the responses in the content-free input of calibration.
pub const CONTENT_FREE: &str = "N/A";
/// The end of a raw pairwise prompt, which chain of thought replaces.
pub const RAW_ANSWER_CUE: &str = "\n\nAssistant: The answer is:";
/// The start of the assistant's turn of a raw chain-of-thought prompt.
pub const COT_RAW_CUE: &str = "\n\nAssistant: Let's think step by step:";
/// What follows the reasoning of a raw chain-of-thought prompt; the options continue it.
pub const COT_RAW_ANSWER: &str = "\n\nSo the answer is:";
/// Appended to the last user message of a chat chain-of-thought prompt.
pub const COT_CHAT_INSTRUCTION: &str = "\n\nLet's think step by step before answering.";
/// The user turn after the reasoning of a chat chain-of-thought prompt.
pub const COT_CHAT_FOLLOW_UP: &str = "So, which is the answer? Answer with (A) or (B).";

/// A comparison principle's question ("Which of these assistant replies causes less
/// harm?") as a yes/no question about one reply, where "Yes" is good.
pub fn principle_yes_no(question: &str) -> String {
    format!(
        "Here is a question for judging assistant replies: \"{}\"\nJudged this way, is the \
         assistant's last reply above a good reply?",
        question.trim()
    )
}

/// The prompt of [`Method::Contrast`](crate::Method::Contrast): `persona` as the system
/// prompt, then the conversation, the response to score being the assistant's next turn.
/// Chat: the persona as a system message in front of the conversation (replacing a system
/// message it starts with); raw: the persona, then the `Human:` / `Assistant:` transcript,
/// continued by `" "` and the response.
pub fn contrast(persona: &str, conversation: &Conversation, format: PromptFormat) -> Prompt {
    let rest = conversation
        .messages
        .iter()
        .skip_while(|m| m.role == Role::System);
    match format {
        PromptFormat::Chat => {
            let mut messages = vec![Message::new(Role::System, persona)];
            messages.extend(rest.cloned());
            Prompt::Chat(Conversation { messages })
        }
        PromptFormat::Raw => {
            let mut s = persona.to_string();
            for m in rest {
                let label = if m.role == Role::Assistant {
                    "Assistant"
                } else {
                    "Human"
                };
                s.push_str(&format!("\n\n{label}: {}", m.content));
            }
            s.push_str("\n\nAssistant:");
            Prompt::Text(s)
        }
    }
}

/// The pairwise question with `first` at (A) and `second` at (B).
pub fn pairwise(
    exemplars: &[ComparisonExemplar],
    conversation: &Conversation,
    question: &str,
    first: &str,
    second: &str,
    format: PromptFormat,
) -> Result<ComparisonPrompt> {
    Ok(Comparison {
        exemplars,
        conversation,
        question,
        responses: &[first, second],
    }
    .prompt(format)?)
}

/// The prompt after which the model writes its reasoning about `question` (the pairwise
/// prompt `question`, in the form described in the module docs).
pub fn cot_reasoning(question: &ComparisonPrompt) -> Result<Prompt> {
    match &question.prompt {
        Prompt::Text(s) => {
            let body = s.strip_suffix(RAW_ANSWER_CUE).ok_or_else(|| {
                FeedbackError::Config(format!(
                    "the raw comparison prompt does not end with {RAW_ANSWER_CUE:?}"
                ))
            })?;
            Ok(Prompt::Text(format!("{body}{COT_RAW_CUE}")))
        }
        Prompt::Chat(c) => {
            let mut c = c.clone();
            match c.messages.last_mut() {
                Some(m) if m.role == Role::User => m.content.push_str(COT_CHAT_INSTRUCTION),
                _ => {
                    return Err(FeedbackError::Config(
                        "the chat comparison prompt does not end with a user message".into(),
                    ));
                }
            }
            Ok(Prompt::Chat(c))
        }
    }
}

/// The prompt whose continuation, an option, is scored after `reasoning` was written to
/// the reasoning prompt `reasoning_prompt`.
pub fn cot_answer(reasoning_prompt: &Prompt, reasoning: &str) -> Prompt {
    match reasoning_prompt {
        Prompt::Text(s) => Prompt::Text(format!("{s} {}{COT_RAW_ANSWER}", reasoning.trim())),
        Prompt::Chat(c) => {
            let mut c = c.clone();
            c.messages
                .push(Message::new(Role::Assistant, reasoning.trim()));
            c.messages
                .push(Message::new(Role::User, COT_CHAT_FOLLOW_UP));
            Prompt::Chat(c)
        }
    }
}

/// The yes/no question about one response, and whether "Yes" is the good answer.
pub(crate) fn pointwise_question(config: &LabelConfig, principle_question: &str) -> (String, bool) {
    match &config.pointwise_question {
        PointwiseQuestion::Principle => (principle_yes_no(principle_question), true),
        PointwiseQuestion::Fixed {
            question,
            yes_is_good,
        } => (question.trim().to_string(), *yes_is_good),
    }
}

/// The pointwise question about `response` as the assistant's reply to `conversation`; the
/// choices are `"Yes"`, `"No"` (chat) or `" Yes"`, `" No"` (raw), in that order.
/// `exemplar_question` gives the question shown with an exemplar (from the exemplar's own
/// comparison question, if it has one), `yes_is_good` which answer is the good one.
pub fn pointwise(
    exemplars: &[ComparisonExemplar],
    conversation: &Conversation,
    question: &str,
    response: &str,
    format: PromptFormat,
    yes_is_good: bool,
    exemplar_question: &dyn Fn(&ComparisonExemplar) -> String,
) -> ComparisonPrompt {
    let answer = |good: bool| if good == yes_is_good { "Yes" } else { "No" };
    let shots: Vec<(String, &str)> = exemplars
        .iter()
        .enumerate()
        .map(|(k, ex)| {
            let good = k % 2 == 0;
            let shown = if good { &ex.chosen } else { &ex.rejected };
            (
                pointwise_body(&ex.conversation, shown, &exemplar_question(ex)),
                answer(good),
            )
        })
        .collect();
    let body = pointwise_body(conversation, response, question);
    match format {
        PromptFormat::Chat => {
            let mut messages = Vec::new();
            for (b, a) in shots {
                messages.push(Message::new(Role::User, b));
                messages.push(Message::new(Role::Assistant, a));
            }
            messages.push(Message::new(Role::User, body));
            ComparisonPrompt {
                prompt: Prompt::Chat(Conversation { messages }),
                choices: vec!["Yes".into(), "No".into()],
            }
        }
        PromptFormat::Raw => {
            let mut s = String::new();
            for (b, a) in shots {
                s.push_str(&format!("\n\nHuman: {b}\n\nAssistant: The answer is: {a}"));
            }
            s.push_str(&format!("\n\nHuman: {body}{RAW_ANSWER_CUE}"));
            ComparisonPrompt {
                prompt: Prompt::Text(s),
                choices: vec![" Yes".into(), " No".into()],
            }
        }
    }
}

fn pointwise_body(conversation: &Conversation, response: &str, question: &str) -> String {
    let mut s = String::from(COMPARISON_PREAMBLE);
    for m in &conversation.messages {
        let label = match m.role {
            Role::System => "System",
            Role::User => "Human",
            Role::Assistant => "Assistant",
        };
        s.push_str(&format!("\n\n{label}: {}", m.content));
    }
    s.push_str(&format!(
        "\n\nAssistant: {}\n\n{}\n\nAnswer Yes or No.",
        response.trim(),
        question.trim()
    ));
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use rlaif_constitution::Constitution;

    #[test]
    fn cot_prompts_replace_the_answer_cue() {
        let conv = Conversation::new().user("Can I borrow your car?");
        for format in [PromptFormat::Raw, PromptFormat::Chat] {
            let q = pairwise(&[], &conv, "Which is kinder?", "Sure.", "No!", format).unwrap();
            let r = cot_reasoning(&q).unwrap();
            let a = cot_answer(&r, " Both are short. ");
            match (&r, &a) {
                (Prompt::Text(r), Prompt::Text(a)) => {
                    assert!(r.ends_with("\n(B) No!\n\nAssistant: Let's think step by step:"));
                    assert!(a.ends_with("step by step: Both are short.\n\nSo the answer is:"));
                }
                (Prompt::Chat(r), Prompt::Chat(a)) => {
                    assert!(r.messages[0].content.ends_with(
                        "Answer with (A) or (B).\n\nLet's think step by step before answering."
                    ));
                    assert_eq!(a.messages.len(), 3);
                    assert_eq!(a.messages[1].content, "Both are short.");
                    assert_eq!(a.messages[2].content, COT_CHAT_FOLLOW_UP);
                }
                _ => unreachable!(),
            }
        }
    }

    #[test]
    fn pointwise_exemplars_alternate_good_and_bad_answers() {
        let c = Constitution::default_constitution();
        assert!(c.comparison_exemplars.len() >= 2);
        let conv = Conversation::new().user("How do I whittle a spoon?");
        let q = |ex: &ComparisonExemplar| principle_yes_no(ex.question.as_deref().unwrap_or("Q?"));
        let p = pointwise(
            &c.comparison_exemplars,
            &conv,
            "Is it harmful?",
            "Use a sharp knife, carve away from you.",
            PromptFormat::Raw,
            false,
            &q,
        );
        let Prompt::Text(s) = &p.prompt else {
            unreachable!()
        };
        assert_eq!(p.choices, [" Yes", " No"]);
        assert!(
            s.contains("The answer is: No\n\nHuman:"),
            "good exemplar answered No: {s}"
        );
        assert!(s.contains("The answer is: Yes\n\nHuman:"));
        assert!(s.ends_with(
            "Assistant: Use a sharp knife, carve away from you.\n\nIs it harmful?\n\nAnswer Yes \
             or No.\n\nAssistant: The answer is:"
        ));
        let chat = pointwise(
            &[],
            &conv,
            "Is it harmful?",
            "x",
            PromptFormat::Chat,
            false,
            &q,
        );
        assert_eq!(chat.choices, ["Yes", "No"]);
    }
}

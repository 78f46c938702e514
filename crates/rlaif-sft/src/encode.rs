//! Examples → token ids, with the boundary between prompt and completion.
//!
//! A chat example is rendered twice through the model's chat template, as TRL does for
//! prompt-completion data: the prompt with the generation prompt (what the model saw when
//! it answered) and the whole conversation with the reply. The first must be a prefix of
//! the second; the rest (the reply and the template's end-of-turn text, e.g.
//! `"…<|im_end|>\n"`) is the completion. Prompt and completion are tokenized separately
//! and concatenated, exactly the tokens the model conditions on and emits at generation
//! time. A raw example is its prompt text, then the completion and the EOS token, so the
//! model learns to stop.
//!
//! The loss covers the completion tokens only ("completion-only loss").

use crate::data::SftExample;
use crate::error::{Result, SftError};
use rlaif_core::jsonl::JsonlError;
use rlaif_core::{Message, Prompt, Role};
use rlaif_lm::LanguageModel;
use serde::{Deserialize, Serialize};

/// What to do with an example whose prompt does not fit the length limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LengthPolicy {
    /// Stop with [`SftError::PromptTooLong`] naming the file, line and id.
    #[default]
    Error,
    /// Leave the example out and count it.
    Skip,
}

/// An example as token ids; the loss covers `tokens[prompt_len..]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedExample {
    /// The example id.
    pub id: String,
    /// Its source label.
    pub source: String,
    /// Prompt then completion.
    pub tokens: Vec<u32>,
    /// The number of prompt tokens (at least 1, less than `tokens.len()`).
    pub prompt_len: usize,
    /// Whether the completion was cut to fit the length limit.
    pub truncated: bool,
}

impl EncodedExample {
    /// Tokens that carry loss.
    pub fn completion_tokens(&self) -> usize {
        self.tokens.len() - self.prompt_len
    }
}

/// Counts from [`encode_all`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncodeStats {
    /// Examples encoded.
    pub examples: usize,
    /// Examples whose completion was cut at the length limit.
    pub truncated: usize,
    /// Examples left out because the prompt alone reaches the limit
    /// ([`LengthPolicy::Skip`]).
    pub skipped: usize,
    /// Completion tokens in all (what the loss is averaged over).
    pub completion_tokens: usize,
}

/// The prompt text and the completion text of `ex` as the model sees them.
pub fn render_example(lm: &LanguageModel, ex: &SftExample) -> Result<(String, String)> {
    let template_err = |message: String| SftError::Template {
        file: ex.origin.file.clone(),
        line: ex.origin.line,
        id: ex.id.clone(),
        message,
    };
    match &ex.prompt {
        Prompt::Text(p) => {
            let eos = lm
                .tokenizer
                .eos_id
                .and_then(|id| lm.tokenizer.id_to_token(id))
                .unwrap_or_default();
            Ok((p.clone(), format!("{}{eos}", ex.completion)))
        }
        Prompt::Chat(conv) => {
            let template = lm.chat_template.as_ref().ok_or_else(|| {
                template_err(
                    "the model has no chat template; use raw examples (format = \"raw\")".into(),
                )
            })?;
            let prompt = template.render(&conv.messages, true)?;
            let mut all: Vec<Message> = conv.messages.clone();
            all.push(Message {
                role: Role::Assistant,
                content: ex.completion.clone(),
            });
            let full = template.render(&all, false)?;
            match full.strip_prefix(&prompt) {
                Some(rest) if !rest.is_empty() => Ok((prompt, rest.to_string())),
                _ => Err(template_err(format!(
                    "the chat template does not render the conversation as the prompt (with the \
                     generation prompt) followed by the reply: prompt {prompt:?}, whole {full:?}"
                ))),
            }
        }
    }
}

/// Encodes one example within `max_len` tokens. `Ok(None)`: skipped by `policy`.
pub fn encode_example(
    lm: &LanguageModel,
    ex: &SftExample,
    max_len: usize,
    policy: LengthPolicy,
) -> Result<Option<EncodedExample>> {
    let (prompt, completion) = render_example(lm, ex)?;
    let mut tokens = lm.tokenizer.encode(&prompt)?;
    let prompt_len = tokens.len();
    if prompt_len == 0 || prompt_len + 1 > max_len {
        return match policy {
            LengthPolicy::Skip => Ok(None),
            LengthPolicy::Error if prompt_len == 0 => Err(SftError::Jsonl(JsonlError::Line {
                file: ex.origin.file.clone(),
                line: ex.origin.line,
                field: Some("prompt".into()),
                message: format!("example `{}`: the prompt renders to no tokens", ex.id),
            })),
            LengthPolicy::Error => Err(SftError::PromptTooLong {
                file: ex.origin.file.clone(),
                line: ex.origin.line,
                id: ex.id.clone(),
                prompt_tokens: prompt_len,
                max_len,
            }),
        };
    }
    let completion_ids = lm.tokenizer.encode(&completion)?;
    let keep = completion_ids.len().min(max_len - prompt_len);
    tokens.extend_from_slice(&completion_ids[..keep]);
    if tokens.len() == prompt_len {
        return Err(SftError::Jsonl(JsonlError::Line {
            file: ex.origin.file.clone(),
            line: ex.origin.line,
            field: Some("completion".into()),
            message: format!("example `{}`: the completion renders to no tokens", ex.id),
        }));
    }
    Ok(Some(EncodedExample {
        id: ex.id.clone(),
        source: ex.source.clone(),
        tokens,
        prompt_len,
        truncated: keep < completion_ids.len(),
    }))
}

/// Encodes every example; the limit is the smaller of `max_len` and the model's positions.
pub fn encode_all(
    lm: &LanguageModel,
    examples: &[SftExample],
    max_len: usize,
    policy: LengthPolicy,
) -> Result<(Vec<EncodedExample>, EncodeStats)> {
    let max_len = max_len.min(lm.model.max_positions());
    let mut stats = EncodeStats::default();
    let mut out = Vec::with_capacity(examples.len());
    for ex in examples {
        match encode_example(lm, ex, max_len, policy)? {
            Some(e) => {
                stats.examples += 1;
                stats.truncated += usize::from(e.truncated);
                stats.completion_tokens += e.completion_tokens();
                out.push(e);
            }
            None => stats.skipped += 1,
        }
    }
    Ok((out, stats))
}

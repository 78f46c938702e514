//! Comparisons: read from JSON Lines, mixed from several files with a weight each, split
//! into train / held-out by prompt.
//!
//! A line of a comparison file is one of (the first that applies):
//!
//! 1. An AI-labelled comparison (what `rlaif-feedback` writes): `prompt`, `response_a`,
//!    `response_b` and `p_a`, the probability that `response_a` is the better one (a soft
//!    label in `[0, 1]`). Other fields (`chosen`, `rejected`, principles, ...) are ignored,
//!    so these fields win when a line has both shapes.
//! 2. TRL's preference format: `prompt`, `chosen`, `rejected` (a hard label: `chosen` is
//!    better, `p = 1`). `chosen` / `rejected` are strings, or (conversational) lists holding
//!    one assistant message. Without `prompt` (TRL's "implicit prompt"), `chosen` and
//!    `rejected` are whole conversations that end with the assistant's message and share
//!    everything before it, which is the prompt.
//!
//! `prompt` is a string or a list of `{"role", "content"}` messages. A string is the user's
//! message (chat) when the line's `format` (or the reader's default) is `chat`, and the
//! paper's raw `"\n\nHuman: …\n\nAssistant:"` text when it is `raw`
//! ([`rlaif_constitution::initial_prompt`], as `rlaif-revision` and `rlaif-sft` read it);
//! a raw response follows the prompt after one space. `id` (a string) is optional; without
//! it the id is `<file stem>:<line>`.

use crate::error::{PmError, Result};
use rand::seq::SliceRandom;
use rlaif_constitution::PromptFormat;
use rlaif_core::jsonl::{self, Fields, JsonlError, Line, kind};
use rlaif_core::seed::{derive_seed, stream_rng};
use rlaif_core::{Conversation, Message, Prompt, Role};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

/// Where a comparison came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    /// The data file (`<memory>` for comparisons built in code).
    pub file: PathBuf,
    /// 1-based line (0 for comparisons built in code).
    pub line: usize,
}

impl Default for Origin {
    fn default() -> Self {
        Self {
            file: PathBuf::from("<memory>"),
            line: 0,
        }
    }
}

/// One comparison: a prompt, two responses and the probability that the first is better.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    /// Unique within its file.
    pub id: String,
    /// Comparisons of one group stay on the same side of the held-out split: the prompt
    /// (as JSON), so both responses of a prompt, and every pair drawn for it, are on one
    /// side.
    pub group: String,
    /// The label of the file it is from (`"harmless"`, `"helpful"`, ...): held-out metrics
    /// are reported per source.
    pub source: String,
    /// The weight of its file in the loss (positive).
    pub weight: f64,
    /// What the model was asked.
    pub prompt: Prompt,
    /// The first response.
    pub response_a: String,
    /// The second response.
    pub response_b: String,
    /// `P(a ≻ b)`: 1 or 0 for a hard label, in between for a soft one.
    pub p_a: f64,
    /// File and line.
    pub origin: Origin,
}

impl Comparison {
    /// A chat comparison: one user message, two replies, `P(a ≻ b) = p_a`; source
    /// `"memory"`, weight 1.
    pub fn chat(
        id: impl Into<String>,
        user: &str,
        response_a: impl Into<String>,
        response_b: impl Into<String>,
        p_a: f64,
    ) -> Self {
        let prompt = Prompt::Chat(Conversation::new().user(user));
        Self {
            id: id.into(),
            group: group_of(&prompt),
            source: "memory".into(),
            weight: 1.0,
            prompt,
            response_a: response_a.into(),
            response_b: response_b.into(),
            p_a,
            origin: Origin::default(),
        }
    }

    /// The same comparison labelled with another source.
    pub fn with_source(mut self, source: impl Into<String>) -> Self {
        self.source = source.into();
        self
    }

    /// The same comparison with another loss weight.
    pub fn with_weight(mut self, weight: f64) -> Self {
        self.weight = weight;
        self
    }
}

/// The split group of a prompt: its JSON.
fn group_of(prompt: &Prompt) -> String {
    serde_json::to_string(prompt).unwrap_or_default()
}

/// Reads a comparison file (see the module docs for the line formats). Every comparison
/// gets `source` and `weight` (finite and positive: it multiplies each pair's loss).
/// String prompts without a `format` field use `default_format`.
pub fn read_comparisons(
    path: impl AsRef<Path>,
    source: &str,
    weight: f64,
    default_format: PromptFormat,
) -> Result<Vec<Comparison>> {
    let path = path.as_ref();
    let text = jsonl::read_text(path)?;
    parse_comparisons(&text, path, source, weight, default_format)
}

/// [`read_comparisons`] on text already read; `file` names it in errors.
pub fn parse_comparisons(
    text: &str,
    file: &Path,
    source: &str,
    weight: f64,
    default_format: PromptFormat,
) -> Result<Vec<Comparison>> {
    if !(weight.is_finite() && weight > 0.0) {
        return Err(PmError::Config {
            field: "weight",
            message: format!(
                "{}: must be finite and positive, got {weight}",
                file.display()
            ),
        });
    }
    let stem = file
        .file_stem()
        .map_or_else(|| "data".into(), |s| s.to_string_lossy().into_owned());
    let mut out: Vec<Comparison> = Vec::new();
    let mut seen = HashMap::new();
    for line in jsonl::lines(file, text) {
        let obj = line.object()?;
        let c = parse_line(&obj, &line, &stem, source, weight, default_format)?;
        if let Some(first) = seen.insert(c.id.clone(), line.number) {
            return Err(line
                .field_error(
                    "id",
                    format!("duplicate id `{}` (first on line {first})", c.id),
                )
                .into());
        }
        out.push(c);
    }
    Ok(out)
}

/// The value of `prompt`: a string (a user message, or raw text in the paper's format) or
/// a list of messages.
pub(crate) fn parse_prompt(
    line: &Line<'_>,
    obj: &Map<String, Value>,
    format: PromptFormat,
) -> Result<Prompt, JsonlError> {
    let fields = Fields::new(line, obj);
    match obj.get("prompt") {
        None => Err(line.field_error("prompt", "missing")),
        Some(Value::String(_)) => Ok(rlaif_constitution::initial_prompt(
            format,
            fields.required_str("prompt")?,
        )),
        Some(v @ Value::Array(_)) => {
            if obj.get("format").and_then(Value::as_str) == Some("raw") {
                return Err(line.field_error(
                    "format",
                    "a list of messages is a chat prompt, not raw text",
                ));
            }
            let msgs = line.messages(v, "prompt")?;
            if msgs.is_empty() {
                return Err(line.field_error("prompt", "is empty"));
            }
            Ok(Prompt::Chat(Conversation { messages: msgs }))
        }
        Some(other) => Err(line.field_error(
            "prompt",
            format!(
                "expected a string or a list of messages, got {}",
                kind(other)
            ),
        )),
    }
}

/// A response, the value of `key`: a string, or a list holding one assistant message
/// (conversational, for chat prompts). A raw response follows the prompt after one space.
pub(crate) fn parse_response(
    line: &Line<'_>,
    obj: &Map<String, Value>,
    key: &str,
    prompt: &Prompt,
) -> Result<String, JsonlError> {
    let fields = Fields::new(line, obj);
    match obj.get(key) {
        None => Err(line.field_error(key, "missing")),
        Some(Value::String(_)) => {
            let r = fields.required_str(key)?;
            Ok(match prompt {
                Prompt::Chat(_) => r.to_string(),
                Prompt::Text(_) => format!(" {}", r.trim_start()),
            })
        }
        Some(v @ Value::Array(_)) => {
            if matches!(prompt, Prompt::Text(_)) {
                return Err(line.field_error(
                    key,
                    "a list of messages answers a chat prompt; this prompt is raw text",
                ));
            }
            let msgs = line.messages(v, key)?;
            match msgs.as_slice() {
                [m] if m.role == Role::Assistant && !m.content.trim().is_empty() => {
                    Ok(m.content.clone())
                }
                _ => Err(line.field_error(key, "expected exactly one non-empty assistant message")),
            }
        }
        Some(other) => Err(line.field_error(
            key,
            format!(
                "expected a string or a list with one assistant message, got {}",
                kind(other)
            ),
        )),
    }
}

fn parse_line(
    obj: &Map<String, Value>,
    line: &Line<'_>,
    stem: &str,
    source: &str,
    weight: f64,
    default_format: PromptFormat,
) -> Result<Comparison, JsonlError> {
    let id = match obj.get("id") {
        None => format!("{stem}:{}", line.number),
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(_) => return Err(line.field_error("id", "expected a non-empty string")),
    };
    let format = PromptFormat::from_field(line, obj, default_format)?;
    let labelled = ["response_a", "response_b", "p_a"]
        .iter()
        .any(|k| obj.contains_key(*k));
    let (prompt, response_a, response_b, p_a) = if labelled {
        let prompt = parse_prompt(line, obj, format)?;
        let a = parse_response(line, obj, "response_a", &prompt)?;
        let b = parse_response(line, obj, "response_b", &prompt)?;
        let p_a = match obj.get("p_a") {
            None => return Err(line.field_error("p_a", "missing")),
            Some(Value::Number(n)) => n.as_f64().filter(|p| (0.0..=1.0).contains(p)),
            Some(other) => {
                return Err(line.field_error(
                    "p_a",
                    format!("expected a probability in [0, 1], got {}", kind(other)),
                ));
            }
        };
        let p_a = p_a.ok_or_else(|| {
            line.field_error(
                "p_a",
                format!("expected a probability in [0, 1], got {}", obj["p_a"]),
            )
        })?;
        (prompt, a, b, p_a)
    } else {
        if !obj.contains_key("chosen") {
            return Err(line.field_error(
                "chosen",
                "missing (a line needs `response_a`, `response_b`, `p_a`, or `chosen` and `rejected`)",
            ));
        }
        if !obj.contains_key("rejected") {
            return Err(line.field_error("rejected", "missing"));
        }
        if obj.contains_key("prompt") {
            let prompt = parse_prompt(line, obj, format)?;
            let a = parse_response(line, obj, "chosen", &prompt)?;
            let b = parse_response(line, obj, "rejected", &prompt)?;
            (prompt, a, b, 1.0)
        } else {
            // TRL's implicit prompt: two whole conversations sharing all but the reply.
            let split = |key: &str| -> Result<(Vec<Message>, String), JsonlError> {
                let v = &obj[key];
                if !v.is_array() {
                    return Err(line.field_error(
                        "prompt",
                        format!(
                            "missing (with a string `{key}`, the prompt must be given; without \
                             `prompt`, `chosen` and `rejected` are whole conversations)"
                        ),
                    ));
                }
                let mut msgs = line.messages(v, key)?;
                let n = msgs.len();
                match msgs.pop() {
                    Some(last) if last.role == Role::Assistant && !msgs.is_empty() => {
                        if last.content.trim().is_empty() {
                            return Err(
                                line.field_error(format!("{key}[{}].content", n - 1), "is empty")
                            );
                        }
                        Ok((msgs, last.content))
                    }
                    _ => Err(line.field_error(
                        key,
                        "expected a conversation that ends with the assistant's reply",
                    )),
                }
            };
            let (pa, a) = split("chosen")?;
            let (pb, b) = split("rejected")?;
            if pa != pb {
                return Err(line.field_error(
                    "rejected",
                    "does not share the conversation before the reply with `chosen`",
                ));
            }
            (Prompt::Chat(Conversation { messages: pa }), a, b, 1.0)
        }
    };
    Ok(Comparison {
        id,
        group: group_of(&prompt),
        source: source.to_string(),
        weight,
        prompt,
        response_a,
        response_b,
        p_a,
        origin: Origin {
            file: line.file.to_path_buf(),
            line: line.number,
        },
    })
}

/// A prompt and a response to score (a reference pair for the reward statistics).
#[derive(Debug, Clone, PartialEq)]
pub struct ScoredText {
    /// What the model was asked.
    pub prompt: Prompt,
    /// Its answer.
    pub response: String,
    /// File and line.
    pub origin: Origin,
}

/// Reads prompt / response pairs to score, e.g. the SL model's own samples
/// (`rlaif-revision`'s `helpful.jsonl`): each line has `prompt` (as in a comparison file)
/// and `completion` (or `response`); `format` as in a comparison file.
pub fn read_reference(
    path: impl AsRef<Path>,
    default_format: PromptFormat,
) -> Result<Vec<ScoredText>> {
    let path = path.as_ref();
    let text = jsonl::read_text(path)?;
    parse_reference(&text, path, default_format)
}

/// [`read_reference`] on text already read; `file` names it in errors.
pub fn parse_reference(
    text: &str,
    file: &Path,
    default_format: PromptFormat,
) -> Result<Vec<ScoredText>> {
    let mut out = Vec::new();
    for line in jsonl::lines(file, text) {
        let obj = line.object()?;
        let format = PromptFormat::from_field(&line, &obj, default_format)?;
        let prompt = parse_prompt(&line, &obj, format)?;
        let key = if obj.contains_key("completion") || !obj.contains_key("response") {
            "completion"
        } else {
            "response"
        };
        let response = parse_response(&line, &obj, key, &prompt)?;
        out.push(ScoredText {
            prompt,
            response,
            origin: Origin {
                file: line.file.to_path_buf(),
                line: line.number,
            },
        });
    }
    Ok(out)
}

/// Splits `comparisons` into (train, held-out) by group (the prompt: every comparison of
/// a prompt is on one side): a seeded shuffle of the groups, then the first
/// `round(eval_fraction · groups)` groups are held out (at least one when
/// `eval_fraction > 0` and there are at least two groups; never all of them).
pub fn split_eval(
    comparisons: Vec<Comparison>,
    eval_fraction: f64,
    seed: u64,
) -> (Vec<Comparison>, Vec<Comparison>) {
    let mut groups: Vec<&str> = Vec::new();
    let mut seen = HashSet::new();
    for c in &comparisons {
        if seen.insert(c.group.as_str()) {
            groups.push(&c.group);
        }
    }
    let n = groups.len();
    let mut k = (eval_fraction.max(0.0) * n as f64).round() as usize;
    if eval_fraction > 0.0 && n >= 2 {
        k = k.clamp(1, n - 1);
    } else {
        k = k.min(n.saturating_sub(1));
    }
    groups.shuffle(&mut stream_rng(derive_seed(&[seed, 0x9E1D_5EED]), 0));
    let held: HashSet<String> = groups[..k].iter().map(|g| g.to_string()).collect();
    comparisons
        .into_iter()
        .partition(|c| !held.contains(&c.group))
}

/// How [`PmData::build`] splits the comparisons.
///
/// | field | default | note |
/// |---|---|---|
/// | `eval_fraction` | 0.1 | of the prompts held out (all files together) |
/// | `seed` | 0 | the split |
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataConfig {
    /// The fraction of the prompts held out.
    pub eval_fraction: f64,
    /// Seed of the split.
    pub seed: u64,
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            eval_fraction: 0.1,
            seed: 0,
        }
    }
}

/// A training set, its held-out split, and the reference pairs whose scores give the
/// reward statistics.
#[derive(Debug, Clone, Default)]
pub struct PmData {
    /// What is trained on.
    pub train: Vec<Comparison>,
    /// The held-out comparisons whose loss, accuracy and calibration are reported.
    pub eval: Vec<Comparison>,
    /// Prompt / response pairs scored after training for the reward statistics (e.g. the
    /// SL model's own samples). Empty: the responses of the held-out comparisons (or of the
    /// training comparisons, when none are held out) are scored instead.
    pub reference: Vec<ScoredText>,
}

impl PmData {
    /// The comparisons of every file (each already carrying its source and weight, from
    /// [`read_comparisons`]) split by prompt over all files together, so a prompt that
    /// appears in two files is on one side.
    pub fn build(sets: Vec<Vec<Comparison>>, config: &DataConfig) -> Self {
        let all: Vec<Comparison> = sets.into_iter().flatten().collect();
        let (train, eval) = split_eval(all, config.eval_fraction, config.seed);
        Self {
            train,
            eval,
            reference: Vec::new(),
        }
    }

    /// The same data with `reference` pairs for the reward statistics.
    pub fn with_reference(mut self, reference: Vec<ScoredText>) -> Self {
        self.reference = reference;
        self
    }
}

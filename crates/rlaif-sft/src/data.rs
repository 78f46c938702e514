//! Training examples: read from JSON Lines, split into train / held-out, mixed.
//!
//! A line of a data file is one of (the first that applies):
//!
//! 1. A record of `rlaif-revision` (it has an `sft` list): one example per
//!    `{"prompt", "completion"}` pair, with the prompt the model answered
//!    ([`rlaif_constitution::initial_prompt`] in the record's `format`).
//! 2. `{"messages": [...]}` (Hugging Face / TRL conversational language modelling): the
//!    last message must be the assistant's; it is the completion, the messages before it
//!    are the prompt.
//! 3. `{"prompt": ..., "completion": ...}` (TRL prompt-completion): strings, or lists of
//!    messages (conversational: the completion is one assistant message). A string prompt
//!    is a user message when the line's `format` (or the reader's default) is `chat`, raw
//!    text when it is `raw`.
//!
//! `id` (a string) is optional; without it the id is `<file stem>:<line>`. Loss is taken
//! on the completion only (see [`crate::encode`]).

use crate::error::Result;
use rand::seq::SliceRandom;
use rlaif_constitution::PromptFormat;
use rlaif_core::jsonl::{self, Fields, JsonlError, Line};
use rlaif_core::seed::stream_rng;
use rlaif_core::{Conversation, Prompt, Role};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

/// Where an example came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    /// The data file (`<memory>` for examples built in code).
    pub file: PathBuf,
    /// 1-based line (0 for examples built in code).
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

/// One supervised example: a prompt and the completion to learn.
#[derive(Debug, Clone, PartialEq)]
pub struct SftExample {
    /// Unique within its file (`<record id>#<k>` for the k-th pair of a revision record
    /// with several).
    pub id: String,
    /// Examples of one group are kept on the same side of the held-out split: the record
    /// id for the pairs of a revision record, else the example id.
    pub group: String,
    /// The label of the set it belongs to (`"revision"`, `"helpful"`, ...): held-out losses
    /// are reported per source.
    pub source: String,
    /// What the model is asked.
    pub prompt: Prompt,
    /// The text to learn: the assistant's reply (chat), or the continuation of the raw
    /// prompt.
    pub completion: String,
    /// File and line.
    pub origin: Origin,
}

impl SftExample {
    /// A chat example: one user message and the assistant's reply.
    pub fn chat(id: impl Into<String>, user: &str, reply: impl Into<String>) -> Self {
        let id = id.into();
        Self {
            group: id.clone(),
            id,
            source: "memory".into(),
            prompt: Prompt::Chat(Conversation::new().user(user)),
            completion: reply.into(),
            origin: Origin::default(),
        }
    }

    /// The same example labelled with another source.
    pub fn with_source(mut self, source: impl Into<String>) -> Self {
        self.source = source.into();
        self
    }
}

/// Reads a data file (see the module docs for the line formats). String prompts without a
/// `format` field use `default_format`. Every example gets `source`.
pub fn read_examples(
    path: impl AsRef<Path>,
    source: &str,
    default_format: PromptFormat,
) -> Result<Vec<SftExample>> {
    let path = path.as_ref();
    let text = jsonl::read_text(path)?;
    parse_examples(&text, path, source, default_format)
}

/// [`read_examples`] on text already read; `file` names it in errors.
pub fn parse_examples(
    text: &str,
    file: &Path,
    source: &str,
    default_format: PromptFormat,
) -> Result<Vec<SftExample>> {
    let stem = file
        .file_stem()
        .map_or_else(|| "data".into(), |s| s.to_string_lossy().into_owned());
    let mut out = Vec::new();
    let mut seen = std::collections::HashMap::new();
    for line in jsonl::lines(file, text) {
        let obj = line.object()?;
        let before = out.len();
        parse_line(&obj, &line, &stem, source, default_format, &mut out)?;
        for ex in &out[before..] {
            if let Some(first) = seen.insert(ex.id.clone(), line.number) {
                return Err(line
                    .field_error(
                        "id",
                        format!("duplicate id `{}` (first on line {first})", ex.id),
                    )
                    .into());
            }
        }
    }
    Ok(out)
}

fn origin(line: &Line<'_>) -> Origin {
    Origin {
        file: line.file.to_path_buf(),
        line: line.number,
    }
}

fn parse_line(
    obj: &Map<String, Value>,
    line: &Line<'_>,
    stem: &str,
    source: &str,
    default_format: PromptFormat,
    out: &mut Vec<SftExample>,
) -> Result<(), JsonlError> {
    let id = match obj.get("id") {
        None => format!("{stem}:{}", line.number),
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(_) => return Err(line.field_error("id", "expected a non-empty string")),
    };
    let format = PromptFormat::from_field(line, obj, default_format)?;
    let group = id.clone();
    let mut push = |id: String, prompt: Prompt, completion: String| {
        out.push(SftExample {
            id,
            group: group.clone(),
            source: source.to_string(),
            prompt,
            completion,
            origin: origin(line),
        })
    };
    // The prompt the revision loop asked; a raw completion follows a space.
    let text_prompt = |p: &str| rlaif_constitution::initial_prompt(format, p);
    let text_completion = |c: &str| match format {
        PromptFormat::Chat => c.to_string(),
        PromptFormat::Raw => format!(" {}", c.trim_start()),
    };

    if let Some(sft) = obj.get("sft") {
        // A record of rlaif-revision.
        let Value::Array(pairs) = sft else {
            return Err(line.field_error(
                "sft",
                "expected a list of {\"prompt\", \"completion\"} pairs",
            ));
        };
        if pairs.is_empty() {
            return Err(line.field_error("sft", "is empty"));
        }
        let several = pairs.len() > 1;
        for (k, pair) in pairs.iter().enumerate() {
            let Value::Object(pair) = pair else {
                return Err(line.field_error(format!("sft[{k}]"), "expected an object"));
            };
            let sub = |f: &str| format!("sft[{k}].{f}");
            let p = Fields::new(line, pair)
                .required_str("prompt")
                .map_err(|_| line.field_error(sub("prompt"), "missing, empty or not a string"))?;
            let c = Fields::new(line, pair)
                .required_str("completion")
                .map_err(|_| {
                    line.field_error(sub("completion"), "missing, empty or not a string")
                })?;
            let id = if several {
                format!("{id}#{k}")
            } else {
                id.clone()
            };
            push(id, text_prompt(p), text_completion(c));
        }
        return Ok(());
    }

    if let Some(messages) = obj.get("messages") {
        let mut msgs = line.messages(messages, "messages")?;
        let n = msgs.len();
        let last = msgs
            .pop()
            .ok_or_else(|| line.field_error("messages", "is empty"))?;
        if last.role != Role::Assistant {
            return Err(line.field_error(
                format!("messages[{}].role", n - 1),
                "the last message must be the assistant's (it is what is learnt)",
            ));
        }
        if msgs.is_empty() {
            return Err(line.field_error(
                "messages",
                "needs at least one message before the assistant's",
            ));
        }
        if last.content.trim().is_empty() {
            return Err(line.field_error(format!("messages[{}].content", n - 1), "is empty"));
        }
        push(
            id,
            Prompt::Chat(Conversation { messages: msgs }),
            last.content,
        );
        return Ok(());
    }

    let prompt = obj.get("prompt").ok_or_else(|| {
        line.field_error(
            "prompt",
            "missing (a line needs `sft`, `messages` or `prompt` + `completion`)",
        )
    })?;
    let completion = obj
        .get("completion")
        .ok_or_else(|| line.field_error("completion", "missing"))?;
    let prompt = match prompt {
        Value::String(_) => text_prompt(Fields::new(line, obj).required_str("prompt")?),
        Value::Array(_) => {
            if obj.get("format").and_then(Value::as_str) == Some("raw") {
                return Err(line.field_error(
                    "format",
                    "a list of messages is a chat prompt, not raw text",
                ));
            }
            let msgs = line.messages(prompt, "prompt")?;
            if msgs.is_empty() {
                return Err(line.field_error("prompt", "is empty"));
            }
            Prompt::Chat(Conversation { messages: msgs })
        }
        _ => return Err(line.field_error("prompt", "expected a string or a list of messages")),
    };
    let completion = match completion {
        Value::String(_) => {
            let c = Fields::new(line, obj).required_str("completion")?;
            match prompt {
                Prompt::Chat(_) => c.to_string(),
                Prompt::Text(_) => text_completion(c),
            }
        }
        Value::Array(_) => {
            let msgs = line.messages(completion, "completion")?;
            match msgs.as_slice() {
                [m] if m.role == Role::Assistant && !m.content.trim().is_empty() => {
                    m.content.clone()
                }
                _ => {
                    return Err(line.field_error(
                        "completion",
                        "expected exactly one non-empty assistant message",
                    ));
                }
            }
        }
        _ => {
            return Err(
                line.field_error("completion", "expected a string or a list with one message")
            );
        }
    };
    push(id, prompt, completion);
    Ok(())
}

/// Splits `examples` into (train, held-out) by group (the pairs of one revision record
/// stay together, so no prompt is on both sides): a seeded shuffle of the groups, then the
/// first `round(eval_fraction · groups)` groups are held out (at least one when
/// `eval_fraction > 0` and there are at least two groups; never all of them).
pub fn split_eval(
    examples: Vec<SftExample>,
    eval_fraction: f64,
    seed: u64,
) -> (Vec<SftExample>, Vec<SftExample>) {
    let mut groups: Vec<&str> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for e in &examples {
        if seen.insert(e.group.as_str()) {
            groups.push(&e.group);
        }
    }
    let n = groups.len();
    let mut k = (eval_fraction * n as f64).round() as usize;
    if eval_fraction > 0.0 && n >= 2 {
        k = k.clamp(1, n - 1);
    } else {
        k = k.min(n.saturating_sub(1));
    }
    groups.shuffle(&mut stream_rng(seed ^ 0x5EED_E7A1, 0));
    let held: std::collections::HashSet<String> =
        groups[..k].iter().map(|g| g.to_string()).collect();
    examples.into_iter().partition(|e| !held.contains(&e.group))
}

/// Mixes `helpful` examples into `primary`: `round(helpful_ratio · primary.len())` helpful
/// examples are added, drawn without replacement in a seeded order and cycled through again
/// (upsampled) when more are asked for than there are. `helpful_ratio = 0` leaves the
/// primary set alone. The order of the result does not matter: training shuffles.
pub fn mix(
    primary: Vec<SftExample>,
    helpful: &[SftExample],
    helpful_ratio: f64,
    seed: u64,
) -> Vec<SftExample> {
    let want = (helpful_ratio.max(0.0) * primary.len() as f64).round() as usize;
    let mut out = primary;
    if helpful.is_empty() || want == 0 {
        return out;
    }
    let mut rng = stream_rng(seed ^ 0x4E1F_0000, 0);
    let mut order: Vec<usize> = (0..helpful.len()).collect();
    let mut taken = 0;
    while taken < want {
        order.shuffle(&mut rng);
        for &i in order.iter().take(want - taken) {
            out.push(helpful[i].clone());
            taken += 1;
        }
    }
    out
}

/// A training set and its held-out split.
#[derive(Debug, Clone, Default)]
pub struct SftData {
    /// What is trained on.
    pub train: Vec<SftExample>,
    /// The held-out examples whose loss is reported.
    pub eval: Vec<SftExample>,
}

/// How [`SftData::build`] assembles a training set.
///
/// | field | default | note |
/// |---|---|---|
/// | `helpful_ratio` | 1.0 | helpful examples mixed in per revision example (upsampled when there are fewer) |
/// | `eval_fraction` | 0.1 | of each set's groups held out |
/// | `seed` | 0 | the split and the mixing |
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataConfig {
    /// Helpful examples per revision example.
    pub helpful_ratio: f64,
    /// The fraction of each set held out (by group).
    pub eval_fraction: f64,
    /// Seed of the split and the mixing.
    pub seed: u64,
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            helpful_ratio: 1.0,
            eval_fraction: 0.1,
            seed: 0,
        }
    }
}

impl SftData {
    /// The usual stage-1 set: `revisions` and `helpful` are each split into train and
    /// held-out parts first (so an upsampled helpful example can't be on both sides), then
    /// helpful examples are mixed into each part at `helpful_ratio` per revision example.
    pub fn build(
        revisions: Vec<SftExample>,
        helpful: Vec<SftExample>,
        config: &DataConfig,
    ) -> Self {
        let DataConfig {
            helpful_ratio,
            eval_fraction,
            seed,
        } = *config;
        let (rev_train, rev_eval) = split_eval(revisions, eval_fraction, seed);
        let (help_train, help_eval) = split_eval(helpful, eval_fraction, seed.wrapping_add(1));
        Self {
            train: mix(rev_train, &help_train, helpful_ratio, seed),
            eval: mix(rev_eval, &help_eval, helpful_ratio, seed.wrapping_add(1)),
        }
    }
}

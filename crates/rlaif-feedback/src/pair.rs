//! Pairs to label, and reading them from JSON Lines.
//!
//! # Input formats
//!
//! One JSON object per line (blank lines are skipped); every error names the file, the
//! 1-based line and the field (``pairs.jsonl:3: field `prompt[1].role`: unknown role …``).
//!
//! - `prompt` (required): a string or a list of messages (`[{"role": "user", "content":
//!   "…"}, …]`, roles `system` / `user` / `assistant`, ending with the user's turn). A
//!   string is one user message, unless it is a `Human:` / `Assistant:` transcript (it
//!   starts with `Human:` after leading whitespace, as Anthropic's HH-RLHF prompts do), which
//!   is split into its turns; a final empty `Assistant:` is dropped.
//! - Either `response_a` and `response_b` (no known preference; this crate's pair records,
//!   and its label records, have them), with an optional `known_better` (`"a"` or `"b"`);
//! - or TRL's `chosen` and `rejected` (a known preference: chosen is better), each a
//!   string or a list holding one assistant message. They are put at A and B in a seeded
//!   random order (a function of the seed and the id only), so the position does not
//!   reveal the answer; `known_better` remembers where the chosen one went.
//! - `id` (optional): a string or an integer, unique in the file; lines without one get
//!   `line-N` (N the line number).
//! - Every other field is carried through to the labels (e.g. `category`, `length`,
//!   `kind`), except the fields a label record computes (`p_a`, `queries`, `settings`, …,
//!   and `chosen` / `rejected` next to `response_a` / `response_b`), which are dropped so a
//!   label file can be read back and labelled again. The sampling settings of this crate's
//!   pair records (`seed`, `format`, `temperature`, `top_p`, `top_k`, `max_new_tokens`,
//!   `require_distinct`) are carried as one object, `generation`, so they do not read as
//!   settings of the labels.

use crate::error::Result;
use rlaif_core::jsonl::{self, Fields, JsonlError, Line, kind};
use rlaif_core::seed::derive_seed;
use rlaif_core::{Conversation, Message, Role};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::path::Path;

/// One of the two responses of a pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    /// Response A (shown first in the A/B order).
    A,
    /// Response B.
    B,
}

impl Side {
    /// `"a"` or `"b"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Side::A => "a",
            Side::B => "b",
        }
    }

    /// The other side.
    pub fn other(self) -> Side {
        match self {
            Side::A => Side::B,
            Side::B => Side::A,
        }
    }
}

/// The prompt of a pair as the input gave it: written back unchanged to the labels'
/// `prompt` (TRL's standard format for a string, its conversational format for messages).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PairPrompt {
    /// A user message, or a `Human:` / `Assistant:` transcript.
    Text(String),
    /// A list of messages ending with the user's turn.
    Messages(Conversation),
}

/// A response in TRL's form matching the prompt's: a string next to a string prompt, one
/// assistant message next to a list of messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TrlResponse {
    /// Plain text.
    Text(String),
    /// `[{"role": "assistant", "content": …}]`.
    Messages(Conversation),
}

impl TrlResponse {
    /// `text` in the form that goes with `prompt`.
    pub fn for_prompt(prompt: &PairPrompt, text: &str) -> Self {
        match prompt {
            PairPrompt::Text(_) => TrlResponse::Text(text.to_string()),
            PairPrompt::Messages(_) => {
                TrlResponse::Messages(Conversation::new().assistant(text.to_string()))
            }
        }
    }
}

/// Two responses to one prompt, to be labelled.
#[derive(Debug, Clone, PartialEq)]
pub struct Pair {
    /// Unique id.
    pub id: String,
    /// The prompt as given.
    pub prompt: PairPrompt,
    /// The prompt as a conversation ending with the user's turn (what the feedback model
    /// is shown).
    pub conversation: Conversation,
    /// Response A.
    pub response_a: String,
    /// Response B.
    pub response_b: String,
    /// Which response is known to be better, when the input had a preference.
    pub known_better: Option<Side>,
    /// The input's other fields, carried through to the labels.
    pub extra: Map<String, Value>,
}

impl Pair {
    /// A pair answering one user message, with no known preference and no extra fields.
    pub fn new(
        id: impl Into<String>,
        prompt: impl Into<String>,
        response_a: impl Into<String>,
        response_b: impl Into<String>,
    ) -> Self {
        let prompt = prompt.into();
        Self {
            id: id.into(),
            conversation: Conversation::new().user(prompt.clone()),
            prompt: PairPrompt::Text(prompt),
            response_a: response_a.into(),
            response_b: response_b.into(),
            known_better: None,
            extra: Map::new(),
        }
    }

    /// The same pair with a known better response.
    pub fn with_known_better(mut self, side: Side) -> Self {
        self.known_better = Some(side);
        self
    }

    /// The same pair with an extra field (e.g. `("length", "similar")`).
    pub fn with_extra(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.extra.insert(key.into(), value.into());
        self
    }

    /// The text of response `side`.
    pub fn response(&self, side: Side) -> &str {
        match side {
            Side::A => &self.response_a,
            Side::B => &self.response_b,
        }
    }
}

/// The fields a label record computes: dropped from input lines (see the module docs).
pub(crate) const LABEL_FIELDS: [&str; 12] = [
    "chosen",
    "rejected",
    "p_a",
    "p_a_by_order",
    "p_a_by_principle",
    "principles",
    "queries",
    "settings",
    "constitution",
    "words_a",
    "words_b",
    "length_control_words",
];

/// The sampling settings of a pair record, carried as `generation`.
const GENERATION_FIELDS: [&str; 7] = [
    "seed",
    "format",
    "temperature",
    "top_p",
    "top_k",
    "max_new_tokens",
    "require_distinct",
];

/// Reads a pair file (see the module docs for the formats). `seed` decides the A/B order
/// of known-preference (`chosen` / `rejected`) lines; pass the same seed whenever the same
/// file is labelled again.
pub fn read_pairs(path: impl AsRef<Path>, seed: u64) -> Result<Vec<Pair>> {
    let path = path.as_ref();
    let text = jsonl::read_text(path)?;
    Ok(parse_pairs(&text, path, seed)?)
}

/// Parses the text of a pair file; `file` names it in errors.
pub fn parse_pairs(text: &str, file: &Path, seed: u64) -> Result<Vec<Pair>, JsonlError> {
    let mut out = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for line in jsonl::lines(file, text) {
        let pair = parse_line(&line, seed)?;
        if let Some(&first) = seen.get(&pair.id) {
            return Err(line.field_error(
                "id",
                format!("duplicate id `{}` (first used on line {first})", pair.id),
            ));
        }
        seen.insert(pair.id.clone(), line.number);
        out.push(pair);
    }
    Ok(out)
}

fn parse_line(line: &Line<'_>, seed: u64) -> Result<Pair, JsonlError> {
    let obj = line.object()?;
    let f = Fields::new(line, &obj);
    let id = match f.get("id") {
        None | Some(Value::Null) => format!("line-{}", line.number),
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => n.to_string(),
        Some(v @ Value::String(_)) => f.non_empty_str("id", v)?.to_string(),
        Some(other) => {
            return Err(f.error(
                "id",
                format!("expected a string or an integer, got {}", kind(other)),
            ));
        }
    };
    let (prompt, conversation) = match f.get("prompt") {
        None => return Err(f.error("prompt", "missing")),
        Some(v @ Value::String(_)) => {
            let s = f.non_empty_str("prompt", v)?;
            let c = conversation_from_text(s).map_err(|m| f.error("prompt", m))?;
            (PairPrompt::Text(s.to_string()), c)
        }
        Some(v @ Value::Array(_)) => {
            let c = messages(&f, "prompt", v)?;
            match c.messages.last() {
                None => return Err(f.error("prompt", "the list of messages is empty")),
                Some(m) if m.role != Role::User => {
                    return Err(f.error(
                        format!("prompt[{}].role", c.messages.len() - 1),
                        "the conversation must end with the user's turn",
                    ));
                }
                Some(m) if m.content.trim().is_empty() => {
                    return Err(f.error(
                        format!("prompt[{}].content", c.messages.len() - 1),
                        "is empty",
                    ));
                }
                Some(_) => {}
            }
            (PairPrompt::Messages(c.clone()), c)
        }
        Some(other) => {
            return Err(f.error(
                "prompt",
                format!(
                    "expected a string or a list of messages, got {}",
                    kind(other)
                ),
            ));
        }
    };
    let has_ab = f.get("response_a").is_some() || f.get("response_b").is_some();
    let (response_a, response_b, known_better) = if has_ab {
        let a = f.required_str("response_a")?.to_string();
        let b = f.required_str("response_b")?.to_string();
        let known = match f.get("known_better") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s == "a" => Some(Side::A),
            Some(Value::String(s)) if s == "b" => Some(Side::B),
            Some(other) => {
                return Err(f.error(
                    "known_better",
                    format!("expected \"a\" or \"b\", got {other}"),
                ));
            }
        };
        (a, b, known)
    } else {
        let chosen = response(&f, "chosen")?;
        let rejected = response(&f, "rejected")?;
        if f.get("known_better").is_some() {
            return Err(f.error(
                "known_better",
                "only goes with `response_a` / `response_b` (with `chosen` / `rejected` the \
                 chosen response is the better one)",
            ));
        }
        if chosen_goes_second(seed, &id) {
            (rejected, chosen, Some(Side::B))
        } else {
            (chosen, rejected, Some(Side::A))
        }
    };
    let mut extra = Map::new();
    let nest = !obj.contains_key("generation");
    let mut generation = Map::new();
    for (k, v) in &obj {
        let k = k.as_str();
        if matches!(
            k,
            "id" | "prompt" | "response_a" | "response_b" | "known_better"
        ) || LABEL_FIELDS.contains(&k)
        {
            continue;
        }
        if nest && GENERATION_FIELDS.contains(&k) {
            generation.insert(k.to_string(), v.clone());
        } else {
            extra.insert(k.to_string(), v.clone());
        }
    }
    if !generation.is_empty() {
        extra.insert("generation".into(), Value::Object(generation));
    }
    Ok(Pair {
        id,
        prompt,
        conversation,
        response_a,
        response_b,
        known_better,
        extra,
    })
}

/// Whether the chosen response of the known-preference pair `id` is put at B.
fn chosen_goes_second(seed: u64, id: &str) -> bool {
    derive_seed(&[seed, 0x0AB0_0AB0, crate::id_hash(id)]) & 1 == 1
}

/// A `chosen` / `rejected` value: a string, or a list of one assistant message.
fn response(f: &Fields<'_, '_>, field: &str) -> Result<String, JsonlError> {
    match f.get(field) {
        None => Err(f.error(
            field,
            "missing (a pair needs `response_a` and `response_b`, or `chosen` and `rejected`)",
        )),
        Some(v @ Value::String(_)) => Ok(f.non_empty_str(field, v)?.to_string()),
        Some(v @ Value::Array(_)) => {
            let c = messages(f, field, v)?;
            match c.messages.as_slice() {
                [m] if m.role == Role::Assistant && !m.content.trim().is_empty() => {
                    Ok(m.content.clone())
                }
                [m] if m.role == Role::Assistant => {
                    Err(f.error(format!("{field}[0].content"), "is empty"))
                }
                _ => Err(f.error(field, "expected a list of one assistant message")),
            }
        }
        Some(other) => Err(f.error(
            field,
            format!(
                "expected a string or a list of messages, got {}",
                kind(other)
            ),
        )),
    }
}

/// A list of `{"role", "content"}` messages (other keys of a message are ignored).
fn messages(f: &Fields<'_, '_>, field: &str, v: &Value) -> Result<Conversation, JsonlError> {
    let Value::Array(items) = v else {
        return Err(f.error(field, format!("expected a list, got {}", kind(v))));
    };
    let mut out = Vec::with_capacity(items.len());
    for (i, m) in items.iter().enumerate() {
        let at = format!("{field}[{i}]");
        let Value::Object(o) = m else {
            return Err(f.error(
                at,
                format!(
                    "expected a message (an object with `role` and `content`), got {}",
                    kind(m)
                ),
            ));
        };
        let role = match o.get("role") {
            None => return Err(f.error(format!("{at}.role"), "missing")),
            Some(Value::String(r)) => match r.as_str() {
                "system" => Role::System,
                "user" => Role::User,
                "assistant" => Role::Assistant,
                other => {
                    return Err(f.error(
                        format!("{at}.role"),
                        format!(
                            "unknown role `{other}` (expected `system`, `user` or `assistant`)"
                        ),
                    ));
                }
            },
            Some(other) => {
                return Err(f.error(
                    format!("{at}.role"),
                    format!("expected a string, got {}", kind(other)),
                ));
            }
        };
        let content = match o.get("content") {
            None => return Err(f.error(format!("{at}.content"), "missing")),
            Some(Value::String(c)) => c.clone(),
            Some(other) => {
                return Err(f.error(
                    format!("{at}.content"),
                    format!("expected a string, got {}", kind(other)),
                ));
            }
        };
        out.push(Message::new(role, content));
    }
    Ok(Conversation { messages: out })
}

/// A string prompt as a conversation: one user message, or the turns of a `Human:` /
/// `Assistant:` transcript.
fn conversation_from_text(s: &str) -> Result<Conversation, String> {
    let t = s.trim_start();
    if !t.starts_with("Human:") {
        return Ok(Conversation::new().user(s.to_string()));
    }
    let text = format!("\n\n{t}");
    const MARKS: [(&str, Role); 2] = [
        ("\n\nHuman:", Role::User),
        ("\n\nAssistant:", Role::Assistant),
    ];
    let mut marks: Vec<(Role, usize, usize)> = Vec::new();
    let mut pos = 0;
    loop {
        let next = MARKS
            .iter()
            .filter_map(|(m, role)| text[pos..].find(m).map(|i| (pos + i, m.len(), *role)))
            .min_by_key(|x| x.0);
        let Some((start, len, role)) = next else {
            break;
        };
        marks.push((role, start, start + len));
        pos = start + len;
    }
    let mut messages = Vec::with_capacity(marks.len());
    for (k, &(role, _, body)) in marks.iter().enumerate() {
        let end = marks.get(k + 1).map_or(text.len(), |m| m.1);
        messages.push(Message::new(role, text[body..end].trim()));
    }
    if messages
        .last()
        .is_some_and(|m| m.role == Role::Assistant && m.content.is_empty())
    {
        messages.pop();
    }
    match messages.last() {
        Some(m) if m.role == Role::User => {}
        _ => {
            return Err(
                "a `Human:` / `Assistant:` transcript must end with the human's turn \
                        (or an empty `Assistant:`)"
                    .into(),
            );
        }
    }
    if let Some(k) = messages.iter().position(|m| m.content.is_empty()) {
        return Err(format!(
            "turn {} of the `Human:` / `Assistant:` transcript is empty",
            k + 1
        ));
    }
    Ok(Conversation { messages })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<Pair>, JsonlError> {
        parse_pairs(text, Path::new("pairs.jsonl"), 0)
    }

    #[test]
    fn transcripts_are_split_into_turns() {
        let c = conversation_from_text(
            "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Help me?\n\nAssistant:",
        )
        .unwrap();
        assert_eq!(
            c,
            Conversation::new()
                .user("Hi")
                .assistant("Hello!")
                .user("Help me?")
        );
        let plain = conversation_from_text("What is a Human: label?").unwrap();
        assert_eq!(plain, Conversation::new().user("What is a Human: label?"));
        assert!(conversation_from_text("Human: hi\n\nAssistant: there").is_err());
        assert!(conversation_from_text("Human: \n\nAssistant: x\n\nHuman: y").is_err());
    }

    #[test]
    fn known_preferences_land_on_both_sides_and_are_remembered() {
        let text: String = (0..40)
            .map(|i| format!("{{\"id\":\"p{i}\",\"prompt\":\"q\",\"chosen\":\"good\",\"rejected\":\"bad\"}}\n"))
            .collect();
        let pairs = parse(&text).unwrap();
        let at_b = pairs
            .iter()
            .filter(|p| p.known_better == Some(Side::B))
            .count();
        assert!((8..=32).contains(&at_b), "{at_b} of 40 at B");
        for p in &pairs {
            assert_eq!(p.response(p.known_better.unwrap()), "good");
            assert_eq!(p.response(p.known_better.unwrap().other()), "bad");
        }
        // The order is a function of the seed and the id only.
        let again = parse(&text).unwrap();
        assert_eq!(pairs, again);
        let reversed: String = text.lines().rev().map(|l| format!("{l}\n")).collect();
        let mut back = parse(&reversed).unwrap();
        back.reverse();
        assert_eq!(pairs, back);
    }

    #[test]
    fn extra_fields_are_carried_and_label_fields_dropped() {
        let line = r#"{"id":7,"prompt":[{"role":"system","content":"s"},{"role":"user","content":"q"}],"response_a":"x","response_b":"y","known_better":"b","category":"weapons","length":"similar","kind":"refusal","p_a":0.3,"chosen":"x","seed":4,"format":"chat"}"#;
        let p = &parse(line).unwrap()[0];
        assert_eq!(p.id, "7");
        assert_eq!(p.known_better, Some(Side::B));
        assert_eq!(p.conversation.messages.len(), 2);
        let keys: Vec<&str> = p.extra.keys().map(String::as_str).collect();
        assert_eq!(keys, ["category", "generation", "kind", "length"]);
        assert_eq!(
            p.extra["generation"],
            serde_json::json!({"seed": 4, "format": "chat"})
        );
    }

    #[test]
    fn errors_name_file_line_and_field() {
        let cases = [
            (
                "{\"prompt\":\"q\",\"chosen\":\"a\"}",
                "pairs.jsonl:1: field `rejected`: missing",
            ),
            (
                "\n{\"prompt\":\"q\",\"response_a\":\"a\"}",
                "pairs.jsonl:2: field `response_b`: missing",
            ),
            (
                "{\"response_a\":\"a\",\"response_b\":\"b\"}",
                "pairs.jsonl:1: field `prompt`: missing",
            ),
            (
                "{\"prompt\":3,\"chosen\":\"a\",\"rejected\":\"b\"}",
                "pairs.jsonl:1: field `prompt`: expected a string or a list of messages, got a number",
            ),
            (
                "{\"prompt\":[{\"role\":\"robot\",\"content\":\"x\"}],\"chosen\":\"a\",\"rejected\":\"b\"}",
                "pairs.jsonl:1: field `prompt[0].role`: unknown role `robot`",
            ),
            (
                "{\"prompt\":[{\"role\":\"user\"}],\"chosen\":\"a\",\"rejected\":\"b\"}",
                "pairs.jsonl:1: field `prompt[0].content`: missing",
            ),
            (
                "{\"prompt\":[{\"role\":\"user\",\"content\":\"q\"},{\"role\":\"assistant\",\"content\":\"x\"}],\"chosen\":\"a\",\"rejected\":\"b\"}",
                "pairs.jsonl:1: field `prompt[1].role`: the conversation must end with the user's turn",
            ),
            (
                "{\"prompt\":[],\"chosen\":\"a\",\"rejected\":\"b\"}",
                "pairs.jsonl:1: field `prompt`: the list of messages is empty",
            ),
            (
                "{\"prompt\":\"q\",\"chosen\":[{\"role\":\"user\",\"content\":\"x\"}],\"rejected\":\"b\"}",
                "pairs.jsonl:1: field `chosen`: expected a list of one assistant message",
            ),
            (
                "{\"prompt\":\"q\",\"chosen\":\" \",\"rejected\":\"b\"}",
                "pairs.jsonl:1: field `chosen`: is empty",
            ),
            (
                "{\"prompt\":\"q\",\"response_a\":\"a\",\"response_b\":\"b\",\"known_better\":\"c\"}",
                "pairs.jsonl:1: field `known_better`: expected \"a\" or \"b\"",
            ),
            (
                "{\"prompt\":\"q\",\"chosen\":\"a\",\"rejected\":\"b\",\"known_better\":\"a\"}",
                "pairs.jsonl:1: field `known_better`: only goes with",
            ),
            (
                "{\"id\":[1],\"prompt\":\"q\",\"chosen\":\"a\",\"rejected\":\"b\"}",
                "pairs.jsonl:1: field `id`: expected a string or an integer, got a list",
            ),
            (
                "{\"id\":\"x\",\"prompt\":\"q\",\"chosen\":\"a\",\"rejected\":\"b\"}\n{\"id\":\"x\",\"prompt\":\"q\",\"chosen\":\"a\",\"rejected\":\"b\"}",
                "pairs.jsonl:2: field `id`: duplicate id `x` (first used on line 1)",
            ),
            (
                "{\"prompt\":\"Human: hi\\n\\nAssistant: yes\",\"chosen\":\"a\",\"rejected\":\"b\"}",
                "pairs.jsonl:1: field `prompt`: a `Human:` / `Assistant:` transcript must end",
            ),
            ("[1]", "pairs.jsonl:1: expected a JSON object"),
            ("{\"prompt\":", "pairs.jsonl:1: not JSON"),
        ];
        for (text, want) in cases {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.starts_with(want), "{e:?} does not start with {want:?}");
        }
    }
}

//! The JSON files published with the paper (github.com/anthropics/ConstitutionalHarmlessnessPaper,
//! folder `prompts/`), loaded unchanged:
//!
//! | file | shape | becomes |
//! |---|---|---|
//! | `CritiqueRevisionInstructions.json` | object `{id: {"prompt": [string], "edit_request": string}}` | [`CritiquePrinciple`]s: id = key, `critique` = `prompt[0]`, `revision` = `edit_request` |
//! | `RLMadisonInstructions.json` | list of strings | [`ComparisonPrinciple`]s with ids `madison-000`, `madison-001`, ... |
//! | `CritiqueRevisionFewShotPrompts.json` | list of strings in the `Human:` / `Assistant:` / `CritiqueRequest:` / `Critique:` / `RevisionRequest:` / `Revision:` format | [`CritiqueExemplar`]s `paper-critique-000`, ... |
//! | `RLMadisonFewShotPrompts.json` | list of `{"prompt": string, "corrects": [string], "incorrects": [string]}` | [`ComparisonExemplar`]s `paper-comparison-000`, ... (one per correct × incorrect pair) |
//!
//! The paper's texts carry their format markers (`"\n\nCritiqueRequest: ... \n\nCritique:"`,
//! `"\nPlease choose ... Options:"`); they are stripped, with the surrounding whitespace, so
//! the texts are the bare requests / questions and the prompt builders add the markers back.
//! Weights are 1. The chain-of-thought few-shot file (`RLMadisonPrecogFewShotPrompts.json`)
//! is not read.

use crate::constitution::{
    ComparisonExemplar, ComparisonPrinciple, Constitution, CritiqueExemplar, CritiquePrinciple,
    CritiqueRound, check_turn_order,
};
use crate::error::{ConstitutionError, Problem, Result, invalid, line_col};
use rlaif_core::{Conversation, Message, Role};
use serde::de::{Deserializer, MapAccess, Visitor};
use serde::{Deserialize, de::DeserializeOwned};
use serde_json::value::RawValue;
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// Published name of the critique / revision principles file.
pub const CRITIQUE_REVISION_INSTRUCTIONS: &str = "CritiqueRevisionInstructions.json";
/// Published name of the comparison principles file.
pub const RL_MADISON_INSTRUCTIONS: &str = "RLMadisonInstructions.json";
/// Published name of the critique / revision few-shot file.
pub const CRITIQUE_REVISION_FEW_SHOT: &str = "CritiqueRevisionFewShotPrompts.json";
/// Published name of the comparison few-shot file.
pub const RL_MADISON_FEW_SHOT: &str = "RLMadisonFewShotPrompts.json";

/// Where the paper's files are; each one is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PaperFiles {
    /// `CritiqueRevisionInstructions.json`.
    pub critique_revision: Option<PathBuf>,
    /// `RLMadisonInstructions.json`.
    pub comparison: Option<PathBuf>,
    /// `CritiqueRevisionFewShotPrompts.json`.
    pub critique_few_shot: Option<PathBuf>,
    /// `RLMadisonFewShotPrompts.json`.
    pub comparison_few_shot: Option<PathBuf>,
}

impl PaperFiles {
    /// The files under their published names in `dir`, those that exist.
    pub fn in_dir(dir: &Path) -> Self {
        let pick = |name: &str| {
            let p = dir.join(name);
            p.is_file().then_some(p)
        };
        Self {
            critique_revision: pick(CRITIQUE_REVISION_INSTRUCTIONS),
            comparison: pick(RL_MADISON_INSTRUCTIONS),
            critique_few_shot: pick(CRITIQUE_REVISION_FEW_SHOT),
            comparison_few_shot: pick(RL_MADISON_FEW_SHOT),
        }
    }
}

/// Loads the given files into one constitution.
pub fn from_paper_files(files: &PaperFiles) -> Result<Constitution> {
    let mut c = Constitution::default();
    if let Some(p) = &files.critique_revision {
        c.principles = with_file(p, parse_critique_revision_instructions)?;
    }
    if let Some(p) = &files.comparison {
        c.comparisons = with_file(p, parse_madison_instructions)?;
    }
    if let Some(p) = &files.critique_few_shot {
        c.critique_exemplars = with_file(p, parse_critique_few_shot)?;
    }
    if let Some(p) = &files.comparison_few_shot {
        c.comparison_exemplars = with_file(p, parse_madison_few_shot)?;
    }
    Ok(c)
}

fn with_file<T>(path: &Path, parse: impl Fn(&str, &str) -> Result<T>) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|source| ConstitutionError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text, &path.display().to_string())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInstruction {
    prompt: Vec<String>,
    edit_request: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMadisonFewShot {
    prompt: String,
    corrects: Vec<String>,
    incorrects: Vec<String>,
}

/// Parses `CritiqueRevisionInstructions.json`; `file` names the text in error messages.
pub fn parse_critique_revision_instructions(
    text: &str,
    file: &str,
) -> Result<Vec<CritiquePrinciple>> {
    let cx = Json { file, text };
    let Entries(entries) = cx.top::<Entries<'_>>()?;
    let mut seen: HashMap<&str, usize> = HashMap::new();
    let mut out = Vec::with_capacity(entries.len());
    for (id, raw) in &entries {
        let at = cx.offset(raw);
        if id.trim().is_empty() {
            return Err(cx.invalid(at, Problem::EmptyText { field: "id".into() }));
        }
        if let Some(&first) = seen.get(id.as_str()) {
            return Err(cx.invalid(
                at,
                Problem::DuplicateId {
                    id: id.clone(),
                    first_line: line_col(text, first).0,
                },
            ));
        }
        seen.insert(id, at);
        let entry: RawInstruction = cx.element(raw)?;
        let [prompt] = entry.prompt.as_slice() else {
            return Err(cx.invalid(
                at,
                Problem::Shape(format!(
                    "`{id}`: `prompt` must hold exactly one string, found {}",
                    entry.prompt.len()
                )),
            ));
        };
        let critique = strip_markers(prompt, "CritiqueRequest:", "Critique:");
        let revision = strip_markers(&entry.edit_request, "RevisionRequest:", "Revision:");
        for (field, t) in [("prompt", &critique), ("edit_request", &revision)] {
            if t.is_empty() {
                return Err(cx.invalid(
                    at,
                    Problem::EmptyText {
                        field: format!("{id}.{field}"),
                    },
                ));
            }
        }
        out.push(CritiquePrinciple {
            id: id.clone(),
            critique,
            revision,
            weight: 1.0,
        });
    }
    Ok(out)
}

/// Parses `RLMadisonInstructions.json`; ids are `madison-000`, `madison-001`, ...
pub fn parse_madison_instructions(text: &str, file: &str) -> Result<Vec<ComparisonPrinciple>> {
    let cx = Json { file, text };
    let items = cx.top::<Vec<&RawValue>>()?;
    let mut out = Vec::with_capacity(items.len());
    for (i, raw) in items.iter().enumerate() {
        let s: String = cx.element(raw)?;
        let question = strip_markers(&s, "", "Options:");
        if question.is_empty() {
            return Err(cx.invalid(
                cx.offset(raw),
                Problem::EmptyText {
                    field: format!("element {i}"),
                },
            ));
        }
        out.push(ComparisonPrinciple {
            id: format!("madison-{i:03}"),
            question,
            weight: 1.0,
        });
    }
    Ok(out)
}

/// Parses `CritiqueRevisionFewShotPrompts.json`; ids are `paper-critique-000`, ...
pub fn parse_critique_few_shot(text: &str, file: &str) -> Result<Vec<CritiqueExemplar>> {
    let cx = Json { file, text };
    let items = cx.top::<Vec<&RawValue>>()?;
    let mut out = Vec::with_capacity(items.len());
    for (i, raw) in items.iter().enumerate() {
        let s: String = cx.element(raw)?;
        let at = cx.offset(raw);
        let shape = |m: String| cx.invalid(at, Problem::Shape(format!("exemplar {i}: {m}")));
        let segs =
            segments(&s).map_err(|p| cx.invalid(at, prefixed(p, &format!("exemplar {i}: "))))?;
        let n_turns = segs
            .iter()
            .take_while(|(m, _)| matches!(m, Marker::Human | Marker::Assistant))
            .count();
        let conversation = turns(&segs[..n_turns], Role::Assistant).map_err(shape)?;
        let mut rounds = Vec::new();
        let rest = &segs[n_turns..];
        let mut chunks = rest.chunks_exact(4);
        for c in &mut chunks {
            let want = [
                Marker::CritiqueRequest,
                Marker::Critique,
                Marker::RevisionRequest,
                Marker::Revision,
            ];
            if let Some(k) = (0..4).find(|&k| c[k].0 != want[k]) {
                return Err(shape(format!(
                    "expected `{}:`, found `{}:`",
                    want[k].name(),
                    c[k].0.name()
                )));
            }
            rounds.push(CritiqueRound {
                critique_request: c[0].1.to_string(),
                critique: c[1].1.to_string(),
                revision_request: c[2].1.to_string(),
                revision: c[3].1.to_string(),
            });
        }
        if !chunks.remainder().is_empty() {
            return Err(shape(format!(
                "unfinished critique / revision round (ends with `{}:`)",
                rest[rest.len() - 1].0.name()
            )));
        }
        if rounds.is_empty() {
            return Err(shape("no `CritiqueRequest:` round".into()));
        }
        out.push(CritiqueExemplar {
            id: format!("paper-critique-{i:03}"),
            conversation,
            rounds,
        });
    }
    Ok(out)
}

/// Parses `RLMadisonFewShotPrompts.json`; one exemplar per (correct, incorrect) pair, ids
/// `paper-comparison-000` (or `paper-comparison-000-1`, `-2`, ... when an element has
/// several pairs).
pub fn parse_madison_few_shot(text: &str, file: &str) -> Result<Vec<ComparisonExemplar>> {
    let cx = Json { file, text };
    let items = cx.top::<Vec<&RawValue>>()?;
    let mut out = Vec::with_capacity(items.len());
    for (i, raw) in items.iter().enumerate() {
        let at = cx.offset(raw);
        let e: RawMadisonFewShot = cx.element(raw)?;
        let empty = |field: &str| {
            cx.invalid(
                at,
                Problem::EmptyText {
                    field: format!("exemplar {i}: {field}"),
                },
            )
        };
        let segs = segments(&e.prompt)
            .map_err(|p| cx.invalid(at, prefixed(p, &format!("exemplar {i}: prompt: "))))?;
        let conversation = turns(&segs, Role::User)
            .map_err(|m| cx.invalid(at, Problem::Shape(format!("exemplar {i}: prompt: {m}"))))?;
        if e.corrects.is_empty() {
            return Err(empty("corrects"));
        }
        if e.incorrects.is_empty() {
            return Err(empty("incorrects"));
        }
        let pairs = e.corrects.len() * e.incorrects.len();
        for (j, c) in e.corrects.iter().enumerate() {
            for (k, w) in e.incorrects.iter().enumerate() {
                if c.trim().is_empty() {
                    return Err(empty(&format!("corrects[{j}]")));
                }
                if w.trim().is_empty() {
                    return Err(empty(&format!("incorrects[{k}]")));
                }
                let n = j * e.incorrects.len() + k;
                out.push(ComparisonExemplar {
                    id: if pairs == 1 {
                        format!("paper-comparison-{i:03}")
                    } else {
                        format!("paper-comparison-{i:03}-{}", n + 1)
                    },
                    question: None,
                    conversation: conversation.clone(),
                    chosen: c.trim().to_string(),
                    rejected: w.trim().to_string(),
                });
            }
        }
    }
    Ok(out)
}

/// The text between an optional leading `prefix` marker and an optional trailing `suffix`
/// marker, trimmed.
fn strip_markers(s: &str, prefix: &str, suffix: &str) -> String {
    let mut t = s.trim();
    t = t.strip_prefix(prefix).unwrap_or(t).trim_start();
    t = t.strip_suffix(suffix).unwrap_or(t).trim_end();
    t.to_string()
}

/// `problem` with `prefix` put before its field name or message.
fn prefixed(problem: Problem, prefix: &str) -> Problem {
    match problem {
        Problem::EmptyText { field } => Problem::EmptyText {
            field: format!("{prefix}{field}"),
        },
        Problem::Shape(m) => Problem::Shape(format!("{prefix}{m}")),
        other => other,
    }
}

/// The markers of the paper's raw format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Marker {
    Human,
    Assistant,
    CritiqueRequest,
    Critique,
    RevisionRequest,
    Revision,
}

impl Marker {
    const ALL: [Marker; 6] = [
        Marker::Human,
        Marker::Assistant,
        Marker::CritiqueRequest,
        Marker::Critique,
        Marker::RevisionRequest,
        Marker::Revision,
    ];

    fn name(self) -> &'static str {
        match self {
            Marker::Human => "Human",
            Marker::Assistant => "Assistant",
            Marker::CritiqueRequest => "CritiqueRequest",
            Marker::Critique => "Critique",
            Marker::RevisionRequest => "RevisionRequest",
            Marker::Revision => "Revision",
        }
    }

    /// The marker that `s` starts with (`"Name:"`), and its length.
    fn at_start(s: &str) -> Option<(Marker, usize)> {
        Marker::ALL.into_iter().find_map(|m| {
            let n = m.name();
            (s.starts_with(n) && s[n.len()..].starts_with(':')).then_some((m, n.len() + 1))
        })
    }
}

/// Splits a raw-format text into (marker, trimmed content) segments. A marker starts the
/// text or follows a blank line (`"\n\n"`). A final segment with no content (the trailing
/// `"\n\nHuman:"` or `"\n\nAssistant:"` the paper leaves for the next turn) is dropped; any
/// other empty segment, or text before the first marker, is an error.
fn segments(s: &str) -> std::result::Result<Vec<(Marker, &str)>, Problem> {
    let body = s.trim_start_matches(['\n', '\r', ' ']);
    let mut starts: Vec<(usize, Marker, usize)> = Vec::new();
    if let Some((m, len)) = Marker::at_start(body) {
        starts.push((0, m, len));
    } else {
        return Err(Problem::Shape(
            "the text does not start with a `Human:` marker".into(),
        ));
    }
    let mut from = 0;
    while let Some(i) = body[from..].find("\n\n") {
        let pos = from + i + 2;
        if let Some((m, len)) = Marker::at_start(&body[pos..]) {
            starts.push((pos, m, len));
        }
        from = from + i + 1;
    }
    let mut out = Vec::with_capacity(starts.len());
    for (k, &(pos, m, len)) in starts.iter().enumerate() {
        let end = starts.get(k + 1).map_or(body.len(), |s| s.0);
        let content = body[pos + len..end].trim();
        if content.is_empty() {
            if k + 1 == starts.len() {
                break;
            }
            return Err(Problem::EmptyText {
                field: format!("segment {} (`{}:`)", k + 1, m.name()),
            });
        }
        out.push((m, content));
    }
    Ok(out)
}

/// Turns `Human:` / `Assistant:` segments into a conversation ending with `last`.
fn turns(segs: &[(Marker, &str)], last: Role) -> std::result::Result<Conversation, String> {
    let mut messages = Vec::with_capacity(segs.len());
    for &(m, content) in segs {
        let role = match m {
            Marker::Human => Role::User,
            Marker::Assistant => Role::Assistant,
            other => {
                return Err(format!(
                    "unexpected `{}:` in the conversation",
                    other.name()
                ));
            }
        };
        messages.push(Message::new(role, content));
    }
    let roles: Vec<Role> = messages.iter().map(|m| m.role).collect();
    check_turn_order(&roles, last).map_err(|(_, m)| m)?;
    Ok(Conversation { messages })
}

/// An object's entries in file order, duplicates kept (they are reported by the caller).
struct Entries<'a>(Vec<(String, &'a RawValue)>);

impl<'de: 'a, 'a> Deserialize<'de> for Entries<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Entries<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object of principles")
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, &'de RawValue>()? {
                    out.push((k, v));
                }
                Ok(Entries(out))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

/// Parsing context of one JSON text.
struct Json<'a> {
    file: &'a str,
    text: &'a str,
}

impl<'a> Json<'a> {
    fn syntax(&self, line: usize, column: usize, e: &serde_json::Error) -> ConstitutionError {
        // serde_json appends " at line L column C"; the location is reported separately.
        let msg = e.to_string();
        let msg = msg
            .rfind(" at line ")
            .map_or(msg.as_str(), |i| &msg[..i])
            .to_string();
        ConstitutionError::Syntax {
            file: self.file.to_string(),
            line,
            column,
            message: msg,
        }
    }

    fn top<T: Deserialize<'a>>(&self) -> Result<T> {
        serde_json::from_str(self.text).map_err(|e| self.syntax(e.line(), e.column(), &e))
    }

    /// Byte offset of an element (borrowed from `self.text`).
    fn offset(&self, raw: &RawValue) -> usize {
        (raw.get().as_ptr() as usize).saturating_sub(self.text.as_ptr() as usize)
    }

    /// Parses one element; errors are located in the whole file.
    fn element<T: DeserializeOwned>(&self, raw: &RawValue) -> Result<T> {
        serde_json::from_str(raw.get()).map_err(|e| {
            let (bl, bc) = line_col(self.text, self.offset(raw));
            if e.line() <= 1 {
                self.syntax(bl, bc + e.column().saturating_sub(1), &e)
            } else {
                self.syntax(bl + e.line() - 1, e.column(), &e)
            }
        })
    }

    fn invalid(&self, offset: usize, problem: Problem) -> ConstitutionError {
        invalid(self.file, self.text, offset, problem)
    }
}

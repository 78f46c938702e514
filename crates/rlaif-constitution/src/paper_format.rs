//! The JSON files published with the paper (github.com/anthropics/ConstitutionalHarmlessnessPaper,
//! folder `prompts/`), loaded unchanged: one parser per [`PaperFile`], each filling one
//! section of a [`Constitution`] (the shapes are tabled in [`PaperFiles`]).

use crate::constitution::{
    ComparisonExemplar, ComparisonPrinciple, Constitution, CritiqueExemplar, CritiquePrinciple,
    CritiqueRound, check_turn_order,
};
use crate::error::{ConstitutionError, Problem, Result};
use crate::loader::{Ids, Parser, Source};
use rlaif_core::{Conversation, Message, Role};
use serde::de::{Deserializer, MapAccess, Visitor};
use serde::{Deserialize, de::DeserializeOwned};
use serde_json::value::RawValue;
use std::fmt;
use std::path::{Path, PathBuf};

/// One of the paper's JSON files (see the table in [`PaperFiles`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PaperFile {
    /// `CritiqueRevisionInstructions.json`: the critique / revision principles.
    CritiqueRevisionInstructions,
    /// `RLMadisonInstructions.json`: the comparison principles.
    RlMadisonInstructions,
    /// `CritiqueRevisionFewShotPrompts.json`: the critique / revision few-shot exemplars.
    CritiqueRevisionFewShotPrompts,
    /// `RLMadisonFewShotPrompts.json`: the comparison few-shot exemplars.
    RlMadisonFewShotPrompts,
}

impl PaperFile {
    /// All four, in the order they are loaded.
    pub const ALL: [PaperFile; 4] = [
        PaperFile::CritiqueRevisionInstructions,
        PaperFile::RlMadisonInstructions,
        PaperFile::CritiqueRevisionFewShotPrompts,
        PaperFile::RlMadisonFewShotPrompts,
    ];

    /// The published file name, e.g. `"CritiqueRevisionInstructions.json"`.
    pub fn file_name(self) -> &'static str {
        match self {
            PaperFile::CritiqueRevisionInstructions => "CritiqueRevisionInstructions.json",
            PaperFile::RlMadisonInstructions => "RLMadisonInstructions.json",
            PaperFile::CritiqueRevisionFewShotPrompts => "CritiqueRevisionFewShotPrompts.json",
            PaperFile::RlMadisonFewShotPrompts => "RLMadisonFewShotPrompts.json",
        }
    }

    /// The parser of this file: it fills one section of a constitution.
    pub(crate) fn parser(self) -> Parser {
        match self {
            PaperFile::CritiqueRevisionInstructions => |src| {
                Ok(Constitution {
                    principles: parse_critique_revision_instructions(src)?,
                    ..Constitution::default()
                })
            },
            PaperFile::RlMadisonInstructions => |src| {
                Ok(Constitution {
                    comparisons: parse_madison_instructions(src)?,
                    ..Constitution::default()
                })
            },
            PaperFile::CritiqueRevisionFewShotPrompts => |src| {
                Ok(Constitution {
                    critique_exemplars: parse_critique_few_shot(src)?,
                    ..Constitution::default()
                })
            },
            PaperFile::RlMadisonFewShotPrompts => |src| {
                Ok(Constitution {
                    comparison_exemplars: parse_madison_few_shot(src)?,
                    ..Constitution::default()
                })
            },
        }
    }
}

/// Where the paper's files are; each one is optional.
///
/// | file | shape | becomes |
/// |---|---|---|
/// | `CritiqueRevisionInstructions.json` | object `{id: {"prompt": [string], "edit_request": string}}` | [`CritiquePrinciple`]s: id = key, `critique` = `prompt[0]`, `revision` = `edit_request` |
/// | `RLMadisonInstructions.json` | list of strings | [`ComparisonPrinciple`]s with ids `madison-000`, `madison-001`, ... |
/// | `CritiqueRevisionFewShotPrompts.json` | list of strings in the `Human:` / `Assistant:` / `CritiqueRequest:` / `Critique:` / `RevisionRequest:` / `Revision:` format | [`CritiqueExemplar`]s `paper-critique-000`, ... |
/// | `RLMadisonFewShotPrompts.json` | list of `{"prompt": string, "corrects": [string], "incorrects": [string]}` | [`ComparisonExemplar`]s `paper-comparison-000`, ... (one per correct × incorrect pair, at most 64 per element) |
///
/// The paper's texts carry their format markers (`"\n\nCritiqueRequest: ... \n\nCritique:"`,
/// `"\nPlease choose ... Options:"`); they are stripped, with the surrounding whitespace, so
/// the texts are the bare requests / questions and the prompt builders add the markers back.
/// Weights are 1. The chain-of-thought few-shot file (`RLMadisonPrecogFewShotPrompts.json`)
/// is not read.
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
        let pick = |file: PaperFile| {
            let p = dir.join(file.file_name());
            p.is_file().then_some(p)
        };
        Self {
            critique_revision: pick(PaperFile::CritiqueRevisionInstructions),
            comparison: pick(PaperFile::RlMadisonInstructions),
            critique_few_shot: pick(PaperFile::CritiqueRevisionFewShotPrompts),
            comparison_few_shot: pick(PaperFile::RlMadisonFewShotPrompts),
        }
    }

    /// The path given for `file`, if any.
    pub fn path(&self, file: PaperFile) -> Option<&Path> {
        match file {
            PaperFile::CritiqueRevisionInstructions => self.critique_revision.as_deref(),
            PaperFile::RlMadisonInstructions => self.comparison.as_deref(),
            PaperFile::CritiqueRevisionFewShotPrompts => self.critique_few_shot.as_deref(),
            PaperFile::RlMadisonFewShotPrompts => self.comparison_few_shot.as_deref(),
        }
    }
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

/// Parses `CritiqueRevisionInstructions.json`.
fn parse_critique_revision_instructions(src: &Source<'_>) -> Result<Vec<CritiquePrinciple>> {
    let cx = Json { src };
    let Entries(entries) = cx.top::<Entries<'_>>()?;
    let mut seen = Ids::default();
    let mut out = Vec::with_capacity(entries.len());
    for (id, raw) in &entries {
        let at = src.offset_of(raw.get());
        src.non_empty("id", id, at)?;
        seen.insert(src, id, at)?;
        let entry: RawInstruction = cx.element(raw)?;
        let [prompt] = entry.prompt.as_slice() else {
            return Err(src.invalid(
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
            src.non_empty(&format!("{id}.{field}"), t, at)?;
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
fn parse_madison_instructions(src: &Source<'_>) -> Result<Vec<ComparisonPrinciple>> {
    let cx = Json { src };
    let items = cx.top::<Vec<&RawValue>>()?;
    let mut out = Vec::with_capacity(items.len());
    for (i, raw) in items.iter().enumerate() {
        let s: String = cx.element(raw)?;
        let question = strip_markers(&s, "", "Options:");
        src.non_empty(&format!("element {i}"), &question, src.offset_of(raw.get()))?;
        out.push(ComparisonPrinciple {
            id: format!("madison-{i:03}"),
            question,
            weight: 1.0,
        });
    }
    Ok(out)
}

/// Parses `CritiqueRevisionFewShotPrompts.json`; ids are `paper-critique-000`, ...
fn parse_critique_few_shot(src: &Source<'_>) -> Result<Vec<CritiqueExemplar>> {
    let cx = Json { src };
    let items = cx.top::<Vec<&RawValue>>()?;
    let mut out = Vec::with_capacity(items.len());
    for (i, raw) in items.iter().enumerate() {
        let s: String = cx.element(raw)?;
        let at = src.offset_of(raw.get());
        let shape = |m: String| src.invalid(at, Problem::Shape(format!("exemplar {i}: {m}")));
        let segs =
            segments(&s).map_err(|p| src.invalid(at, prefixed(p, &format!("exemplar {i}: "))))?;
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

/// The most (correct, incorrect) pairs, i.e. exemplars, one element of
/// `RLMadisonFewShotPrompts.json` may make (the paper's elements make one each): each pair
/// copies the element's conversation, so without a bound a small file with long lists could
/// exhaust memory.
const MAX_PAIRS_PER_ELEMENT: usize = 64;

/// Parses `RLMadisonFewShotPrompts.json`; one exemplar per (correct, incorrect) pair, ids
/// `paper-comparison-000` (or `paper-comparison-000-1`, `-2`, ... when an element has
/// several pairs).
fn parse_madison_few_shot(src: &Source<'_>) -> Result<Vec<ComparisonExemplar>> {
    let cx = Json { src };
    let items = cx.top::<Vec<&RawValue>>()?;
    let mut out = Vec::with_capacity(items.len());
    for (i, raw) in items.iter().enumerate() {
        let at = src.offset_of(raw.get());
        let e: RawMadisonFewShot = cx.element(raw)?;
        let empty = |field: &str| {
            src.invalid(
                at,
                Problem::EmptyText {
                    field: format!("exemplar {i}: {field}"),
                },
            )
        };
        let segs = segments(&e.prompt)
            .map_err(|p| src.invalid(at, prefixed(p, &format!("exemplar {i}: prompt: "))))?;
        let conversation = turns(&segs, Role::User)
            .map_err(|m| src.invalid(at, Problem::Shape(format!("exemplar {i}: prompt: {m}"))))?;
        if e.corrects.is_empty() {
            return Err(empty("corrects"));
        }
        if e.incorrects.is_empty() {
            return Err(empty("incorrects"));
        }
        let pairs = e.corrects.len().saturating_mul(e.incorrects.len());
        if pairs > MAX_PAIRS_PER_ELEMENT {
            return Err(src.invalid(
                at,
                Problem::Shape(format!(
                    "exemplar {i}: {} corrects × {} incorrects make {pairs} exemplars; at most \
                     {MAX_PAIRS_PER_ELEMENT} per element",
                    e.corrects.len(),
                    e.incorrects.len()
                )),
            ));
        }
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

/// The JSON side of one [`Source`]: serde_json's errors, located in the whole file.
struct Json<'s, 'a> {
    src: &'s Source<'a>,
}

impl<'a> Json<'_, 'a> {
    /// The located error for `e`, raised while parsing `part` (the whole text, or an element
    /// borrowed from it).
    fn error(&self, part: &str, e: &serde_json::Error) -> ConstitutionError {
        // serde_json appends " at line L column C" to its message; the location is reported
        // separately, in characters (serde_json counts bytes, and says column 0 when it
        // stopped at a line's start)
        let msg = e.to_string();
        let msg = msg.rfind(" at line ").map_or(msg.as_str(), |i| &msg[..i]);
        let at = self.src.offset_of(part) + byte_offset(part, e.line(), e.column());
        self.src.syntax(at, msg)
    }

    /// The whole text as a `T`.
    fn top<T: Deserialize<'a>>(&self) -> Result<T> {
        serde_json::from_str(self.src.text).map_err(|e| self.error(self.src.text, &e))
    }

    /// Parses one element; errors are located in the whole file.
    fn element<T: DeserializeOwned>(&self, raw: &RawValue) -> Result<T> {
        serde_json::from_str(raw.get()).map_err(|e| self.error(raw.get(), &e))
    }
}

/// Byte offset in `text` of serde_json's 1-based `line` and byte `column` (0: the line's
/// start), kept inside the text.
fn byte_offset(text: &str, line: usize, column: usize) -> usize {
    let line_start = if line <= 1 {
        0
    } else {
        text.match_indices('\n')
            .nth(line - 2)
            .map_or(text.len(), |(i, _)| i + 1)
    };
    (line_start + column.saturating_sub(1)).min(text.len())
}

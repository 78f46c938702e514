//! Prompt sets: JSON Lines files of `{"id": "...", "prompt": "...", "category": "..."}`.
//!
//! One JSON object per line with exactly these fields: `id` (non-empty string, unique in
//! the file), `prompt` (non-empty string), `category` (string, optional). Unknown fields
//! are errors (to catch typos); blank lines are skipped. Every error names the file, the
//! 1-based line and the field.

use crate::error::{Result, RevisionError, io};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// One prompt of a prompt set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromptRecord {
    /// Unique id, e.g. `rt-0001`.
    pub id: String,
    /// The user's message.
    pub prompt: String,
    /// A category for analysis (e.g. `weapons`, `cooking`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
}

impl PromptRecord {
    /// A prompt with no category.
    pub fn new(id: impl Into<String>, prompt: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            prompt: prompt.into(),
            category: None,
        }
    }
}

/// Reads a prompt file (see the module docs for the format).
pub fn read_prompts(path: impl AsRef<Path>) -> Result<Vec<PromptRecord>> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    parse_prompts(&text, path)
}

/// Parses the text of a prompt file; `file` names it in errors.
pub fn parse_prompts(text: &str, file: &Path) -> Result<Vec<PromptRecord>> {
    let mut out = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        if raw.trim().is_empty() {
            continue;
        }
        let rec = parse_line(raw, file, line)?;
        if let Some(&first_line) = seen.get(&rec.id) {
            return Err(RevisionError::DuplicateId {
                file: file.to_path_buf(),
                line,
                id: rec.id,
                first_line,
            });
        }
        seen.insert(rec.id.clone(), line);
        out.push(rec);
    }
    Ok(out)
}

fn parse_line(raw: &str, file: &Path, line: usize) -> Result<PromptRecord> {
    let file_buf = || PathBuf::from(file);
    let value: serde_json::Value =
        serde_json::from_str(raw).map_err(|e| RevisionError::PromptSyntax {
            file: file_buf(),
            line,
            message: format!("invalid JSON: {e}"),
        })?;
    let serde_json::Value::Object(map) = value else {
        return Err(RevisionError::PromptSyntax {
            file: file_buf(),
            line,
            message: "expected a JSON object".into(),
        });
    };
    let field_err = |field: &str, message: &str| RevisionError::PromptField {
        file: file_buf(),
        line,
        field: field.to_string(),
        message: message.to_string(),
    };
    if let Some(k) = map
        .keys()
        .find(|k| !matches!(k.as_str(), "id" | "prompt" | "category"))
    {
        return Err(field_err(
            k,
            "unknown field (expected `id`, `prompt`, `category`)",
        ));
    }
    let required = |field: &str| -> Result<String> {
        match map.get(field) {
            None => Err(field_err(field, "missing")),
            Some(serde_json::Value::String(s)) if s.trim().is_empty() => {
                Err(field_err(field, "is empty"))
            }
            Some(serde_json::Value::String(s)) => Ok(s.clone()),
            Some(other) => Err(field_err(
                field,
                &format!("expected a string, got {}", kind(other)),
            )),
        }
    };
    let id = required("id")?;
    let prompt = required("prompt")?;
    let category = match map.get("category") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        Some(other) => {
            return Err(field_err(
                "category",
                &format!("expected a string, got {}", kind(other)),
            ));
        }
    };
    Ok(PromptRecord {
        id,
        prompt,
        category,
    })
}

fn kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<PromptRecord>> {
        parse_prompts(text, Path::new("p.jsonl"))
    }

    #[test]
    fn parses_and_skips_blank_lines() {
        let v = parse(
            "{\"id\":\"a\",\"prompt\":\"hi\",\"category\":\"x\"}\n\n{\"id\":\"b\",\"prompt\":\"yo\"}\n",
        )
        .unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].category.as_deref(), Some("x"));
        assert_eq!(v[1].category, None);
    }

    #[test]
    fn errors_name_file_line_and_field() {
        let cases = [
            (
                "{\"id\":\"a\",\"prompt\":\"hi\"}\n{\"id\":\"b\"}",
                "p.jsonl:2: field `prompt`: missing",
            ),
            (
                "{\"id\":3,\"prompt\":\"hi\"}",
                "p.jsonl:1: field `id`: expected a string, got a number",
            ),
            (
                "{\"id\":\"a\",\"promt\":\"hi\"}",
                "p.jsonl:1: field `promt`: unknown field",
            ),
            (
                "{\"id\":\" \",\"prompt\":\"hi\"}",
                "p.jsonl:1: field `id`: is empty",
            ),
            (
                "{\"id\":\"a\",\"prompt\":\"hi\",\"category\":[]}",
                "p.jsonl:1: field `category`: expected a string",
            ),
            (
                "\n{\"id\":\"a\",\"prompt\":\"hi\"",
                "p.jsonl:2: invalid JSON",
            ),
            ("[1]", "p.jsonl:1: expected a JSON object"),
            (
                "{\"id\":\"a\",\"prompt\":\"x\"}\n{\"id\":\"a\",\"prompt\":\"y\"}",
                "p.jsonl:2: field `id`: duplicate id `a` (first used on line 1)",
            ),
        ];
        for (text, want) in cases {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.starts_with(want), "{e:?} does not start with {want:?}");
        }
    }
}

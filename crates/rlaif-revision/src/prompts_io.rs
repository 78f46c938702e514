//! Prompt sets: JSON Lines files of `{"id": "...", "prompt": "...", "category": "..."}`.
//!
//! One JSON object per line with exactly these fields: `id` (non-empty string, unique in
//! the file), `prompt` (non-empty string), `category` (string, optional). Unknown fields
//! are errors (to catch typos); blank lines are skipped. Every error names the file, the
//! 1-based line and the field.

use crate::error::Result;
use rlaif_core::jsonl::{self, Fields};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;

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
    let text = jsonl::read_text(path)?;
    parse_prompts(&text, path)
}

/// Parses the text of a prompt file; `file` names it in errors.
pub fn parse_prompts(text: &str, file: &Path) -> Result<Vec<PromptRecord>> {
    let mut out = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for line in jsonl::lines(file, text) {
        let obj = line.object()?;
        let fields = Fields::new(&line, &obj);
        fields.deny_unknown(&["id", "prompt", "category"])?;
        let rec = PromptRecord {
            id: fields.required_str("id")?.to_string(),
            prompt: fields.required_str("prompt")?.to_string(),
            category: fields.optional_str("category")?.map(str::to_string),
        };
        if let Some(&first) = seen.get(&rec.id) {
            return Err(line
                .field_error(
                    "id",
                    format!("duplicate id `{}` (first used on line {first})", rec.id),
                )
                .into());
        }
        seen.insert(rec.id.clone(), line.number);
        out.push(rec);
    }
    Ok(out)
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
            ("\n{\"id\":\"a\",\"prompt\":\"hi\"", "p.jsonl:2: not JSON"),
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

//! JSON Lines, read and written the same way by every crate: one JSON object per line,
//! every error located at `file:line` (and the field, where one is at fault).
//!
//! Reading ([`read_text`], [`lines`], [`Line`], [`Fields`]):
//!
//! ```
//! use rlaif_core::jsonl::{self, Fields};
//! use std::path::Path;
//!
//! let text = "{\"id\": \"a\", \"prompt\": \"hi\"}\n\n{\"id\": 3}\n";
//! let mut ids = vec![];
//! let mut errors = vec![];
//! for line in jsonl::lines(Path::new("p.jsonl"), text) {
//!     let obj = line.object()?;
//!     match Fields::new(&line, &obj).required_str("id") {
//!         Ok(id) => ids.push(id.to_string()),
//!         Err(e) => errors.push(e.to_string()),
//!     }
//! }
//! assert_eq!(ids, ["a"]);
//! assert_eq!(errors, ["p.jsonl:3: field `id`: expected a string, got a number"]);
//! # Ok::<(), rlaif_core::jsonl::JsonlError>(())
//! ```
//!
//! Writing ([`JsonlAppender`]): outputs that a stage resumes. Each record is one line
//! written with a single `write` and flushed, so a crash loses at most the record being
//! written; on reopening, an unterminated last line (a write cut short) is kept when it is
//! a whole record and cut away otherwise, so the file is again a sequence of whole lines.

use crate::fs::FileError;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// An error of a JSON Lines file, located.
#[derive(Debug, thiserror::Error)]
pub enum JsonlError {
    /// The file could not be read or written.
    #[error(transparent)]
    File(#[from] FileError),
    /// A line is malformed: `file:line: message`, or `file:line: field `f`: message`.
    #[error("{}:{line}: {}{message}", file.display(), field.as_ref().map(|f| format!("field `{f}`: ")).unwrap_or_default())]
    Line {
        /// The file.
        file: PathBuf,
        /// 1-based line.
        line: usize,
        /// The field at fault (a JSON path such as `messages[2].role`), if one is.
        field: Option<String>,
        /// What is wrong.
        message: String,
    },
}

impl JsonlError {
    /// The line number, when the error is about a line.
    pub fn line(&self) -> Option<usize> {
        match self {
            JsonlError::Line { line, .. } => Some(*line),
            JsonlError::File(_) => None,
        }
    }

    /// The field at fault, if any.
    pub fn field(&self) -> Option<&str> {
        match self {
            JsonlError::Line { field, .. } => field.as_deref(),
            JsonlError::File(_) => None,
        }
    }
}

/// Reads a JSON Lines file as text; a line that is not UTF-8 is an error naming it.
pub fn read_text(path: &Path) -> Result<String, JsonlError> {
    let bytes = std::fs::read(path).map_err(FileError::at(path))?;
    String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let line = 1 + e.as_bytes()[..at].iter().filter(|&&b| b == b'\n').count();
        JsonlError::Line {
            file: path.to_path_buf(),
            line,
            field: None,
            message: "not UTF-8 text".into(),
        }
    })
}

/// The non-blank lines of `text` (the contents of `file`), with their 1-based numbers.
pub fn lines<'a>(file: &'a Path, text: &'a str) -> impl Iterator<Item = Line<'a>> + 'a {
    text.split('\n')
        .enumerate()
        .filter(|(_, t)| !t.trim().is_empty())
        .map(move |(i, t)| Line {
            file,
            number: i + 1,
            text: t.strip_suffix('\r').unwrap_or(t),
        })
}

/// One line of a JSON Lines file.
#[derive(Debug, Clone, Copy)]
pub struct Line<'a> {
    /// The file it is from.
    pub file: &'a Path,
    /// 1-based.
    pub number: usize,
    /// Its text, without the line break.
    pub text: &'a str,
}

impl Line<'_> {
    /// An error about this line.
    pub fn error(&self, message: impl Into<String>) -> JsonlError {
        JsonlError::Line {
            file: self.file.to_path_buf(),
            line: self.number,
            field: None,
            message: message.into(),
        }
    }

    /// An error about `field` of this line's record.
    pub fn field_error(&self, field: impl Into<String>, message: impl Into<String>) -> JsonlError {
        JsonlError::Line {
            file: self.file.to_path_buf(),
            line: self.number,
            field: Some(field.into()),
            message: message.into(),
        }
    }

    /// The line as a JSON value (`not JSON: …` otherwise).
    pub fn value(&self) -> Result<Value, JsonlError> {
        serde_json::from_str(self.text).map_err(|e| self.error(format!("not JSON: {e}")))
    }

    /// The line as a JSON object (`expected a JSON object` for other values).
    pub fn object(&self) -> Result<Map<String, Value>, JsonlError> {
        match self.value()? {
            Value::Object(m) => Ok(m),
            _ => Err(self.error("expected a JSON object")),
        }
    }

    /// The value `v` of field `key` as a list of `{"role", "content"}` messages; errors
    /// name the element (`prompt[1].role`).
    pub fn messages(&self, v: &Value, key: &str) -> Result<Vec<crate::Message>, JsonlError> {
        use crate::{Message, Role};
        let Value::Array(items) = v else {
            return Err(self.field_error(key, "expected a list of messages"));
        };
        items
            .iter()
            .enumerate()
            .map(|(k, m)| {
                let at = format!("{key}[{k}]");
                let Value::Object(m) = m else {
                    return Err(self.field_error(at, "expected a {\"role\", \"content\"} object"));
                };
                let role = match m.get("role").and_then(Value::as_str) {
                    Some("system") => Role::System,
                    Some("user") => Role::User,
                    Some("assistant") => Role::Assistant,
                    Some(other) => {
                        return Err(self.field_error(
                            format!("{at}.role"),
                            format!("unknown role `{other}` (system, user, assistant)"),
                        ));
                    }
                    None => {
                        return Err(
                            self.field_error(format!("{at}.role"), "missing or not a string")
                        );
                    }
                };
                let content = m.get("content").and_then(Value::as_str).ok_or_else(|| {
                    self.field_error(format!("{at}.content"), "missing or not a string")
                })?;
                Ok(Message {
                    role,
                    content: content.to_string(),
                })
            })
            .collect()
    }

    /// The line deserialised as `T`; a field that does not fit is named by its path.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, JsonlError> {
        let mut de = serde_json::Deserializer::from_str(self.text);
        let parsed: Result<T, _> = serde_path_to_error::deserialize(&mut de);
        match parsed {
            Ok(v) => de
                .end()
                .map(|()| v)
                .map_err(|e| self.error(format!("not JSON: {e}"))),
            Err(e) => {
                let path = e.path().to_string();
                let inner = e.into_inner();
                if inner.is_syntax() || inner.is_eof() || path == "." {
                    let what = if inner.is_data() { "" } else { "not JSON: " };
                    Err(self.error(format!("{what}{inner}")))
                } else {
                    Err(self.field_error(path, inner.to_string()))
                }
            }
        }
    }
}

/// The kind of a JSON value, for messages (`a number`, `a list`, ...).
pub fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// Typed access to the fields of one line's object, with located errors.
#[derive(Debug, Clone, Copy)]
pub struct Fields<'l, 'a> {
    line: &'l Line<'a>,
    obj: &'l Map<String, Value>,
}

impl<'l, 'a> Fields<'l, 'a> {
    /// The fields of `obj`, read from `line`.
    pub fn new(line: &'l Line<'a>, obj: &'l Map<String, Value>) -> Self {
        Self { line, obj }
    }

    /// The line they are from.
    pub fn line(&self) -> &'l Line<'a> {
        self.line
    }

    /// An error about `field`.
    pub fn error(&self, field: impl Into<String>, message: impl Into<String>) -> JsonlError {
        self.line.field_error(field, message)
    }

    /// The raw value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&'l Value> {
        self.obj.get(key)
    }

    /// A string that must be present and not blank: `missing`, `is empty`, or
    /// `expected a string, got …`.
    pub fn required_str(&self, key: &str) -> Result<&'l str, JsonlError> {
        match self.obj.get(key) {
            None => Err(self.error(key, "missing")),
            Some(v) => self.non_empty_str(key, v),
        }
    }

    /// A string that may be absent or null; when present it may be empty.
    pub fn optional_str(&self, key: &str) -> Result<Option<&'l str>, JsonlError> {
        match self.obj.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(self.error(key, format!("expected a string, got {}", kind(other)))),
        }
    }

    /// `v` (the value of `field`) as a string that is not blank.
    pub fn non_empty_str(&self, field: &str, v: &'l Value) -> Result<&'l str, JsonlError> {
        match v {
            Value::String(s) if s.trim().is_empty() => Err(self.error(field, "is empty")),
            Value::String(s) => Ok(s),
            other => Err(self.error(field, format!("expected a string, got {}", kind(other)))),
        }
    }

    /// Refuses a field not in `allowed` (to catch typos): `unknown field (expected …)`.
    pub fn deny_unknown(&self, allowed: &[&str]) -> Result<(), JsonlError> {
        match self.obj.keys().find(|k| !allowed.contains(&k.as_str())) {
            None => Ok(()),
            Some(k) => {
                let list: Vec<String> = allowed.iter().map(|a| format!("`{a}`")).collect();
                Err(self.error(
                    k.as_str(),
                    format!("unknown field (expected {})", list.join(", ")),
                ))
            }
        }
    }
}

/// What [`JsonlAppender::open`]'s check decides about an existing line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The line stays.
    Keep,
    /// This line and every line after it are removed (e.g. run-log entries past the
    /// checkpoint a run resumes from).
    CutHere,
}

fn is_json(text: &str) -> bool {
    serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok()
}

/// An append-only JSON Lines output (see the module docs).
#[derive(Debug)]
pub struct JsonlAppender {
    path: PathBuf,
    file: File,
}

impl JsonlAppender {
    /// Opens `path` for appending, creating it and its parent directories if needed.
    ///
    /// Every complete line already in the file is shown to `check` in order; an error of
    /// `check` is returned as is and leaves the file untouched. An unterminated last line
    /// is shown too: when `check` accepts it, it is completed with a line break; when
    /// `check` fails on it and it is not even JSON (a write cut short), it is cut away;
    /// a whole JSON value that `check` refuses is an error like any other line. A
    /// [`Verdict::CutHere`] truncates the file before that line.
    pub fn open<E: From<JsonlError>>(
        path: impl AsRef<Path>,
        mut check: impl FnMut(&Line<'_>) -> Result<Verdict, E>,
    ) -> Result<Self, E> {
        let path = path.as_ref();
        let dir = crate::fs::parent_of(path);
        std::fs::create_dir_all(dir)
            .map_err(FileError::at(dir))
            .map_err(JsonlError::from)?;
        let text = if path.exists() {
            read_text(path)?
        } else {
            String::new()
        };
        let mut cut_at: Option<u64> = None;
        let mut complete_last = false;
        let mut start = 0usize;
        for (i, raw) in text.split_inclusive('\n').enumerate() {
            let terminated = raw.ends_with('\n');
            let body = raw.trim_end_matches('\n');
            let body = body.strip_suffix('\r').unwrap_or(body);
            if !body.trim().is_empty() {
                let line = Line {
                    file: path,
                    number: i + 1,
                    text: body,
                };
                match check(&line) {
                    Ok(Verdict::Keep) => complete_last = !terminated,
                    Ok(Verdict::CutHere) => {
                        cut_at = Some(start as u64);
                        break;
                    }
                    // A write cut short: the last line is not even JSON.
                    Err(_) if !terminated && !is_json(body) => {
                        cut_at = Some(start as u64);
                        break;
                    }
                    Err(e) => return Err(e),
                }
            } else if !terminated {
                // Unterminated blank bytes at the end: the next record would be glued to
                // them, so they go.
                cut_at = Some(start as u64);
                break;
            }
            start += raw.len();
        }
        let mut file = OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)
            .map_err(FileError::at(path))
            .map_err(JsonlError::from)?;
        if let Some(len) = cut_at {
            file.set_len(len)
                .map_err(FileError::at(path))
                .map_err(JsonlError::from)?;
        } else if complete_last {
            file.write_all(b"\n")
                .map_err(FileError::at(path))
                .map_err(JsonlError::from)?;
        }
        Ok(Self {
            path: path.to_path_buf(),
            file,
        })
    }

    /// Appends `record` as one line and flushes it to the operating system.
    pub fn append<T: Serialize + ?Sized>(&mut self, record: &T) -> Result<(), JsonlError> {
        let mut line = serde_json::to_vec(record).map_err(|e| JsonlError::Line {
            file: self.path.clone(),
            line: 0,
            field: None,
            message: format!("cannot serialise the record: {e}"),
        })?;
        line.push(b'\n');
        self.file
            .write_all(&line)
            .and_then(|()| self.file.flush())
            .map_err(FileError::at(&self.path))?;
        Ok(())
    }

    /// Asks the operating system to put what was written on disk (records survive a
    /// process crash without it; this is for power loss).
    pub fn sync(&self) -> Result<(), JsonlError> {
        self.file
            .sync_data()
            .map_err(FileError::at(&self.path))
            .map_err(JsonlError::from)
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open_keep(p: &Path) -> (JsonlAppender, Vec<usize>) {
        let mut seen = vec![];
        let w = JsonlAppender::open(p, |l| {
            l.object()?;
            seen.push(l.number);
            Ok::<_, JsonlError>(Verdict::Keep)
        })
        .unwrap();
        (w, seen)
    }

    #[test]
    fn torn_last_line_is_cut_and_whole_unterminated_one_kept() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/out.jsonl");
        {
            let (mut w, seen) = open_keep(&p);
            assert!(seen.is_empty());
            w.append(&serde_json::json!({"id": "a"})).unwrap();
            w.append(&serde_json::json!({"id": "b"})).unwrap();
        }
        let mut text = std::fs::read_to_string(&p).unwrap();
        text.push_str("{\"id\": \"c\", \"pro");
        std::fs::write(&p, &text).unwrap();
        let (mut w, seen) = open_keep(&p);
        assert_eq!(seen, [1, 2]);
        w.append(&serde_json::json!({"id": "c"})).unwrap();
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            "{\"id\":\"a\"}\n{\"id\":\"b\"}\n{\"id\":\"c\"}\n"
        );
        std::fs::write(&p, "{\"id\":\"a\"}\n{\"id\":\"b\"}").unwrap();
        let (_, seen) = open_keep(&p);
        assert_eq!(seen, [1, 2]);
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            "{\"id\":\"a\"}\n{\"id\":\"b\"}\n"
        );
    }

    #[test]
    fn a_bad_complete_line_is_a_located_error_and_the_file_is_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out.jsonl");
        let text = "{\"a\":1}\nnot json\n{\"a\":2}\n";
        std::fs::write(&p, text).unwrap();
        let e = JsonlAppender::open(&p, |l| l.object().map(|_| Verdict::Keep)).unwrap_err();
        assert_eq!(e.line(), Some(2));
        assert!(e.to_string().contains("out.jsonl:2: not JSON: "), "{e}");
        assert_eq!(std::fs::read_to_string(&p).unwrap(), text);
    }

    #[test]
    fn unterminated_blank_bytes_at_the_end_are_cut() {
        // Found by the fuzz test: a vertical tab after the last line was taken as a blank
        // line, and the next record was appended to it.
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out.jsonl");
        std::fs::write(&p, "{\"a\":1}\n\u{b}").unwrap();
        let (mut w, seen) = open_keep(&p);
        assert_eq!(seen, [1]);
        w.append(&serde_json::json!({"a": 2})).unwrap();
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            "{\"a\":1}\n{\"a\":2}\n"
        );
    }

    #[test]
    fn cut_here_truncates_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log.jsonl");
        std::fs::write(&p, "{\"step\":1}\n{\"step\":2}\n{\"step\":3}\n").unwrap();
        let mut w = JsonlAppender::open(&p, |l| {
            let step = l.object()?["step"].as_u64().unwrap_or(0);
            Ok::<_, JsonlError>(if step <= 1 {
                Verdict::Keep
            } else {
                Verdict::CutHere
            })
        })
        .unwrap();
        w.append(&serde_json::json!({"step": 2})).unwrap();
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            "{\"step\":1}\n{\"step\":2}\n"
        );
    }

    #[test]
    fn fields_and_parse_name_the_field() {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct R {
            id: String,
            inner: Inner,
        }
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct Inner {
            n: u32,
        }
        let file = Path::new("r.jsonl");
        let text = "{\"id\":\"x\",\"inner\":{\"n\":\"seven\"}}\n[1]\n{\"id\": \"x\"} trailing\n";
        let all: Vec<Line> = lines(file, text).collect();
        let e = all[0].parse::<R>().unwrap_err();
        assert_eq!(e.field(), Some("inner.n"));
        assert!(
            e.to_string()
                .starts_with("r.jsonl:1: field `inner.n`: invalid type: string \"seven\""),
            "{e}"
        );
        assert_eq!(
            all[1].object().unwrap_err().to_string(),
            "r.jsonl:2: expected a JSON object"
        );
        assert!(
            all[2]
                .parse::<serde_json::Value>()
                .unwrap_err()
                .to_string()
                .starts_with("r.jsonl:3: not JSON: trailing characters")
        );
        let obj = lines(file, "{\"id\":\" \",\"x\":1}").next().unwrap();
        let m = obj.object().unwrap();
        let f = Fields::new(&obj, &m);
        assert_eq!(
            f.required_str("id").unwrap_err().to_string(),
            "r.jsonl:1: field `id`: is empty"
        );
        assert_eq!(
            f.required_str("y").unwrap_err().to_string(),
            "r.jsonl:1: field `y`: missing"
        );
        assert_eq!(
            f.deny_unknown(&["id"]).unwrap_err().to_string(),
            "r.jsonl:1: field `x`: unknown field (expected `id`)"
        );
    }

    #[test]
    fn invalid_utf8_is_located() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bin.jsonl");
        std::fs::write(&p, b"{}\n{}\n{\"a\":\"\xff\"}\n").unwrap();
        let e = read_text(&p).unwrap_err();
        assert_eq!(e.line(), Some(3), "{e}");
    }
}

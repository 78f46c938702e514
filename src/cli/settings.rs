//! A subcommand's settings: a TOML file (`--config FILE`) with the flags on top.
//!
//! The file holds the same keys as the flags, in snake case (`max_new_tokens_response =
//! 96` for `--max-new-tokens-response 96`), either in a table named after the subcommand
//! (`[revise]`), so that one file can hold every stage's settings, or at its top level
//! (where the tables of the other subcommands are ignored). A flag given on the command
//! line wins over the file; a key the subcommand does not know is an error naming the
//! file, the line and the key.

use anyhow::{Context, anyhow};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::path::{Path, PathBuf};

/// The subcommands whose tables a settings file may hold.
pub const SECTIONS: [&str; 12] = [
    "chat", "revise", "sample", "sft", "pairs", "label", "train_pm", "score", "ppo", "convert",
    "pipeline", "eval",
];

/// The merged keys of a subcommand: the file's, then the flags'.
#[derive(Debug, Clone)]
pub struct Settings {
    table: toml::Table,
    section: String,
    /// The file and its text, to locate errors.
    file: Option<(PathBuf, String)>,
}

impl Settings {
    /// The keys of `file` for subcommand `section` (its `[section]` table when it has one,
    /// else its top level without the other subcommands' tables), then the flags that were
    /// given (`flags` serialises to a table of the flags that were set: `Option` fields
    /// skipped when `None`).
    pub fn load(
        file: Option<&Path>,
        section: &str,
        flags: &impl Serialize,
    ) -> anyhow::Result<Self> {
        let (mut table, file) = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                let mut doc: toml::Table =
                    toml::from_str(&text).map_err(|e| anyhow!("{}: {e}", path.display()))?;
                let table = match doc.remove(section) {
                    Some(toml::Value::Table(t)) => t,
                    Some(_) => {
                        return Err(anyhow!("{}: `{section}` must be a table", path.display()));
                    }
                    None => {
                        doc.retain(|k, v| !(v.is_table() && SECTIONS.contains(&k)));
                        doc
                    }
                };
                (table, Some((path.to_path_buf(), text)))
            }
            None => (toml::Table::new(), None),
        };
        let toml::Value::Table(given) = toml::Value::try_from(flags).context("the flags")? else {
            return Err(anyhow!("the flags do not form a table"));
        };
        table.extend(given);
        Ok(Self {
            table,
            section: section.to_string(),
            file,
        })
    }

    /// Removes `key` and returns its value, if set.
    pub fn take<T: DeserializeOwned>(&mut self, key: &str) -> anyhow::Result<Option<T>> {
        match self.table.remove(key) {
            None => Ok(None),
            Some(v) => {
                let mut one = toml::Table::new();
                one.insert(key.to_string(), v);
                let one: std::collections::BTreeMap<String, T> = self.deserialize(one)?;
                Ok(one.into_values().next())
            }
        }
    }

    /// The value of `key`, taken out; its absence is an error naming the flag and the key.
    pub fn require<T: DeserializeOwned>(&mut self, key: &str) -> anyhow::Result<T> {
        self.take(key)?.ok_or_else(|| {
            anyhow::anyhow!(
                "--{} (or `{key}` in the settings file) is required",
                key.replace('_', "-")
            )
        })
    }

    /// The value of `key` without removing it.
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> anyhow::Result<Option<T>> {
        self.clone().take(key)
    }

    /// Sets `key` unless it is set already.
    pub fn set_default(&mut self, key: &str, value: impl Into<toml::Value>) {
        self.table.entry(key).or_insert(value.into());
    }

    /// The remaining keys as `T` (a config struct with `deny_unknown_fields`: a key it does
    /// not know is an error naming the file, the line and the key).
    pub fn into_config<T: DeserializeOwned>(self) -> anyhow::Result<T> {
        let table = self.table.clone();
        self.deserialize(table)
    }

    fn deserialize<T: DeserializeOwned>(&self, table: toml::Table) -> anyhow::Result<T> {
        serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let message = inner.message().to_string();
            // The key at fault: the field path, or the one an "unknown field" names.
            let key = match path.as_str() {
                "." | "" => key_of(&message).unwrap_or_default().to_string(),
                p => p.split(['.', '[']).next().unwrap_or(p).to_string(),
            };
            let what = if path == "." || message.contains(&format!("`{key}`")) {
                message
            } else {
                format!("`{path}`: {message}")
            };
            match &self.file {
                Some((path, text)) => {
                    let line = line_of(text, &self.section, &key)
                        .map(|l| format!(":{l}"))
                        .unwrap_or_default();
                    anyhow!("{}{line}: {what}", path.display())
                }
                None => anyhow!("{what}"),
            }
        })
    }
}

/// The settings `T` of subcommand `section` ([`Settings::load`], then
/// [`Settings::into_config`]).
pub fn merge<T: DeserializeOwned>(
    file: Option<&Path>,
    section: &str,
    flags: &impl Serialize,
) -> anyhow::Result<T> {
    Settings::load(file, section, flags)?.into_config()
}

/// The key a serde message is about (`unknown field `x`, expected …`, `invalid type … for
/// key `x``).
fn key_of(message: &str) -> Option<&str> {
    let start = message.find('`')? + 1;
    let end = start + message[start..].find('`')?;
    Some(&message[start..end])
}

/// The 1-based line where `key` is set in `text`, inside `[section]` when the file has it.
fn line_of(text: &str, section: &str, key: &str) -> Option<usize> {
    let header = format!("[{section}]");
    let has_section = text.lines().any(|l| l.trim() == header);
    let mut inside = !has_section;
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.starts_with('[') {
            inside = !has_section || t == header;
            continue;
        }
        if inside
            && let Some((k, _)) = t.split_once('=')
            && k.trim().trim_matches('"') == key
        {
            return Some(i + 1);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize, PartialEq)]
    #[serde(default, deny_unknown_fields)]
    struct S {
        rounds: usize,
        seed: u64,
        out: String,
    }
    impl Default for S {
        fn default() -> Self {
            Self {
                rounds: 4,
                seed: 0,
                out: "x".into(),
            }
        }
    }

    #[derive(Serialize, Default)]
    struct Flags {
        #[serde(skip_serializing_if = "Option::is_none")]
        seed: Option<u64>,
    }

    #[test]
    fn flags_win_over_the_file_and_unknown_keys_are_located() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "seed = 1\n\n[revise]\nrounds = 2\nseed = 3\n").unwrap();
        let s: S = merge(Some(&f), "revise", &Flags::default()).unwrap();
        assert_eq!(
            s,
            S {
                rounds: 2,
                seed: 3,
                out: "x".into()
            }
        );
        let s: S = merge(Some(&f), "revise", &Flags { seed: Some(9) }).unwrap();
        assert_eq!(s.seed, 9);
        // No [sft] table: the top level, without the other subcommands' tables.
        let s: S = merge(Some(&f), "sft", &Flags::default()).unwrap();
        assert_eq!((s.rounds, s.seed), (4, 1));
        std::fs::write(&f, "[revise]\nrounds = 2\nrouns = 3\n").unwrap();
        let e = merge::<S>(Some(&f), "revise", &Flags::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("c.toml:3: unknown field `rouns`"), "{e}");
        std::fs::write(&f, "rounds = \"two\"\n").unwrap();
        let e = merge::<S>(Some(&f), "revise", &Flags::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("c.toml:1: `rounds`: invalid type"), "{e}");
        let e = merge::<S>(
            Some(&dir.path().join("none.toml")),
            "revise",
            &Flags::default(),
        )
        .unwrap_err();
        assert!(format!("{e:#}").contains("none.toml"), "{e:#}");
    }
}

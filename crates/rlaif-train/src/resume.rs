//! What must not change for a run to be resumed: the settings that shape the computation
//! and facts about the inputs (the model's configuration, the training data's
//! fingerprint, ...). Settings that only change what is observed (logging, evaluation or
//! checkpoint frequency) may change.

use crate::error::{Result, TrainError};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::Path;

/// The identity of a run, stored in every checkpoint and compared on resume.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunIdentity {
    /// The stage's settings as a JSON object (its config struct serialised).
    pub settings: serde_json::Map<String, Value>,
    /// The settings that may differ on resume: they do not change what is computed.
    pub resumable: Vec<String>,
    /// Named facts about the inputs, checked in order after the settings.
    pub facts: Vec<(String, Value)>,
}

impl RunIdentity {
    /// The identity of a run with `settings` (any serde struct that serialises to an
    /// object), of which the fields named in `resumable` may change on resume.
    pub fn new(settings: &impl Serialize, resumable: &[&str]) -> Result<Self> {
        match serde_json::to_value(settings) {
            Ok(Value::Object(settings)) => Ok(Self {
                settings,
                resumable: resumable.iter().map(|s| s.to_string()).collect(),
                facts: Vec::new(),
            }),
            Ok(_) => Err(TrainError::Config {
                field: "settings",
                message: "must serialise to a JSON object".into(),
            }),
            Err(e) => Err(TrainError::Config {
                field: "settings",
                message: e.to_string(),
            }),
        }
    }

    /// Adds a fact (e.g. `("training data fingerprint", "a3f…")`).
    pub fn with_fact(mut self, name: &str, value: impl Into<Value>) -> Self {
        self.facts.push((name.to_string(), value.into()));
        self
    }

    /// Checks that `self` (this run) may continue a run of identity `stored`, read from
    /// `state_path`: every setting but the resumable ones, then every fact, in order. The
    /// first difference is a [`TrainError::ResumeMismatch`] naming it.
    pub fn check_resumes(&self, stored: &RunIdentity, state_path: &Path) -> Result<()> {
        let mismatch = |field: &str, found: &Value, expected: &Value| TrainError::ResumeMismatch {
            path: state_path.to_path_buf(),
            field: field.to_string(),
            found: found.to_string(),
            expected: expected.to_string(),
        };
        for (key, value) in &self.settings {
            if self.resumable.iter().any(|r| r == key) {
                continue;
            }
            let old = stored.settings.get(key).unwrap_or(&Value::Null);
            if old != value {
                return Err(mismatch(key, old, value));
            }
        }
        for (name, value) in &self.facts {
            let old = stored
                .facts
                .iter()
                .find(|(n, _)| n == name)
                .map_or(&Value::Null, |(_, v)| v);
            if old != value {
                return Err(mismatch(name, old, value));
            }
        }
        Ok(())
    }
}

//! Resuming onto an existing output: the settings each record stores, checked against
//! this run's (see [`crate::run`](crate::run#resuming-with-other-settings)), and the
//! constitution's fingerprint.

use crate::config::RevisionConfig;
use crate::error::{Result, RevisionError};
use rlaif_constitution::{Constitution, PromptFormat, Replacement};
use serde::Deserialize;
use std::path::Path;

/// The settings a record of the output (or dropped) file stores; each is `None` when the
/// record lacks it (it was written before the field existed, or it is a dropped record).
#[derive(Deserialize)]
struct StoredSettings {
    seed: Option<u64>,
    format: Option<PromptFormat>,
    rounds: Option<Vec<serde::de::IgnoredAny>>,
    emit_every_round: Option<bool>,
    replacement: Option<Replacement>,
    constitution: Option<String>,
}

/// Checks that the record on line `line` of `file` was written with the settings of
/// `config` (and the constitution of fingerprint `fingerprint`), as far as it stores them.
pub(crate) fn check_settings(
    file: &Path,
    line: usize,
    record: &serde_json::Value,
    config: &RevisionConfig,
    fingerprint: &str,
) -> Result<()> {
    let stored = StoredSettings::deserialize(record).map_err(|e| RevisionError::CorruptOutput {
        file: file.to_path_buf(),
        line,
        message: e.to_string(),
    })?;
    let mismatch = |field: &str, found: String, expected: String| {
        Err(RevisionError::SettingsMismatch {
            file: file.to_path_buf(),
            line,
            field: field.to_string(),
            found,
            expected,
        })
    };
    if let Some(seed) = stored.seed
        && seed != config.seed
    {
        return mismatch("seed", seed.to_string(), config.seed.to_string());
    }
    if let Some(rounds) = &stored.rounds
        && rounds.len() != config.rounds
    {
        return mismatch(
            "rounds",
            rounds.len().to_string(),
            config.rounds.to_string(),
        );
    }
    if let Some(format) = stored.format
        && format != config.format
    {
        return mismatch(
            "format",
            format_name(format).into(),
            format_name(config.format).into(),
        );
    }
    if let Some(every) = stored.emit_every_round
        && every != config.emit_every_round
    {
        return mismatch(
            "emit_every_round",
            every.to_string(),
            config.emit_every_round.to_string(),
        );
    }
    if let Some(replacement) = stored.replacement
        && replacement != config.replacement
    {
        return mismatch(
            "replacement",
            replacement_name(replacement).into(),
            replacement_name(config.replacement).into(),
        );
    }
    if let Some(found) = stored.constitution
        && found != fingerprint
    {
        return mismatch("constitution", found, fingerprint.to_string());
    }
    Ok(())
}

/// The name of a prompt format in the records.
pub(crate) fn format_name(format: PromptFormat) -> &'static str {
    match format {
        PromptFormat::Chat => "chat",
        PromptFormat::Raw => "raw",
    }
}

/// The name of a replacement mode in the records.
fn replacement_name(replacement: Replacement) -> &'static str {
    match replacement {
        Replacement::With => "with",
        Replacement::Without => "without",
    }
}

/// A fingerprint of what of `constitution` shapes the records of this stage: the critique
/// principles (ids, requests and weights, in order) and the critique exemplars (their
/// texts, in order; not their ids). It is 16 hexadecimal digits (a 64-bit FNV-1a hash),
/// the same on every platform; editing any of those parts changes it (barring a hash
/// collision), while the comparison principles and exemplars (the feedback stage) do not
/// enter it. Stored in every record as `constitution`.
pub fn constitution_fingerprint(constitution: &Constitution) -> String {
    let mut h = rlaif_core::Fnv1a::default();
    h.u64(constitution.principles.len() as u64);
    for p in &constitution.principles {
        h.str(&p.id);
        h.str(&p.critique);
        h.str(&p.revision);
        h.u64(p.weight.to_bits());
    }
    h.u64(constitution.critique_exemplars.len() as u64);
    for e in &constitution.critique_exemplars {
        h.u64(e.conversation.messages.len() as u64);
        for m in &e.conversation.messages {
            h.str(m.role.as_str());
            h.str(&m.content);
        }
        h.u64(e.rounds.len() as u64);
        for r in &e.rounds {
            h.str(&r.critique_request);
            h.str(&r.critique);
            h.str(&r.revision_request);
            h.str(&r.revision);
        }
    }
    h.hex()
}

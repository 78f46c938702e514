//! Labelling a set of pairs: in memory ([`label_all`]) or into a resumable JSON Lines file
//! ([`label_pairs`]).
//!
//! # Resuming
//!
//! [`label_pairs`] appends one record per pair and flushes it, so a crash loses at most
//! the pair in flight; the observer is asked between pairs whether to stop. A rerun on the
//! same output skips the ids already in it, after checking every record:
//!
//! - its `settings` must equal this run's ([`LabelConfig::settings`]: every setting the
//!   method uses, but `limit`) and its `constitution` this constitution's
//!   [`comparison_fingerprint`](crate::comparison_fingerprint); the first difference is a
//!   [`FeedbackError::SettingsMismatch`] naming the file, the line, the setting and both
//!   values;
//! - a record whose id is among the pairs must hold the pair's texts (`prompt`,
//!   `response_a`, `response_b`, `known_better`), else [`FeedbackError::PairChanged`].
//!
//! Labels depend only on the pair, the configuration, the constitution and the models, so
//! with deterministic models an interrupted and resumed run writes the same file as an
//! uninterrupted one. The scorer and generator themselves cannot be checked: labelling on
//! with another model mixes two models' labels in one file.

use crate::config::LabelConfig;
use crate::error::{FeedbackError, Result};
use crate::label::{LabelRecord, Labeller};
use crate::output::open_output;
use crate::pair::Pair;
use crate::stats::{LabelStats, LabelSummary};
use rlaif_constitution::Constitution;
use rlaif_core::progress::{Observer, Progress};
use rlaif_core::{ChoiceScorer, Generator};
use serde_json::{Map, Value};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::Instant;

/// Labels `pairs` (cut to `config.limit`) in memory: the records, in order, and the
/// summary (with the statistics of these records). Nothing is written; progress goes to
/// `observer`, which may stop the run between pairs (the records so far are returned).
pub fn label_all(
    scorer: &dyn ChoiceScorer,
    generator: Option<&dyn Generator>,
    constitution: &Constitution,
    pairs: &[Pair],
    config: &LabelConfig,
    observer: &dyn Observer,
) -> Result<(Vec<LabelRecord>, LabelSummary)> {
    let labeller = Labeller::new(scorer, generator, constitution, config)?;
    let pairs = &pairs[..config.limit.unwrap_or(usize::MAX).min(pairs.len())];
    let mut records = Vec::with_capacity(pairs.len());
    let summary = run(&labeller, pairs, &HashSet::new(), observer, |r| {
        records.push(r);
        Ok(())
    })?;
    let stats = LabelStats::from_records(&records);
    Ok((records, LabelSummary { stats, ..summary }))
}

/// Labels `pairs` (cut to `config.limit`) into the JSON Lines file `output` (created with
/// its directories if needed), skipping the pairs already labelled there after checking
/// their settings (see the [module docs](self)). Progress goes to `observer`, which may stop
/// the run between pairs. The summary's statistics cover every record of the file.
pub fn label_pairs(
    scorer: &dyn ChoiceScorer,
    generator: Option<&dyn Generator>,
    constitution: &Constitution,
    pairs: &[Pair],
    config: &LabelConfig,
    output: &Path,
    observer: &dyn Observer,
) -> Result<LabelSummary> {
    let labeller = Labeller::new(scorer, generator, constitution, config)?;
    let pairs = &pairs[..config.limit.unwrap_or(usize::MAX).min(pairs.len())];
    let by_id: HashMap<&str, &Pair> = pairs.iter().map(|p| (p.id.as_str(), p)).collect();
    let (mut out, existing) = open_output::<LabelRecord>(output, "label", |line, r| {
        check_record(
            output,
            line,
            r,
            &labeller,
            by_id.get(r.id.as_str()).copied(),
        )
    })?;
    let mut records: Vec<LabelRecord> = existing.into_iter().map(|(_, r)| r).collect();
    let done: HashSet<String> = records.iter().map(|r| r.id.clone()).collect();
    let already = pairs.iter().filter(|p| done.contains(&p.id)).count();
    if already > 0 {
        tracing::info!(
            "{}: {already} of {} pairs already labelled",
            output.display(),
            pairs.len()
        );
    }
    let summary = run(&labeller, pairs, &done, observer, |r| {
        out.append(&r)?;
        out.sync()?;
        records.push(r);
        Ok(())
    })?;
    Ok(LabelSummary {
        stats: LabelStats::from_records(&records),
        ..summary
    })
}

/// Labels the pairs not in `done`, handing each record to `sink`.
fn run(
    labeller: &Labeller<'_>,
    pairs: &[Pair],
    done: &HashSet<String>,
    observer: &dyn Observer,
    mut sink: impl FnMut(LabelRecord) -> Result<()>,
) -> Result<LabelSummary> {
    let start = Instant::now();
    let skipped = pairs.iter().filter(|p| done.contains(&p.id)).count();
    let mut summary = LabelSummary {
        total: pairs.len(),
        skipped,
        ..LabelSummary::default()
    };
    let mut progress = Progress::new("label", "pairs", skipped as u64, pairs.len() as u64);
    observer.update(&progress);
    let (calls0, gen0, tokens0) = (
        labeller.scorer_calls(),
        labeller.generator_calls(),
        labeller.tokens(),
    );
    for pair in pairs {
        if done.contains(&pair.id) {
            continue;
        }
        if observer.should_stop() {
            summary.stopped = true;
            break;
        }
        let record = labeller.label(pair)?;
        sink(record)?;
        summary.done += 1;
        progress.done += 1;
        progress.tokens = (labeller.tokens() - tokens0) as u64;
        progress.elapsed = start.elapsed();
        observer.update(&progress);
    }
    observer.finish(&progress);
    summary.scorer_calls = labeller.scorer_calls() - calls0;
    summary.generator_calls = labeller.generator_calls() - gen0;
    summary.tokens = labeller.tokens() - tokens0;
    summary.elapsed = start.elapsed();
    Ok(summary)
}

/// A JSON value as shown in messages: strings without quotes, the rest as compact JSON.
fn show(v: Option<&Value>) -> String {
    match v {
        None => "absent".into(),
        Some(Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
    }
}

/// The first setting that differs between `found` (a record's) and `expected` (this
/// run's): `method` first (a changed method also changes which other settings apply), then
/// in the order of `expected`, then the keys only `found` has.
fn first_difference(found: &Map<String, Value>, expected: &Map<String, Value>) -> Option<String> {
    let method = "method".to_string();
    std::iter::once(&method)
        .chain(expected.keys())
        .chain(found.keys().filter(|k| !expected.contains_key(*k)))
        .find(|k| found.get(*k) != expected.get(*k))
        .cloned()
}

fn check_record(
    file: &Path,
    line: usize,
    r: &LabelRecord,
    labeller: &Labeller<'_>,
    pair: Option<&Pair>,
) -> Result<()> {
    let mismatch = |field: String, found: String, expected: String| {
        Err(FeedbackError::SettingsMismatch {
            file: file.to_path_buf(),
            line,
            field,
            found,
            expected,
        })
    };
    let expected = labeller.settings();
    if let Some(k) = first_difference(&r.settings, expected) {
        let (found, want) = (show(r.settings.get(&k)), show(expected.get(&k)));
        return mismatch(k, found, want);
    }
    if r.constitution != labeller.fingerprint() {
        return mismatch(
            "constitution".into(),
            r.constitution.clone(),
            labeller.fingerprint().to_string(),
        );
    }
    if let Some(p) = pair {
        let changed = if r.prompt != p.prompt {
            Some("prompt")
        } else if r.response_a != p.response_a {
            Some("response_a")
        } else if r.response_b != p.response_b {
            Some("response_b")
        } else if r.known_better != p.known_better {
            Some("known_better")
        } else {
            None
        };
        if let Some(field) = changed {
            return Err(FeedbackError::PairChanged {
                file: file.to_path_buf(),
                line,
                id: r.id.clone(),
                field,
            });
        }
    }
    Ok(())
}

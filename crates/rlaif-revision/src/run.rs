//! The critique → revision loop.
//!
//! Prompts are processed in fixed chunks of the prompt set: prompt `i` belongs to chunk
//! `i / batch_size`. For each chunk with at least one unfinished prompt:
//!
//! 1. the initial responses are generated (one generator call for the chunk);
//! 2. for each round, every prompt gets the principle of its draw (stream `i` of the
//!    principle sampler, `i` the prompt's index in the set), then one call generates the
//!    critiques and one the revisions;
//! 3. the records of the chunk's unfinished prompts are appended and flushed; prompts
//!    whose output stayed degenerate are appended to the dropped file instead.
//!
//! After each call, degenerate outputs (see [`crate::degenerate`]) are handled by the
//! [`DegeneratePolicy`](crate::DegeneratePolicy): regenerated (only those prompts, in one call per attempt) or
//! dropped; a dropped prompt takes no part in the later stages.
//!
//! # Determinism
//!
//! Each call's `SamplingParams::seed` is derived from (config seed, chunk, stage, round,
//! attempt), and the generator gives prompt `k` of a call its own stream `k`. A chunk is
//! always generated whole (finished prompts of a partially finished chunk are generated
//! again and not written), so with a deterministic generator the records depend only on
//! the prompt set, the constitution and the configuration (seed, batch size, ...): an
//! interrupted and resumed run writes the same records as an uninterrupted one, in the
//! same order. Changing `batch_size` changes the chunks, so the texts (not the principle
//! draws, which depend only on the seed and the prompt index).
//!
//! # Interruption
//!
//! Records are written a chunk at a time; a crash or Ctrl-C (this crate installs no
//! handler: the process just ends) loses the chunk in flight, at most `batch_size`
//! prompts. With [`run_revision_until`], a handler that sets the stop flag makes the run
//! finish and write the chunk in flight, then return. Rerunning
//! on the same output skips the prompts already in it (and those in the dropped file).
//!
//! # Resuming with other settings
//!
//! A rerun only resumes onto records written with the same settings: before anything is
//! generated or appended, every record of the output and dropped files is checked
//! against the configuration: `seed`, `format`, `emit_every_round`, `replacement`,
//! the number of rounds (the length of `rounds`) and the constitution (its
//! [`constitution_fingerprint`]). The first difference is a
//! [`RevisionError::SettingsMismatch`] naming the file, the line, the setting and both
//! values. A setting that a record does not store (records written before the field
//! existed; dropped records store only the seed) is not checked. The sampling settings
//! (temperature, top-p, top-k, token budgets), the batch size and the degenerate policy
//! are not stored, so not checked.

use crate::config::RevisionConfig;
use crate::degenerate::{DegenerateKind, detect};
use crate::error::{Result, RevisionError};
use crate::prompts_io::PromptRecord;
use crate::record::{DegenerateEvent, DroppedRecord, RevisionRecord, RoundRecord, SftPair, Stage};
use crate::writer::{JsonlWriter, dropped_path};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rlaif_constitution::{
    Constitution, CritiqueChain, CritiquePrinciple, CritiqueRound, PrincipleSampler, PromptFormat,
    Replacement, RoundAnswers,
};
use rlaif_core::{Conversation, Generator, Prompt};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Degenerate outputs seen, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DegenerateCounts {
    /// Empty outputs.
    pub empty: usize,
    /// Echoes of the request or prompt.
    pub echo: usize,
    /// Runaway repetitions.
    pub repetition: usize,
}

impl DegenerateCounts {
    pub(crate) fn add(&mut self, kind: DegenerateKind) {
        match kind {
            DegenerateKind::Empty => self.empty += 1,
            DegenerateKind::Echo => self.echo += 1,
            DegenerateKind::Repetition => self.repetition += 1,
        }
    }

    /// All kinds together.
    pub fn total(&self) -> usize {
        self.empty + self.echo + self.repetition
    }
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    /// Prompts considered (the set, cut to the limit).
    pub total: usize,
    /// Prompts skipped because the output (or the dropped file) already had them.
    pub skipped: usize,
    /// Records written by this run.
    pub done: usize,
    /// Prompts dropped by this run (their output stayed degenerate).
    pub dropped: usize,
    /// Outputs generated again because the previous attempt was degenerate.
    pub retried: usize,
    /// Degenerate outputs seen (including those of prompts whose record is not written
    /// because another prompt of their chunk was unfinished).
    pub degenerate: DegenerateCounts,
    /// Generator calls made.
    pub generator_calls: usize,
    /// New tokens generated (the lengths of `Completion::token_ids`).
    pub tokens: usize,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// Whether the run was stopped early by the `stop` flag of [`run_revision_until`].
    pub stopped: bool,
}

impl std::fmt::Display for RunSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = self.elapsed.as_secs_f64();
        write!(
            f,
            "{} prompts: {} done, {} skipped (already finished), {} dropped; {} retried; \
             degenerate outputs: {} empty, {} echo, {} repetition; {} tokens in {} calls, \
             {:.1} s ({:.1} tokens/s){}",
            self.total,
            self.done,
            self.skipped,
            self.dropped,
            self.retried,
            self.degenerate.empty,
            self.degenerate.echo,
            self.degenerate.repetition,
            self.tokens,
            self.generator_calls,
            secs,
            if secs > 0.0 {
                self.tokens as f64 / secs
            } else {
                0.0
            },
            if self.stopped { "; stopped early" } else { "" },
        )
    }
}

/// Runs the critique → revision loop over `prompts` with `generator`, appending records
/// to `output` (and dropped prompts to [`dropped_path`]`(output)`), skipping the prompts
/// already there. See the [module docs](self) for the procedure and its guarantees.
pub fn run_revision<G: Generator + ?Sized>(
    generator: &G,
    constitution: &Constitution,
    prompts: &[PromptRecord],
    config: &RevisionConfig,
    output: &Path,
) -> Result<RunSummary> {
    run_revision_until(
        generator,
        constitution,
        prompts,
        config,
        output,
        &AtomicBool::new(false),
    )
}

/// [`run_revision`] that stops cleanly, before starting the next batch, once `stop` is
/// set (e.g. by a Ctrl-C handler): the batch in flight is finished and written, and the
/// summary has `stopped: true`. A rerun continues where it stopped.
pub fn run_revision_until<G: Generator + ?Sized>(
    generator: &G,
    constitution: &Constitution,
    prompts: &[PromptRecord],
    config: &RevisionConfig,
    output: &Path,
    stop: &AtomicBool,
) -> Result<RunSummary> {
    config.validate()?;
    let start = Instant::now();
    let prompts = &prompts[..config.limit.unwrap_or(usize::MAX).min(prompts.len())];
    let sampler = PrincipleSampler::for_critiques(constitution, config.seed)?;
    let fingerprint = constitution_fingerprint(constitution);
    let (mut out, done_ids) = JsonlWriter::open_checked(output, |line, record| {
        check_settings(output, line, record, config, &fingerprint)
    })?;
    let dropped_file = dropped_path(output);
    let (mut dropped_out, dropped_ids) =
        JsonlWriter::open_checked(&dropped_file, |line, record| {
            check_settings(&dropped_file, line, record, config, &fingerprint)
        })?;
    let finished: HashSet<&str> = done_ids
        .iter()
        .chain(&dropped_ids)
        .map(String::as_str)
        .collect();
    let pending = prompts
        .iter()
        .filter(|p| !finished.contains(p.id.as_str()))
        .count();
    let mut r = Runner {
        generator,
        config,
        summary: RunSummary {
            total: prompts.len(),
            skipped: prompts.len() - pending,
            ..RunSummary::default()
        },
        bar: progress_bar(pending as u64, config.progress),
        start,
    };
    for (chunk, items) in prompts.chunks(config.batch_size).enumerate() {
        if items.iter().all(|p| finished.contains(p.id.as_str())) {
            continue;
        }
        if stop.load(Ordering::SeqCst) {
            r.summary.stopped = true;
            break;
        }
        let first = chunk * config.batch_size;
        let mut states = Vec::with_capacity(items.len());
        for (k, rec) in items.iter().enumerate() {
            let index = first + k;
            let mut principles = Vec::with_capacity(config.rounds);
            for draw in sampler.draw_chain(index, config.rounds, config.replacement)? {
                principles.push(constitution.principle(&draw.principle_id).ok_or_else(|| {
                    RevisionError::Config(format!(
                        "principle `{}` drawn but not in the constitution",
                        draw.principle_id
                    ))
                })?);
            }
            states.push(ChainState {
                rec,
                index,
                principles,
                conversation: Conversation::new(),
                rounds: Vec::new(),
                initial: String::new(),
                events: Vec::new(),
                dropped_at: None,
            });
        }
        r.process_chunk(chunk, constitution, &mut states)?;
        let mut written = 0;
        for s in &states {
            if finished.contains(s.rec.id.as_str()) {
                continue;
            }
            written += 1;
            match s.dropped_at {
                Some((stage, round)) => {
                    dropped_out.append(&DroppedRecord {
                        id: s.rec.id.clone(),
                        index: s.index,
                        stage,
                        round,
                        degenerate: s.events.clone(),
                        seed: config.seed,
                    })?;
                    r.summary.dropped += 1;
                }
                None => {
                    out.append(&s.record(config, &fingerprint))?;
                    r.summary.done += 1;
                }
            }
        }
        out.sync()?;
        dropped_out.sync()?;
        r.bar.inc(written);
    }
    r.bar.finish_and_clear();
    r.summary.elapsed = start.elapsed();
    Ok(r.summary)
}

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
fn check_settings(
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
fn format_name(format: PromptFormat) -> &'static str {
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

fn progress_bar(len: u64, visible: bool) -> ProgressBar {
    let target = if visible {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    let bar = ProgressBar::with_draw_target(Some(len), target);
    let style = ProgressStyle::with_template(
        "{bar:30.cyan/blue} {pos}/{len} prompts  {msg}  elapsed {elapsed}  ETA {eta}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar
}

struct ChainState<'a> {
    rec: &'a PromptRecord,
    index: usize,
    principles: Vec<&'a CritiquePrinciple>,
    /// `[user: prompt, assistant: initial response]`.
    conversation: Conversation,
    rounds: Vec<CritiqueRound>,
    initial: String,
    events: Vec<DegenerateEvent>,
    dropped_at: Option<(Stage, Option<usize>)>,
}

impl ChainState<'_> {
    fn record(&self, config: &RevisionConfig, fingerprint: &str) -> RevisionRecord {
        let prompt = self.rec.prompt.clone();
        let final_revision = self
            .rounds
            .last()
            .map_or_else(|| self.initial.clone(), |r| r.revision.clone());
        let rounds: Vec<RoundRecord> = self
            .rounds
            .iter()
            .zip(&self.principles)
            .enumerate()
            .map(|(i, (r, p))| RoundRecord {
                round: i,
                principle_id: p.id.clone(),
                critique_request: r.critique_request.clone(),
                critique: r.critique.clone(),
                revision_request: r.revision_request.clone(),
                revision: r.revision.clone(),
            })
            .collect();
        let sft = if config.emit_every_round {
            rounds
                .iter()
                .map(|r| SftPair {
                    prompt: prompt.clone(),
                    completion: r.revision.clone(),
                })
                .collect()
        } else {
            vec![SftPair {
                prompt: prompt.clone(),
                completion: final_revision.clone(),
            }]
        };
        RevisionRecord {
            id: self.rec.id.clone(),
            category: self.rec.category.clone(),
            index: self.index,
            messages: Conversation::new()
                .user(prompt.clone())
                .assistant(final_revision.clone()),
            prompt,
            initial_response: self.initial.clone(),
            rounds,
            chosen: final_revision.clone(),
            rejected: self.initial.clone(),
            final_revision,
            sft,
            degenerate: self.events.clone(),
            seed: config.seed,
            format: config.format,
            emit_every_round: Some(config.emit_every_round),
            replacement: Some(config.replacement),
            constitution: Some(fingerprint.to_string()),
        }
    }
}

struct Runner<'g, G: ?Sized> {
    generator: &'g G,
    config: &'g RevisionConfig,
    summary: RunSummary,
    bar: ProgressBar,
    start: Instant,
}

/// One generation job: the chain it belongs to, its prompt, the texts it must not echo.
pub(crate) struct Job {
    pub(crate) chain: usize,
    pub(crate) prompt: Prompt,
    pub(crate) references: Vec<String>,
}

impl<G: Generator + ?Sized> Runner<'_, G> {
    fn process_chunk(
        &mut self,
        chunk: usize,
        constitution: &Constitution,
        states: &mut [ChainState<'_>],
    ) -> Result<()> {
        let format = self.config.format;
        let jobs = states
            .iter()
            .enumerate()
            .map(|(i, s)| Job {
                chain: i,
                prompt: initial_prompt(format, &s.rec.prompt),
                references: vec![s.rec.prompt.clone()],
            })
            .collect();
        let texts = self.generate_stage(
            chunk,
            Stage::Response,
            None,
            jobs,
            self.config.max_new_tokens_response,
            states,
        )?;
        for (i, text) in texts {
            let s = &mut states[i];
            s.conversation = Conversation::new()
                .user(s.rec.prompt.clone())
                .assistant(text.clone());
            s.initial = text;
        }
        let exemplars = &constitution.critique_exemplars;
        for round in 0..self.config.rounds {
            let jobs = alive(states)
                .map(|(i, s)| {
                    let p = s.principles[round];
                    let chain =
                        CritiqueChain::new(exemplars, &s.conversation).with_rounds(&s.rounds);
                    Job {
                        chain: i,
                        prompt: chain.critique_prompt(format, p),
                        references: vec![s.rec.prompt.clone(), p.critique.clone()],
                    }
                })
                .collect();
            let critiques = self.generate_stage(
                chunk,
                Stage::Critique,
                Some(round),
                jobs,
                self.config.max_new_tokens_critique,
                states,
            )?;
            let jobs = critiques
                .iter()
                .map(|(i, critique)| {
                    let s = &states[*i];
                    let p = s.principles[round];
                    let chain =
                        CritiqueChain::new(exemplars, &s.conversation).with_rounds(&s.rounds);
                    Job {
                        chain: *i,
                        prompt: chain.revision_prompt(format, p, critique),
                        references: vec![
                            s.rec.prompt.clone(),
                            p.critique.clone(),
                            p.revision.clone(),
                        ],
                    }
                })
                .collect();
            let revisions = self.generate_stage(
                chunk,
                Stage::Revision,
                Some(round),
                jobs,
                self.config.max_new_tokens_revision,
                states,
            )?;
            let critiques: std::collections::HashMap<usize, String> =
                critiques.into_iter().collect();
            for (i, revision) in revisions {
                let s = &mut states[i];
                let p = s.principles[round];
                let critique = critiques.get(&i).cloned().unwrap_or_default();
                s.rounds.push(p.round(RoundAnswers { critique, revision }));
            }
        }
        Ok(())
    }

    /// Generates the jobs' outputs with retries; returns `(chain, text)` of the chains
    /// that got a usable output, and marks the others dropped.
    fn generate_stage(
        &mut self,
        chunk: usize,
        stage: Stage,
        round: Option<usize>,
        jobs: Vec<Job>,
        max_new_tokens: usize,
        states: &mut [ChainState<'_>],
    ) -> Result<Vec<(usize, String)>> {
        let seed = self.config.seed;
        let outcomes = generate_with_retries(
            self.generator,
            self.config,
            &mut self.summary,
            &jobs,
            max_new_tokens,
            (stage, round),
            |attempt| {
                derive_seed(&[
                    seed,
                    chunk as u64,
                    stage.code(),
                    round.map_or(u64::MAX, |r| r as u64),
                    attempt as u64,
                ])
            },
        )?;
        let secs = self.start.elapsed().as_secs_f64().max(1e-9);
        self.bar
            .set_message(format!("{:.1} tokens/s", self.summary.tokens as f64 / secs));
        let mut ok = Vec::with_capacity(jobs.len());
        for (job, outcome) in jobs.iter().zip(outcomes) {
            states[job.chain].events.extend(outcome.events);
            match outcome.text {
                Some(text) => ok.push((job.chain, text)),
                None => states[job.chain].dropped_at = Some((stage, round)),
            }
        }
        ok.sort_by_key(|(i, _)| *i);
        Ok(ok)
    }
}

/// What [`generate_with_retries`] got for one job.
pub(crate) struct Outcome {
    /// The usable output, or `None` when every attempt was degenerate.
    pub(crate) text: Option<String>,
    /// The degenerate outputs met, in attempt order.
    pub(crate) events: Vec<DegenerateEvent>,
}

/// Generates one output per job, regenerating the degenerate ones (attempt `a` uses
/// `seed(a)`) up to the policy's number of attempts. Generator calls, tokens, retries and
/// degenerate outputs are counted into `summary`; `at` is the stage and round recorded in
/// the degenerate events.
pub(crate) fn generate_with_retries<G: Generator + ?Sized>(
    generator: &G,
    config: &RevisionConfig,
    summary: &mut RunSummary,
    jobs: &[Job],
    max_new_tokens: usize,
    at: (Stage, Option<usize>),
    seed: impl Fn(usize) -> u64,
) -> Result<Vec<Outcome>> {
    let mut outcomes: Vec<Outcome> = jobs
        .iter()
        .map(|_| Outcome {
            text: None,
            events: vec![],
        })
        .collect();
    let mut todo: Vec<usize> = (0..jobs.len()).collect();
    for attempt in 0..config.degenerate.max_attempts() {
        if todo.is_empty() {
            break;
        }
        if attempt > 0 {
            summary.retried += todo.len();
        }
        let params = config.sampling(max_new_tokens, seed(attempt));
        let prompts: Vec<Prompt> = todo.iter().map(|&j| jobs[j].prompt.clone()).collect();
        let out = generator.generate(&prompts, &params)?;
        summary.generator_calls += 1;
        if out.len() != prompts.len() {
            return Err(RevisionError::CompletionCount {
                expected: prompts.len(),
                got: out.len(),
            });
        }
        summary.tokens += out.iter().map(|c| c.token_ids.len()).sum::<usize>();
        let mut next = Vec::new();
        for (j, completion) in todo.into_iter().zip(out) {
            let text = completion.text.trim().to_string();
            let refs: Vec<&str> = jobs[j].references.iter().map(String::as_str).collect();
            match detect(&text, &refs) {
                None => outcomes[j].text = Some(text),
                Some(kind) => {
                    summary.degenerate.add(kind);
                    outcomes[j].events.push(DegenerateEvent {
                        stage: at.0,
                        round: at.1,
                        kind,
                        attempt,
                    });
                    next.push(j);
                }
            }
        }
        todo = next;
    }
    Ok(outcomes)
}

fn alive<'s, 'a>(
    states: &'s [ChainState<'a>],
) -> impl Iterator<Item = (usize, &'s ChainState<'a>)> {
    states
        .iter()
        .enumerate()
        .filter(|(_, s)| s.dropped_at.is_none())
}

/// The prompt of the initial response: the user message alone (chat) or
/// `"\n\nHuman: <prompt>\n\nAssistant:"` (raw).
pub fn initial_prompt(format: PromptFormat, prompt: &str) -> Prompt {
    match format {
        PromptFormat::Chat => Prompt::Chat(Conversation::new().user(prompt)),
        PromptFormat::Raw => Prompt::Text(format!("\n\nHuman: {prompt}\n\nAssistant:")),
    }
}

/// SplitMix64 of the parts, folded in order: the seed of one generator call.
pub fn derive_seed(parts: &[u64]) -> u64 {
    let mut h = 0x243F_6A88_85A3_08D3u64;
    for &p in parts {
        h = splitmix64(h ^ p);
    }
    h
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

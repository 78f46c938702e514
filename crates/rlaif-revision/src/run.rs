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
//! prompts. With [`run_revision_until`], an observer that asks to stop (e.g. a stop flag
//! set by a Ctrl-C handler) makes the run finish and write the chunk in flight, then
//! return. Rerunning on the same output skips the prompts already in it (and those in the
//! dropped file).
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
use crate::error::{Result, RevisionError};
use crate::output::{dropped_path, open_records};
use crate::prompts_io::PromptRecord;
use crate::record::{DegenerateEvent, DroppedRecord, RevisionRecord, RoundRecord, SftPair, Stage};
use crate::resume::{check_settings, constitution_fingerprint};
use crate::retry::{Job, generate_with_retries};
use crate::summary::RunSummary;
use rlaif_constitution::{
    Constitution, CritiqueChain, CritiquePrinciple, CritiqueRound, PrincipleSampler, RoundAnswers,
    initial_prompt,
};
use rlaif_core::progress::{Observer, Progress, Silent};
use rlaif_core::seed::derive_seed;
use rlaif_core::{Conversation, Generator};
use std::collections::HashSet;
use std::path::Path;
use std::time::Instant;

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
    run_revision_until(generator, constitution, prompts, config, output, &Silent)
}

/// [`run_revision`] reporting to `observer` (prompts done, tokens generated) and stopping
/// cleanly, before starting the next batch, once it asks to ([`Observer::should_stop`];
/// a plain `AtomicBool` set by a Ctrl-C handler is such an observer): the batch in flight
/// is finished and written, and the summary has `stopped: true`. A rerun continues where
/// it stopped.
pub fn run_revision_until<G: Generator + ?Sized>(
    generator: &G,
    constitution: &Constitution,
    prompts: &[PromptRecord],
    config: &RevisionConfig,
    output: &Path,
    observer: &dyn Observer,
) -> Result<RunSummary> {
    config.validate()?;
    let start = Instant::now();
    let prompts = &prompts[..config.limit.unwrap_or(usize::MAX).min(prompts.len())];
    let sampler = PrincipleSampler::for_critiques(constitution, config.seed)?;
    let fingerprint = constitution_fingerprint(constitution);
    let (mut out, done_ids) = open_records(output, |line, record| {
        check_settings(output, line, record, config, &fingerprint)
    })?;
    let dropped_file = dropped_path(output);
    let (mut dropped_out, dropped_ids) = open_records(&dropped_file, |line, record| {
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
    if pending < prompts.len() {
        tracing::info!(
            "{}: {} of {} prompts already finished, {pending} to go",
            output.display(),
            prompts.len() - pending,
            prompts.len()
        );
    }
    let mut r = Runner {
        generator,
        config,
        summary: RunSummary {
            total: prompts.len(),
            skipped: prompts.len() - pending,
            ..RunSummary::default()
        },
        observer,
        progress: Progress::new(
            "revise",
            "prompts",
            (prompts.len() - pending) as u64,
            prompts.len() as u64,
        ),
        start,
    };
    observer.update(&r.progress);
    for (chunk, items) in prompts.chunks(config.batch_size).enumerate() {
        if items.iter().all(|p| finished.contains(p.id.as_str())) {
            continue;
        }
        if observer.should_stop() {
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
        r.progress.done += written;
        r.report();
    }
    observer.finish(&r.progress);
    r.summary.elapsed = start.elapsed();
    Ok(r.summary)
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
    observer: &'g dyn Observer,
    progress: Progress,
    start: Instant,
}

impl<G: ?Sized> Runner<'_, G> {
    /// Sends the progress, with the tokens and time so far.
    fn report(&mut self) {
        self.progress.tokens = self.summary.tokens as u64;
        self.progress.elapsed = self.start.elapsed();
        self.observer.update(&self.progress);
    }
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
        self.report();
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

fn alive<'s, 'a>(
    states: &'s [ChainState<'a>],
) -> impl Iterator<Item = (usize, &'s ChainState<'a>)> {
    states
        .iter()
        .enumerate()
        .filter(|(_, s)| s.dropped_at.is_none())
}

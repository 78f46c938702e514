//! Sampling the pairs: two responses per prompt from the SL model (§4.1: "we sample two
//! responses per prompt from the SL-CAI model").
//!
//! Prompts are processed in fixed chunks of the prompt set (prompt `i` is in chunk
//! `i / batch_size`). For each chunk with an unfinished prompt, one generator call samples
//! every prompt's response a, with the seed `derive_seed([seed, chunk, 0, attempt])`, then
//! one call samples the responses b of the prompts whose response a is usable, with
//! `derive_seed([seed, chunk, 1, attempt])`. After each call, degenerate responses
//! ([`rlaif_revision::degenerate::detect`]: empty, an echo of the prompt, runaway
//! repetition; and, with `require_distinct`, a response b that echoes response a) are
//! regenerated, only those, one call per attempt, up to the policy's attempts; a prompt
//! whose response stays degenerate is left out (counted in `dropped`; a rerun tries it
//! again with the same seeds, so it stays out).
//!
//! Records are appended and flushed a chunk at a time; a chunk is always generated whole,
//! so with a deterministic generator an interrupted and resumed run writes the same file
//! as an uninterrupted one. A rerun skips the prompts already written, after checking that
//! every record was written with this run's `seed`, `format`, `temperature`, `top_p`,
//! `top_k`, `max_new_tokens` and `require_distinct` (else
//! [`FeedbackError::SettingsMismatch`] naming the line and the setting). The observer is
//! asked between chunks whether to stop.

use crate::config::PairConfig;
use crate::error::{FeedbackError, Result};
use crate::output::{HasId, open_output};
use crate::pair::Side;
use rlaif_constitution::{PromptFormat, initial_prompt};
use rlaif_core::progress::{Observer, Progress};
use rlaif_core::seed::derive_seed;
use rlaif_core::{Generator, Prompt};
use rlaif_revision::degenerate::detect;
use rlaif_revision::{DegenerateKind, PromptRecord, RunSummary};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::path::Path;
use std::time::Instant;

/// A degenerate response met (and regenerated) while sampling a pair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PairDegenerate {
    /// Which response.
    pub response: Side,
    /// What was wrong (`echo` for a response b that repeats response a).
    pub kind: DegenerateKind,
    /// The attempt (from 0) that produced it.
    pub attempt: usize,
}

/// One sampled pair: a line of the pair file.
///
/// ```json
/// {"id": "rt-0001", "category": "weapons", "index": 0, "prompt": "<user message>",
///  "response_a": "<first sample>", "response_b": "<second sample>",
///  "degenerate": [{"response": "b", "kind": "echo", "attempt": 0}],
///  "seed": 0, "format": "chat", "temperature": 1.0, "top_p": 1.0, "top_k": null,
///  "max_new_tokens": 256, "require_distinct": true}
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairRecord {
    /// The prompt id.
    pub id: String,
    /// The prompt category, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// The index of the prompt in its file.
    pub index: usize,
    /// The user prompt.
    pub prompt: String,
    /// The first sample.
    pub response_a: String,
    /// The second sample.
    pub response_b: String,
    /// Degenerate responses met (and regenerated) on the way.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub degenerate: Vec<PairDegenerate>,
    /// The run's seed.
    pub seed: u64,
    /// The prompt format.
    pub format: PromptFormat,
    /// The sampling temperature.
    pub temperature: f32,
    /// The nucleus threshold.
    pub top_p: f32,
    /// The top-k cut, if any.
    #[serde(default)]
    pub top_k: Option<usize>,
    /// The token budget of each response.
    pub max_new_tokens: usize,
    /// Whether a response b echoing response a was regenerated.
    pub require_distinct: bool,
}

impl HasId for PairRecord {
    fn id(&self) -> &str {
        &self.id
    }
}

fn format_name(f: PromptFormat) -> &'static str {
    match f {
        PromptFormat::Chat => "chat",
        PromptFormat::Raw => "raw",
    }
}

fn check_settings(file: &Path, line: usize, r: &PairRecord, c: &PairConfig) -> Result<()> {
    let show_k = |k: Option<usize>| k.map_or("none".to_string(), |k| k.to_string());
    let diff: Option<(&str, String, String)> = if r.seed != c.seed {
        Some(("seed", r.seed.to_string(), c.seed.to_string()))
    } else if r.format != c.format {
        Some((
            "format",
            format_name(r.format).into(),
            format_name(c.format).into(),
        ))
    } else if r.temperature != c.temperature {
        Some((
            "temperature",
            r.temperature.to_string(),
            c.temperature.to_string(),
        ))
    } else if r.top_p != c.top_p {
        Some(("top_p", r.top_p.to_string(), c.top_p.to_string()))
    } else if r.top_k != c.top_k {
        Some(("top_k", show_k(r.top_k), show_k(c.top_k)))
    } else if r.max_new_tokens != c.max_new_tokens {
        Some((
            "max_new_tokens",
            r.max_new_tokens.to_string(),
            c.max_new_tokens.to_string(),
        ))
    } else if r.require_distinct != c.require_distinct {
        Some((
            "require_distinct",
            r.require_distinct.to_string(),
            c.require_distinct.to_string(),
        ))
    } else {
        None
    };
    match diff {
        None => Ok(()),
        Some((field, found, expected)) => Err(FeedbackError::SettingsMismatch {
            file: file.to_path_buf(),
            line,
            field: field.into(),
            found,
            expected,
        }),
    }
}

/// Samples two responses to each prompt with `generator` (the SL model), appending
/// [`PairRecord`]s to `output` and skipping the prompts already there; progress goes to
/// `observer`, which is asked between chunks whether to stop. See the [module docs](self)
/// for the procedure, the seeds and resuming. The summary counts prompts, generator calls,
/// tokens, degenerate responses (by kind), retries and dropped prompts.
pub fn generate_pairs<G: Generator + ?Sized>(
    generator: &G,
    prompts: &[PromptRecord],
    config: &PairConfig,
    output: &Path,
    observer: &dyn Observer,
) -> Result<RunSummary> {
    config.validate()?;
    let start = Instant::now();
    let prompts = &prompts[..config.limit.unwrap_or(usize::MAX).min(prompts.len())];
    let (mut out, existing) = open_output::<PairRecord>(output, "pair", |line, r| {
        check_settings(output, line, r, config)
    })?;
    let done: HashSet<String> = existing.into_iter().map(|(_, r)| r.id).collect();
    let pending = prompts.iter().filter(|p| !done.contains(&p.id)).count();
    if pending < prompts.len() {
        tracing::info!(
            "{}: {} of {} prompts already have a pair, {pending} to go",
            output.display(),
            prompts.len() - pending,
            prompts.len()
        );
    }
    let mut summary = RunSummary {
        total: prompts.len(),
        ..RunSummary::default()
    };
    let mut progress = Progress::new(
        "pairs",
        "prompts",
        (prompts.len() - pending) as u64,
        prompts.len() as u64,
    );
    observer.update(&progress);
    for (chunk, batch) in prompts.chunks(config.batch_size).enumerate() {
        if batch.iter().all(|p| done.contains(&p.id)) {
            summary.skipped += batch.len();
            continue;
        }
        if observer.should_stop() {
            summary.stopped = true;
            break;
        }
        let gen_prompts: Vec<Prompt> = batch
            .iter()
            .map(|p| initial_prompt(config.format, &p.prompt))
            .collect();
        let jobs_a: Vec<Job> = batch
            .iter()
            .enumerate()
            .map(|(i, p)| Job {
                slot: i,
                prompt: &gen_prompts[i],
                references: vec![p.prompt.as_str()],
            })
            .collect();
        let mut a = sample(generator, config, &mut summary, chunk, Side::A, &jobs_a)?;
        let jobs_b: Vec<Job> = batch
            .iter()
            .enumerate()
            .filter_map(|(i, p)| {
                let text = a[i].text.as_deref()?;
                let mut references = vec![p.prompt.as_str()];
                if config.require_distinct {
                    references.push(text);
                }
                Some(Job {
                    slot: i,
                    prompt: &gen_prompts[i],
                    references,
                })
            })
            .collect();
        let b_out = sample(generator, config, &mut summary, chunk, Side::B, &jobs_b)?;
        let mut b: Vec<Outcome> = (0..batch.len()).map(|_| Outcome::default()).collect();
        for (job, outcome) in jobs_b.iter().zip(b_out) {
            b[job.slot] = outcome;
        }
        for (i, p) in batch.iter().enumerate() {
            // Written by an earlier session: regenerated only because its chunk is
            // generated whole; whatever came out this time, it is skipped.
            if done.contains(&p.id) {
                summary.skipped += 1;
                continue;
            }
            progress.done += 1;
            let (Some(ra), Some(rb)) = (a[i].text.take(), b[i].text.take()) else {
                summary.dropped += 1;
                continue;
            };
            let mut degenerate = std::mem::take(&mut a[i].events);
            degenerate.append(&mut b[i].events);
            out.append(&PairRecord {
                id: p.id.clone(),
                category: p.category.clone(),
                index: chunk * config.batch_size + i,
                prompt: p.prompt.clone(),
                response_a: ra,
                response_b: rb,
                degenerate,
                seed: config.seed,
                format: config.format,
                temperature: config.temperature,
                top_p: config.top_p,
                top_k: config.top_k,
                max_new_tokens: config.max_new_tokens,
                require_distinct: config.require_distinct,
            })?;
            summary.done += 1;
        }
        out.sync()?;
        progress.tokens = summary.tokens as u64;
        progress.elapsed = start.elapsed();
        observer.update(&progress);
    }
    observer.finish(&progress);
    summary.elapsed = start.elapsed();
    Ok(summary)
}

/// One response to sample: its slot in the chunk, its prompt, the texts it must not echo.
struct Job<'a> {
    slot: usize,
    prompt: &'a Prompt,
    references: Vec<&'a str>,
}

#[derive(Default)]
struct Outcome {
    text: Option<String>,
    events: Vec<PairDegenerate>,
}

/// Samples one response per job, regenerating degenerate ones (attempt `k` with the seed
/// of `(seed, chunk, side, k)`), up to the policy's attempts.
fn sample<G: Generator + ?Sized>(
    generator: &G,
    config: &PairConfig,
    summary: &mut RunSummary,
    chunk: usize,
    side: Side,
    jobs: &[Job<'_>],
) -> Result<Vec<Outcome>> {
    let mut outcomes: Vec<Outcome> = jobs.iter().map(|_| Outcome::default()).collect();
    let mut todo: Vec<usize> = (0..jobs.len()).collect();
    let side_code = match side {
        Side::A => 0,
        Side::B => 1,
    };
    for attempt in 0..config.degenerate.max_attempts() {
        if todo.is_empty() {
            break;
        }
        if attempt > 0 {
            summary.retried += todo.len();
        }
        let seed = derive_seed(&[config.seed, chunk as u64, side_code, attempt as u64]);
        let prompts: Vec<Prompt> = todo.iter().map(|&j| jobs[j].prompt.clone()).collect();
        let context = || {
            format!(
                "chunk {chunk}, response {}, attempt {attempt}: generator",
                side.as_str()
            )
        };
        let completions = generator
            .generate(&prompts, &config.sampling(seed))
            .map_err(|source| FeedbackError::Model {
                context: context(),
                source,
            })?;
        summary.generator_calls += 1;
        if completions.len() != prompts.len() {
            return Err(FeedbackError::BadModelOutput {
                context: context(),
                message: format!(
                    "{} completions for {} prompts",
                    completions.len(),
                    prompts.len()
                ),
            });
        }
        summary.tokens += completions.iter().map(|c| c.token_ids.len()).sum::<usize>();
        let mut next = Vec::new();
        for (j, completion) in todo.into_iter().zip(completions) {
            let text = completion.text.trim().to_string();
            match detect(&text, &jobs[j].references) {
                None => outcomes[j].text = Some(text),
                Some(kind) => {
                    let counts = &mut summary.degenerate;
                    match kind {
                        DegenerateKind::Empty => counts.empty += 1,
                        DegenerateKind::Echo => counts.echo += 1,
                        DegenerateKind::Repetition => counts.repetition += 1,
                    }
                    outcomes[j].events.push(PairDegenerate {
                        response: side,
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

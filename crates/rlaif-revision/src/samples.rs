//! Helpful samples: the model's own answers to (helpful) prompts, which the supervised
//! stage mixes into the revisions so that the model stays helpful (Bai et al. 2022, §3.1:
//! the SL-CAI model is fine-tuned on revisions and on helpfulness samples).
//!
//! One JSON line per prompt ([`SampleRecord`]), in TRL's prompt-completion format plus the
//! prompt's id, category and the run's seed and format:
//!
//! ```json
//! {"id": "hp-0001", "category": "cooking", "index": 0, "prompt": "<user message>",
//!  "completion": "<answer>", "seed": 0, "format": "chat"}
//! ```
//!
//! The run uses the response settings of a [`RevisionConfig`] (temperature, top-p, top-k,
//! `max_new_tokens_response`, batch size, seed, degenerate policy, format, limit); the
//! critique / revision settings are not used. Like the revision loop it is batched in
//! fixed chunks of the prompt file, seeded per chunk, resumable (a chunk is written at
//! once and a rerun generates only the chunks with a missing id, writing the missing
//! records), and stoppable between chunks.

use crate::config::RevisionConfig;
use crate::error::Result;
use crate::output::open_records;
use crate::prompts_io::PromptRecord;
use crate::record::{DegenerateEvent, Stage};
use crate::resume::check_settings;
use crate::retry::{Job, generate_with_retries};
use crate::summary::RunSummary;
use rlaif_constitution::{PromptFormat, initial_prompt};
use rlaif_core::Generator;
use rlaif_core::progress::{Observer, Progress};
use rlaif_core::seed::derive_seed;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::path::Path;
use std::time::Instant;

/// One sampled answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SampleRecord {
    /// The prompt id.
    pub id: String,
    /// The prompt category, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// The index of the prompt in its file.
    pub index: usize,
    /// The user prompt.
    pub prompt: String,
    /// The model's answer.
    pub completion: String,
    /// Degenerate outputs met (and regenerated) on the way.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub degenerate: Vec<DegenerateEvent>,
    /// The run's seed.
    pub seed: u64,
    /// The prompt format used.
    pub format: PromptFormat,
}

/// Samples one answer per prompt with `generator`, appending [`SampleRecord`]s to
/// `output` and skipping prompts already there, after checking that they were written
/// with this run's `seed` and `format` (else [`RevisionError::SettingsMismatch`] naming
/// the line and the setting). Progress goes to `observer`; once it asks to stop, the run
/// stops between chunks. A prompt whose answer is still degenerate after the policy's
/// attempts is left out (counted in `dropped`; a rerun tries it again with the same seeds,
/// so it stays out).
///
/// [`RevisionError::SettingsMismatch`]: crate::RevisionError::SettingsMismatch
pub fn sample_responses<G: Generator + ?Sized>(
    generator: &G,
    prompts: &[PromptRecord],
    config: &RevisionConfig,
    output: &Path,
    observer: &dyn Observer,
) -> Result<RunSummary> {
    config.validate()?;
    let start = Instant::now();
    let prompts = &prompts[..config.limit.unwrap_or(usize::MAX).min(prompts.len())];
    // Sample records store the seed and the format; the other settings the check knows
    // (rounds, constitution, ...) are absent from them, so not checked.
    let (mut out, done) = open_records(output, |line, record| {
        check_settings(output, line, record, config, "")
    })?;
    let done: HashSet<String> = done.into_iter().collect();
    let mut summary = RunSummary {
        total: prompts.len(),
        ..RunSummary::default()
    };
    let pending = prompts.iter().filter(|p| !done.contains(&p.id)).count();
    if pending < prompts.len() {
        tracing::info!(
            "{}: {} of {} prompts already answered, {pending} to go",
            output.display(),
            prompts.len() - pending,
            prompts.len()
        );
    }
    let mut progress = Progress::new(
        "sample",
        "prompts",
        (prompts.len() - pending) as u64,
        prompts.len() as u64,
    );
    observer.update(&progress);
    for (chunk, batch) in prompts.chunks(config.batch_size).enumerate() {
        let base = chunk * config.batch_size;
        if batch.iter().all(|p| done.contains(&p.id)) {
            summary.skipped += batch.len();
            continue;
        }
        if observer.should_stop() {
            summary.stopped = true;
            break;
        }
        let jobs: Vec<Job> = batch
            .iter()
            .enumerate()
            .map(|(i, p)| Job {
                chain: i,
                prompt: initial_prompt(config.format, &p.prompt),
                references: vec![p.prompt.clone()],
            })
            .collect();
        let outcomes = generate_with_retries(
            generator,
            config,
            &mut summary,
            &jobs,
            config.max_new_tokens_response,
            (Stage::Response, None),
            |attempt| derive_seed(&[config.seed, chunk as u64, 0x5A4D, attempt as u64]),
        )?;
        for (i, (p, outcome)) in batch.iter().zip(outcomes).enumerate() {
            // Written by an earlier session: regenerated only because its chunk is
            // generated whole; whatever came out this time, it is skipped.
            if done.contains(&p.id) {
                summary.skipped += 1;
                continue;
            }
            progress.done += 1;
            let Some(completion) = outcome.text else {
                summary.dropped += 1;
                continue;
            };
            out.append(&SampleRecord {
                id: p.id.clone(),
                category: p.category.clone(),
                index: base + i,
                prompt: p.prompt.clone(),
                completion,
                degenerate: outcome.events,
                seed: config.seed,
                format: config.format,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RevisionError;
    use rlaif_core::{Completion, FinishReason, Prompt, SamplingParams};
    use std::sync::Mutex;
    use std::sync::atomic::AtomicBool;

    /// Answers "Answer to <prompt> (seed <seed>)", except that the prompt "echo me" is
    /// echoed the first two times it is asked; counts the prompts it is asked.
    struct Toy(Mutex<usize>, Mutex<usize>);

    impl Generator for Toy {
        fn generate(
            &self,
            prompts: &[Prompt],
            params: &SamplingParams,
        ) -> rlaif_core::Result<Vec<Completion>> {
            *self.0.lock().unwrap() += prompts.len();
            Ok(prompts
                .iter()
                .map(|p| {
                    let Prompt::Chat(c) = p else {
                        panic!("chat prompts")
                    };
                    let user = &c.messages[0].content;
                    let echoes = &mut *self.1.lock().unwrap();
                    let text = if user == "echo me" && *echoes < 2 {
                        *echoes += 1;
                        user.clone()
                    } else {
                        format!("Answer to {user} (seed {})", params.seed % 1000)
                    };
                    Completion {
                        text,
                        token_ids: vec![1; 4],
                        logprobs: vec![0.0; 4],
                        finish_reason: FinishReason::Eos,
                    }
                })
                .collect())
        }
    }

    #[test]
    fn samples_are_written_resumed_and_retried() {
        let prompts: Vec<PromptRecord> = ["bread", "echo me", "tea", "maps", "soup"]
            .iter()
            .enumerate()
            .map(|(i, p)| PromptRecord::new(format!("hp-{i}"), *p))
            .collect();
        let config = RevisionConfig {
            batch_size: 2,
            degenerate: crate::DegeneratePolicy::Retry { max_attempts: 8 },
            ..RevisionConfig::default()
        };
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("helpful.jsonl");
        let toy = Toy(Mutex::new(0), Mutex::new(0));
        let s = sample_responses(&toy, &prompts, &config, &out, &AtomicBool::new(false)).unwrap();
        assert_eq!((s.done, s.dropped, s.skipped), (5, 0, 0));
        assert_eq!((s.retried, s.degenerate.echo), (2, 2));
        let text = std::fs::read_to_string(&out).unwrap();
        let recs: Vec<SampleRecord> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(
            recs.iter().map(|r| r.index).collect::<Vec<_>>(),
            vec![0, 1, 2, 3, 4]
        );
        assert!(recs[1].completion.starts_with("Answer to echo me"));
        assert_eq!(recs[1].degenerate.len(), s.retried);
        assert!(recs[0].degenerate.is_empty());

        // Cut the last chunk's record away: a rerun regenerates that chunk only, with the
        // same seed, so the file is restored byte for byte.
        let kept: String = text.lines().take(4).map(|l| format!("{l}\n")).collect();
        std::fs::write(&out, kept).unwrap();
        let asked_before = *toy.0.lock().unwrap();
        let s = sample_responses(&toy, &prompts, &config, &out, &AtomicBool::new(false)).unwrap();
        assert_eq!((s.done, s.skipped), (1, 4));
        assert_eq!(
            *toy.0.lock().unwrap() - asked_before,
            1,
            "only the unfinished chunk"
        );
        assert_eq!(std::fs::read_to_string(&out).unwrap(), text);

        // Another seed can't resume onto this file.
        let other = RevisionConfig {
            seed: 9,
            ..config.clone()
        };
        let err =
            sample_responses(&toy, &prompts, &other, &out, &AtomicBool::new(false)).unwrap_err();
        assert!(
            matches!(err, RevisionError::SettingsMismatch { ref field, line: 1, .. } if field == "seed"),
            "{err}"
        );

        // A stop flag set before the start writes nothing new.
        let fresh = dir.path().join("stopped.jsonl");
        let s = sample_responses(&toy, &prompts, &config, &fresh, &AtomicBool::new(true)).unwrap();
        assert!(s.stopped && s.done == 0);
    }

    #[test]
    fn resuming_with_another_format_is_refused() {
        let prompts = vec![PromptRecord::new("hp-0", "bread")];
        let config = RevisionConfig::default();
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("helpful.jsonl");
        let toy = Toy(Mutex::new(0), Mutex::new(0));
        sample_responses(&toy, &prompts, &config, &out, &AtomicBool::new(false)).unwrap();
        let raw = RevisionConfig {
            format: PromptFormat::Raw,
            ..config
        };
        let err =
            sample_responses(&toy, &prompts, &raw, &out, &AtomicBool::new(false)).unwrap_err();
        match err {
            RevisionError::SettingsMismatch {
                field,
                found,
                expected,
                line: 1,
                ..
            } => assert_eq!(
                (field.as_str(), found.as_str(), expected.as_str()),
                ("format", "chat", "raw")
            ),
            other => panic!("expected a settings mismatch, got {other}"),
        }
    }

    #[test]
    fn a_written_prompt_regenerated_degenerate_is_skipped_not_dropped() {
        // Echoes "tea" once `echo` is set: a degenerate output.
        struct Flaky(std::sync::atomic::AtomicBool);
        impl Generator for Flaky {
            fn generate(
                &self,
                prompts: &[Prompt],
                _: &SamplingParams,
            ) -> rlaif_core::Result<Vec<Completion>> {
                let echo = self.0.load(std::sync::atomic::Ordering::SeqCst);
                Ok(prompts
                    .iter()
                    .map(|p| {
                        let Prompt::Chat(c) = p else {
                            panic!("chat prompts")
                        };
                        let user = &c.messages[0].content;
                        Completion {
                            text: if echo && user == "tea" {
                                user.clone()
                            } else {
                                format!("A fine answer about {user}.")
                            },
                            token_ids: vec![1; 4],
                            logprobs: vec![0.0; 4],
                            finish_reason: FinishReason::Eos,
                        }
                    })
                    .collect())
            }
        }
        let prompts = vec![
            PromptRecord::new("a", "bread"),
            PromptRecord::new("b", "tea"),
        ];
        let config = RevisionConfig {
            batch_size: 2,
            degenerate: crate::DegeneratePolicy::Drop,
            ..RevisionConfig::default()
        };
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("helpful.jsonl");
        let g = Flaky(AtomicBool::new(false));
        sample_responses(&g, &prompts, &config, &out, &AtomicBool::new(false)).unwrap();
        // The first record is lost; "tea" stays written, but now comes out degenerate when
        // its chunk is generated again.
        let text = std::fs::read_to_string(&out).unwrap();
        std::fs::write(&out, text.lines().nth(1).unwrap().to_string() + "\n").unwrap();
        g.0.store(true, std::sync::atomic::Ordering::SeqCst);
        let s = sample_responses(&g, &prompts, &config, &out, &AtomicBool::new(false)).unwrap();
        assert_eq!((s.done, s.skipped, s.dropped), (1, 1, 0));
    }
}

//! Generation with retries: one generator call per attempt for the jobs whose output is
//! still missing or degenerate, each attempt with its own seed.

use crate::config::RevisionConfig;
use crate::degenerate::detect;
use crate::error::{Result, RevisionError};
use crate::record::{DegenerateEvent, Stage};
use crate::summary::RunSummary;
use rlaif_core::{Generator, Prompt};

/// One generation job: the chain it belongs to, its prompt, the texts it must not echo.
pub(crate) struct Job {
    pub(crate) chain: usize,
    pub(crate) prompt: Prompt,
    pub(crate) references: Vec<String>,
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

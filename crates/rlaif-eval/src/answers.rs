//! Answers from a model to every prompt of the evaluation sets, greedy and sampled, kept in
//! one JSON Lines file for all models (`answers.jsonl`).
//!
//! Each set is cut into chunks of `batch_size` prompts in file order; chunk `c` of set `s`
//! is generated in one call with the seed `derive_seed([seed, mode, s, c])`, so a resumed
//! run (which regenerates a chunk that was cut short and keeps what was already written)
//! writes what an uninterrupted one would. Every record holds the settings that shaped it;
//! resuming a model's answers with other settings is an
//! [`EvalError::SettingsMismatch`] naming the setting.

use crate::error::{EvalError, Result};
use crate::refusal::is_refusal;
use crate::sets::{PromptSet, SetKind};
use rlaif_core::jsonl::{JsonlAppender, Verdict};
use rlaif_core::progress::{Observer, Progress};
use rlaif_core::seed::derive_seed;
use rlaif_core::{Conversation, FinishReason, Generator, Prompt, SamplingParams};
use rlaif_revision::degenerate::detect;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::path::Path;
use std::time::Instant;

/// How answers are generated.
///
/// | field | default | note |
/// |---|---|---|
/// | `max_new_tokens` | 96 | per answer |
/// | `batch_size` | 8 | prompts per generation call |
/// | `greedy` | true | one greedy answer per prompt (what the judge compares) |
/// | `temperature` | 0.7 | one sampled answer per prompt at this temperature (`None`: none) |
/// | `top_p` | 1.0 | nucleus threshold of the sampled answers |
/// | `seed` | 0 | the sampled answers' seed |
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AnswerConfig {
    /// Most new tokens per answer.
    pub max_new_tokens: usize,
    /// Prompts per generation call.
    pub batch_size: usize,
    /// Whether to write a greedy answer per prompt.
    pub greedy: bool,
    /// The temperature of one sampled answer per prompt (`None`: no sampled answers).
    pub temperature: Option<f32>,
    /// Nucleus threshold of the sampled answers.
    pub top_p: f32,
    /// Seed of the sampled answers.
    pub seed: u64,
}

impl Default for AnswerConfig {
    fn default() -> Self {
        Self {
            max_new_tokens: 96,
            batch_size: 8,
            greedy: true,
            temperature: Some(0.7),
            top_p: 1.0,
            seed: 0,
        }
    }
}

/// The mode of greedy answers.
pub const GREEDY: &str = "greedy";

impl AnswerConfig {
    /// The modes this configuration writes: `greedy` and/or `t=0.70`.
    pub fn modes(&self) -> Vec<String> {
        let mut m = Vec::new();
        if self.greedy {
            m.push(GREEDY.to_string());
        }
        if let Some(t) = self.temperature {
            m.push(sampled_mode(t));
        }
        m
    }

    fn validate(&self) -> Result<()> {
        if self.batch_size == 0 || self.max_new_tokens == 0 {
            return Err(EvalError::Config(
                "batch_size and max_new_tokens must be at least 1".into(),
            ));
        }
        if let Some(t) = self.temperature
            && !(t.is_finite() && t > 0.0)
        {
            return Err(EvalError::Config(format!(
                "temperature must be positive and finite (leave it out for no sampled \
                 answers), not {t}"
            )));
        }
        if !self.greedy && self.temperature.is_none() {
            return Err(EvalError::Config(
                "neither greedy nor sampled answers were asked for".into(),
            ));
        }
        Ok(())
    }

    fn params(&self, mode: &str, seed: u64) -> SamplingParams {
        if mode == GREEDY {
            SamplingParams::greedy(self.max_new_tokens)
        } else {
            SamplingParams {
                max_new_tokens: self.max_new_tokens,
                temperature: self.temperature.unwrap_or(1.0),
                top_p: self.top_p,
                seed,
                ..SamplingParams::default()
            }
        }
    }
}

/// The mode name of answers sampled at temperature `t`.
pub fn sampled_mode(t: f32) -> String {
    format!("t={t:.2}")
}

/// One answer: a line of `answers.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    /// The model's name.
    pub model: String,
    /// The prompt set's name.
    pub set: String,
    /// What the set measures.
    pub kind: SetKind,
    /// The prompt's id.
    pub id: String,
    /// The prompt.
    pub prompt: String,
    /// `greedy`, or `t=0.70` for a sampled answer.
    pub mode: String,
    /// The answer.
    pub text: String,
    /// New tokens.
    pub tokens: usize,
    /// Why generation stopped.
    pub finish_reason: FinishReason,
    /// The refusal detector's verdict ([`crate::refusal::is_refusal`]).
    pub refusal: bool,
    /// Words (runs of letters and digits).
    pub words: usize,
    /// Why the answer is degenerate (`empty`, `echo` of the prompt, `repetition`), if it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub degenerate: Option<String>,
    /// The settings that shaped it (checked on resume).
    pub settings: AnswerSettings,
}

/// The settings stored with each answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnswerSettings {
    /// [`AnswerConfig::max_new_tokens`].
    pub max_new_tokens: usize,
    /// [`AnswerConfig::batch_size`] (sampled answers depend on the chunking).
    pub batch_size: usize,
    /// [`AnswerConfig::top_p`].
    pub top_p: f32,
    /// [`AnswerConfig::seed`].
    pub seed: u64,
}

impl AnswerSettings {
    fn of(c: &AnswerConfig) -> Self {
        Self {
            max_new_tokens: c.max_new_tokens,
            batch_size: c.batch_size,
            top_p: c.top_p,
            seed: c.seed,
        }
    }

    fn first_difference(&self, now: &Self) -> Option<(&'static str, String, String)> {
        let d = |k, a: String, b: String| (a != b).then_some((k, a, b));
        d(
            "max_new_tokens",
            self.max_new_tokens.to_string(),
            now.max_new_tokens.to_string(),
        )
        .or_else(|| {
            d(
                "batch_size",
                self.batch_size.to_string(),
                now.batch_size.to_string(),
            )
        })
        .or_else(|| d("top_p", self.top_p.to_string(), now.top_p.to_string()))
        .or_else(|| d("seed", self.seed.to_string(), now.seed.to_string()))
    }
}

/// The key of an answer: model, set, prompt id, mode.
pub type AnswerKey = (String, String, String, String);

impl Answer {
    /// Its [`AnswerKey`].
    pub fn key(&self) -> AnswerKey {
        (
            self.model.clone(),
            self.set.clone(),
            self.id.clone(),
            self.mode.clone(),
        )
    }
}

/// What [`answer_sets`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct AnswerRun {
    /// Every answer of the file (all models), in file order.
    pub answers: Vec<Answer>,
    /// Answers written in this session.
    pub written: usize,
    /// Whether the observer stopped the run before its end.
    pub stopped: bool,
}

/// Reads an answer file (every record checked; errors name the file and line).
pub fn read_answers(path: impl AsRef<Path>) -> Result<Vec<Answer>> {
    let path = path.as_ref();
    let text = rlaif_core::jsonl::read_text(path)?;
    let mut out = Vec::new();
    for line in rlaif_core::jsonl::lines(path, &text) {
        out.push(line.parse::<Answer>()?);
    }
    Ok(out)
}

/// Answers every prompt of `sets` with `generator` under the name `model`, in the modes of
/// `config`, appending to the JSON Lines file `out` (shared by all models) and skipping
/// answers already there (see the [module docs](self)). The observer sees one step per
/// chunk and may stop the run between chunks.
pub fn answer_sets(
    generator: &dyn Generator,
    model: &str,
    sets: &[PromptSet],
    config: &AnswerConfig,
    out: &Path,
    observer: &dyn Observer,
) -> Result<AnswerRun> {
    config.validate()?;
    let now = AnswerSettings::of(config);
    let mut answers: Vec<Answer> = Vec::new();
    let mut appender = JsonlAppender::open::<EvalError>(out, |line| {
        let a: Answer = line.parse()?;
        if a.model == model
            && let Some((setting, was, now)) = a.settings.first_difference(&now)
        {
            return Err(EvalError::SettingsMismatch {
                file: out.to_path_buf(),
                line: line.number,
                setting: setting.to_string(),
                was,
                now,
            });
        }
        answers.push(a);
        Ok(Verdict::Keep)
    })?;
    let mut done: HashSet<AnswerKey> = answers.iter().map(Answer::key).collect();
    let modes = config.modes();
    // (mode index, set index, chunk index, set, mode)
    let chunks: Vec<([u64; 3], &PromptSet, &str)> = modes
        .iter()
        .enumerate()
        .flat_map(|(m, mode)| {
            sets.iter().enumerate().flat_map(move |(s, set)| {
                (0..set.prompts.len().div_ceil(config.batch_size))
                    .map(move |c| ([m as u64, s as u64, c as u64], set, mode.as_str()))
            })
        })
        .collect();
    let key = |set: &PromptSet, id: &str, mode: &str| -> AnswerKey {
        (
            model.to_string(),
            set.name.clone(),
            id.to_string(),
            mode.to_string(),
        )
    };
    let total = chunks.len() as u64;
    let start = Instant::now();
    let mut progress = Progress::new("eval answers", "batches", 0, total);
    let mut written = 0;
    let mut stopped = false;
    for (at, set, mode) in chunks {
        let c = at[2] as usize;
        let end = ((c + 1) * config.batch_size).min(set.prompts.len());
        let chunk = &set.prompts[c * config.batch_size..end];
        if chunk.iter().all(|p| done.contains(&key(set, &p.id, mode))) {
            progress.done += 1;
            continue;
        }
        if observer.should_stop() {
            stopped = true;
            break;
        }
        let prompts: Vec<Prompt> = chunk
            .iter()
            .map(|p| Prompt::Chat(Conversation::new().user(&p.prompt)))
            .collect();
        let seed = derive_seed(&[config.seed, at[0], at[1], at[2]]);
        let completions = generator.generate(&prompts, &config.params(mode, seed))?;
        for (p, comp) in chunk.iter().zip(completions) {
            let k = key(set, &p.id, mode);
            if done.contains(&k) {
                continue;
            }
            let text = comp.text.trim().to_string();
            let a = Answer {
                model: model.to_string(),
                set: set.name.clone(),
                kind: set.kind,
                id: p.id.clone(),
                prompt: p.prompt.clone(),
                mode: mode.to_string(),
                refusal: is_refusal(&text),
                words: rlaif_revision::degenerate::normalised_words(&text).len(),
                degenerate: detect(&text, &[&p.prompt]).map(|d| d.as_str().to_string()),
                tokens: comp.token_ids.len(),
                finish_reason: comp.finish_reason,
                text,
                settings: now.clone(),
            };
            progress.tokens += a.tokens as u64;
            appender.append(&a)?;
            done.insert(k);
            answers.push(a);
            written += 1;
        }
        progress.done += 1;
        progress.elapsed = start.elapsed();
        observer.update(&progress);
    }
    appender.sync()?;
    progress.elapsed = start.elapsed();
    observer.finish(&progress);
    Ok(AnswerRun {
        answers,
        written,
        stopped,
    })
}

//! Prompts for the rollouts: one or more prompt files mixed with weights (red-team and
//! helpful prompts, as Constitutional AI's RL stage mixes them, §4.2), drawn without
//! repetition within each file until it is used up.
//!
//! Iteration `it`, slot `i` draws its file from the weights with the random stream
//! `(seed, it)`; the `n`-th prompt drawn from file `k` is entry `n mod len` of the seeded
//! permutation `(seed, k, n div len)` of that file. The counts drawn per file are the data
//! position, saved in every checkpoint: a resumed run draws what an uninterrupted one would.

use crate::error::{PpoError, Result};
use rand::Rng;
use rand::seq::SliceRandom;
use rlaif_core::seed::{derive_seed, stream_rng};
use rlaif_core::{Conversation, Prompt};
use rlaif_revision::{PromptRecord, read_prompts};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// One prompt file and its share of the draws.
#[derive(Debug, Clone, PartialEq)]
pub struct PromptSet {
    /// The file (named in errors and in the samples).
    pub file: PathBuf,
    /// Its weight (relative; > 0).
    pub weight: f64,
    /// Its prompts.
    pub prompts: Vec<PromptRecord>,
}

impl PromptSet {
    /// Reads a prompt file (`rlaif_revision::read_prompts` format: `id`, `prompt`,
    /// optional `category`).
    pub fn read(file: impl AsRef<Path>, weight: f64) -> Result<Self> {
        let file = file.as_ref();
        let prompts = read_prompts(file)?;
        Self::new(file, weight, prompts)
    }

    /// A set from prompts in memory (`file` names it).
    pub fn new(file: impl Into<PathBuf>, weight: f64, prompts: Vec<PromptRecord>) -> Result<Self> {
        let file = file.into();
        if prompts.is_empty() {
            return Err(PpoError::Prompts {
                file,
                message: "the file holds no prompts".into(),
            });
        }
        if !(weight.is_finite() && weight > 0.0) {
            return Err(PpoError::Prompts {
                file,
                message: format!("the mixing weight must be finite and > 0, got {weight}"),
            });
        }
        Ok(Self {
            file,
            weight,
            prompts,
        })
    }
}

/// Where a draw came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Drawn {
    /// Index of the set.
    pub set: usize,
    /// Index of the prompt in its set.
    pub index: usize,
    /// The prompt record.
    pub record: PromptRecord,
}

/// The data position: prompts drawn so far from each set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrawPosition {
    /// Prompts drawn from each set, in set order.
    pub drawn: Vec<u64>,
}

/// Prompt sets mixed by weight.
#[derive(Debug, Clone, PartialEq)]
pub struct PromptMix {
    /// The sets, in the order given.
    pub sets: Vec<PromptSet>,
}

impl PromptMix {
    /// The mix of `sets` (at least one).
    pub fn new(sets: Vec<PromptSet>) -> Result<Self> {
        if sets.is_empty() {
            return Err(PpoError::Config {
                field: "prompts",
                message: "at least one prompt file is needed".into(),
            });
        }
        Ok(Self { sets })
    }

    /// The `n` prompts of iteration `it`, advancing `position`.
    pub fn draw(&self, seed: u64, it: usize, n: usize, position: &mut DrawPosition) -> Vec<Drawn> {
        position.drawn.resize(self.sets.len(), 0);
        let total: f64 = self.sets.iter().map(|s| s.weight).sum();
        let mut rng = stream_rng(derive_seed(&[seed, 0x5050_4F00, it as u64]), 0);
        (0..n)
            .map(|_| {
                let mut u = rng.random::<f64>() * total;
                let mut set = self.sets.len() - 1;
                for (k, s) in self.sets.iter().enumerate() {
                    if u < s.weight {
                        set = k;
                        break;
                    }
                    u -= s.weight;
                }
                let prompts = &self.sets[set].prompts;
                let len = prompts.len() as u64;
                let count = position.drawn[set];
                let mut order: Vec<usize> = (0..prompts.len()).collect();
                let pass = derive_seed(&[seed, set as u64, count / len]);
                order.shuffle(&mut stream_rng(pass, 0));
                position.drawn[set] += 1;
                let index = order[(count % len) as usize];
                Drawn {
                    set,
                    index,
                    record: prompts[index].clone(),
                }
            })
            .collect()
    }

    /// What identifies the data of a run (checked on resume): each file's name, weight,
    /// and its ids and prompts.
    pub fn fingerprint(&self) -> String {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        use std::hash::{Hash, Hasher};
        for s in &self.sets {
            s.weight.to_bits().hash(&mut h);
            for p in &s.prompts {
                (&p.id, &p.prompt).hash(&mut h);
            }
        }
        format!("{:016x}", h.finish())
    }
}

/// The conversation a prompt is answered in: the user message alone, rendered through the
/// chat template (as `rlaif_constitution::initial_prompt` does for chat prompts, so the
/// policy sees what it saw when the pairs for the preference model were sampled).
pub fn chat_prompt(text: &str) -> Prompt {
    Prompt::Chat(Conversation::new().user(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(name: &str, n: usize, weight: f64) -> PromptSet {
        let prompts = (0..n)
            .map(|i| PromptRecord::new(format!("{name}-{i}"), format!("{name} prompt {i}")))
            .collect();
        PromptSet::new(name, weight, prompts).unwrap()
    }

    #[test]
    fn draws_follow_the_weights_cover_each_file_and_resume_where_they_stopped() {
        let mix = PromptMix::new(vec![set("red", 10, 3.0), set("help", 40, 1.0)]).unwrap();
        let mut pos = DrawPosition::default();
        let mut all = vec![];
        for it in 0..100 {
            all.extend(mix.draw(7, it, 8, &mut pos));
        }
        let red = all.iter().filter(|d| d.set == 0).count() as f64 / all.len() as f64;
        assert!((red - 0.75).abs() < 0.05, "share of the first file {red}");
        // The first 10 draws from "red" are its 10 prompts, each once.
        let mut first: Vec<_> = all
            .iter()
            .filter(|d| d.set == 0)
            .take(10)
            .map(|d| d.record.id.clone())
            .collect();
        first.sort();
        first.dedup();
        assert_eq!(first.len(), 10);
        // Resuming from a saved position draws the same prompts.
        let mut p1 = DrawPosition::default();
        let a: Vec<_> = (0..5).flat_map(|it| mix.draw(7, it, 8, &mut p1)).collect();
        let mut saved = DrawPosition::default();
        for it in 0..3 {
            mix.draw(7, it, 8, &mut saved);
        }
        let saved: DrawPosition =
            serde_json::from_str(&serde_json::to_string(&saved).unwrap()).unwrap();
        let mut p2 = saved;
        let b: Vec<_> = (3..5).flat_map(|it| mix.draw(7, it, 8, &mut p2)).collect();
        assert_eq!(a[24..], b[..]);
    }

    #[test]
    fn an_empty_file_or_a_bad_weight_is_an_error_naming_the_file() {
        let e = PromptSet::new("empty.jsonl", 1.0, vec![]).unwrap_err();
        assert!(e.to_string().contains("empty.jsonl"), "{e}");
        let e = PromptSet::new("w.jsonl", 0.0, vec![PromptRecord::new("a", "b")]).unwrap_err();
        assert!(
            e.to_string().contains("w.jsonl") && e.to_string().contains("weight"),
            "{e}"
        );
    }
}

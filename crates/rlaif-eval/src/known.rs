//! Does the reward point the right way? The labeller's, the judge's and the preference
//! model's agreement with pairs whose better response is known (the hand-written
//! `data/pairs/known_preference.jsonl`), overall and by the pairs' `kind` tag — read this
//! before reading what PPO did with the reward.

use crate::error::Result;
use rlaif_constitution::Constitution;
use rlaif_core::progress::Observer;
use rlaif_core::{ChoiceScorer, Prompt, RewardModel};
use rlaif_feedback::math::sigmoid;
use rlaif_feedback::{Accuracy, LabelConfig, Pair, Side, label_all};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Agreement of one scorer with the known preferences.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KnownAccuracy {
    /// Who was asked (`labeller`, `judge: harmlessness`, `preference model`).
    pub who: String,
    /// Over every pair.
    pub overall: Accuracy,
    /// By the pairs' `kind` tag.
    pub by_kind: BTreeMap<String, Accuracy>,
}

/// The accuracy of a labeller configuration on `pairs` (those with a known preference).
pub fn labeller_accuracy(
    who: &str,
    scorer: &dyn ChoiceScorer,
    constitution: &Constitution,
    config: &LabelConfig,
    pairs: &[Pair],
    observer: &dyn Observer,
) -> Result<Option<KnownAccuracy>> {
    let (_, summary) = label_all(scorer, None, constitution, pairs, config, observer)?;
    Ok(summary.stats.accuracy.map(|overall| KnownAccuracy {
        who: who.to_string(),
        overall,
        by_kind: summary.stats.accuracy_by_kind.clone(),
    }))
}

/// The accuracy of a preference model on `pairs` (those with a known preference): the
/// known better response must score higher; the "probability" is `σ(r_better − r_worse)`.
pub fn pm_accuracy(
    pm: &dyn RewardModel,
    pairs: &[Pair],
    batch_size: usize,
) -> Result<Option<KnownAccuracy>> {
    let known: Vec<(&Pair, Side)> = pairs
        .iter()
        .filter_map(|p| p.known_better.map(|s| (p, s)))
        .collect();
    let mut overall = Tally::default();
    let mut by_kind: BTreeMap<String, Tally> = BTreeMap::new();
    for chunk in known.chunks(batch_size.max(1)) {
        let inputs: Vec<(Prompt, String)> = chunk
            .iter()
            .flat_map(|(p, s)| {
                let prompt = Prompt::Chat(p.conversation.clone());
                [
                    (prompt.clone(), p.response(*s).to_string()),
                    (prompt, p.response(s.other()).to_string()),
                ]
            })
            .collect();
        let scores = pm.score(&inputs)?;
        for ((p, _), s) in chunk.iter().zip(scores.chunks(2)) {
            let margin = (s[0] - s[1]) as f64;
            overall.add(margin);
            if let Some(k) = p.extra.get("kind").and_then(|v| v.as_str()) {
                by_kind.entry(k.to_string()).or_default().add(margin);
            }
        }
    }
    Ok(overall.accuracy().map(|overall| KnownAccuracy {
        who: "preference model".into(),
        overall,
        by_kind: by_kind
            .into_iter()
            .filter_map(|(k, t)| Some((k, t.accuracy()?)))
            .collect(),
    }))
}

#[derive(Default)]
struct Tally {
    pairs: usize,
    correct: usize,
    ties: usize,
    sum_p: f64,
}

impl Tally {
    fn add(&mut self, margin: f64) {
        self.pairs += 1;
        if margin > 0.0 {
            self.correct += 1;
        } else if margin == 0.0 {
            self.ties += 1;
        }
        self.sum_p += sigmoid(margin);
    }

    fn accuracy(&self) -> Option<Accuracy> {
        (self.pairs > 0).then(|| Accuracy {
            pairs: self.pairs,
            correct: self.correct,
            ties: self.ties,
            accuracy: self.correct as f64 / self.pairs as f64,
            mean_p_known_better: self.sum_p / self.pairs as f64,
        })
    }
}

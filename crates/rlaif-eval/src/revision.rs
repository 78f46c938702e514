//! How good is the critique → revision stage? The share of prompts whose final revision the
//! feedback model prefers to the initial response under the harmlessness judge
//! ([`crate::judge::aspect_config`]: the contrast method's harmless/harmful personas, or
//! the constitution's comparison principles asked in both orders with the pairwise
//! method). Measured with the feedback model itself, so that the settings of the stage
//! (temperature, rounds, token budgets) can be chosen by it.

use crate::error::Result;
use crate::judge::{Aspect, aspect_config};
use crate::winrate::{Z95, win_rate};
use rlaif_constitution::Constitution;
use rlaif_core::ChoiceScorer;
use rlaif_core::progress::Observer;
use rlaif_feedback::{LabelConfig, Pair, label_all};
use rlaif_revision::RevisionRecord;
use rlaif_revision::degenerate::{detect, normalised_words};
use serde::{Deserialize, Serialize};

/// What the feedback model thinks of a set of revisions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RevisionQuality {
    /// Prompts (records).
    pub prompts: usize,
    /// Final revisions preferred to the initial response (probability above ½).
    pub preferred: usize,
    /// Exactly ½ (including identical texts).
    pub ties: usize,
    /// `(preferred + ties / 2) / prompts`.
    pub rate: f64,
    /// Wilson 95 % interval of the rate.
    pub interval: [f64; 2],
    /// The mean probability that the revision is the better answer.
    pub mean_p: f64,
    /// Revisions word for word equal to the initial response.
    pub unchanged: usize,
    /// Final revisions that are degenerate (empty, an echo of the prompt, repetition).
    pub degenerate: usize,
    /// Mean words of the initial responses.
    pub mean_words_initial: f64,
    /// Mean words of the final revisions.
    pub mean_words_final: f64,
}

/// Judges every record's final revision against its initial response (see the
/// [module docs](self)). An empty text loses to a non-empty one without asking; two empty
/// texts tie.
pub fn revision_quality(
    scorer: &dyn ChoiceScorer,
    constitution: &Constitution,
    base: &LabelConfig,
    records: &[RevisionRecord],
    observer: &dyn Observer,
) -> Result<RevisionQuality> {
    let (config, constitution) = aspect_config(Aspect::Harmlessness, base, constitution);
    let mut ps: Vec<f64> = Vec::with_capacity(records.len());
    let mut ask: Vec<Pair> = Vec::new();
    for r in records {
        let (rev, init) = (r.final_revision.trim(), r.initial_response.trim());
        match (rev.is_empty(), init.is_empty()) {
            (true, true) => ps.push(0.5),
            (true, false) => ps.push(0.0),
            (false, true) => ps.push(1.0),
            _ if rev == init => ps.push(0.5),
            _ => ask.push(Pair::new(&r.id, &r.prompt, rev, init)),
        }
    }
    if !ask.is_empty() {
        let (labels, _) = label_all(
            scorer,
            None,
            &constitution,
            &ask,
            &LabelConfig {
                limit: None,
                ..config
            },
            observer,
        )?;
        ps.extend(labels.iter().map(|l| l.p_a));
    }
    let n = records.len();
    let preferred = ps.iter().filter(|&&p| p > 0.5).count();
    let ties = ps.iter().filter(|&&p| p == 0.5).count();
    let w = win_rate(preferred, ties, n - preferred - ties, Z95);
    let words = |f: &dyn Fn(&RevisionRecord) -> &str| {
        records
            .iter()
            .map(|r| normalised_words(f(r)).len() as f64)
            .sum::<f64>()
            / n.max(1) as f64
    };
    Ok(RevisionQuality {
        prompts: n,
        preferred,
        ties,
        rate: w.rate,
        interval: [w.low, w.high],
        mean_p: ps.iter().sum::<f64>() / n.max(1) as f64,
        unchanged: records
            .iter()
            .filter(|r| r.final_revision.trim() == r.initial_response.trim())
            .count(),
        degenerate: records
            .iter()
            .filter(|r| detect(&r.final_revision, &[&r.prompt]).is_some())
            .count(),
        mean_words_initial: words(&|r| &r.initial_response),
        mean_words_final: words(&|r| &r.final_revision),
    })
}

//! What a set of labels says: position bias, agreement of the two orders, the distribution
//! of the labels, accuracy against known preferences (overall and by tag), length bias;
//! and [`LabelSummary`], what a labelling run did.

use crate::label::{LabelRecord, Target};
use crate::math::{mean, pearson};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// Agreement of labels with known preferences.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Accuracy {
    /// Pairs with a known preference.
    pub pairs: usize,
    /// Pairs whose label gives the known better response more than ½.
    pub correct: usize,
    /// Pairs whose label is exactly ½ (not correct).
    pub ties: usize,
    /// `correct / pairs`.
    pub accuracy: f64,
    /// The mean probability the labels give the known better response.
    pub mean_p_known_better: f64,
}

impl Accuracy {
    fn of<'r>(records: impl IntoIterator<Item = &'r LabelRecord>) -> Option<Self> {
        let mut a = Accuracy::default();
        let mut sum = 0.0;
        for p in records.into_iter().filter_map(LabelRecord::p_known_better) {
            a.pairs += 1;
            sum += p;
            if p > 0.5 {
                a.correct += 1;
            } else if p == 0.5 {
                a.ties += 1;
            }
        }
        (a.pairs > 0).then(|| Accuracy {
            accuracy: a.correct as f64 / a.pairs as f64,
            mean_p_known_better: sum / a.pairs as f64,
            ..a
        })
    }
}

/// Statistics of a set of label records ([`LabelStats::from_records`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LabelStats {
    /// Records.
    pub pairs: usize,
    /// Position bias before anything cancels it: the mean `P(first option)` of every
    /// pairwise query (both orders, every principle and sample), before calibration and
    /// clamping. ½ is no bias. `None` without pairwise queries.
    pub mean_p_first: Option<f64>,
    /// The same after calibration (and clamping), when the labels were calibrated or
    /// clamped.
    pub mean_p_first_adjusted: Option<f64>,
    /// The share of pairs (asked in both orders) whose two orders prefer the same response
    /// (both order labels above ½, or both below); `None` when no pair was asked both ways.
    pub order_agreement: Option<f64>,
    /// How many `p_a` fall in `[k/10, (k+1)/10)` (the last bin includes 1).
    pub histogram: [usize; 10],
    /// The mean of `p_a`.
    pub mean_p_a: Option<f64>,
    /// The mean `|p_a − ½|`: how decided the labels are (0 to ½).
    pub mean_confidence: Option<f64>,
    /// Accuracy against the known preferences (pairs that have one).
    pub accuracy: Option<Accuracy>,
    /// Accuracy by the pairs' `length` tag (`similar`, `chosen_longer`, `rejected_longer`).
    pub accuracy_by_length: BTreeMap<String, Accuracy>,
    /// Accuracy by the pairs' `category` tag.
    pub accuracy_by_category: BTreeMap<String, Accuracy>,
    /// Accuracy by the pairs' `kind` tag.
    pub accuracy_by_kind: BTreeMap<String, Accuracy>,
    /// Length bias: the Pearson correlation between `p_a` and the word-count difference
    /// `words_a − words_b` over all pairs (positive: longer responses are preferred);
    /// `None` with fewer than two pairs or no variation.
    pub length_correlation: Option<f64>,
}

impl LabelStats {
    /// The statistics of `records`.
    pub fn from_records(records: &[LabelRecord]) -> Self {
        let pairwise = || {
            records
                .iter()
                .flat_map(|r| &r.queries)
                .filter(|q| matches!(q.target, Target::Ab | Target::Ba))
        };
        let mean_p_first = mean(pairwise().map(|q| q.p_raw));
        let adjusted = pairwise().any(|q| q.p != q.p_raw);
        let mut histogram = [0usize; 10];
        for r in records {
            let bin = ((r.p_a * 10.0).floor().max(0.0) as usize).min(9);
            histogram[bin] += 1;
        }
        let both: Vec<_> = records.iter().filter_map(|r| r.p_a_by_order).collect();
        let order_agreement = (!both.is_empty()).then(|| {
            let agree = both
                .iter()
                .filter(|o| (o.ab > 0.5 && o.ba > 0.5) || (o.ab < 0.5 && o.ba < 0.5))
                .count();
            agree as f64 / both.len() as f64
        });
        let by_tag = |key: &str| {
            let mut groups: BTreeMap<String, Vec<&LabelRecord>> = BTreeMap::new();
            for r in records {
                if let Some(t) = r.tag(key) {
                    groups.entry(t.to_string()).or_default().push(r);
                }
            }
            groups
                .into_iter()
                .filter_map(|(k, rs)| Some((k, Accuracy::of(rs)?)))
                .collect()
        };
        let xy: Vec<(f64, f64)> = records
            .iter()
            .map(|r| (r.p_a, r.words_a as f64 - r.words_b as f64))
            .collect();
        LabelStats {
            pairs: records.len(),
            mean_p_first,
            mean_p_first_adjusted: if adjusted {
                mean(pairwise().map(|q| q.p))
            } else {
                None
            },
            order_agreement,
            histogram,
            mean_p_a: mean(records.iter().map(|r| r.p_a)),
            mean_confidence: mean(records.iter().map(|r| (r.p_a - 0.5).abs())),
            accuracy: Accuracy::of(records),
            accuracy_by_length: by_tag("length"),
            accuracy_by_category: by_tag("category"),
            accuracy_by_kind: by_tag("kind"),
            length_correlation: pearson(&xy),
        }
    }
}

/// What a labelling run did, and the statistics of its labels.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LabelSummary {
    /// Pairs considered (the set, cut to the limit).
    pub total: usize,
    /// Pairs skipped because the output already had them.
    pub skipped: usize,
    /// Pairs labelled by this run.
    pub done: usize,
    /// Scorer calls made.
    pub scorer_calls: usize,
    /// Generator calls made (chain of thought).
    pub generator_calls: usize,
    /// Tokens generated (chain of thought).
    pub tokens: usize,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// Whether the run stopped early because its observer asked it to.
    pub stopped: bool,
    /// The statistics of every record of the output (those of earlier sessions too).
    pub stats: LabelStats,
}

fn opt(x: Option<f64>, digits: usize) -> String {
    x.map_or_else(|| "n/a".to_string(), |v| format!("{v:.digits$}"))
}

impl std::fmt::Display for LabelSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = &self.stats;
        write!(
            f,
            "{} pairs: {} labelled, {} skipped (already labelled); {} scorer calls, {} \
             generator calls, {} tokens, {:.1} s{}. Over the {} labels in the output: mean \
             P(first option) {} (position bias before cancelling; ½ is none){}, orders agree \
             on {}, mean p_a {}, mean |p_a − ½| {}, length correlation {}",
            self.total,
            self.done,
            self.skipped,
            self.scorer_calls,
            self.generator_calls,
            self.tokens,
            self.elapsed.as_secs_f64(),
            if self.stopped { ", stopped early" } else { "" },
            s.pairs,
            opt(s.mean_p_first, 3),
            s.mean_p_first_adjusted
                .map(|v| format!(", {v:.3} after calibration / clamping"))
                .unwrap_or_default(),
            s.order_agreement
                .map_or_else(|| "n/a".to_string(), |v| format!("{:.1} %", 100.0 * v)),
            opt(s.mean_p_a, 3),
            opt(s.mean_confidence, 3),
            opt(s.length_correlation, 3),
        )?;
        if let Some(a) = &s.accuracy {
            write!(
                f,
                "; accuracy against known preferences {:.1} % ({} of {}, {} ties, mean \
                 p(known better) {:.3})",
                100.0 * a.accuracy,
                a.correct,
                a.pairs,
                a.ties,
                a.mean_p_known_better
            )?;
            for (tag, groups) in [
                ("length", &s.accuracy_by_length),
                ("category", &s.accuracy_by_category),
                ("kind", &s.accuracy_by_kind),
            ] {
                if !groups.is_empty() {
                    let parts: Vec<String> = groups
                        .iter()
                        .map(|(k, a)| format!("{k} {:.1} % of {}", 100.0 * a.accuracy, a.pairs))
                        .collect();
                    write!(f, "; by {tag}: {}", parts.join(", "))?;
                }
            }
        }
        Ok(())
    }
}

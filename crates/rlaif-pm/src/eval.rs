//! Held-out evaluation: loss, accuracy on decisive pairs, calibration, score statistics.
//!
//! For each pair, `d = r_a − r_b` and the predicted `P(a ≻ b) = σ(d)`:
//!
//! - **loss**: the binary cross-entropy of `σ(d)` against the label `p`,
//!   `−[p·log σ(d) + (1 − p)·log σ(−d)]` (no margin, no centring term: the held-out log
//!   loss), weighted by the files' weights like the training loss;
//! - **accuracy**: over the pairs whose label is decisive, `|p − ½| > threshold`, the
//!   fraction where `d` has the sign of `p − ½` (a tie `d = 0` counts ½);
//! - **calibration**: the expected calibration error over equal-width reliability bins of
//!   the predicted probability (Bai et al. 2022, "Training a helpful and harmless
//!   assistant", Fig. 9; Guo et al. 2017), `ECE = Σ_b (n_b / N)·|mean σ − mean p|` where
//!   the mean label of a bin is the observed frequency for hard labels and the mean soft
//!   label otherwise. Each pair is counted in both orders, `(σ(d), p)` and
//!   `(σ(−d), 1 − p)`, so the diagram is symmetric and does not depend on which response
//!   a file lists first;
//! - **scores**: the mean and standard deviation of every response's score.

use crate::error::Result;
use crate::model::{RewardNet, mean_std, score_token_lists};
use burn::module::Module;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A comparison as token ids.
#[derive(Debug, Clone, PartialEq)]
pub struct EncodedPair {
    /// The comparison id.
    pub id: String,
    /// Its source label.
    pub source: String,
    /// Its loss weight.
    pub weight: f64,
    /// `P(a ≻ b)`.
    pub p_a: f64,
    /// Prompt ⊕ response a.
    pub a: Vec<u32>,
    /// Prompt ⊕ response b.
    pub b: Vec<u32>,
}

impl EncodedPair {
    /// The longer side's length.
    pub fn len(&self) -> usize {
        self.a.len().max(self.b.len())
    }

    /// Whether both sides are empty (never, for encoded comparisons).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One equal-width bin of the reliability diagram.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReliabilityBin {
    /// The bin's lower edge.
    pub lower: f64,
    /// The bin's upper edge.
    pub upper: f64,
    /// Predictions in it (each pair counts twice, once per order).
    pub count: usize,
    /// Their mean predicted probability (`None` when empty).
    pub mean_predicted: Option<f64>,
    /// Their mean label (`None` when empty).
    pub mean_label: Option<f64>,
}

/// The held-out numbers of one source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceEval {
    /// Pairs.
    pub pairs: usize,
    /// Mean log loss.
    pub loss: f64,
    /// Pairs whose label is decisive.
    pub decisive: usize,
    /// Accuracy on them (`None` when there are none).
    pub accuracy: Option<f64>,
}

/// The held-out evaluation at one point of the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalResult {
    /// Optimizer steps done when it was measured.
    pub step: usize,
    /// Pairs evaluated.
    pub pairs: usize,
    /// Weighted mean log loss (nats per pair).
    pub loss: f64,
    /// Pairs whose label is decisive.
    pub decisive: usize,
    /// Accuracy on the decisive pairs (`None` when there are none).
    pub accuracy: Option<f64>,
    /// Expected calibration error.
    pub ece: f64,
    /// The reliability diagram.
    pub bins: Vec<ReliabilityBin>,
    /// Mean score of the responses.
    pub score_mean: f64,
    /// Standard deviation of the scores.
    pub score_std: f64,
    /// The loss and accuracy per source.
    pub by_source: BTreeMap<String, SourceEval>,
}

/// One scored pair.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Outcome<'a> {
    pub(crate) r_a: f64,
    pub(crate) r_b: f64,
    pub(crate) p: f64,
    pub(crate) weight: f64,
    pub(crate) source: &'a str,
}

/// `log σ(x)`, stable.
fn log_sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        -(-x).exp().ln_1p()
    } else {
        x - x.exp().ln_1p()
    }
}

fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// Whether the sign of `d` agrees with the label: 1, ½ for a tie, 0.
fn agreement(d: f64, p: f64) -> f64 {
    if d == 0.0 {
        0.5
    } else if (d > 0.0) == (p > 0.5) {
        1.0
    } else {
        0.0
    }
}

/// The numbers of [`EvalResult`] from scored pairs (see the [module docs](self)).
pub(crate) fn metrics(
    outcomes: &[Outcome<'_>],
    step: usize,
    threshold: f64,
    n_bins: usize,
) -> EvalResult {
    let n_bins = n_bins.max(1);
    let mut bins = vec![(0usize, 0f64, 0f64); n_bins];
    let mut by_source: BTreeMap<&str, (usize, f64, f64, usize, f64)> = BTreeMap::new();
    let (mut loss_sum, mut weight_sum, mut decisive, mut correct) = (0.0, 0.0, 0usize, 0.0);
    for o in outcomes {
        let d = o.r_a - o.r_b;
        let nll = -(o.p * log_sigmoid(d) + (1.0 - o.p) * log_sigmoid(-d));
        loss_sum += o.weight * nll;
        weight_sum += o.weight;
        let s = by_source.entry(o.source).or_default();
        s.0 += 1;
        s.1 += o.weight * nll;
        s.2 += o.weight;
        if (o.p - 0.5).abs() > threshold {
            let a = agreement(d, o.p);
            decisive += 1;
            correct += a;
            s.3 += 1;
            s.4 += a;
        }
        for (q, t) in [(sigmoid(d), o.p), (sigmoid(-d), 1.0 - o.p)] {
            let k = ((q * n_bins as f64) as usize).min(n_bins - 1);
            bins[k].0 += 1;
            bins[k].1 += q;
            bins[k].2 += t;
        }
    }
    let total: usize = bins.iter().map(|b| b.0).sum();
    let ece = bins
        .iter()
        .filter(|b| b.0 > 0)
        .map(|b| (b.0 as f64 / total as f64) * ((b.1 - b.2) / b.0 as f64).abs())
        .sum();
    let (score_mean, score_std) = mean_std(outcomes.iter().flat_map(|o| [o.r_a, o.r_b]));
    EvalResult {
        step,
        pairs: outcomes.len(),
        loss: loss_sum / weight_sum.max(f64::MIN_POSITIVE),
        decisive,
        accuracy: (decisive > 0).then(|| correct / decisive as f64),
        ece,
        bins: bins
            .iter()
            .enumerate()
            .map(|(k, b)| ReliabilityBin {
                lower: k as f64 / n_bins as f64,
                upper: (k + 1) as f64 / n_bins as f64,
                count: b.0,
                mean_predicted: (b.0 > 0).then(|| b.1 / b.0 as f64),
                mean_label: (b.0 > 0).then(|| b.2 / b.0 as f64),
            })
            .collect(),
        score_mean,
        score_std,
        by_source: by_source
            .into_iter()
            .map(|(k, s)| {
                (
                    k.to_string(),
                    SourceEval {
                        pairs: s.0,
                        loss: s.1 / s.2.max(f64::MIN_POSITIVE),
                        decisive: s.3,
                        accuracy: (s.3 > 0).then(|| s.4 / s.3 as f64),
                    },
                )
            })
            .collect(),
    }
}

/// Scores every pair of `pairs` with `net` (a copy on its plain device, without
/// gradients) and measures the held-out numbers (see the [module docs](self)) at `step`:
/// accuracy over pairs with `|p − ½| > threshold`, calibration over `calibration_bins` bins.
pub fn evaluate(
    net: &RewardNet,
    pairs: &[EncodedPair],
    batch_size: usize,
    pad_id: u32,
    step: usize,
    threshold: f64,
    calibration_bins: usize,
) -> Result<EvalResult> {
    let net = net.valid();
    let seqs: Vec<Vec<u32>> = pairs
        .iter()
        .map(|p| p.a.clone())
        .chain(pairs.iter().map(|p| p.b.clone()))
        .collect();
    let scores = score_token_lists(
        &net.backbone,
        &net.head,
        &seqs,
        2 * batch_size.max(1),
        pad_id,
    )?;
    let n = pairs.len();
    let outcomes: Vec<Outcome<'_>> = pairs
        .iter()
        .enumerate()
        .map(|(i, p)| Outcome {
            r_a: f64::from(scores[i]),
            r_b: f64::from(scores[n + i]),
            p: p.p_a,
            weight: p.weight,
            source: &p.source,
        })
        .collect();
    Ok(metrics(&outcomes, step, threshold, calibration_bins))
}

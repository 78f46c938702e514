//! What the answers and judgements say, per model: refusal and over-refusal rates, length,
//! degenerate share, preference-model scores, win rates and Elo scores per aspect.

use crate::answers::{Answer, AnswerKey};
use crate::elo::{Comparison, fit_elo_bootstrap};
use crate::error::Result;
use crate::judge::{Aspect, Judgement};
use crate::sets::SetKind;
use crate::winrate::{Z95, wilson, win_rate};
use rlaif_core::{Conversation, Prompt, RewardModel};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// A distribution's summary.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Distribution {
    /// Values.
    pub n: usize,
    /// Mean.
    pub mean: f64,
    /// Standard deviation (population).
    pub sd: f64,
    /// Smallest.
    pub min: f64,
    /// 25 % quantile.
    pub q25: f64,
    /// Median.
    pub median: f64,
    /// 75 % quantile.
    pub q75: f64,
    /// Largest.
    pub max: f64,
}

impl Distribution {
    /// The summary of `xs` (`None` when empty or when a value is not finite).
    pub fn of(xs: &[f64]) -> Option<Self> {
        if xs.is_empty() || xs.iter().any(|x| !x.is_finite()) {
            return None;
        }
        let mut v = xs.to_vec();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let mean = v.iter().sum::<f64>() / n as f64;
        let sd = (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64).sqrt();
        // Linear interpolation between order statistics (type 7, numpy's default).
        let q = |p: f64| {
            let h = (n - 1) as f64 * p;
            let (lo, hi) = (h.floor() as usize, h.ceil() as usize);
            v[lo] + (h - lo as f64) * (v[hi] - v[lo])
        };
        Some(Self {
            n,
            mean,
            sd,
            min: v[0],
            q25: q(0.25),
            median: q(0.5),
            q75: q(0.75),
            max: v[n - 1],
        })
    }
}

/// What one model's answers to one set, in one mode, look like.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnswerStats {
    /// The model.
    pub model: String,
    /// The prompt set.
    pub set: String,
    /// What the set measures.
    pub kind: SetKind,
    /// `greedy` or `t=…`.
    pub mode: String,
    /// Answers.
    pub n: usize,
    /// Answers the refusal detector flags.
    pub refusals: usize,
    /// `refusals / n`: the refusal rate on a harmful set, the over-refusal rate on the
    /// others.
    pub refusal_rate: f64,
    /// Wilson 95 % interval of the refusal rate.
    pub refusal_interval: [f64; 2],
    /// Mean words per answer.
    pub mean_words: f64,
    /// The share of degenerate answers (empty, echo, repetition).
    pub degenerate_share: f64,
    /// The share of answers that stopped at the token budget.
    pub truncated_share: f64,
    /// The share of answers word for word equal to the first model's answer to the same
    /// prompt in the same mode (`None` for the first model).
    pub same_as_first: Option<f64>,
    /// The preference model's scores, when one was given.
    pub pm_score: Option<Distribution>,
}

/// Scores every answer with `pm` (in batches of `batch_size`), keyed by answer.
pub fn pm_scores(
    pm: &dyn RewardModel,
    answers: &[Answer],
    batch_size: usize,
) -> Result<HashMap<AnswerKey, f64>> {
    let mut out = HashMap::with_capacity(answers.len());
    for chunk in answers.chunks(batch_size.max(1)) {
        let pairs: Vec<(Prompt, String)> = chunk
            .iter()
            .map(|a| {
                (
                    Prompt::Chat(Conversation::new().user(&a.prompt)),
                    a.text.clone(),
                )
            })
            .collect();
        for (a, s) in chunk.iter().zip(pm.score(&pairs)?) {
            out.insert(a.key(), s as f64);
        }
    }
    Ok(out)
}

/// [`AnswerStats`] per model (in `models` order), set and mode.
pub fn answer_stats(
    answers: &[Answer],
    models: &[String],
    scores: Option<&HashMap<AnswerKey, f64>>,
) -> Vec<AnswerStats> {
    let mut groups: BTreeMap<(usize, String, String), Vec<&Answer>> = BTreeMap::new();
    let rank: HashMap<&str, usize> = models
        .iter()
        .enumerate()
        .map(|(i, m)| (m.as_str(), i))
        .collect();
    let mut text_of: HashMap<(&str, &str, &str, &str), &str> = HashMap::new();
    for a in answers {
        text_of.insert(
            (
                a.model.as_str(),
                a.set.as_str(),
                a.id.as_str(),
                a.mode.as_str(),
            ),
            a.text.as_str(),
        );
        if let Some(&r) = rank.get(a.model.as_str()) {
            groups
                .entry((r, a.set.clone(), a.mode.clone()))
                .or_default()
                .push(a);
        }
    }
    let first = models.first().map(String::as_str);
    groups
        .into_iter()
        .map(|((r, set, mode), group)| {
            let n = group.len();
            let share = |f: &dyn Fn(&Answer) -> bool| {
                group.iter().filter(|a| f(a)).count() as f64 / n as f64
            };
            let refusals = group.iter().filter(|a| a.refusal).count();
            let rate = refusals as f64 / n as f64;
            let (lo, hi) = wilson(rate, n as f64, Z95);
            let same_as_first = match first {
                Some(f) if r > 0 => {
                    let compared: Vec<bool> = group
                        .iter()
                        .filter_map(|a| {
                            text_of
                                .get(&(f, a.set.as_str(), a.id.as_str(), a.mode.as_str()))
                                .map(|t| *t == a.text)
                        })
                        .collect();
                    (!compared.is_empty()).then(|| {
                        compared.iter().filter(|&&x| x).count() as f64 / compared.len() as f64
                    })
                }
                _ => None,
            };
            let pm_score = scores.and_then(|s| {
                let v: Vec<f64> = group
                    .iter()
                    .filter_map(|a| s.get(&a.key()).copied())
                    .collect();
                Distribution::of(&v)
            });
            AnswerStats {
                model: models[r].clone(),
                kind: group[0].kind,
                set,
                mode,
                n,
                refusals,
                refusal_rate: rate,
                refusal_interval: [lo, hi],
                mean_words: group.iter().map(|a| a.words as f64).sum::<f64>() / n as f64,
                degenerate_share: share(&|a| a.degenerate.is_some()),
                truncated_share: share(&|a| a.finish_reason == rlaif_core::FinishReason::Length),
                same_as_first,
                pm_score,
            }
        })
        .collect()
}

/// One model's record against another on one aspect.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WinRow {
    /// The aspect.
    pub aspect: Aspect,
    /// The prompt set (`all` for every set together).
    pub set: String,
    /// The model whose wins are counted.
    pub model: String,
    /// Its opponent.
    pub opponent: String,
    /// Comparisons `model` won (judge's probability above ½).
    pub wins: usize,
    /// Comparisons at exactly ½.
    pub ties: usize,
    /// Comparisons it lost.
    pub losses: usize,
    /// `(wins + ties / 2) / n`.
    pub rate: f64,
    /// Wilson 95 % interval.
    pub interval: [f64; 2],
    /// The judge's mean probability that `model`'s answer is better.
    pub mean_p: f64,
}

/// The set name of rows over every set.
pub const ALL_SETS: &str = "all";

/// Win rates of each later model against each earlier one (`models` order), per aspect,
/// per set and over all sets. A comparison is a win when the judge's probability is above
/// ½, a tie at exactly ½.
pub fn win_rates(judgements: &[Judgement], models: &[String]) -> Vec<WinRow> {
    // (aspect, set, later model, earlier model) → (wins, ties, losses, Σ p)
    type Cell = (usize, usize, usize, f64);
    let mut cells: BTreeMap<(Aspect, String, usize, usize), Cell> = BTreeMap::new();
    let rank: HashMap<&str, usize> = models
        .iter()
        .enumerate()
        .map(|(i, m)| (m.as_str(), i))
        .collect();
    for j in judgements {
        let (Some(&a), Some(&b)) = (rank.get(j.model_a.as_str()), rank.get(j.model_b.as_str()))
        else {
            continue;
        };
        // Count from the later model's side.
        let (later, earlier, p) = if a > b {
            (a, b, j.p_a)
        } else {
            (b, a, 1.0 - j.p_a)
        };
        for set in [j.set.clone(), ALL_SETS.to_string()] {
            let c = cells.entry((j.aspect, set, later, earlier)).or_default();
            if p > 0.5 {
                c.0 += 1;
            } else if p == 0.5 {
                c.1 += 1;
            } else {
                c.2 += 1;
            }
            c.3 += p;
        }
    }
    cells
        .into_iter()
        .map(|((aspect, set, m, o), (w, t, l, sum))| {
            let r = win_rate(w, t, l, Z95);
            WinRow {
                aspect,
                set,
                model: models[m].clone(),
                opponent: models[o].clone(),
                wins: w,
                ties: t,
                losses: l,
                rate: r.rate,
                interval: [r.low, r.high],
                mean_p: sum / (w + t + l) as f64,
            }
        })
        .collect()
}

/// A model's Elo score on one aspect.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EloRow {
    /// The aspect.
    pub aspect: Aspect,
    /// The model.
    pub model: String,
    /// Bradley–Terry maximum-likelihood Elo, mean 0 over the models.
    pub elo: f64,
    /// 95 % bootstrap interval.
    pub interval: [f64; 2],
    /// Comparisons the model took part in.
    pub comparisons: usize,
}

/// Elo scores per aspect from every judgement (all sets): a win is 1, a tie ½ (as in
/// [`win_rates`]), fitted by [`fit_elo_bootstrap`] with `rounds` bootstrap refits.
pub fn elo_scores(
    judgements: &[Judgement],
    models: &[String],
    rounds: usize,
    seed: u64,
) -> Vec<EloRow> {
    let rank: HashMap<&str, usize> = models
        .iter()
        .enumerate()
        .map(|(i, m)| (m.as_str(), i))
        .collect();
    let mut rows = Vec::new();
    for aspect in Aspect::ALL {
        let comps: Vec<Comparison> = judgements
            .iter()
            .filter(|j| j.aspect == aspect)
            .filter_map(|j| {
                let a = *rank.get(j.model_a.as_str())?;
                let b = *rank.get(j.model_b.as_str())?;
                let score = if j.p_a > 0.5 {
                    1.0
                } else if j.p_a < 0.5 {
                    0.0
                } else {
                    0.5
                };
                Some(Comparison { a, b, score })
            })
            .collect();
        if comps.is_empty() {
            continue;
        }
        let fit = fit_elo_bootstrap(models.len(), &comps, rounds, seed);
        for (i, m) in models.iter().enumerate() {
            rows.push(EloRow {
                aspect,
                model: m.clone(),
                elo: fit.elo[i],
                interval: [fit.low[i], fit.high[i]],
                comparisons: comps.iter().filter(|c| c.a == i || c.b == i).count(),
            });
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_like_numpy() {
        // numpy.percentile([1, 2, 3, 4, 10], [25, 50, 75]) = [2, 3, 4]; mean 4, sd √10.
        let d = Distribution::of(&[4.0, 1.0, 10.0, 2.0, 3.0]).unwrap();
        assert_eq!((d.q25, d.median, d.q75), (2.0, 3.0, 4.0));
        assert_eq!((d.min, d.max, d.mean), (1.0, 10.0, 4.0));
        assert!((d.sd - 10f64.sqrt()).abs() < 1e-12);
        // numpy.percentile([1, 2], 25) = 1.25
        assert_eq!(Distribution::of(&[2.0, 1.0]).unwrap().q25, 1.25);
        assert!(Distribution::of(&[]).is_none());
        assert!(Distribution::of(&[1.0, f64::NAN]).is_none());
    }

    fn j(aspect: Aspect, a: &str, b: &str, p_a: f64) -> Judgement {
        Judgement {
            aspect,
            set: "s".into(),
            id: "x".into(),
            model_a: a.into(),
            model_b: b.into(),
            p_a,
        }
    }

    #[test]
    fn win_rates_count_from_the_later_models_side() {
        let models = vec!["base".to_string(), "rl".to_string()];
        let h = Aspect::Harmlessness;
        // rl wins 3 (twice as model_a with p > ½, once as model_b with p_a < ½), ties 1,
        // loses 1.
        let js = vec![
            j(h, "rl", "base", 0.9),
            j(h, "rl", "base", 0.6),
            j(h, "base", "rl", 0.2),
            j(h, "base", "rl", 0.5),
            j(h, "base", "rl", 0.7),
        ];
        let rows = win_rates(&js, &models);
        let all = rows.iter().find(|r| r.set == ALL_SETS).unwrap();
        assert_eq!((all.model.as_str(), all.opponent.as_str()), ("rl", "base"));
        assert_eq!((all.wins, all.ties, all.losses), (3, 1, 1));
        assert!((all.rate - 0.7).abs() < 1e-12);
        assert!((all.mean_p - (0.9 + 0.6 + 0.8 + 0.5 + 0.3) / 5.0).abs() < 1e-12);
        assert!(all.interval[0] < 0.7 && all.interval[1] > 0.7);
        // Elo: rl ahead of base on harmlessness, nothing on helpfulness.
        let elo = elo_scores(&js, &models, 50, 0);
        assert_eq!(elo.len(), 2);
        assert!(elo[1].elo > 0.0 && elo[0].elo < 0.0, "{elo:?}");
        assert_eq!(elo[1].comparisons, 5);
    }
}

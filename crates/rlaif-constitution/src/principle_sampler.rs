//! Seeded, weighted principle sampling.
//!
//! Every chain (one red-team prompt's critique / revision rounds, or one comparison) draws
//! from its own random stream: stream `chain_index` of the ChaCha8 generator seeded with
//! `seed` ([`rlaif_core::seed::stream_rng`], the convention of `rlaif-lm`'s sampler). A
//! chain's draws therefore depend only on `(seed, chain_index)`, not on the batch around it
//! or on the order chains are processed.

use crate::error::{ConstitutionError, Result};
use rand::Rng;
use rlaif_core::seed::stream_rng;
use serde::{Deserialize, Serialize};

/// Whether a principle may be drawn twice in one chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Replacement {
    /// Each round draws independently from all principles (the paper's procedure).
    #[default]
    With,
    /// Each round draws from the principles not yet drawn in this chain, with probability
    /// proportional to their weights (successive weighted sampling).
    Without,
}

/// One draw: which principle a round uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Draw {
    /// The round, from 0.
    pub round: usize,
    /// The id of the principle drawn.
    pub principle_id: String,
}

/// Draws principle ids with probability proportional to their weights.
#[derive(Debug, Clone)]
pub struct PrincipleSampler {
    ids: Vec<String>,
    weights: Vec<f64>,
    seed: u64,
}

impl PrincipleSampler {
    /// A sampler over `(id, weight)` pairs. Errors: no pairs, or a weight that is not a
    /// positive finite number.
    pub fn new(items: impl IntoIterator<Item = (String, f64)>, seed: u64) -> Result<Self> {
        let (ids, weights): (Vec<String>, Vec<f64>) = items.into_iter().unzip();
        if ids.is_empty() {
            return Err(ConstitutionError::NoPrinciples);
        }
        if let Some(i) = weights.iter().position(|w| !(w.is_finite() && *w > 0.0)) {
            return Err(ConstitutionError::BadWeight {
                id: ids[i].clone(),
                weight: weights[i],
            });
        }
        Ok(Self { ids, weights, seed })
    }

    /// A sampler over the critique / revision principles of `c`.
    pub fn for_critiques(c: &crate::Constitution, seed: u64) -> Result<Self> {
        Self::new(c.principle_weights(), seed)
    }

    /// A sampler over the comparison principles of `c`.
    pub fn for_comparisons(c: &crate::Constitution, seed: u64) -> Result<Self> {
        Self::new(c.comparison_weights(), seed)
    }

    /// The ids, in order.
    pub fn ids(&self) -> &[String] {
        &self.ids
    }

    /// The weights normalised to probabilities, in the order of [`Self::ids`].
    pub fn probabilities(&self) -> Vec<f64> {
        let total: f64 = self.weights.iter().sum();
        self.weights.iter().map(|w| w / total).collect()
    }

    /// The seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Draws the principles of `rounds` rounds of chain `chain_index`. Without replacement,
    /// `rounds` may not exceed the number of principles.
    pub fn draw_chain(
        &self,
        chain_index: usize,
        rounds: usize,
        replacement: Replacement,
    ) -> Result<Vec<Draw>> {
        if replacement == Replacement::Without && rounds > self.ids.len() {
            return Err(ConstitutionError::TooManyRounds {
                rounds,
                available: self.ids.len(),
            });
        }
        let mut rng = stream_rng(self.seed, chain_index as u64);
        let mut weights = self.weights.clone();
        let mut out = Vec::with_capacity(rounds);
        for round in 0..rounds {
            let i = pick(&weights, &mut rng);
            if replacement == Replacement::Without {
                weights[i] = 0.0;
            }
            out.push(Draw {
                round,
                principle_id: self.ids[i].clone(),
            });
        }
        Ok(out)
    }

    /// One draw for chain `chain_index` (the first round of [`Self::draw_chain`]), e.g. the
    /// comparison principle of one feedback query.
    pub fn draw_one(&self, chain_index: usize) -> Draw {
        let mut rng = stream_rng(self.seed, chain_index as u64);
        Draw {
            round: 0,
            principle_id: self.ids[pick(&self.weights, &mut rng)].clone(),
        }
    }
}

/// Index drawn with probability `weights[i] / sum` (some weights positive).
fn pick(weights: &[f64], rng: &mut impl Rng) -> usize {
    let total: f64 = weights.iter().sum();
    let u = rng.random::<f64>() * total;
    let mut acc = 0.0;
    let mut last = 0;
    for (i, &w) in weights.iter().enumerate() {
        if w <= 0.0 {
            continue;
        }
        acc += w;
        last = i;
        if u < acc {
            return i;
        }
    }
    // Rounding put `u` at the very end: the last positive weight.
    last
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chains_draw_from_stream_chain_index_of_chacha8_seeded_with_the_seed() {
        use rand::SeedableRng;
        let ids = ["a", "b", "c", "d"];
        let weights = [1.0, 2.0, 3.0, 4.0];
        let items = ids.iter().zip(weights).map(|(id, w)| (id.to_string(), w));
        let sampler = PrincipleSampler::new(items, 99).unwrap();
        for chain in [0usize, 1, 7, 1 << 40] {
            // the stream the sampler has always used: ChaCha8 from the seed, stream = chain
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(99);
            rng.set_stream(chain as u64);
            let want: Vec<&str> = (0..6).map(|_| ids[pick(&weights, &mut rng)]).collect();
            let got = sampler.draw_chain(chain, 6, Replacement::With).unwrap();
            let got: Vec<&str> = got.iter().map(|d| d.principle_id.as_str()).collect();
            assert_eq!(got, want, "chain {chain}");
        }
    }

    #[test]
    fn pick_skips_zero_weights() {
        let mut rng = stream_rng(1, 0);
        for _ in 0..1000 {
            let i = pick(&[0.0, 1.0, 0.0, 2.0, 0.0], &mut rng);
            assert!(i == 1 || i == 3);
        }
    }
}

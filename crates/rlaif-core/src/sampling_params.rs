//! Sampling parameters.

use crate::{Error, Result};
use serde::{Deserialize, Serialize};

/// How to pick each new token.
///
/// Defaults: `max_new_tokens = 256`, `temperature = 1.0`, no top-k, `top_p = 1.0`,
/// `seed = 0`, no stop strings, stop at EOS.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SamplingParams {
    /// The most tokens generated per prompt.
    pub max_new_tokens: usize,
    /// Logits are divided by this before sampling; `0.0` means greedy (argmax).
    pub temperature: f32,
    /// Keep only the `k` most likely tokens (`None`: all).
    pub top_k: Option<usize>,
    /// Nucleus sampling: keep the smallest set of most likely tokens whose probability
    /// reaches `top_p` (`1.0`: all).
    pub top_p: f32,
    /// Seed of the random number generator; prompt `i` of a batch draws from its own
    /// stream derived from `(seed, i)`, so results do not depend on the batch size.
    pub seed: u64,
    /// Generation stops when the text contains one of these (the text is cut before it).
    pub stop: Vec<String>,
    /// Stop at the model's end-of-sequence token(s).
    pub stop_at_eos: bool,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            max_new_tokens: 256,
            temperature: 1.0,
            top_k: None,
            top_p: 1.0,
            seed: 0,
            stop: Vec::new(),
            stop_at_eos: true,
        }
    }
}

impl SamplingParams {
    /// Greedy decoding of at most `max_new_tokens` tokens.
    pub fn greedy(max_new_tokens: usize) -> Self {
        Self {
            max_new_tokens,
            temperature: 0.0,
            ..Self::default()
        }
    }

    /// Whether this is greedy decoding.
    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0
    }

    /// Checks the ranges: temperature ≥ 0 and finite, top-p in (0, 1], top-k ≥ 1.
    pub fn validate(&self) -> Result<()> {
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return Err(Error::InvalidRequest(format!(
                "temperature must be a finite number >= 0, got {}",
                self.temperature
            )));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(Error::InvalidRequest(format!(
                "top_p must be in (0, 1], got {}",
                self.top_p
            )));
        }
        if self.top_k == Some(0) {
            return Err(Error::InvalidRequest("top_k must be at least 1".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_rejects_bad_ranges() {
        let bad = [
            SamplingParams {
                temperature: -1.0,
                ..Default::default()
            },
            SamplingParams {
                temperature: f32::NAN,
                ..Default::default()
            },
            SamplingParams {
                top_p: 0.0,
                ..Default::default()
            },
            SamplingParams {
                top_p: 1.5,
                ..Default::default()
            },
            SamplingParams {
                top_k: Some(0),
                ..Default::default()
            },
        ];
        for p in bad {
            assert!(
                matches!(p.validate(), Err(Error::InvalidRequest(_))),
                "{p:?}"
            );
        }
        assert!(SamplingParams::greedy(8).validate().is_ok());
    }

    #[test]
    fn unknown_field_is_rejected() {
        let e = serde_json::from_str::<SamplingParams>(r#"{"temprature": 0.5}"#).unwrap_err();
        assert!(e.to_string().contains("temprature"));
    }
}

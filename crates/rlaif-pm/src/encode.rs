//! Comparisons → token ids (both sides rendered as [`crate::PreferenceModel`] reads them).

use crate::config::LengthPolicy;
use crate::data::Comparison;
use crate::error::Result;
use crate::eval::EncodedPair;
use crate::model::{EncodeError, PreferenceModel};
use serde::{Deserialize, Serialize};

/// Counts from [`encode_comparisons`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncodeStats {
    /// Comparisons encoded.
    pub pairs: usize,
    /// Comparisons with a response cut at the length limit.
    pub truncated: usize,
    /// Comparisons left out because a prompt alone reaches the limit
    /// ([`LengthPolicy::Skip`]).
    pub skipped: usize,
    /// Tokens of both sides, in all.
    pub tokens: usize,
}

/// Encodes both sides of every comparison within `max_len` tokens (also bounded by the
/// model's positions). Errors name the comparison's file, line and id.
pub fn encode_comparisons(
    pm: &PreferenceModel,
    comparisons: &[Comparison],
    max_len: usize,
    policy: LengthPolicy,
) -> Result<(Vec<EncodedPair>, EncodeStats)> {
    let max_len = max_len.min(pm.lm.model.max_positions());
    let mut stats = EncodeStats::default();
    let mut out = Vec::with_capacity(comparisons.len());
    'pairs: for c in comparisons {
        let mut sides = Vec::with_capacity(2);
        for response in [&c.response_a, &c.response_b] {
            match pm.encode_text(&c.prompt, response, max_len) {
                Ok(e) => sides.push(e),
                Err(EncodeError::PromptTooLong { .. }) if policy == LengthPolicy::Skip => {
                    stats.skipped += 1;
                    continue 'pairs;
                }
                Err(e) => {
                    return Err(e.located(c.origin.file.clone(), c.origin.line, &c.id, max_len));
                }
            }
        }
        let (b, a) = (
            sides.pop().expect("two sides"),
            sides.pop().expect("two sides"),
        );
        stats.pairs += 1;
        stats.truncated += usize::from(a.truncated || b.truncated);
        stats.tokens += a.tokens.len() + b.tokens.len();
        out.push(EncodedPair {
            id: c.id.clone(),
            source: c.source.clone(),
            weight: c.weight,
            p_a: c.p_a,
            a: a.tokens,
            b: b.tokens,
        });
    }
    Ok((out, stats))
}

//! Encoded examples → padded tensors, and the completion-only loss.

use crate::encode::EncodedExample;
use burn::prelude::*;
use rlaif_lm::score::{pad_right, token_logprobs};
use rlaif_lm::{Llama, LmError};

/// A right-padded batch.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Token ids `[B, T]`.
    pub tokens: Tensor<2, Int>,
    /// `real[b][t]`: token `t` of row `b` is not padding.
    pub real: Vec<Vec<bool>>,
    /// `[B, T − 1]`: 1 where the target (token `t + 1`) is a completion token, else 0.
    pub loss_mask: Tensor<2>,
}

/// Pads `examples` on the right into one batch on `device`.
pub fn collate(examples: &[&EncodedExample], pad_id: u32, device: &Device) -> Batch {
    let seqs: Vec<Vec<u32>> = examples.iter().map(|e| e.tokens.clone()).collect();
    let (tokens, real) = pad_right(&seqs, pad_id, device);
    let t = tokens.dims()[1];
    let mut mask = Vec::with_capacity(examples.len() * (t - 1));
    for e in examples {
        // Entry j predicts token j + 1: loss where that token is in the completion.
        mask.extend((0..t - 1).map(|j| {
            let target = j + 1;
            f32::from(u8::from(target >= e.prompt_len && target < e.tokens.len()))
        }));
    }
    Batch {
        tokens,
        real,
        loss_mask: Tensor::from_data(TensorData::new(mask, [examples.len(), t - 1]), device),
    }
}

/// `−Σ log p(completion token | everything before it)` over the batch, per row `[B]`.
/// Differentiable; divide by the token count for the mean. A batch of sequences shorter
/// than 2 tokens is an error.
pub fn completion_nll(model: &Llama, batch: &Batch) -> Result<Tensor<1>, LmError> {
    let lp = token_logprobs(model, batch.tokens.clone(), &batch.real)?;
    Ok((lp * batch.loss_mask.clone())
        .sum_dim(1)
        .squeeze_dim::<1>(1)
        .neg())
}

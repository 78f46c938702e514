//! Rollouts: generation, the batch layout, and the forward passes that PPO's update
//! repeats exactly.
//!
//! Layout of an iteration's `B` rollouts (one `[B, P + R]` token matrix for every forward
//! pass): prompts left-padded to the longest prompt `P`, responses right-padded to the
//! longest response `R`. Positions count real tokens only and padded keys are masked, so
//! every row computes what it would alone. The response token `t` of a row sits at column
//! `P + t` and is predicted by the hidden state at column `P + t − 1`; only those `R`
//! hidden states go through the output projection.
//!
//! Every log-probability (policy at rollout time, policy during the update, reference)
//! divides the logits by the sampling temperature T ("The N implementation details of
//! RLHF with PPO", Huang et al. 2023: otherwise the KL grows too fast and the ratio is not
//! 1 before the first update), and all of them go through [`policy_logprobs`], the same
//! function on the same layout, so the ratio before the first update is exactly 1.

use crate::error::{PpoError, Result};
use burn::module::{Module, Param};
use burn::prelude::*;
use rlaif_kernels::token_logprobs_with_entropy;
use rlaif_lm::Llama;
use rlaif_lm::model::positions_and_mask;
use rlaif_pm::RewardNet;

/// An iteration's prompts and responses as one padded token matrix.
#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    /// Columns of prompt (left-padded).
    pub p: usize,
    /// Columns of response (right-padded).
    pub r: usize,
    /// Row-major `[B, P + R]` token ids (padding is the pad id).
    pub tokens: Vec<i64>,
    /// `[B][P + R]`: true for real tokens.
    pub real: Vec<Vec<bool>>,
    /// Row-major `[B, R]`: 1 for real response tokens, 0 for padding.
    pub mask: Vec<f32>,
}

impl Layout {
    /// Lays out prompts (each non-empty) and responses (each non-empty) with `pad_id`.
    pub fn new(prompts: &[Vec<u32>], responses: &[Vec<u32>], pad_id: u32) -> Result<Self> {
        if prompts.len() != responses.len() {
            return Err(PpoError::Config {
                field: "rollouts",
                message: format!("{} prompts, {} responses", prompts.len(), responses.len()),
            });
        }
        if let Some(i) = prompts.iter().position(Vec::is_empty) {
            return Err(rlaif_lm::LmError::InvalidRequest(format!("prompt {i} is empty")).into());
        }
        if let Some(i) = responses.iter().position(Vec::is_empty) {
            return Err(rlaif_lm::LmError::InvalidRequest(format!("response {i} is empty")).into());
        }
        let p = prompts.iter().map(Vec::len).max().unwrap_or(0);
        let r = responses.iter().map(Vec::len).max().unwrap_or(0);
        let b = prompts.len();
        let mut tokens = Vec::with_capacity(b * (p + r));
        let mut real = Vec::with_capacity(b);
        let mut mask = Vec::with_capacity(b * r);
        let pad = i64::from(pad_id);
        for (pr, re) in prompts.iter().zip(responses) {
            let left = p - pr.len();
            let right = r - re.len();
            tokens.extend(std::iter::repeat_n(pad, left));
            tokens.extend(pr.iter().map(|&t| i64::from(t)));
            tokens.extend(re.iter().map(|&t| i64::from(t)));
            tokens.extend(std::iter::repeat_n(pad, right));
            let mut row = vec![false; left];
            row.resize(left + pr.len() + re.len(), true);
            row.resize(p + r, false);
            real.push(row);
            mask.extend(std::iter::repeat_n(1.0, re.len()));
            mask.extend(std::iter::repeat_n(0.0, right));
        }
        Ok(Self {
            p,
            r,
            tokens,
            real,
            mask,
        })
    }

    /// Rows in the layout.
    pub fn rows(&self) -> usize {
        self.real.len()
    }

    /// The tokens `[n, P + R]`, real-token rows and response mask `[n, R]` of rows `idx`.
    pub fn batch(
        &self,
        idx: &[usize],
        device: &Device,
    ) -> (Tensor<2, Int>, Vec<Vec<bool>>, Tensor<2>) {
        let w = self.p + self.r;
        let toks: Vec<i64> = idx
            .iter()
            .flat_map(|&i| self.tokens[i * w..(i + 1) * w].iter().copied())
            .collect();
        let real = idx.iter().map(|&i| self.real[i].clone()).collect();
        (
            Tensor::from_data(TensorData::new(toks, [idx.len(), w]), device),
            real,
            rows(&self.mask, self.r, idx, device),
        )
    }
}

/// Rows `idx` of a row-major `[B, r]` host matrix, as a tensor `[n, r]`.
pub fn rows(data: &[f32], r: usize, idx: &[usize], device: &Device) -> Tensor<2> {
    let v: Vec<f32> = idx
        .iter()
        .flat_map(|&i| data[i * r..(i + 1) * r].iter().copied())
        .collect();
    Tensor::from_data(TensorData::new(v, [idx.len(), r]), device)
}

/// A tensor read back to the host.
pub fn host<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>> {
    t.try_into_vec_as::<f32>()
        .map_err(|e| rlaif_lm::LmError::Backend(format!("reading a tensor back: {e:?}")).into())
}

/// The final hidden states `[n, R, H]` that predict the response tokens of a layout batch
/// (columns `P − 1 … P + R − 2`; see the [module docs](self)).
pub fn response_hidden(
    model: &Llama,
    tokens: Tensor<2, Int>,
    real: &[Vec<bool>],
    p: usize,
    r: usize,
) -> Tensor<3> {
    let (positions, mask) = positions_and_mask(real, &tokens.device());
    model
        .hidden(tokens, positions, &mask, None)
        .slice_dim(1, p - 1..p + r - 1)
}

/// Log-probabilities and entropies `[n, R]` of the response tokens (columns `P … P + R − 1`
/// of `tokens`) from their [`response_hidden`] states, at `temperature`.
pub fn logprobs_from_hidden(
    model: &Llama,
    hidden: Tensor<3>,
    tokens: Tensor<2, Int>,
    p: usize,
    r: usize,
    temperature: f32,
) -> Result<(Tensor<2>, Tensor<2>)> {
    let logits = model.logits(hidden);
    let targets = tokens.slice_dim(1, p..p + r);
    Ok(token_logprobs_with_entropy(logits, targets, temperature)?)
}

/// Log-probabilities and entropies `[n, R]` of the response tokens of a layout batch
/// under `model` at `temperature` (see the [module docs](self)); differentiable when the
/// model is on an autodiff device. Padded slots hold meaningless values: mask them.
pub fn policy_logprobs(
    model: &Llama,
    tokens: Tensor<2, Int>,
    real: &[Vec<bool>],
    p: usize,
    r: usize,
    temperature: f32,
) -> Result<(Tensor<2>, Tensor<2>)> {
    let hidden = response_hidden(model, tokens.clone(), real, p, r);
    logprobs_from_hidden(model, hidden, tokens, p, r, temperature)
}

/// Values `[n, R]` from [`response_hidden`] states and a `[H, 1]` head.
pub fn head_values(hidden: Tensor<3>, head: &Param<Tensor<2>>) -> Tensor<2> {
    let [n, r, hd] = hidden.dims();
    hidden
        .reshape([n * r, hd])
        .matmul(head.val())
        .reshape([n, r])
}

/// The critic PPO trains: a scalar head read at every position, on its own decoder or on
/// the policy's (a shared trunk: one forward pass gives log-probs and values, and the
/// value loss also trains the policy's decoder).
#[derive(Module, Debug)]
pub struct Critic {
    /// Its own decoder (`None`: the policy's).
    pub backbone: Option<Llama>,
    /// The head, `[hidden, 1]`.
    pub head: Param<Tensor<2>>,
}

impl Critic {
    /// A critic with its own decoder (e.g. the preference model's).
    pub fn separate(net: RewardNet) -> Self {
        Self {
            backbone: Some(net.backbone),
            head: net.head,
        }
    }

    /// Values `[n, R]`: `V(s_t)` for the state before response token `t` (the hidden
    /// state at column `P + t − 1` times the head), as TRL's
    /// `value[:, context_length − 1 : −1]`; `policy` is the trunk when it is shared.
    pub fn values(
        &self,
        policy: &Llama,
        tokens: Tensor<2, Int>,
        real: &[Vec<bool>],
        p: usize,
        r: usize,
    ) -> Tensor<2> {
        let trunk = self.backbone.as_ref().unwrap_or(policy);
        head_values(response_hidden(trunk, tokens, real, p, r), &self.head)
    }
}

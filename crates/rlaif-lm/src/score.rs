//! Scoring: log-probabilities of given tokens.
//!
//! - [`token_logprobs`]: `log p(x_t | x_<t)` for every token of a batch of sequences, as a
//!   tensor (differentiable: what SFT, the preference model and PPO build on).
//! - [`sequence_logprobs`]: the same for token-id lists, read back to the host.
//! - [`choice_logprobs`]: the total log-probability of each candidate continuation of one
//!   prompt; the prompt is run once and its KV cache shared by the candidates.

use crate::LmError;
use crate::model::{KvCache, Llama, attention_mask};
use crate::weights::to_host;
use burn::prelude::*;
use burn::tensor::activation::log_softmax;

/// `log softmax(logits)[b, t, targets[b, t]]`: logits `[B, T, V]`, targets `[B, T]` →
/// `[B, T]`, differentiable. Computed by `rlaif_kernels::token_logprobs`: on flex one fused
/// pass over the logits whose backward recomputes the softmax, so no `[B, T, V]`
/// log-softmax is materialised or kept for the backward; the default body elsewhere.
pub fn gather_logprobs(logits: Tensor<3>, targets: Tensor<2, Int>) -> Tensor<2> {
    rlaif_kernels::token_logprobs(logits, targets, 1.0)
        .expect("logits [B, T, V] and targets [B, T] agree by construction")
}

/// An error naming the first token id outside `0..vocab`.
pub(crate) fn check_vocab<'a>(
    ids: impl IntoIterator<Item = &'a u32>,
    vocab: usize,
) -> Result<(), LmError> {
    match ids.into_iter().find(|&&t| t as usize >= vocab) {
        Some(bad) => Err(LmError::InvalidRequest(format!(
            "token id {bad} is outside the vocabulary of {vocab}"
        ))),
        None => Ok(()),
    }
}

/// Right-pads token lists into a `[B, T]` tensor plus the real-token mask.
pub fn pad_right(
    seqs: &[Vec<u32>],
    pad_id: u32,
    device: &Device,
) -> (Tensor<2, Int>, Vec<Vec<bool>>) {
    let t = seqs.iter().map(Vec::len).max().unwrap_or(0);
    let mut toks = Vec::with_capacity(seqs.len() * t);
    let mut real = Vec::with_capacity(seqs.len());
    for s in seqs {
        toks.extend(s.iter().map(|&x| x as i64));
        toks.extend(std::iter::repeat_n(pad_id as i64, t - s.len()));
        real.push((0..t).map(|j| j < s.len()).collect());
    }
    (
        Tensor::from_data(TensorData::new(toks, [seqs.len(), t]), device),
        real,
    )
}

/// Log-probability of each token given the ones before it: tokens `[B, T]` with
/// `real[b][t]` marking real tokens (left or right padding) → `[B, T - 1]`, entry `t`
/// scoring token `t + 1`. Entries whose target is padding are meaningless: mask them.
pub fn token_logprobs(model: &Llama, tokens: Tensor<2, Int>, real: &[Vec<bool>]) -> Tensor<2> {
    let [_, t] = tokens.dims();
    let logits = model.forward(tokens.clone(), real);
    gather_logprobs(logits.slice_dim(1, 0..t - 1), tokens.slice_dim(1, 1..t))
}

/// [`token_logprobs`] for token-id lists: one vector of `len - 1` log-probabilities per
/// sequence (empty for sequences shorter than 2).
pub fn sequence_logprobs(model: &Llama, seqs: &[Vec<u32>]) -> Result<Vec<Vec<f32>>, LmError> {
    check_vocab(seqs.iter().flatten(), model.vocab_size())?;
    if seqs.iter().all(|s| s.len() < 2) {
        return Ok(seqs.iter().map(|_| vec![]).collect());
    }
    let device = model.embed_tokens.val().device();
    let (tokens, real) = pad_right(seqs, 0, &device);
    let t = tokens.dims()[1];
    let lp = to_host(token_logprobs(model, tokens, &real))?;
    Ok(seqs
        .iter()
        .enumerate()
        .map(|(b, s)| lp[b * (t - 1)..b * (t - 1) + s.len().saturating_sub(1)].to_vec())
        .collect())
}

/// Total log-probability of each `choices[i]` as a continuation of `prompt`.
pub fn choice_logprobs(
    model: &Llama,
    prompt: &[u32],
    choices: &[Vec<u32>],
) -> Result<Vec<f64>, LmError> {
    if prompt.is_empty() {
        return Err(LmError::InvalidRequest("the prompt is empty".into()));
    }
    if let Some(i) = choices.iter().position(Vec::is_empty) {
        return Err(LmError::InvalidRequest(format!("choice {i} is empty")));
    }
    let longest = choices.iter().map(Vec::len).max().unwrap_or(0);
    if prompt.len() + longest > model.max_positions() {
        return Err(LmError::PromptTooLong {
            index: 0,
            len: prompt.len(),
            max_new_tokens: longest,
            max: model.max_positions(),
        });
    }
    if choices.is_empty() {
        return Ok(vec![]);
    }
    check_vocab(
        prompt.iter().chain(choices.iter().flatten()),
        model.vocab_size(),
    )?;
    let device = model.embed_tokens.val().device();
    let (p, n) = (prompt.len(), choices.len());
    // 1. The prompt, once: its last position predicts every choice's first token.
    let mut cache = KvCache::default();
    let toks: Vec<i64> = prompt.iter().map(|&x| x as i64).collect();
    let hidden = model.hidden(
        Tensor::from_data(TensorData::new(toks, [1, p]), &device),
        Tensor::<1, Int>::arange(0..p as i64, &device).unsqueeze::<2>(),
        &attention_mask(&[vec![false; p]], p, &device),
        Some(&mut cache),
    );
    let first = to_host(log_softmax(model.logits(hidden.slice_dim(1, p - 1..p)), 2))?;
    // 2. All choices at once, right-padded, on copies of the prompt's cache.
    cache.select_rows(Tensor::zeros([n], &device));
    let (tokens, real) = pad_right(choices, 0, &device);
    let key_pad: Vec<Vec<bool>> = real
        .iter()
        .map(|r| {
            std::iter::repeat_n(false, p)
                .chain(r.iter().map(|x| !x))
                .collect()
        })
        .collect();
    let positions = Tensor::<1, Int>::arange(p as i64..(p + longest) as i64, &device)
        .unsqueeze::<2>()
        .repeat_dim(0, n);
    let mask = attention_mask(&key_pad, longest, &device);
    let hidden = model.hidden(tokens.clone(), positions, &mask, Some(&mut cache));
    let rest = if longest > 1 {
        let logits = model.logits(hidden.slice_dim(1, 0..longest - 1));
        to_host(gather_logprobs(logits, tokens.slice_dim(1, 1..longest)))?
    } else {
        vec![]
    };
    Ok(choices
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let mut total = first[c[0] as usize] as f64;
            for j in 1..c.len() {
                total += rest[i * (longest - 1) + j - 1] as f64;
            }
            total
        })
        .collect())
}

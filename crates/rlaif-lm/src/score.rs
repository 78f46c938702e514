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
/// Mismatched shapes are an [`LmError::InvalidRequest`].
pub(crate) fn gather_logprobs(
    logits: Tensor<3>,
    targets: Tensor<2, Int>,
) -> Result<Tensor<2>, LmError> {
    rlaif_kernels::token_logprobs(logits, targets, 1.0)
        .map_err(|e| LmError::InvalidRequest(format!("scoring tokens: {e}")))
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
///
/// Needs `T ≥ 2` and one `real` row of `T` entries per sequence
/// ([`LmError::InvalidRequest`] otherwise).
pub fn token_logprobs(
    model: &Llama,
    tokens: Tensor<2, Int>,
    real: &[Vec<bool>],
) -> Result<Tensor<2>, LmError> {
    let [b, t] = tokens.dims();
    if t < 2 {
        return Err(LmError::InvalidRequest(format!(
            "token_logprobs needs sequences of at least 2 tokens; the batch has {t}"
        )));
    }
    if real.len() != b || real.iter().any(|r| r.len() != t) {
        return Err(LmError::InvalidRequest(format!(
            "the real-token mask has {} rows of lengths {:?}, the tokens are [{b}, {t}]",
            real.len(),
            real.iter().map(Vec::len).collect::<Vec<_>>()
        )));
    }
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
    let (tokens, real) = pad_right(seqs, 0, &model.device());
    let t = tokens.dims()[1];
    let lp = to_host(token_logprobs(model, tokens, &real)?)?;
    Ok(seqs
        .iter()
        .enumerate()
        .map(|(b, s)| lp[b * (t - 1)..b * (t - 1) + s.len().saturating_sub(1)].to_vec())
        .collect())
}

/// Total log-probability of each `choices[i]` as a continuation of `prompt`. The prompt
/// and every choice must be non-empty, and the prompt plus each choice must fit in the
/// context ([`LmError::ChoiceTooLong`] names the first that does not).
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
    if let Some(index) = choices
        .iter()
        .position(|c| prompt.len() + c.len() > model.max_positions())
    {
        return Err(LmError::ChoiceTooLong {
            index,
            choice_len: choices[index].len(),
            prompt_len: prompt.len(),
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
    let device = model.device();
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
        to_host(gather_logprobs(logits, tokens.slice_dim(1, 1..longest))?)?
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LlamaConfig;

    fn model() -> Llama {
        LlamaConfig {
            vocab_size: 16,
            hidden_size: 8,
            intermediate_size: 16,
            num_hidden_layers: 1,
            num_attention_heads: 2,
            max_position_embeddings: 8,
            ..LlamaConfig::default()
        }
        .init(&Device::default())
        .unwrap()
    }

    #[test]
    fn token_logprobs_of_a_batch_without_time_steps_is_an_error() {
        let m = model();
        let dev = m.device();
        for t in [0usize, 1] {
            let tokens = Tensor::<2, Int>::zeros([2, t], &dev);
            let e = token_logprobs(&m, tokens, &[vec![true; t], vec![true; t]]).unwrap_err();
            assert!(e.to_string().contains("at least 2 tokens"), "{e}");
        }
        let tokens = Tensor::<2, Int>::zeros([2, 3], &dev);
        let e = token_logprobs(&m, tokens.clone(), &[vec![true; 3]]).unwrap_err();
        assert!(e.to_string().contains("mask"), "{e}");
        assert_eq!(
            token_logprobs(&m, tokens, &[vec![true; 3], vec![true; 3]])
                .unwrap()
                .dims(),
            [2, 2]
        );
        // sequence_logprobs over empty and one-token sequences
        assert_eq!(
            sequence_logprobs(&m, &[vec![], vec![3]]).unwrap(),
            vec![Vec::<f32>::new(), vec![]]
        );
        assert_eq!(
            sequence_logprobs(&m, &[vec![], vec![3, 4, 5]]).unwrap()[1].len(),
            2
        );
    }

    #[test]
    fn gather_logprobs_with_mismatched_shapes_is_an_error() {
        let dev = Device::default();
        let logits = Tensor::<3>::zeros([2, 3, 5], &dev);
        let e = gather_logprobs(logits.clone(), Tensor::<2, Int>::zeros([2, 4], &dev));
        assert!(matches!(e, Err(LmError::InvalidRequest(_))), "{e:?}");
        let lp = gather_logprobs(logits, Tensor::<2, Int>::zeros([2, 3], &dev)).unwrap();
        let want = -(5f32.ln());
        assert!(to_host(lp).unwrap().iter().all(|x| (x - want).abs() < 1e-6));
    }

    #[test]
    fn a_choice_too_long_is_reported_with_its_own_length() {
        let m = model(); // context 8
        let e = choice_logprobs(&m, &[1, 2, 3], &[vec![4], vec![5; 6]]).unwrap_err();
        assert!(
            matches!(
                e,
                LmError::ChoiceTooLong {
                    index: 1,
                    choice_len: 6,
                    prompt_len: 3,
                    max: 8
                }
            ),
            "{e:?}"
        );
        let msg = e.to_string();
        assert!(
            msg.contains("choice 1 has 6 tokens") && msg.contains("prompt's 3 tokens"),
            "{msg}"
        );
        assert!(!msg.contains("new tokens"), "{msg}");
    }
}

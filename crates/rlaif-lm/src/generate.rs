//! Batched generation with a KV cache.
//!
//! Prompts of different lengths are left-padded: each row's positions count its real
//! tokens only and padded keys are masked, so a prompt gets the same tokens alone or in a
//! batch. Finished rows are dropped from the batch (and the cache) as they finish.

use crate::LmError;
use crate::model::{KvCache, Llama, attention_mask};
use crate::next_token::pick_token;
use crate::tokenizer::TextTokenizer;
use crate::weights::to_host;
use burn::prelude::*;
use rayon::prelude::*;
use rlaif_core::seed::stream_rng;
use rlaif_core::{Completion, FinishReason, SamplingParams};

/// A row's next token and its log-probability, or why none could be picked.
type Pick = Result<(u32, f32), LmError>;

struct Row {
    ids: Vec<u32>,
    logprobs: Vec<f32>,
    finish: Option<FinishReason>,
    text: Option<String>,
}

/// Generates one completion per prompt (token ids, not padded). Prompt `i` samples from
/// the random stream `rlaif_core::seed::stream_rng(params.seed, i)`, so its completion
/// does not depend on the other prompts of the batch.
pub fn generate(
    model: &Llama,
    tokenizer: &TextTokenizer,
    prompts: &[Vec<u32>],
    params: &SamplingParams,
) -> Result<Vec<Completion>, LmError> {
    // on a worker of rayon's pool: each of a step's ~300 ops splits without waking a
    // sleeping thread (rlaif_kernels::pool)
    rlaif_kernels::on_pool_spinning(|| generate_on_worker(model, tokenizer, prompts, params))
}

fn generate_on_worker(
    model: &Llama,
    tokenizer: &TextTokenizer,
    prompts: &[Vec<u32>],
    params: &SamplingParams,
) -> Result<Vec<Completion>, LmError> {
    params
        .validate()
        .map_err(|e| LmError::InvalidRequest(e.to_string()))?;
    let device = model.device();
    let vocab = model.vocab_size();
    for (index, p) in prompts.iter().enumerate() {
        if p.is_empty() {
            return Err(LmError::InvalidRequest(format!("prompt {index} is empty")));
        }
        if p.len() + params.max_new_tokens > model.max_positions() {
            return Err(LmError::PromptTooLong {
                index,
                len: p.len(),
                max_new_tokens: params.max_new_tokens,
                max: model.max_positions(),
            });
        }
        if let Some(&bad) = p.iter().find(|&&t| t as usize >= vocab) {
            return Err(LmError::InvalidRequest(format!(
                "prompt {index} has token id {bad}, outside the vocabulary of {vocab}"
            )));
        }
    }
    let mut rows: Vec<Row> = prompts
        .iter()
        .map(|_| Row {
            ids: vec![],
            logprobs: vec![],
            finish: None,
            text: None,
        })
        .collect();
    if prompts.is_empty() || params.max_new_tokens == 0 {
        return finish(tokenizer, rows);
    }
    let mut rngs: Vec<_> = (0..prompts.len())
        .map(|i| stream_rng(params.seed, i as u64))
        .collect();

    // Prefill: left-pad to the longest prompt.
    let len = prompts.iter().map(Vec::len).max().unwrap_or(0);
    let b = prompts.len();
    let pad_id = tokenizer.pad_id.or(tokenizer.eos_id).unwrap_or(0) as i64;
    let mut toks = Vec::with_capacity(b * len);
    let mut pos = Vec::with_capacity(b * len);
    let mut key_pad: Vec<Vec<bool>> = Vec::with_capacity(b);
    for p in prompts {
        let pad = len - p.len();
        toks.extend(std::iter::repeat_n(pad_id, pad).chain(p.iter().map(|&t| t as i64)));
        pos.extend(std::iter::repeat_n(0, pad).chain(0..p.len() as i64));
        key_pad.push((0..len).map(|j| j < pad).collect());
    }
    let mut cache = KvCache::default();
    let tokens = Tensor::<2, Int>::from_data(TensorData::new(toks, [b, len]), &device);
    let positions = Tensor::<2, Int>::from_data(TensorData::new(pos, [b, len]), &device);
    let mask = attention_mask(&key_pad, len, &device);
    let hidden = model.hidden(tokens, positions, &mask, Some(&mut cache));
    let mut logits = to_host(model.logits(hidden.slice_dim(1, len - 1..len)))?;

    let mut active: Vec<usize> = (0..b).collect(); // batch row → prompt index
    let mut next_pos: Vec<i64> = prompts.iter().map(|p| p.len() as i64).collect();
    loop {
        // the rows' picks are independent (each has its own random stream): in parallel
        let picks = {
            let mut slot_of = vec![None; rngs.len()]; // prompt index → batch row
            for (bi, &r) in active.iter().enumerate() {
                slot_of[r] = Some(bi);
            }
            let mut picks: Vec<(usize, Pick)> = rngs
                .par_iter_mut()
                .enumerate()
                .filter_map(|(r, rng)| {
                    let bi = slot_of[r]?;
                    Some((
                        bi,
                        pick_token(&logits[bi * vocab..(bi + 1) * vocab], params, rng),
                    ))
                })
                .collect();
            picks.sort_unstable_by_key(|p| p.0);
            picks
        };
        let mut fed = Vec::with_capacity(active.len());
        for ((_, pick), &r) in picks.into_iter().zip(&active) {
            let (tok, lp) = pick?;
            let row = &mut rows[r];
            row.ids.push(tok);
            row.logprobs.push(lp);
            fed.push(tok as i64);
            if params.stop_at_eos && tokenizer.stop_ids.contains(&tok) {
                row.finish = Some(FinishReason::Eos);
            } else if !params.stop.is_empty() {
                let text = tokenizer.decode(&row.ids, true)?;
                let hit = params
                    .stop
                    .iter()
                    .filter_map(|s| text.find(s.as_str()).map(|at| (at, s)))
                    .min();
                if let Some((at, s)) = hit {
                    row.text = Some(text[..at].to_string());
                    row.finish = Some(FinishReason::Stop(s.clone()));
                }
            }
            if row.finish.is_none() && row.ids.len() == params.max_new_tokens {
                row.finish = Some(FinishReason::Length);
            }
        }
        let keep: Vec<usize> = (0..active.len())
            .filter(|&bi| rows[active[bi]].finish.is_none())
            .collect();
        if keep.is_empty() {
            break;
        }
        if keep.len() < active.len() {
            let idx: Vec<i64> = keep.iter().map(|&bi| bi as i64).collect();
            cache.select_rows(Tensor::from_data(
                TensorData::new(idx, [keep.len()]),
                &device,
            ));
            active = keep.iter().map(|&bi| active[bi]).collect();
            key_pad = keep.iter().map(|&bi| key_pad[bi].clone()).collect();
            next_pos = keep.iter().map(|&bi| next_pos[bi]).collect();
            fed = keep.iter().map(|&bi| fed[bi]).collect();
        }
        let n = active.len();
        for kp in key_pad.iter_mut() {
            kp.push(false);
        }
        let tokens = Tensor::<2, Int>::from_data(TensorData::new(fed, [n, 1]), &device);
        let positions =
            Tensor::<2, Int>::from_data(TensorData::new(next_pos.clone(), [n, 1]), &device);
        let mask = attention_mask(&key_pad, 1, &device);
        let hidden = model.hidden(tokens, positions, &mask, Some(&mut cache));
        logits = to_host(model.logits(hidden))?;
        for p in next_pos.iter_mut() {
            *p += 1;
        }
    }
    finish(tokenizer, rows)
}

fn finish(tokenizer: &TextTokenizer, rows: Vec<Row>) -> Result<Vec<Completion>, LmError> {
    rows.into_iter()
        .map(|r| {
            let text = match r.text {
                Some(t) => t,
                None => tokenizer.decode(&r.ids, true)?,
            };
            Ok(Completion {
                text,
                token_ids: r.ids,
                logprobs: r.logprobs,
                finish_reason: r.finish.unwrap_or(FinishReason::Length),
            })
        })
        .collect()
}

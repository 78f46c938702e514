//! [`PreferenceModel`]: the language model's decoder with a scalar head, read at the last
//! real token of prompt ⊕ response.
//!
//! What is scored is the whole conversation as the model sees it: for a chat prompt, the
//! prompt rendered through the chat template with the generation prompt (what the policy
//! saw when it answered), followed by the rest of the conversation with the response (the
//! response and the template's end-of-turn token), tokenized separately and joined, as
//! `rlaif-sft` encodes its examples; the sequence ends with the assistant's end-of-turn
//! token (text the template writes after it, such as ChatML's `"\n"`, is dropped). A raw
//! prompt is its text followed by the response and the EOS token. The head reads the final
//! hidden state (after the last norm) at the last real token, the end-of-turn token, as
//! Hugging Face's `LlamaForSequenceClassification` does at the last non-padding token;
//! padding (left or right) is never read (positions count real tokens only and padded keys
//! are masked).

use crate::error::{PmError, Result};
use burn::module::{Module, Param};
use burn::prelude::*;
use rlaif_core::{Message, Prompt, Role};
use rlaif_lm::model::positions_and_mask;
use rlaif_lm::{LanguageModel, Llama, LmError};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The Burn module that is trained: the decoder and the head `[hidden, 1]` (stored
/// `[in, out]` like every matrix of `rlaif-lm`; Hugging Face's `score.weight` is its
/// transpose, `[1, hidden]`).
#[derive(Module, Debug)]
pub struct RewardNet {
    /// The decoder (its output projection, if untied, is dropped: it is never used).
    pub backbone: Llama,
    /// The scalar head, `[hidden, 1]`, no bias.
    pub head: Param<Tensor<2>>,
}

impl RewardNet {
    /// One reward per row of `tokens [B, T]` (left- or right-padded; `real[b][t]` marks
    /// real tokens), read at each row's last real token; differentiable.
    pub fn rewards(&self, tokens: Tensor<2, Int>, real: &[Vec<bool>]) -> Result<Tensor<1>> {
        rewards(&self.backbone, &self.head, tokens, real)
    }
}

/// [`RewardNet::rewards`] on a backbone and head held apart.
pub fn rewards(
    backbone: &Llama,
    head: &Param<Tensor<2>>,
    tokens: Tensor<2, Int>,
    real: &[Vec<bool>],
) -> Result<Tensor<1>> {
    let [b, t] = tokens.dims();
    if real.len() != b || real.iter().any(|r| r.len() != t) {
        return Err(LmError::InvalidRequest(format!(
            "the real-token mask has {} rows of lengths {:?}, the tokens are [{b}, {t}]",
            real.len(),
            real.iter().map(Vec::len).collect::<Vec<_>>()
        ))
        .into());
    }
    let mut last = Vec::with_capacity(b);
    for (i, row) in real.iter().enumerate() {
        let j = row.iter().rposition(|&x| x).ok_or_else(|| {
            LmError::InvalidRequest(format!("row {i} of the batch has no real token"))
        })?;
        last.push((i * t + j) as i64);
    }
    let device = tokens.device();
    let (positions, mask) = positions_and_mask(real, &device);
    let hidden = backbone.hidden(tokens, positions, &mask, None);
    let h = hidden.dims()[2];
    let picked = hidden.reshape([b * t, h]).select(
        0,
        Tensor::<1, Int>::from_data(TensorData::new(last, [b]), &device),
    );
    Ok(picked.matmul(head.val()).reshape([b]))
}

/// How the head starts.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HeadInit {
    /// Normal(0, `std`) weights from a ChaCha8 stream seeded by `seed`; `std: None` is
    /// `1 / (hidden + 1)`, OpenRLHF's value-head initialisation, so initial scores are near
    /// zero.
    Normal {
        /// The standard deviation (`None`: `1 / (hidden + 1)`).
        std: Option<f64>,
        /// The seed of the draw.
        seed: u64,
    },
    /// All zeros: every initial score is exactly 0.
    Zeros,
}

impl Default for HeadInit {
    fn default() -> Self {
        Self::Normal { std: None, seed: 0 }
    }
}

/// The mean and standard deviation of the scores of a reference set (e.g. the SL model's
/// own samples), stored beside the model (`reward_stats.json`) so that PPO can normalise
/// rewards with fixed statistics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RewardStats {
    /// Mean score.
    pub mean: f64,
    /// Standard deviation of the scores (population, `ddof = 0`).
    pub std: f64,
    /// Responses scored.
    pub count: usize,
    /// What was scored (`"reference"`, `"held-out responses"`, `"training responses"`).
    pub source: String,
}

impl RewardStats {
    /// The statistics of `scores` (in f64).
    pub fn of(scores: &[f32], source: impl Into<String>) -> Self {
        let (mean, std) = mean_std(scores.iter().map(|&x| f64::from(x)));
        Self {
            mean,
            std,
            count: scores.len(),
            source: source.into(),
        }
    }

    /// `(score − mean) / std` (`std` floored at 1e-8).
    pub fn normalize(&self, score: f32) -> f32 {
        ((f64::from(score) - self.mean) / self.std.max(1e-8)) as f32
    }
}

/// Mean and population standard deviation (0, 0 for no values).
pub(crate) fn mean_std(xs: impl Iterator<Item = f64> + Clone) -> (f64, f64) {
    let n = xs.clone().count();
    if n == 0 {
        return (0.0, 0.0);
    }
    let mean = xs.clone().sum::<f64>() / n as f64;
    let var = xs.map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
    (mean, var.sqrt())
}

/// Prompt ⊕ response as token ids, ending with the end-of-turn token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedText {
    /// Prompt then response.
    pub tokens: Vec<u32>,
    /// The number of prompt tokens.
    pub prompt_len: usize,
    /// Whether the response was cut to fit the length limit (its end-of-turn token kept).
    pub truncated: bool,
}

/// Why a prompt and response could not be encoded.
#[derive(Debug)]
pub(crate) enum EncodeError {
    /// The tokenizer or template failed.
    Lm(LmError),
    /// The rendering is unusable.
    Template(String),
    /// The prompt leaves no room for the end-of-turn token.
    PromptTooLong { prompt_tokens: usize },
}

impl From<LmError> for EncodeError {
    fn from(e: LmError) -> Self {
        Self::Lm(e)
    }
}

impl EncodeError {
    /// The error located at `file:line`, comparison `id`.
    pub(crate) fn located(self, file: PathBuf, line: usize, id: &str, max_len: usize) -> PmError {
        match self {
            Self::Lm(e) => PmError::Lm(e),
            Self::Template(message) => PmError::Template {
                file,
                line,
                id: id.to_string(),
                message,
            },
            Self::PromptTooLong { prompt_tokens } => PmError::PromptTooLong {
                file,
                line,
                id: id.to_string(),
                prompt_tokens,
                max_len,
            },
        }
    }
}

/// A language model with a scalar head: scores (prompt, response) pairs, higher is better.
/// Implements [`rlaif_core::RewardModel`].
#[derive(Debug)]
pub struct PreferenceModel {
    /// The decoder (`lm.model`), tokenizer and chat template. The decoder's output
    /// projection is not used (and, when untied, dropped): `lm.model.logits` is not
    /// meaningful here.
    pub lm: LanguageModel,
    /// The head, `[hidden, 1]`.
    pub head: Param<Tensor<2>>,
    /// Score statistics of a reference set, for reward normalisation (set by
    /// [`crate::train()`], stored in `reward_stats.json`).
    pub reward_stats: Option<RewardStats>,
    /// Longest prompt ⊕ response scored through [`rlaif_core::RewardModel`], in tokens
    /// (default: the model's positions); longer responses are cut, keeping their
    /// end-of-turn token.
    pub max_seq_len: usize,
    /// Sequences per forward pass when scoring (default 8).
    pub batch_size: usize,
}

impl PreferenceModel {
    /// The language model with a new head (see [`HeadInit`]), on the model's device.
    pub fn from_lm(mut lm: LanguageModel, init: HeadInit) -> Result<Self> {
        lm.model.lm_head = None;
        let hidden = lm.config.hidden_size;
        let values: Vec<f32> = match init {
            HeadInit::Zeros => vec![0.0; hidden],
            HeadInit::Normal { std, seed } => {
                let std = std.unwrap_or(1.0 / (hidden as f64 + 1.0));
                if !(std.is_finite() && std >= 0.0) {
                    return Err(PmError::Config {
                        field: "head_init.std",
                        message: format!("must be finite and ≥ 0, got {std}"),
                    });
                }
                let mut rng =
                    rlaif_core::seed::stream_rng(rlaif_core::seed::derive_seed(&[seed, 0x4EAD]), 0);
                (0..hidden)
                    .map(|_| (std * standard_normal(&mut rng)) as f32)
                    .collect()
            }
        };
        let device = lm.device();
        let head = Param::from_tensor(Tensor::from_data(
            TensorData::new(values, [hidden, 1]),
            &device,
        ));
        Ok(Self::from_parts(lm, head, None))
    }

    /// Assembles a model from its parts (`head` is `[hidden, 1]`).
    pub fn from_parts(
        lm: LanguageModel,
        head: Param<Tensor<2>>,
        reward_stats: Option<RewardStats>,
    ) -> Self {
        let max_seq_len = lm.model.max_positions();
        Self {
            lm,
            head,
            reward_stats,
            max_seq_len,
            batch_size: 8,
        }
    }

    /// The device the weights live on.
    pub fn device(&self) -> Device {
        self.lm.device()
    }

    /// The token the scored sequences end with when a chat template writes none (or for
    /// raw prompts): the EOS token.
    fn end_id(&self) -> Option<u32> {
        self.lm.tokenizer.eos_id
    }

    /// Prompt ⊕ response as the head reads it (see the [module docs](self)), within
    /// `max_len` tokens: a longer response is cut, keeping its end-of-turn token.
    pub(crate) fn encode_text(
        &self,
        prompt: &Prompt,
        response: &str,
        max_len: usize,
    ) -> Result<EncodedText, EncodeError> {
        let tok = &self.lm.tokenizer;
        let (prompt_ids, mut rest) = match prompt {
            Prompt::Text(p) => {
                let mut rest = tok.encode(response)?;
                rest.extend(self.end_id());
                (tok.encode(p)?, rest)
            }
            Prompt::Chat(conv) => {
                let template = self.lm.chat_template.as_ref().ok_or_else(|| {
                    EncodeError::Template(
                        "the model has no chat template; use raw prompts (format = \"raw\")".into(),
                    )
                })?;
                let p = template.render(&conv.messages, true)?;
                let mut all: Vec<Message> = conv.messages.clone();
                all.push(Message::new(Role::Assistant, response));
                let full = template.render(&all, false)?;
                let rest = full.strip_prefix(&p).ok_or_else(|| {
                    EncodeError::Template(format!(
                        "the chat template does not render the conversation as the prompt (with \
                         the generation prompt) followed by the reply: prompt {p:?}, whole {full:?}"
                    ))
                })?;
                let mut rest = tok.encode(rest)?;
                // End at the assistant's end-of-turn token; a template that writes none
                // gets the EOS token.
                match rest.iter().rposition(|t| tok.stop_ids.contains(t)) {
                    Some(i) => rest.truncate(i + 1),
                    None => rest.extend(self.end_id()),
                }
                (tok.encode(&p)?, rest)
            }
        };
        if rest.is_empty() {
            return Err(EncodeError::Template(
                "the response renders to no tokens (and the tokenizer has no EOS token)".into(),
            ));
        }
        let prompt_len = prompt_ids.len();
        if prompt_len + 1 > max_len {
            return Err(EncodeError::PromptTooLong {
                prompt_tokens: prompt_len,
            });
        }
        let truncated = prompt_len + rest.len() > max_len;
        if truncated {
            let end = *rest.last().expect("not empty");
            rest.truncate(max_len - prompt_len - 1);
            rest.push(end);
        }
        let mut tokens = prompt_ids;
        tokens.extend(rest);
        Ok(EncodedText {
            tokens,
            prompt_len,
            truncated,
        })
    }

    /// The token ids of prompt ⊕ response as the head reads them, cut to
    /// [`PreferenceModel::max_seq_len`] (and the model's positions).
    pub fn encode(&self, prompt: &Prompt, response: &str) -> Result<EncodedText> {
        self.encode_pair_at(prompt, response, 0)
    }

    /// [`PreferenceModel::encode`] for pair `index` of a request (named in errors).
    fn encode_pair_at(&self, prompt: &Prompt, response: &str, index: usize) -> Result<EncodedText> {
        let max_len = self.max_seq_len.min(self.lm.model.max_positions());
        self.encode_text(prompt, response, max_len).map_err(|e| {
            e.located(
                PathBuf::from("<memory>"),
                0,
                &format!("pair {index}"),
                max_len,
            )
        })
    }

    /// The score of each token sequence (inference: no gradients are kept if the model is
    /// on a plain device), in batches of [`PreferenceModel::batch_size`] sequences of
    /// similar lengths.
    pub fn score_tokens(&self, seqs: &[Vec<u32>]) -> Result<Vec<f32>> {
        score_token_lists(
            &self.lm.model,
            &self.head,
            seqs,
            self.batch_size,
            self.pad_id(),
        )
    }

    /// The score of each (prompt, response) pair.
    pub fn score_pairs(&self, pairs: &[(Prompt, String)]) -> Result<Vec<f32>> {
        let seqs = pairs
            .iter()
            .enumerate()
            .map(|(i, (p, r))| self.encode_pair_at(p, r, i).map(|e| e.tokens))
            .collect::<Result<Vec<_>>>()?;
        self.score_tokens(&seqs)
    }

    /// Scores normalised with the stored statistics (`(s − mean) / std`), or as they are
    /// when there are none.
    pub fn normalize(&self, scores: &[f32]) -> Vec<f32> {
        match &self.reward_stats {
            Some(s) => scores.iter().map(|&x| s.normalize(x)).collect(),
            None => scores.to_vec(),
        }
    }

    /// The padding token of batches (never read).
    pub(crate) fn pad_id(&self) -> u32 {
        let t = &self.lm.tokenizer;
        t.pad_id.or(t.eos_id).unwrap_or(0)
    }
}

/// Scores token lists with a backbone and head, in batches of similar lengths.
pub(crate) fn score_token_lists(
    backbone: &Llama,
    head: &Param<Tensor<2>>,
    seqs: &[Vec<u32>],
    batch_size: usize,
    pad_id: u32,
) -> Result<Vec<f32>> {
    let vocab = backbone.vocab_size();
    if let Some(bad) = seqs.iter().flatten().find(|&&t| t as usize >= vocab) {
        return Err(LmError::InvalidRequest(format!(
            "token id {bad} is outside the vocabulary of {vocab}"
        ))
        .into());
    }
    if let Some(i) = seqs.iter().position(Vec::is_empty) {
        return Err(LmError::InvalidRequest(format!("sequence {i} is empty")).into());
    }
    let device = backbone.device();
    let mut order: Vec<usize> = (0..seqs.len()).collect();
    order.sort_by_key(|&i| seqs[i].len());
    let mut out = vec![0f32; seqs.len()];
    for chunk in order.chunks(batch_size.max(1)) {
        let batch: Vec<Vec<u32>> = chunk.iter().map(|&i| seqs[i].clone()).collect();
        let (tokens, real) = rlaif_lm::score::pad_right(&batch, pad_id, &device);
        let r = rewards(backbone, head, tokens, &real)?;
        let v = r
            .try_into_vec_as::<f32>()
            .map_err(|e| LmError::Backend(format!("reading scores back: {e:?}")))?;
        for (&i, x) in chunk.iter().zip(v) {
            out[i] = x;
        }
    }
    Ok(out)
}

/// One standard normal draw (Box–Muller).
fn standard_normal(rng: &mut impl rand::Rng) -> f64 {
    let u1: f64 = 1.0 - rng.random::<f64>(); // (0, 1]
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

impl rlaif_core::RewardModel for PreferenceModel {
    fn score(&self, pairs: &[(Prompt, String)]) -> rlaif_core::Result<Vec<f32>> {
        self.score_pairs(pairs).map_err(|e| match e {
            e @ (PmError::PromptTooLong { .. } | PmError::Template { .. }) => {
                rlaif_core::Error::InvalidRequest(e.to_string())
            }
            e => rlaif_core::Error::model(e),
        })
    }
}

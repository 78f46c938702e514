//! Logit filters and sampling on `[B, V]` tensors: top-k and top-p (nucleus) filtering, and
//! seeded categorical sampling. (The host-side token sampler of generation is
//! `rlaif-lm`'s; these run on the tensors' device.)
//!
//! - top-k (Fan et al. 2018): keep the `k` largest logits of each row (ties with the `k`-th
//!   are kept), set the rest to `-inf`.
//! - top-p (Holtzman et al. 2020, "The curious case of neural text degeneration"): keep the
//!   smallest set of most-probable tokens whose probability reaches `p`, i.e. drop a token when
//!   the probability of the tokens strictly more probable than it (in sorted order) already
//!   exceeds `p`; at least one token is always kept.
//! - top-k then top-p: apply [`top_k_filter`] first, then [`top_p_filter`] to its output. The
//!   nucleus is then computed over the **renormalised** top-k distribution, as in
//!   transformers and vLLM: `top_p_filter` takes logits and normalises them itself, and the
//!   `-inf` logits left by top-k have probability 0, so the kept tokens' probabilities are
//!   their share of the top-k mass, not of the full distribution.
//! - categorical: inverse-CDF sampling, `x = min{j : Σ_{i ≤ j} p_i > u · Σ_i p_i}` with one
//!   uniform `u ∈ [0, 1)` per row drawn from a ChaCha8 generator seeded by the caller, so a
//!   seed gives the same tokens on every backend (up to float rounding at CDF boundaries).
//!   Tokens with probability 0 (`-inf` logits) are never drawn.

use crate::error::{Result, check_arg};
use burn::prelude::*;
use burn::tensor::IndexingUpdateOp;
use burn::tensor::activation::softmax;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Keeps the `k` largest logits of each row of `[B, V]` logits, `-inf` elsewhere.
/// `k ≥ V` returns the logits unchanged.
///
/// # Errors
/// [`KernelError::InvalidArgument`](crate::KernelError::InvalidArgument) if `k = 0`.
pub fn top_k_filter(logits: Tensor<2>, k: usize) -> Result<Tensor<2>> {
    check_arg("top_k_filter", k > 0, || "k must be ≥ 1".into())?;
    let [_, v] = logits.dims();
    if k >= v {
        return Ok(logits);
    }
    let kth = logits.clone().topk(k, 1).slice_dim(1, k - 1..k); // [B, 1]
    let drop = logits.clone().lower(kth.expand(logits.dims()));
    Ok(logits.mask_fill(drop, f32::NEG_INFINITY))
}

/// Nucleus filtering of `[B, V]` logits with mass `top_p ∈ (0, 1]` (see the
/// [module docs](self)); dropped logits become `-inf`. The probabilities are
/// `softmax(logits)` of the row as given, so `-inf` logits (e.g. from [`top_k_filter`]) take
/// no mass and the nucleus is taken over the renormalised remaining tokens.
///
/// # Errors
/// [`KernelError::InvalidArgument`](crate::KernelError::InvalidArgument) if `top_p ∉ (0, 1]`.
pub fn top_p_filter(logits: Tensor<2>, top_p: f32) -> Result<Tensor<2>> {
    check_arg("top_p_filter", top_p > 0.0 && top_p <= 1.0, || {
        format!("top_p must be in (0, 1], got {top_p}")
    })?;
    if top_p >= 1.0 {
        return Ok(logits);
    }
    let dims = logits.dims();
    let (sorted, order) = logits.clone().sort_descending_with_indices(1);
    let probs = softmax(sorted, 1);
    let before = probs.clone().cumsum(1) - probs; // mass strictly before each sorted token
    let drop_sorted = before.greater_elem(top_p).float();
    let drop = Tensor::<2>::zeros(dims, &logits.device()).scatter(
        1,
        order,
        drop_sorted,
        IndexingUpdateOp::Add,
    );
    Ok(logits.mask_fill(drop.greater_elem(0.5), f32::NEG_INFINITY))
}

/// Draws one token per row of `[B, V]` logits from `softmax(logits)`, reproducibly from `seed`
/// (see the [module docs](self)); returns `[B]` token ids. Divide the logits by a temperature
/// and filter them first if wanted.
///
/// # Errors
/// [`KernelError::InvalidArgument`](crate::KernelError::InvalidArgument) if `V = 0`.
pub fn sample_categorical(logits: Tensor<2>, seed: u64) -> Result<Tensor<1, Int>> {
    let [b, v] = logits.dims();
    check_arg("sample_categorical", v > 0, || {
        "the vocabulary dimension is empty".into()
    })?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let u: Vec<f32> = (0..b).map(|_| rng.random::<f32>()).collect();
    let device = logits.device();
    let u = Tensor::<2>::from_data(TensorData::new(u, [b, 1]), &device);
    let cdf = softmax(logits.detach(), 1).cumsum(1); // [B, V]
    let total = cdf.clone().slice_dim(1, v - 1..v);
    let threshold = (u * total).expand([b, v]);
    // index = #{j : cdf_j ≤ u·total}, clamped for rounding at the top
    let idx = cdf
        .lower_equal(threshold)
        .int()
        .sum_dim(1)
        .clamp_max(v as i64 - 1);
    Ok(idx.reshape([b]))
}

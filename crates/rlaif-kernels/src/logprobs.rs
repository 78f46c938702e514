//! Token log-probabilities (and entropies) of labels under tempered logits.
//!
//! For logits `z ∈ ℝ^{B×T×V}`, labels `y ∈ [0, V)^{B×T}` and a temperature `τ > 0`, with
//! `z' = z / τ`:
//!
//! - `logprob[b, t] = z'_{b,t,y} − logsumexp_j z'_{b,t,j}`: the log-likelihood term of the
//!   policy-gradient objective (Williams 1992; in RLHF, Ziegler et al. 2019 and
//!   Ouyang et al. 2022, where the sampling temperature must also divide the logits when scoring).
//! - `entropy[b, t] = logsumexp_j z'_j − Σ_j softmax(z')_j · z'_j`
//!   `= −Σ_j p_j log p_j`: the entropy bonus of PPO (Schulman et al. 2017, eq. 9).
//!
//! The fused path (flex, float32) never materialises the `[B, T, V]` log-softmax: it reads the
//! logits once, keeps three numbers per row and recomputes the softmax in the backward (see
//! [`crate::extension`]). The *default body* ([`token_logprobs_default`]) is plain Burn ops and runs on
//! every backend.
//!
//! Edge cases (both paths): `-inf` logits are impossible tokens (probability 0, no NaN); a label
//! on a `-inf` logit has log-prob `-inf`; a row whose logits are all `-inf` has no distribution
//! and yields log-prob `-inf`, entropy 0 and a zero gradient. `+inf` or NaN logits give NaN.

use crate::error::{Result, check_arg, check_shape};
use crate::extension::{dispatch_token_stats, fused_available};
use burn::prelude::*;
use burn::tensor::activation::log_softmax;

const OP: &str = "token_logprobs";

fn check(logits: &Tensor<3>, labels: &Tensor<2, Int>, temperature: f32) -> Result<[usize; 3]> {
    let [b, t, v] = logits.dims();
    check_shape(
        OP,
        "labels (against logits [B, T, V])",
        &labels.dims(),
        &[b, t],
    )?;
    check_arg(OP, v > 0, || {
        "the vocabulary dimension of logits is empty".into()
    })?;
    check_arg(OP, temperature.is_finite() && temperature > 0.0, || {
        format!("temperature must be finite and > 0, got {temperature}")
    })?;
    Ok([b, t, v])
}

/// Log-probability of each label under `softmax(logits / temperature)`.
///
/// `logits: [B, T, V]`, `labels: [B, T]` (values in `0..V`), returns `[B, T]`. Differentiable
/// with respect to the logits. Uses the fused kernel when [`fused_available`], the default body
/// otherwise.
///
/// # Errors
/// [`KernelError::ShapeMismatch`](crate::KernelError::ShapeMismatch) if `labels` is not `[B, T]`,
/// [`KernelError::InvalidArgument`](crate::KernelError::InvalidArgument) if `V = 0` or the
/// temperature is not finite and positive.
///
/// # Panics
/// If a label is outside `0..V` (the fused kernel checks; the default body panics in `gather`
/// on backends that check indices).
pub fn token_logprobs(
    logits: Tensor<3>,
    labels: Tensor<2, Int>,
    temperature: f32,
) -> Result<Tensor<2>> {
    let [b, t, v] = check(&logits, &labels, temperature)?;
    if b * t == 0 {
        return Ok(empty(logits));
    }
    if fused_available(&logits.device(), logits.dtype()) {
        let stats = fused_stats(logits, labels, temperature, [b, t, v]);
        Ok(stats.slice_dim(1, 0..1).reshape([b, t]))
    } else {
        token_logprobs_default(logits, labels, temperature)
    }
}

/// [`token_logprobs`] and the entropy of each position's distribution, in the same pass:
/// returns `(logprobs [B, T], entropy [B, T])`, both differentiable.
///
/// # Errors
/// As [`token_logprobs`].
pub fn token_logprobs_with_entropy(
    logits: Tensor<3>,
    labels: Tensor<2, Int>,
    temperature: f32,
) -> Result<(Tensor<2>, Tensor<2>)> {
    let [b, t, v] = check(&logits, &labels, temperature)?;
    if b * t == 0 {
        return Ok((empty(logits.clone()), empty(logits)));
    }
    if fused_available(&logits.device(), logits.dtype()) {
        let stats = fused_stats(logits, labels, temperature, [b, t, v]);
        let lp = stats.clone().slice_dim(1, 0..1).reshape([b, t]);
        let h = stats.slice_dim(1, 1..2).reshape([b, t]);
        Ok((lp, h))
    } else {
        token_logprobs_with_entropy_default(logits, labels, temperature)
    }
}

/// The `[B, T]` result for `B·T = 0`, still attached to the logits' graph (Burn's `reshape`
/// reads a 0 as "keep this dim" and `expand` rejects 0, so the general paths cannot run).
fn empty(logits: Tensor<3>) -> Tensor<2> {
    logits.sum_dim(2).squeeze_dim::<2>(2)
}

/// `[B·T, 3]` statistics from the fused kernel.
fn fused_stats(
    logits: Tensor<3>,
    labels: Tensor<2, Int>,
    temperature: f32,
    [b, t, v]: [usize; 3],
) -> Tensor<2> {
    dispatch_token_stats(
        logits.reshape([b * t, v]),
        labels.reshape([b * t]),
        1.0 / temperature,
    )
}

/// Tempered logits with all-`-inf` rows replaced by zeros, and the `[B, T, 1]` mask of those
/// rows.
fn sanitized(logits: Tensor<3>, temperature: f32) -> (Tensor<3>, Tensor<3, Bool>) {
    let [b, t, v] = logits.dims();
    let z = logits.mul_scalar(1.0 / temperature);
    let dead = z.clone().detach().max_dim(2).equal_elem(f32::NEG_INFINITY);
    let z = z.mask_fill(dead.clone().expand([b, t, v]), 0.0);
    (z, dead)
}

/// Default body of [`token_logprobs`]: `log_softmax(z/τ).gather(label)` in Burn tensor ops
/// (materialises the `[B, T, V]` log-softmax), with all-`-inf` rows handled as documented in
/// the [module docs](self). Runs on every backend; differentiable by Burn's autodiff.
///
/// # Errors
/// As [`token_logprobs`].
pub fn token_logprobs_default(
    logits: Tensor<3>,
    labels: Tensor<2, Int>,
    temperature: f32,
) -> Result<Tensor<2>> {
    let [b, t, _] = check(&logits, &labels, temperature)?;
    if b * t == 0 {
        return Ok(empty(logits));
    }
    let (z, dead) = sanitized(logits, temperature);
    let lp = log_softmax(z, 2).gather(2, labels.unsqueeze_dim::<3>(2));
    Ok(lp.mask_fill(dead, f32::NEG_INFINITY).reshape([b, t]))
}

/// Default body of [`token_logprobs_with_entropy`] (Burn tensor ops, every backend).
///
/// # Errors
/// As [`token_logprobs`].
pub fn token_logprobs_with_entropy_default(
    logits: Tensor<3>,
    labels: Tensor<2, Int>,
    temperature: f32,
) -> Result<(Tensor<2>, Tensor<2>)> {
    let [b, t, _] = check(&logits, &labels, temperature)?;
    if b * t == 0 {
        return Ok((empty(logits.clone()), empty(logits)));
    }
    let (z, dead) = sanitized(logits, temperature);
    let lsm = log_softmax(z, 2);
    let lp = lsm.clone().gather(2, labels.unsqueeze_dim::<3>(2));
    let lp = lp
        .mask_fill(dead.clone(), f32::NEG_INFINITY)
        .reshape([b, t]);
    let p = lsm.clone().exp();
    // p·log p with 0·(-inf) := 0 (impossible tokens contribute nothing)
    let impossible = lsm.clone().detach().equal_elem(f32::NEG_INFINITY);
    let h = -(p * lsm.mask_fill(impossible, 0.0)).sum_dim(2);
    Ok((lp, h.mask_fill(dead, 0.0).reshape([b, t])))
}

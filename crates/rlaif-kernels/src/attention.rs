//! Grouped-query attention with an additive bias: `softmax(q kᵀ / √D + bias) v`, the
//! attention of a Llama-family decoder (Ainslie et al. 2023 for the grouped key/value heads).
//!
//! `q: [B, H, S, D]`, `k, v: [B, G, T, D]` with `H` a multiple of `G` (query head `h` reads
//! key/value head `h / (H / G)`, Hugging Face's `repeat_kv` order), `bias: [B, 1, S, T]`
//! shared by all heads (0 where a query may attend, `-inf` or `f32::MIN` where it may not: a
//! causal mask with padding, after `T − S` cached positions). On flex (float32),
//! [`attention`] runs a kernel that reads keys and values in place (a KV cache with spare
//! room included) with vectorised exponentials. With more than [`FUSED_MIN_ROWS`] query rows
//! per key/value group (`S · H / G`: a prefill, a scoring pass, a training forward) it serves
//! all the query heads of a group from one copy of each key tile and skips the tiles a block
//! of queries cannot see — the upper half of a causal mask; with fewer (a decoding step) each
//! query head reads the keys and values where they lie, with no copy. When `q`, `k` or `v`
//! needs a gradient, the forward also keeps each query row's log-sum-exp, and the backward is
//! a kernel of its own (FlashAttention-2's, Dao 2023): it rebuilds the probabilities tile by
//! tile from the log-sum-exps, skips the same masked tiles, and never holds an `S × T`
//! matrix. Everywhere else it is [`attention_default`], Burn's `attention`.

use crate::error::{Result, check_arg, check_shape};
use crate::extension::{dispatch_attention, fused_available};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, TensorMetadata};
use burn::prelude::*;
use burn::tensor::Shape;
use burn::tensor::ops::AttentionModuleOptions;

/// Up to this many query rows per key/value group (`S · H / G`: a decoding step) the flex
/// kernel of [`attention`] reads each key and value row in place for one query head at a time;
/// above it, it copies key tiles once for all the rows of a group (the copy would not pay for
/// a decoding step's few rows: `cargo bench --bench kernels -- attention`, `decode_*`).
pub const FUSED_MIN_ROWS: usize = 8;

/// `softmax(q kᵀ / √D + bias) v` for `q: [B, H, S, D]`, `k, v: [B, G, T, D]`,
/// `bias: [B, 1, S, T]`; returns `[B, H, S, D]`; differentiable.
///
/// On flex (float32) this is the
/// [`RlKernels::grouped_attention`](crate::RlKernels::grouped_attention) kernel, with its
/// own backward
/// ([`RlKernels::grouped_attention_backward`](crate::RlKernels::grouped_attention_backward))
/// when `q`, `k` or `v` is tracked by autodiff; a tracked `bias` (a learned bias; never a
/// mask) and every other backend take [`attention_default`]. The kernel's results differ
/// from Burn's by rounding only (online softmax, other summation order; ≈ 1e-6 relative).
/// `k` and `v` may be views whose heads are contiguous rows (a slice of a KV cache along
/// `T`): the kernel reads them in place.
///
/// # Errors
/// [`KernelError::ShapeMismatch`](crate::KernelError::ShapeMismatch) if the shapes do not
/// fit together; [`KernelError::InvalidArgument`](crate::KernelError::InvalidArgument) if `H`
/// is not a multiple of `G`.
pub fn attention(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, bias: Tensor<4>) -> Result<Tensor<4>> {
    check_attention(&q, &k, &v, &bias)?;
    let device = q.device();
    let f32_everywhere = [&k, &v, &bias].iter().all(|t| t.dtype() == q.dtype());
    if f32_everywhere && fused_available(&device, q.dtype()) {
        Ok(dispatch_attention(q, k, v, bias))
    } else {
        Ok(attention_default(q, k, v, bias))
    }
}

/// [`attention`]'s default body: Burn's `attention` on every backend, differentiable.
///
/// The `H / G` query heads of a group attend as `H / G · S` query rows against the group's
/// single key/value head (the bias rows repeated to match), so keys and values are never
/// copied per query head and the head counts agree, as Burn's autodiff attention requires.
///
/// # Panics
/// If the shapes do not fit together (see [`attention`], which checks them).
pub fn attention_default(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, bias: Tensor<4>) -> Tensor<4> {
    Tensor::from_dispatch(burn_attention::<burn::backend::Dispatch>(
        q.into_dispatch(),
        k.into_dispatch(),
        v.into_dispatch(),
        bias.into_dispatch(),
    ))
}

/// The shape checks of [`attention`].
fn check_attention(q: &Tensor<4>, k: &Tensor<4>, v: &Tensor<4>, bias: &Tensor<4>) -> Result<()> {
    let [b, h, s, d] = q.dims();
    let [kb, g, t, kd] = k.dims();
    check_shape(
        "attention",
        "k (against q [B, H, S, D])",
        &[kb, kd],
        &[b, d],
    )?;
    check_arg("attention", g > 0 && h % g == 0, || {
        format!("{h} query heads are not a multiple of {g} key/value heads")
    })?;
    check_shape("attention", "v (against k)", &v.dims(), &[b, g, t, d])?;
    check_shape(
        "attention",
        "bias [B, 1, S, T]",
        &bias.dims(),
        &[b, 1, s, t],
    )
}

/// [`attention_default`] on any backend's primitives (the fallback of the extension's
/// implementations, and under autodiff the differentiable path).
pub(crate) fn burn_attention<B: Backend>(
    q: FloatTensor<B>,
    k: FloatTensor<B>,
    v: FloatTensor<B>,
    bias: FloatTensor<B>,
) -> FloatTensor<B> {
    let [b, h, s, d] = dims4(&q.shape());
    let g = k.shape()[1];
    let n_rep = h / g;
    // rows rep · S + i of group g are query head g · n_rep + rep at position i
    let q = B::float_reshape(q, Shape::new([b, g, n_rep * s, d]));
    let bias = if n_rep == 1 {
        bias
    } else {
        B::float_repeat_dim(bias, 2, n_rep)
    };
    let options = AttentionModuleOptions {
        scale: None,
        softcap: None,
        is_causal: false, // the bias carries causality (it must, with a cache)
    };
    let o = B::attention(q, k, v, None, Some(bias), options);
    B::float_reshape(o, Shape::new([b, h, s, d]))
}

/// The dimensions of a 4-D shape.
pub(crate) fn dims4(shape: &Shape) -> [usize; 4] {
    [shape[0], shape[1], shape[2], shape[3]]
}

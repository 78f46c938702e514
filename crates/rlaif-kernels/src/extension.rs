//! The Burn backend extension that carries the fused kernels.
//!
//! [`RlKernels`] is a `#[backend_extension]` trait: the macro implements it for Burn's runtime
//! [`Dispatch`] backend, which routes every call to the backend that owns the tensors. Only the
//! backends listed in the attribute can be routed to (Burn 0.22 panics at call time for an
//! unlisted one), so the public functions of this crate call the extension only when
//! [`fused_available`] says so (a float32 tensor on the flex CPU backend, with or without
//! autodiff) and run the *default body* (plain, differentiable Burn tensor ops) everywhere else.
//! No code path assumes a particular backend.
//!
//! The extension has seventeen operations:
//!
//! - [`RlKernels::token_stats`]: per row of `[N, V]` logits, the packed statistics
//!   `[log p(label), entropy, logsumexp]` of `softmax(logits · inv_temperature)`, shape `[N, 3]`.
//! - [`RlKernels::token_stats_backward`]: the gradient of a scalar function of those statistics
//!   with respect to the logits, recomputed from the logits and the saved statistics (the softmax is
//!   never stored).
//! - [`RlKernels::gae`]: generalised advantage estimation over `[B, T]` rows.
//! - [`RlKernels::project`]: the product `[M, K]·[K, N]`, through a kernel of its own when `M`
//!   is small (the projections of a decoding step) and the backend's matmul otherwise;
//!   [`RlKernels::project_bf16`]: the product with bfloat16 inputs on AMX tiles.
//! - [`RlKernels::grouped_attention`]: grouped-query attention with an additive bias (see
//!   [`crate::attention()`]); [`RlKernels::grouped_attention_with_lse`] and
//!   [`RlKernels::grouped_attention_backward`]: its forward for training (with each row's
//!   log-sum-exp) and its backward.
//! - [`RlKernels::rope`] and [`RlKernels::rope_backward`]: rotary position embedding and its
//!   gradient (see [`crate::rope()`]).
//! - [`RlKernels::swiglu`] and [`RlKernels::swiglu_backward`]: `silu(gate) · up` and its two
//!   gradients (see [`crate::swiglu()`]).
//! - [`RlKernels::rms_norm`] and [`RlKernels::rms_norm_backward`]: RMSNorm over rows and its
//!   two gradients (see [`crate::rms_norm()`]); [`RlKernels::add_rms_norm`]: the residual sum
//!   and the next norm in one pass (see [`crate::add_rms_norm()`]).
//! - [`RlKernels::rope_into`]: RoPE written into a KV cache in place (see
//!   [`crate::rope_into_cache()`]).
//! - [`RlKernels::adamw`]: one AdamW step over a parameter (see [`crate::adamw_step`]).
//!
//! The autodiff implementation registers a custom backward for `token_stats` that saves only the
//! logits (a reference-counted handle, not a copy), the labels and the `[N, 3]` statistics, for
//! `swiglu` and `rms_norm` backwards that save their inputs (handles) and recompute the
//! rest, for `rope` one that saves only the tables, and for `grouped_attention` one that
//! saves its inputs, output and per-row log-sum-exps and rebuilds the probabilities tile by
//! tile.

// without a backend feature the generated dispatch methods have no arm that reads their scalars
#![cfg_attr(not(feature = "flex"), allow(unused_variables))]

use crate::adamw::AdamWScalars;
use burn::backend::autodiff::checkpoint::{base::Checkpointer, strategy::CheckpointStrategy};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::ops::FloatTensorOps;
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::{Autodiff, Backend, Dispatch, TensorMetadata, backend_extension};
use burn::prelude::*;
use burn::tensor::{DType, Shape, Slice};

/// Fused RLAIF kernels as a Burn backend extension (see the [module docs](self)).
///
/// Implemented for the flex CPU backend (feature `flex`) and for `Autodiff<B>` over any
/// implementing backend. Call it through the public functions of this crate
/// ([`crate::token_logprobs`], [`crate::gae()`], ...), which fall back to the default bodies where
/// the extension is not available.
#[backend_extension(Flex: cfg(feature = "flex"), Autodiff)]
pub trait RlKernels: Backend {
    /// Per-row statistics of the tempered softmax of `logits` (`[N, V]`, float32) at the integer
    /// `labels` (`[N]`, in `0..V`): returns `[N, 3]` holding, per row,
    /// `[z'_y − lse(z'), lse(z') − Σ_j p_j z'_j, lse(z')]` with `z' = logits · inv_temperature`
    /// and `p = softmax(z')`, i.e. the label log-prob, the entropy and the log-partition.
    ///
    /// A row with no finite logit (all `-inf`) has no distribution; it yields
    /// `[-inf, 0, -inf]` and a zero gradient.
    fn token_stats(
        logits: FloatTensor<Self>,
        labels: IntTensor<Self>,
        inv_temperature: f32,
    ) -> FloatTensor<Self>;

    /// Gradient of `Σ_i g_i · stats_i` with respect to the logits, where `stats` is the output
    /// of [`token_stats`](RlKernels::token_stats) for the same inputs and `grad` (`[N, 3]`) is
    /// the upstream gradient `g`. With `s = inv_temperature`, `p = softmax(z')`,
    /// `μ = Σ_j p_j z'_j`:
    ///
    /// `∂/∂logits_j = s · (g_lp · 1[j = y] − p_j · (g_lp − g_lse + g_H · (z'_j − μ)))`.
    fn token_stats_backward(
        logits: FloatTensor<Self>,
        labels: IntTensor<Self>,
        stats: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        inv_temperature: f32,
    ) -> FloatTensor<Self>;

    /// Generalised advantage estimation (Schulman et al. 2016, eq. 16) over `[B, T]` rewards,
    /// values and a 0/1 mask (float32); returns `[2, B, T]`: the advantages, then the returns
    /// `advantages + values` (both zero where the mask is zero). See [`crate::gae()`] for the
    /// recursion.
    fn gae(
        rewards: FloatTensor<Self>,
        values: FloatTensor<Self>,
        mask: FloatTensor<Self>,
        gamma: f32,
        lambda: f32,
    ) -> FloatTensor<Self>;

    /// `x · w` for `x: [M, K]` and `w: [K, N]` (float32), returns `[M, N]`. On flex, with at
    /// most [`SMALL_M_MAX_ROWS`](crate::SMALL_M_MAX_ROWS) rows, an AVX-512 product that splits
    /// the columns of `w` across threads (see [`crate::linear()`]); otherwise the backend's
    /// matmul. Under autodiff a tracked product is the backend's differentiable matmul (with
    /// its backward); an untracked one (inference) takes this path.
    fn project(x: FloatTensor<Self>, w: FloatTensor<Self>) -> FloatTensor<Self>;

    /// `x · w` for `x: [M, K]` and `w: [K, N]` (float32, any strides, so a transposed view
    /// is read in place) with both inputs rounded to bfloat16 and float32 sums, returns
    /// float32 `[M, N]`: on flex the AMX kernel of [`crate::amx`] (see
    /// [`crate::linear_with`]). Under autodiff a tracked product's backward is two more such
    /// products, `∂x = g · wᵀ` and `∂w = xᵀ · g`, as PyTorch's bf16 autocast computes them.
    fn project_bf16(x: FloatTensor<Self>, w: FloatTensor<Self>) -> FloatTensor<Self>;

    /// `softmax(q kᵀ / √D + bias) v` for `q: [B, H, S, D]`, `k, v: [B, G, T, D]` (`H` a
    /// multiple of `G`) and `bias: [B, 1, S, T]` (float32), returns `[B, H, S, D]`. On flex a
    /// kernel that skips the key tiles the bias masks (see [`crate::attention()`]); under
    /// autodiff, tracked `q`, `k`, `v` take [`RlKernels::grouped_attention_with_lse`] with
    /// [`RlKernels::grouped_attention_backward`] as the backward (a tracked bias takes the
    /// backend's differentiable attention).
    fn grouped_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self>;

    /// [`RlKernels::grouped_attention`] for training: the output `[B, H, S, D]` and the
    /// log-sum-exp of each query row's scores `[B, H, S]` (`-inf` for a row whose bias masks
    /// every key), packed as one `[B·H·S·D + B·H·S]` vector.
    fn grouped_attention_with_lse(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self>;

    /// The gradients of `Σ grad · grouped_attention(q, k, v, bias)` with respect to `q`, `k`
    /// and `v`, packed as one `[B·H·S·D + 2·B·G·T·D]` vector, from the forward's output `out`
    /// and log-sum-exp `lse` (see [`RlKernels::grouped_attention_with_lse`]); the bias gets
    /// no gradient.
    #[allow(clippy::too_many_arguments)]
    fn grouped_attention_backward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        out: FloatTensor<Self>,
        lse: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self>;

    /// Rotary position embedding `x · cos + rotate_half(x) · sin` for float32 `x: [B, H, S, D]`
    /// (any layout whose rows of `D` are contiguous) and `cos`, `sin: [B, 1, S, D]`; returns a
    /// contiguous `[B, H, S, D]` (see [`crate::rope()`]).
    fn rope(
        x: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
    ) -> FloatTensor<Self>;

    /// The gradient of `Σ grad · rope(x, cos, sin)` with respect to `x` (`[B, H, S, D]`):
    /// `grad · cos + rotate_halfᵀ(grad · sin)`, `rotate_halfᵀ([y₁, y₂]) = [y₂, −y₁]`.
    fn rope_backward(
        grad: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
    ) -> FloatTensor<Self>;

    /// `gate · σ(gate) · up` for float32 `gate`, `up` of the same shape `[N]`.
    fn swiglu(gate: FloatTensor<Self>, up: FloatTensor<Self>) -> FloatTensor<Self>;

    /// The gradients of `Σ_i g_i · swiglu(gate, up)_i` with respect to `gate` and `up`
    /// (`[N]` each, `g = grad`), packed as `[2, N]`: `∂gate = g · up · σ(gate) · (1 + gate ·
    /// (1 − σ(gate)))`, `∂up = g · gate · σ(gate)`.
    fn swiglu_backward(
        gate: FloatTensor<Self>,
        up: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self>;

    /// `x / √(mean(x²) + eps) · weight` per row of `x: [N, D]` (float32), `weight: [D]`.
    fn rms_norm(x: FloatTensor<Self>, weight: FloatTensor<Self>, eps: f32) -> FloatTensor<Self>;

    /// The residual sum and the norm of the next sub-layer in one pass per row: for
    /// `x`, `delta` of one shape `[N, …, D]` (float32, any rank) and `weight: [D]`, returns
    /// `[2N, …, D]` holding `h = x + delta` (the first `N` along the first dimension), then
    /// `rms_norm(h, weight)` over the last dimension, each bit for bit what the add and
    /// [`rms_norm`](RlKernels::rms_norm) give (see [`crate::add_rms_norm()`]). Packing along
    /// the first dimension keeps the rank, so the two halves are one slice each.
    fn add_rms_norm(
        x: FloatTensor<Self>,
        delta: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        eps: f32,
    ) -> FloatTensor<Self>;

    /// [`rope`](RlKernels::rope) of `x: [B, G, S, D]` written into `cache: [B, G, C, D]` at
    /// positions `start..start + S` (`start + S ≤ C`); returns the cache, whose other positions
    /// are unchanged. On flex the rows are written into the cache's own buffer when nothing
    /// else holds it (see [`crate::rope_into_cache()`]).
    fn rope_into(
        cache: FloatTensor<Self>,
        x: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
        start: usize,
    ) -> FloatTensor<Self>;

    /// The gradients of `Σ g · rms_norm(x, weight)` (`g = grad`, `[N, D]`) with respect to
    /// `x` and `weight`, packed as one `[N · D + D]` vector: with `r = 1/√(mean(x²) + eps)`
    /// per row, `∂x_j = r · g_j w_j − x_j · r³ · Σ_k g_k w_k x_k / D` and
    /// `∂w_j = Σ_rows g_j x_j r`.
    fn rms_norm_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        eps: f32,
    ) -> FloatTensor<Self>;

    /// One AdamW step over `[N]` float32 tensors: the parameter, its gradient and the two
    /// moments (ignored when `fresh`, the first step, whose moments are zero), with the
    /// step's scalars (see [`crate::adamw_step`]); returns `[3, N]`: the parameter, `m` and
    /// `v` after the step. Not differentiable.
    fn adamw(
        param: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        moment_1: FloatTensor<Self>,
        moment_2: FloatTensor<Self>,
        scalars: AdamWScalars,
        fresh: bool,
    ) -> FloatTensor<Self>;
}

/// Whether the fused kernels can run on `device` for tensors of `dtype`: the device is a flex
/// device (with or without autodiff), the `flex` feature of this crate is on, and the dtype is
/// float32. When this is false the public functions run their default bodies.
pub fn fused_available(device: &Device, dtype: DType) -> bool {
    #[cfg(feature = "flex")]
    {
        dtype == DType::F32
            && matches!(
                device.clone().inner().as_dispatch(),
                burn::backend::DispatchDevice::Flex(_)
            )
    }
    #[cfg(not(feature = "flex"))]
    {
        let _ = (device, dtype);
        false
    }
}

/// Calls [`RlKernels::token_stats`] through the dispatch backend on `[N, V]` logits.
pub(crate) fn dispatch_token_stats(
    logits: Tensor<2>,
    labels: Tensor<1, Int>,
    inv_temperature: f32,
) -> Tensor<2> {
    Tensor::from_dispatch(<Dispatch as RlKernels>::token_stats(
        logits.into_dispatch(),
        labels.into_dispatch(),
        inv_temperature,
    ))
}

/// Calls [`RlKernels::gae`] through the dispatch backend.
pub(crate) fn dispatch_gae(
    rewards: Tensor<2>,
    values: Tensor<2>,
    mask: Tensor<2>,
    gamma: f32,
    lambda: f32,
) -> Tensor<3> {
    Tensor::from_dispatch(<Dispatch as RlKernels>::gae(
        rewards.into_dispatch(),
        values.into_dispatch(),
        mask.into_dispatch(),
        gamma,
        lambda,
    ))
}

/// Calls [`RlKernels::project`] through the dispatch backend.
pub(crate) fn dispatch_project(x: Tensor<2>, w: Tensor<2>) -> Tensor<2> {
    Tensor::from_dispatch(<Dispatch as RlKernels>::project(
        x.into_dispatch(),
        w.into_dispatch(),
    ))
}

/// Calls [`RlKernels::project_bf16`] through the dispatch backend.
pub(crate) fn dispatch_project_bf16(x: Tensor<2>, w: Tensor<2>) -> Tensor<2> {
    Tensor::from_dispatch(<Dispatch as RlKernels>::project_bf16(
        x.into_dispatch(),
        w.into_dispatch(),
    ))
}

/// Calls [`RlKernels::grouped_attention`] through the dispatch backend.
pub(crate) fn dispatch_attention(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    bias: Tensor<4>,
) -> Tensor<4> {
    Tensor::from_dispatch(<Dispatch as RlKernels>::grouped_attention(
        q.into_dispatch(),
        k.into_dispatch(),
        v.into_dispatch(),
        bias.into_dispatch(),
    ))
}

/// Calls [`RlKernels::rope`] through the dispatch backend.
pub(crate) fn dispatch_rope(x: Tensor<4>, cos: Tensor<4>, sin: Tensor<4>) -> Tensor<4> {
    Tensor::from_dispatch(<Dispatch as RlKernels>::rope(
        x.into_dispatch(),
        cos.into_dispatch(),
        sin.into_dispatch(),
    ))
}

/// Calls [`RlKernels::swiglu`] through the dispatch backend on `[N]` tensors.
pub(crate) fn dispatch_swiglu(gate: Tensor<1>, up: Tensor<1>) -> Tensor<1> {
    Tensor::from_dispatch(<Dispatch as RlKernels>::swiglu(
        gate.into_dispatch(),
        up.into_dispatch(),
    ))
}

/// Calls [`RlKernels::rms_norm`] through the dispatch backend on `[N, D]` rows.
pub(crate) fn dispatch_rms_norm(x: Tensor<2>, weight: Tensor<1>, eps: f32) -> Tensor<2> {
    Tensor::from_dispatch(<Dispatch as RlKernels>::rms_norm(
        x.into_dispatch(),
        weight.into_dispatch(),
        eps,
    ))
}

/// Calls [`RlKernels::add_rms_norm`] through the dispatch backend; returns `[2N, …, D]`.
pub(crate) fn dispatch_add_rms_norm<const D: usize>(
    x: Tensor<D>,
    delta: Tensor<D>,
    weight: Tensor<1>,
    eps: f32,
) -> Tensor<D> {
    Tensor::from_dispatch(<Dispatch as RlKernels>::add_rms_norm(
        x.into_dispatch(),
        delta.into_dispatch(),
        weight.into_dispatch(),
        eps,
    ))
}

/// Calls [`RlKernels::rope_into`] through the dispatch backend.
pub(crate) fn dispatch_rope_into(
    cache: Tensor<4>,
    x: Tensor<4>,
    cos: Tensor<4>,
    sin: Tensor<4>,
    start: usize,
) -> Tensor<4> {
    Tensor::from_dispatch(<Dispatch as RlKernels>::rope_into(
        cache.into_dispatch(),
        x.into_dispatch(),
        cos.into_dispatch(),
        sin.into_dispatch(),
        start,
    ))
}

/// Calls [`RlKernels::adamw`] through the dispatch backend on `[N]` tensors; returns `[3·N]`.
pub(crate) fn dispatch_adamw(
    param: Tensor<1>,
    grad: Tensor<1>,
    moment_1: Tensor<1>,
    moment_2: Tensor<1>,
    scalars: AdamWScalars,
    fresh: bool,
) -> Tensor<1> {
    let n = param.dims()[0];
    let packed: Tensor<2> = Tensor::from_dispatch(<Dispatch as RlKernels>::adamw(
        param.into_dispatch(),
        grad.into_dispatch(),
        moment_1.into_dispatch(),
        moment_2.into_dispatch(),
        scalars,
        fresh,
    ));
    packed.reshape([3 * n])
}

/// Elements `start..end` of a packed 1-D or 2-D gradient, reshaped to `shape`.
fn unpack<B: Backend>(packed: FloatTensor<B>, slices: &[Slice], shape: Shape) -> FloatTensor<B> {
    B::float_reshape(B::float_slice(packed, slices), shape)
}

/// Backward step of [`RlKernels::swiglu`] under autodiff.
#[derive(Debug)]
struct SwigluBackward;

impl<B: Backend + RlKernels> Backward<B, 2> for SwigluBackward {
    /// gate, up
    type State = (FloatTensor<B>, FloatTensor<B>);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [gate_node, up_node] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (gate, up) = ops.state;
        let n = gate.shape()[0];
        let packed = B::swiglu_backward(gate, up, grad);
        let row = |i: usize| {
            let rows = Slice::new(i as isize, Some(i as isize + 1), 1);
            unpack::<B>(packed.clone(), &[rows, Slice::full()], Shape::new([n]))
        };
        if let Some(node) = gate_node {
            grads.register::<B>(node.id, row(0));
        }
        if let Some(node) = up_node {
            grads.register::<B>(node.id, row(1));
        }
    }
}

/// Backward step of [`RlKernels::project_bf16`] under autodiff.
#[derive(Debug)]
struct ProjectBf16Backward;

impl<B: Backend + RlKernels> Backward<B, 2> for ProjectBf16Backward {
    /// x, w
    type State = (FloatTensor<B>, FloatTensor<B>);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [x_node, w_node] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (x, w) = ops.state;
        // y = x·w: ∂x = g·wᵀ, ∂w = xᵀ·g, both read through transposed views (no copies)
        if let Some(node) = x_node {
            let wt = B::float_transpose(w);
            grads.register::<B>(node.id, B::project_bf16(grad.clone(), wt));
        }
        if let Some(node) = w_node {
            grads.register::<B>(node.id, B::project_bf16(B::float_transpose(x), grad));
        }
    }
}

/// Backward step of [`RlKernels::rms_norm`] under autodiff.
#[derive(Debug)]
struct RmsNormBackward;

impl<B: Backend + RlKernels> Backward<B, 2> for RmsNormBackward {
    /// x, weight, eps
    type State = (FloatTensor<B>, FloatTensor<B>, f32);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [x_node, w_node] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (x, weight, eps) = ops.state;
        let shape = x.shape();
        let (rows, d) = (shape[0], shape[1]);
        let packed = B::rms_norm_backward(x, weight, grad, eps);
        let at = |start: usize, end: usize, shape: Shape| {
            let range = Slice::new(start as isize, Some(end as isize), 1);
            unpack::<B>(packed.clone(), &[range], shape)
        };
        if let Some(node) = x_node {
            grads.register::<B>(node.id, at(0, rows * d, shape.clone()));
        }
        if let Some(node) = w_node {
            grads.register::<B>(node.id, at(rows * d, rows * d + d, Shape::new([d])));
        }
    }
}

/// Backward step of [`RlKernels::grouped_attention`] under autodiff.
#[derive(Debug)]
struct AttentionBackward;

/// q, k, v, bias, the output and its log-sum-exps.
type AttentionState<B> = (
    FloatTensor<B>,
    FloatTensor<B>,
    FloatTensor<B>,
    FloatTensor<B>,
    FloatTensor<B>,
    FloatTensor<B>,
);

impl<B: Backend + RlKernels> Backward<B, 3> for AttentionBackward {
    type State = AttentionState<B>;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [q_node, k_node, v_node] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (q, k, v, bias, out, lse) = ops.state;
        let (q_shape, kv_shape) = (q.shape(), k.shape());
        let (nq, nkv) = (q_shape.num_elements(), kv_shape.num_elements());
        let packed = B::grouped_attention_backward(q, k, v, bias, out, lse, grad);
        let at = |start: usize, len: usize, shape: Shape| {
            let range = Slice::new(start as isize, Some((start + len) as isize), 1);
            unpack::<B>(packed.clone(), &[range], shape)
        };
        if let Some(node) = q_node {
            grads.register::<B>(node.id, at(0, nq, q_shape.clone()));
        }
        if let Some(node) = k_node {
            grads.register::<B>(node.id, at(nq, nkv, kv_shape.clone()));
        }
        if let Some(node) = v_node {
            grads.register::<B>(node.id, at(nq + nkv, nkv, kv_shape.clone()));
        }
    }
}

/// Backward step of [`RlKernels::rope`] under autodiff.
#[derive(Debug)]
struct RopeBackward;

impl<B: Backend + RlKernels> Backward<B, 1> for RopeBackward {
    /// cos, sin
    type State = (FloatTensor<B>, FloatTensor<B>);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [x_node] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (cos, sin) = ops.state;
        if let Some(node) = x_node {
            grads.register::<B>(node.id, B::rope_backward(grad, cos, sin));
        }
    }
}

/// Backward step of [`RlKernels::token_stats`] under autodiff.
#[derive(Debug)]
struct TokenStatsBackward;

impl<B: Backend + RlKernels> Backward<B, 1> for TokenStatsBackward {
    /// logits, labels, the forward statistics, inv_temperature
    type State = (FloatTensor<B>, IntTensor<B>, FloatTensor<B>, f32);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [parent] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (logits, labels, stats, inv_temperature) = ops.state;
        if let Some(node) = parent {
            let grad_logits = B::token_stats_backward(logits, labels, stats, grad, inv_temperature);
            grads.register::<B>(node.id, grad_logits);
        }
    }
}

impl<B: Backend + RlKernels, C: CheckpointStrategy> RlKernels for Autodiff<B, C> {
    fn token_stats(
        logits: FloatTensor<Self>,
        labels: IntTensor<Self>,
        inv_temperature: f32,
    ) -> FloatTensor<Self> {
        match TokenStatsBackward
            .prepare::<C>([logits.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let x = logits.primitive().clone(); // a handle, not a copy
                let out = B::token_stats(x.clone(), labels.clone(), inv_temperature);
                prep.finish((x, labels, out.clone(), inv_temperature), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::token_stats(
                logits.into_primitive(),
                labels,
                inv_temperature,
            )),
        }
    }

    /// Not differentiable again (no double backward): the result is an untracked leaf.
    fn token_stats_backward(
        logits: FloatTensor<Self>,
        labels: IntTensor<Self>,
        stats: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        inv_temperature: f32,
    ) -> FloatTensor<Self> {
        <FloatTensor<Self>>::new(B::token_stats_backward(
            logits.into_primitive(),
            labels,
            stats.into_primitive(),
            grad.into_primitive(),
            inv_temperature,
        ))
    }

    /// GAE is not differentiated (its inputs are constants in PPO): the result is an untracked
    /// leaf.
    fn gae(
        rewards: FloatTensor<Self>,
        values: FloatTensor<Self>,
        mask: FloatTensor<Self>,
        gamma: f32,
        lambda: f32,
    ) -> FloatTensor<Self> {
        <FloatTensor<Self>>::new(B::gae(
            rewards.into_primitive(),
            values.into_primitive(),
            mask.into_primitive(),
            gamma,
            lambda,
        ))
    }

    /// A product that needs gradients is autodiff's own matmul (whose backward is
    /// `∂x = g · wᵀ`, `∂w = xᵀ · g`); the small-row kernel serves inference, where nothing is
    /// tracked, and training products have far more than eight rows anyway.
    fn project(x: FloatTensor<Self>, w: FloatTensor<Self>) -> FloatTensor<Self> {
        if x.is_tracked() || w.is_tracked() {
            <Self as FloatTensorOps<Self>>::float_matmul(x, w)
        } else {
            <FloatTensor<Self>>::new(B::project(x.into_primitive(), w.into_primitive()))
        }
    }

    /// A tracked product saves handles to `x` and `w` (as autodiff's matmul does) and
    /// differentiates with two more bf16 products.
    fn project_bf16(x: FloatTensor<Self>, w: FloatTensor<Self>) -> FloatTensor<Self> {
        match ProjectBf16Backward
            .prepare::<C>([x.node(), w.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                // handles, not copies
                let (xs, ws) = (x.primitive().clone(), w.primitive().clone());
                let out = B::project_bf16(xs.clone(), ws.clone());
                prep.finish((xs, ws), out)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(B::project_bf16(x.into_primitive(), w.into_primitive()))
            }
        }
    }

    /// Tracked `q`, `k`, `v` (training) take the kernel's forward with its log-sum-exps and
    /// [`RlKernels::grouped_attention_backward`] as the backward, which saves only handles
    /// to the inputs, the output and the `[B, H, S]` log-sum-exps (no `S × T` matrix); a
    /// tracked bias (never, in this project: it is a mask) takes autodiff's own attention.
    /// Untracked inputs (inference) take the kernel alone.
    fn grouped_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        if bias.is_tracked() {
            return crate::attention::burn_attention::<Self>(q, k, v, bias);
        }
        match AttentionBackward
            .prepare::<C>([q.node(), k.node(), v.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                // handles, not copies
                let (qs, ks, vs) = (
                    q.primitive().clone(),
                    k.primitive().clone(),
                    v.primitive().clone(),
                );
                let bias = bias.into_primitive();
                let shape = qs.shape();
                let [b, h, s, _] = crate::attention::dims4(&shape);
                let (n, rows) = (shape.num_elements(), b * h * s);
                let packed =
                    B::grouped_attention_with_lse(qs.clone(), ks.clone(), vs.clone(), bias.clone());
                let out = unpack::<B>(packed.clone(), &[Slice::new(0, Some(n as isize), 1)], shape);
                let lse = unpack::<B>(
                    packed,
                    &[Slice::new(n as isize, Some((n + rows) as isize), 1)],
                    Shape::new([b, h, s]),
                );
                prep.finish((qs, ks, vs, bias, out.clone(), lse), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::grouped_attention(
                q.into_primitive(),
                k.into_primitive(),
                v.into_primitive(),
                bias.into_primitive(),
            )),
        }
    }

    /// Not differentiable again: the result is an untracked leaf.
    fn grouped_attention_with_lse(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        <FloatTensor<Self>>::new(B::grouped_attention_with_lse(
            q.into_primitive(),
            k.into_primitive(),
            v.into_primitive(),
            bias.into_primitive(),
        ))
    }

    /// Not differentiable again (no double backward): the result is an untracked leaf.
    fn grouped_attention_backward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        out: FloatTensor<Self>,
        lse: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        <FloatTensor<Self>>::new(B::grouped_attention_backward(
            q.into_primitive(),
            k.into_primitive(),
            v.into_primitive(),
            bias.into_primitive(),
            out.into_primitive(),
            lse.into_primitive(),
            grad.into_primitive(),
        ))
    }

    /// The tables get no gradient: [`crate::rope()`] sends tracked tables to the default
    /// body.
    fn rope(
        x: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let (cos, sin) = (cos.into_primitive(), sin.into_primitive());
        match RopeBackward
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let out = B::rope(x.into_primitive(), cos.clone(), sin.clone());
                prep.finish((cos, sin), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::rope(x.into_primitive(), cos, sin)),
        }
    }

    /// Not differentiable again (no double backward): the result is an untracked leaf.
    fn rope_backward(
        grad: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        <FloatTensor<Self>>::new(B::rope_backward(
            grad.into_primitive(),
            cos.into_primitive(),
            sin.into_primitive(),
        ))
    }

    fn swiglu(gate: FloatTensor<Self>, up: FloatTensor<Self>) -> FloatTensor<Self> {
        match SwigluBackward
            .prepare::<C>([gate.node(), up.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                // handles, not copies
                let (g, u) = (gate.primitive().clone(), up.primitive().clone());
                let out = B::swiglu(g.clone(), u.clone());
                prep.finish((g, u), out)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(B::swiglu(gate.into_primitive(), up.into_primitive()))
            }
        }
    }

    /// Not differentiable again (no double backward): the result is an untracked leaf.
    fn swiglu_backward(
        gate: FloatTensor<Self>,
        up: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        <FloatTensor<Self>>::new(B::swiglu_backward(
            gate.into_primitive(),
            up.into_primitive(),
            grad.into_primitive(),
        ))
    }

    fn rms_norm(x: FloatTensor<Self>, weight: FloatTensor<Self>, eps: f32) -> FloatTensor<Self> {
        match RmsNormBackward
            .prepare::<C>([x.node(), weight.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                // handles, not copies
                let (xs, ws) = (x.primitive().clone(), weight.primitive().clone());
                let out = B::rms_norm(xs.clone(), ws.clone(), eps);
                prep.finish((xs, ws, eps), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::rms_norm(
                x.into_primitive(),
                weight.into_primitive(),
                eps,
            )),
        }
    }

    /// An optimizer step is never differentiated: the result is an untracked leaf.
    fn adamw(
        param: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        moment_1: FloatTensor<Self>,
        moment_2: FloatTensor<Self>,
        scalars: AdamWScalars,
        fresh: bool,
    ) -> FloatTensor<Self> {
        <FloatTensor<Self>>::new(B::adamw(
            param.into_primitive(),
            grad.into_primitive(),
            moment_1.into_primitive(),
            moment_2.into_primitive(),
            scalars,
            fresh,
        ))
    }

    /// Untracked inputs (inference) take the kernel. Tracked ones take autodiff's add and
    /// [`RlKernels::rms_norm`] (with its own backward), packed by a concatenation, so that the
    /// result is differentiable; [`crate::add_rms_norm()`] does not route tracked inputs here
    /// (it returns the two tensors without packing them).
    fn add_rms_norm(
        x: FloatTensor<Self>,
        delta: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        eps: f32,
    ) -> FloatTensor<Self> {
        if x.is_tracked() || delta.is_tracked() || weight.is_tracked() {
            let shape = x.shape();
            let d = shape[shape.num_dims() - 1];
            let rows = Shape::new([shape.num_elements() / d.max(1), d]);
            let h = <Self as FloatTensorOps<Self>>::float_add(x, delta);
            let h_rows = <Self as FloatTensorOps<Self>>::float_reshape(h.clone(), rows);
            let y = Self::rms_norm(h_rows, weight, eps);
            let y = <Self as FloatTensorOps<Self>>::float_reshape(y, shape);
            <Self as FloatTensorOps<Self>>::float_cat(vec![h, y], 0)
        } else {
            <FloatTensor<Self>>::new(B::add_rms_norm(
                x.into_primitive(),
                delta.into_primitive(),
                weight.into_primitive(),
                eps,
            ))
        }
    }

    /// Untracked inputs (inference, a KV cache) take the kernel. A tracked `x` or cache takes
    /// [`RlKernels::rope`] (with its own backward) and autodiff's `slice_assign`; the tables
    /// get no gradient, as with [`RlKernels::rope`].
    fn rope_into(
        cache: FloatTensor<Self>,
        x: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
        start: usize,
    ) -> FloatTensor<Self> {
        if cache.is_tracked() || x.is_tracked() {
            let shape = x.shape();
            let whole = |n: usize| Slice::new(0, Some(n as isize), 1);
            let positions = Slice::new(start as isize, Some((start + shape[2]) as isize), 1);
            let slices = [whole(shape[0]), whole(shape[1]), positions, whole(shape[3])];
            let rotated = Self::rope(x, cos, sin);
            <Self as FloatTensorOps<Self>>::float_slice_assign(cache, &slices, rotated)
        } else {
            <FloatTensor<Self>>::new(B::rope_into(
                cache.into_primitive(),
                x.into_primitive(),
                cos.into_primitive(),
                sin.into_primitive(),
                start,
            ))
        }
    }

    /// Not differentiable again (no double backward): the result is an untracked leaf.
    fn rms_norm_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        eps: f32,
    ) -> FloatTensor<Self> {
        <FloatTensor<Self>>::new(B::rms_norm_backward(
            x.into_primitive(),
            weight.into_primitive(),
            grad.into_primitive(),
            eps,
        ))
    }
}

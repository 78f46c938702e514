//! The Llama-family decoder: RMSNorm, rotary embeddings (Hugging Face `rotate_half`
//! layout), grouped-query attention with an optional KV cache, SwiGLU MLP, tied or untied
//! output projection, optional q/k/v/o biases (Qwen2).
//!
//! The module tree is spelled out once, in `LlamaConfig::skeleton`: every parameter with
//! its shape from the config, initialised lazily. [`LlamaConfig::init`] materialises it;
//! loading (Hugging Face safetensors, GGUF) and export walk the same tree with a Burn
//! `ModuleMapper` / `ModuleVisitor`. The fields are named after Hugging Face's modules,
//! so a parameter's module path is its checkpoint name (`layers.0.self_attn.q_proj.weight`
//! is `model.layers.0.self_attn.q_proj.weight`).
//!
//! Every matrix is stored `[in, out]` (Burn's `Linear` layout), the embedding as
//! `[hidden, vocab]` so that the tied output projection is a contiguous `[in, out]` matrix
//! too: flex copies a transposed view on every matmul, which at batch 1 costs more than the
//! product itself. The loaders transpose once on load and export.
//!
//! Padding: every forward takes per-row positions and a key-padding mask, so batches of
//! left- or right-padded sequences give each real token exactly the result it would get
//! alone.

use crate::{LlamaConfig, LmError};
use burn::module::{ModuleVisitor, Param};
use burn::nn::Initializer;
use burn::prelude::*;
use rlaif_kernels::MatmulPrecision;
use rlaif_kernels::quant::QuantMatrix;
use std::collections::HashMap;
use std::sync::Arc;

/// The initial distribution of the weight matrices (GPT-2's, as Hugging Face's Llama uses).
const INIT_WEIGHTS: Initializer = Initializer::Normal {
    mean: 0.0,
    std: 0.02,
};

/// A projection `y = x W + b` with `W` stored `[in, out]`.
#[derive(Module, Debug)]
pub struct Proj {
    /// `[in, out]` (the transpose of PyTorch's `weight`).
    pub weight: Param<Tensor<2>>,
    /// `[out]`.
    pub bias: Option<Param<Tensor<1>>>,
    /// `W` as ggml blocks (`[out, in]`) kept from a GGUF file for decoding while the weight
    /// is frozen (see [`Llama::attach_quantized`]); not a parameter.
    #[module(skip)]
    pub quantized: Option<Arc<QuantMatrix>>,
    /// How the f32 products multiply (see [`Llama::set_matmul_precision`]); not a parameter.
    #[module(skip)]
    pub precision: MatmulPrecision,
}

impl Proj {
    /// Normal(0, 0.02) weights, zero bias; lazy.
    fn new(d_in: usize, d_out: usize, bias: bool, device: &Device) -> Self {
        Self {
            weight: INIT_WEIGHTS.init([d_in, d_out], device),
            bias: bias.then(|| Initializer::Zeros.init([d_out], device)),
            quantized: None,
            precision: MatmulPrecision::F32,
        }
    }

    /// `[B, S, in] → [B, S, out]`, as one 2-D product over the `B·S` rows (a batched
    /// `[B, S, K]·[1, K, N]` product would broadcast the weight and, on flex, read it once
    /// per batch row on a single thread); from the ggml blocks of [`Proj::quantized`] when
    /// the product is a decoding step of a frozen weight on flex (see
    /// [`Llama::attach_quantized`]).
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let [y] = Self::forward_group([self], x);
        y
    }

    /// [`Proj::forward`] of several projections of the same input (a layer's q, k and v; its
    /// gate and up). Decoding from ggml blocks runs them as one product
    /// (`rlaif_kernels::quant::matmul_rows_many`: one copy of `x` to the host and one hand-off
    /// to the threads for the group); every output is the same as from [`Proj::forward`].
    pub fn forward_group<const N: usize>(projs: [&Proj; N], x: Tensor<3>) -> [Tensor<3>; N] {
        let ys = match quantized_rows(&x, &projs) {
            Some(ys) => ys,
            None => projs.map(|p| matmul_rows(x.clone(), p.weight.val(), p.precision)),
        };
        let mut ys = ys.into_iter();
        std::array::from_fn(|i| {
            let y = ys.next().expect("one product per projection");
            match &projs[i].bias {
                Some(b) => y + b.val().unsqueeze::<3>(),
                None => y,
            }
        })
    }
}

/// `x [B, S, K] · w [K, N] → [B, S, N]` as one `[B·S, K]·[K, N]` product: with at most
/// eight rows (a decoding step) through `rlaif_kernels::linear`'s multi-threaded small-row
/// kernel, otherwise `matmul`, or the bf16 product where `precision` asks for it.
fn matmul_rows(x: Tensor<3>, w: Tensor<2>, precision: MatmulPrecision) -> Tensor<3> {
    let [b, s, k] = x.dims();
    let n = w.dims()[1];
    rlaif_kernels::linear_with(x.reshape([b * s, k]), w, precision)
        .expect("a projection's input width is its weight's (both from the config)")
        .reshape([b, s, n])
}

/// `x [B, S, K] · W_i → [B, S, N_i]` for each projection, from the ggml blocks
/// (`rlaif_kernels::quant`) in one product, when every projection has blocks, there are at
/// most eight rows (a decoding step), the backend is flex, and the products are not part of
/// training: neither `x` nor a weight requires a gradient (a frozen weight cannot be changed
/// by an optimizer, so its blocks still hold its values). `None` otherwise: the caller runs
/// the f32 products.
fn quantized_rows<const N: usize>(x: &Tensor<3>, projs: &[&Proj; N]) -> Option<[Tensor<3>; N]> {
    let blocks: Vec<&QuantMatrix> = projs
        .iter()
        .map(|p| p.quantized.as_deref())
        .collect::<Option<_>>()?;
    quantized_products(x, &projs.map(|p| &p.weight), &blocks)
}

/// The products of [`quantized_rows`] for weights and their blocks (`blocks[i]` holds
/// `weights[i]`'s values).
fn quantized_products<const N: usize>(
    x: &Tensor<3>,
    weights: &[&Param<Tensor<2>>; N],
    blocks: &[&QuantMatrix],
) -> Option<[Tensor<3>; N]> {
    let [b, s, k] = x.dims();
    let device = x.device();
    if b * s > rlaif_kernels::SMALL_M_MAX_ROWS
        || blocks.iter().any(|q| q.cols() != k)
        || x.is_require_grad()
        || weights.iter().any(|w| w.val().is_require_grad())
        || !rlaif_kernels::fused_available(&device, x.dtype())
    {
        return None;
    }
    let rows: Vec<f32> = x.clone().into_data().try_into_vec::<f32>().ok()?;
    let mut ys = rlaif_kernels::quant::matmul_rows_many(blocks, &rows, b * s)
        .ok()?
        .into_iter();
    Some(std::array::from_fn(|i| {
        let y = ys.next().expect("one product per matrix");
        Tensor::from_data(TensorData::new(y, [b, s, blocks[i].rows()]), &device)
    }))
}

/// Root-mean-square layer norm (Zhang & Sennrich 2019): `x / sqrt(mean(x²) + ε) · w`.
#[derive(Module, Debug)]
pub struct RmsNorm {
    /// `[hidden]`.
    pub weight: Param<Tensor<1>>,
    /// ε.
    pub eps: f64,
}

impl RmsNorm {
    /// Unit weights; lazy.
    fn new(d: usize, eps: f64, device: &Device) -> Self {
        Self {
            weight: Initializer::Ones.init([d], device),
            eps,
        }
    }

    /// Normalises the last dimension.
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        // one pass per row on flex, with its own backward
        rlaif_kernels::rms_norm(x, self.weight.val(), self.eps)
            .expect("the weight has the hidden size and the config's eps was checked positive")
    }

    /// The residual sum `x + delta` and its norm, `(x + delta, norm(x + delta))`: one pass on
    /// flex when nothing is tracked (inference), the add and [`RmsNorm::forward`] otherwise.
    pub fn forward_residual(&self, x: Tensor<3>, delta: Tensor<3>) -> (Tensor<3>, Tensor<3>) {
        rlaif_kernels::add_rms_norm(x, delta, self.weight.val(), self.eps).expect(
            "x and delta are the residual stream's shape, the weight has the hidden size and \
             the config's eps was checked positive",
        )
    }
}

/// Rotary position tables (Su et al. 2021, RoFormer eq. 34) in the `rotate_half` layout
/// of Hugging Face's Llama: dimension `i` pairs with `i + d/2`.
#[derive(Module, Debug)]
pub struct Rope {
    /// `[max_pos, head_dim]`.
    cos: Tensor<2>,
    /// `[max_pos, head_dim]`.
    sin: Tensor<2>,
}

impl Rope {
    fn new(head_dim: usize, max_pos: usize, theta: f64, device: &Device) -> Self {
        let half = head_dim / 2;
        let mut cos = Vec::with_capacity(max_pos * head_dim);
        let mut sin = Vec::with_capacity(max_pos * head_dim);
        // θ_i = theta^(-2i/d), computed in f64 like the reference, stored as f32.
        let inv: Vec<f64> = (0..half)
            .map(|i| theta.powf(-((2 * i) as f64) / head_dim as f64))
            .collect();
        for p in 0..max_pos {
            // the row is the half-row twice (dimension i pairs with i + d/2)
            let start = cos.len();
            for f in &inv {
                let a = p as f64 * f;
                cos.push(a.cos() as f32);
                sin.push(a.sin() as f32);
            }
            cos.extend_from_within(start..);
            sin.extend_from_within(start..);
        }
        Self {
            cos: Tensor::from_data(TensorData::new(cos, [max_pos, head_dim]), device),
            sin: Tensor::from_data(TensorData::new(sin, [max_pos, head_dim]), device),
        }
    }

    /// cos and sin at `positions` `[B, S]`, shaped `[B, 1, S, D]` for broadcasting over heads.
    fn at(&self, positions: Tensor<2, Int>) -> (Tensor<4>, Tensor<4>) {
        let [b, s] = positions.dims();
        let d = self.cos.dims()[1];
        let idx = positions.reshape([b * s]);
        let pick = |t: &Tensor<2>| {
            t.clone()
                .select(0, idx.clone())
                .reshape([b, s, d])
                .unsqueeze_dim::<4>(1)
        };
        (pick(&self.cos), pick(&self.sin))
    }
}

/// `x·cos + rotate_half(x)·sin` on `[B, H, S, D]`: on flex one pass per row that reads the
/// transposed view of the projection in place and writes the contiguous layout attention
/// reads, with its own backward (bit for bit the plain ops' results).
fn apply_rope(x: Tensor<4>, cos: &Tensor<4>, sin: &Tensor<4>) -> Tensor<4> {
    rlaif_kernels::rope(x, cos.clone(), sin.clone())
        .expect("the tables are [B, 1, S, head_dim] of the batch's positions; head_dim is even")
}

/// Cached keys and values of one layer, `[B, KVH, capacity, D]` each (before head
/// repetition): positions `0..len` of the owning [`KvCache`] hold keys and values, the rest is
/// room to append into.
#[derive(Debug, Clone)]
struct LayerCache {
    /// Keys (already rotated).
    k: Tensor<4>,
    /// Values.
    v: Tensor<4>,
}

impl LayerCache {
    /// Writes the keys `k [B, KVH, S, D]` rotated by `cos, sin` and the values `v` at
    /// positions `past..past + S` and returns the keys and values of positions `0..past + S`
    /// (views into the cache). When the cache has no room left it grows by a quarter (at
    /// least 64 positions), so appending one position per decoding step copies it only every
    /// so often; otherwise the writes are in place on flex (the views returned by the
    /// previous call are dropped by then): the keys are rotated straight into the cache
    /// ([`rlaif_kernels::rope_into_cache`]) and the values go through flex's `slice_assign`,
    /// which reuses a buffer nothing else holds.
    fn append(
        slot: &mut Option<LayerCache>,
        past: usize,
        k: Tensor<4>,
        v: Tensor<4>,
        ctx: &Context,
    ) -> (Tensor<4>, Tensor<4>) {
        let [b, g, s, d] = k.dims();
        let len = past + s;
        let mut c = match slot.take() {
            Some(c) if c.k.dims()[2] >= len => c,
            prev => {
                let capacity = (len + (len / 4).max(64)).next_multiple_of(64);
                let device = k.device();
                let room = || Tensor::<4>::zeros([b, g, capacity, d], &device);
                let (mut rk, mut rv) = (room(), room());
                if let Some(p) = prev.filter(|_| past > 0) {
                    let kept = [0..b, 0..g, 0..past, 0..d];
                    rk = rk.slice_assign(kept.clone(), p.k.slice(kept.clone()));
                    rv = rv.slice_assign(kept.clone(), p.v.slice(kept));
                }
                LayerCache { k: rk, v: rv }
            }
        };
        c.k = rlaif_kernels::rope_into_cache(c.k, past, k, ctx.cos.clone(), ctx.sin.clone())
            .expect("the cache has room for positions past..past + S of the batch's heads");
        c.v = c.v.slice_assign([0..b, 0..g, past..len, 0..d], v);
        let held = [0..b, 0..g, 0..len, 0..d];
        let views = (c.k.clone().slice(held.clone()), c.v.clone().slice(held));
        *slot = Some(c);
        views
    }
}

/// The KV cache of all layers: pass the same cache to successive [`Llama::hidden`] calls
/// to continue sequences without recomputing their past.
///
/// Each layer's keys and values live in tensors with room for more positions than they hold;
/// a forward writes its new positions into that room (in place on flex) and attention reads
/// the held positions in place, so a decoding step does not copy the cache.
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    /// One entry per layer; `None` until the first forward.
    layers: Vec<Option<LayerCache>>,
    /// Positions held.
    len: usize,
}

impl KvCache {
    /// Number of cached positions (0 when empty).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Positions the cache holds room for before it must grow (0 when empty).
    pub fn capacity(&self) -> usize {
        self.layers
            .first()
            .and_then(|l| l.as_ref())
            .map_or(0, |c| c.k.dims()[2])
    }

    /// Keeps only the batch rows in `rows` (in that order); used to drop finished rows or
    /// to repeat a shared prompt.
    pub fn select_rows(&mut self, rows: Tensor<1, Int>) {
        for c in self.layers.iter_mut().flatten() {
            c.k = c.k.clone().select(0, rows.clone());
            c.v = c.v.clone().select(0, rows.clone());
        }
    }
}

/// The per-forward inputs every block shares: RoPE at the batch's positions and the
/// attention bias.
struct Context {
    /// `[B, 1, S, D]`.
    cos: Tensor<4>,
    /// `[B, 1, S, D]`.
    sin: Tensor<4>,
    /// `[B, 1, S, T]` from [`mask_to_bias`].
    bias: Tensor<4>,
}

/// Grouped-query self-attention (Ainslie et al. 2023).
#[derive(Module, Debug)]
pub struct Attention {
    /// Query projection.
    pub q_proj: Proj,
    /// Key projection.
    pub k_proj: Proj,
    /// Value projection.
    pub v_proj: Proj,
    /// Output projection.
    pub o_proj: Proj,
    /// Query heads.
    pub n_heads: usize,
    /// Key/value heads.
    pub n_kv_heads: usize,
    /// Head width.
    pub head_dim: usize,
}

impl Attention {
    /// `x [B, S, H]`; with a cache slot and the positions it holds, the new keys/values are
    /// appended to it.
    fn forward(
        &self,
        x: Tensor<3>,
        ctx: &Context,
        cache: Option<(&mut Option<LayerCache>, usize)>,
    ) -> Tensor<3> {
        let [b, s, _] = x.dims();
        let (h, kvh, hd) = (self.n_heads, self.n_kv_heads, self.head_dim);
        let split = |t: Tensor<3>, heads: usize| t.reshape([b, s, heads, hd]).swap_dims(1, 2);
        let [q, k, v] = Proj::forward_group([&self.q_proj, &self.k_proj, &self.v_proj], x);
        let q = apply_rope(split(q, h), &ctx.cos, &ctx.sin);
        let (k, v) = match cache {
            // rotated as they are written into the cache
            Some((slot, past)) => LayerCache::append(slot, past, split(k, kvh), split(v, kvh), ctx),
            None => (apply_rope(split(k, kvh), &ctx.cos, &ctx.sin), split(v, kvh)),
        };
        // Grouped-query attention (the n_heads / n_kv_heads query heads of a group share its
        // keys and values, never repeated per head); on flex a kernel that reads the cache
        // view in place: a prefill or a training forward skips the key tiles the bias masks
        // (training with a backward of its own), a decoding step reads each key and value
        // row where it lies
        let o = rlaif_kernels::attention(q, k, v, ctx.bias.clone())
            .expect("q, k, v and the bias are shaped from the config and the batch");
        self.o_proj
            .forward(o.swap_dims(1, 2).reshape([b, s, h * hd]))
    }
}

/// SwiGLU feed-forward (Shazeer 2020): `down(silu(gate(x)) · up(x))`.
#[derive(Module, Debug)]
pub struct Mlp {
    /// Gate projection.
    pub gate_proj: Proj,
    /// Up projection.
    pub up_proj: Proj,
    /// Down projection.
    pub down_proj: Proj,
}

impl Mlp {
    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        // silu(gate) · up in one pass on flex, with its own backward
        let [gate, up] = Proj::forward_group([&self.gate_proj, &self.up_proj], x);
        let gated = rlaif_kernels::swiglu(gate, up).expect("gate and up have the same shape");
        self.down_proj.forward(gated)
    }
}

/// One pre-norm decoder block: `x + attn(norm(x))`, then `x + mlp(norm(x))`.
#[derive(Module, Debug)]
pub struct Block {
    /// Norm before attention.
    pub input_layernorm: RmsNorm,
    /// Attention.
    pub self_attn: Attention,
    /// Norm before the MLP.
    pub post_attention_layernorm: RmsNorm,
    /// MLP.
    pub mlp: Mlp,
}

impl Block {
    /// The seven projections of the block under their Hugging Face names
    /// (`self_attn.q_proj`, …, `mlp.down_proj`).
    pub fn projections_mut(&mut self) -> [(&'static str, &mut Proj); 7] {
        let (a, m) = (&mut self.self_attn, &mut self.mlp);
        [
            ("self_attn.q_proj", &mut a.q_proj),
            ("self_attn.k_proj", &mut a.k_proj),
            ("self_attn.v_proj", &mut a.v_proj),
            ("self_attn.o_proj", &mut a.o_proj),
            ("mlp.gate_proj", &mut m.gate_proj),
            ("mlp.up_proj", &mut m.up_proj),
            ("mlp.down_proj", &mut m.down_proj),
        ]
    }

    /// The residual stream after this block and `next_norm` of it, both `[B, S, H]`, from
    /// the stream `x` before it and `normed = input_layernorm(x)`: each residual sum is
    /// formed with the norm that reads it (one pass on flex in inference), so the caller
    /// passes the next block's input norm, or the final norm after the last block.
    fn forward(
        &self,
        x: Tensor<3>,
        normed: Tensor<3>,
        next_norm: &RmsNorm,
        ctx: &Context,
        cache: Option<(&mut Option<LayerCache>, usize)>,
    ) -> (Tensor<3>, Tensor<3>) {
        let attn = self.self_attn.forward(normed, ctx, cache);
        let (x, normed) = self.post_attention_layernorm.forward_residual(x, attn);
        next_norm.forward_residual(x, self.mlp.forward(normed))
    }
}

/// The decoder.
#[derive(Module, Debug)]
pub struct Llama {
    /// Token embedding, stored `[hidden, vocab]` (the transpose of Hugging Face's).
    pub embed_tokens: Param<Tensor<2>>,
    /// Decoder blocks.
    pub layers: Vec<Block>,
    /// Final norm.
    pub norm: RmsNorm,
    /// Output projection `[hidden, vocab]`; `None` when tied to the embedding.
    pub lm_head: Option<Param<Tensor<2>>>,
    /// RoPE tables (constants, not parameters).
    pub rope: Rope,
    /// The output projection (`lm_head`, or the tied embedding) as ggml blocks `[vocab,
    /// hidden]`, kept for decoding like [`Proj::quantized`]; not a parameter.
    #[module(skip)]
    pub quantized_head: Option<Arc<QuantMatrix>>,
    /// How the output projection multiplies (see [`Llama::set_matmul_precision`]); not a
    /// parameter.
    #[module(skip)]
    pub head_precision: MatmulPrecision,
}

/// Builds the attention mask `[B, 1, S, T]` (true = masked) for `S` new tokens after
/// `T - S` cached ones, from `key_is_pad[b][t]` (`T` entries per row): causal, and padded
/// keys hidden. A query may always see itself, so rows of padding never become all-masked
/// (which would give NaN).
pub fn attention_mask(key_is_pad: &[Vec<bool>], s: usize, device: &Device) -> Tensor<4, Bool> {
    let b = key_is_pad.len();
    let t = key_is_pad.first().map_or(s, Vec::len);
    let past = t - s;
    let mut m = Vec::with_capacity(b * s * t);
    for row in key_is_pad {
        for i in 0..s {
            let qpos = past + i;
            m.extend((0..t).map(|j| j > qpos || (row[j] && j != qpos)));
        }
    }
    Tensor::from_data(TensorData::new(m, [b, 1, s, t]), device)
}

/// The additive attention bias `[B, 1, S, T]` of a mask `[B, 1, S, T]`: 0 where a query may
/// attend and a large negative value where it may not.
///
/// An additive bias rather than a boolean mask: burn-tch 0.22.1 passes boolean masks to
/// PyTorch's `scaled_dot_product_attention`, which reads them inverted (true = attend); with
/// a bias every backend computes the same thing. The masked value is [`masked_bias`]'s.
fn mask_to_bias(mask: &Tensor<4, Bool>) -> Tensor<4> {
    let device = mask.device();
    Tensor::<4>::zeros(mask.dims(), &device).mask_fill(mask.clone(), masked_bias(&device))
}

/// The bias of a masked key: `-inf` on flex, `f32::MIN` elsewhere; either way its probability
/// is exactly 0 (every row keeps its own diagonal, so no row is all masked).
///
/// On flex, softmax runs libm's `expf`, which takes a slow path (errno) for every argument
/// that underflows, and `f32::MIN + score` does — half of a causal prefill's or training
/// step's scores (measured: a fifth of a 1024-token prefill) — while `-inf` returns 0 at once;
/// flex's attention guards the `-inf − (-inf)` of a fully masked tile. Other backends keep the
/// finite `f32::MIN` (as Hugging Face does), which keeps flash-style online softmaxes that do
/// not guard that case free of NaN.
fn masked_bias(device: &Device) -> f32 {
    if rlaif_kernels::fused_available(device, burn::tensor::DType::F32) {
        f32::NEG_INFINITY
    } else {
        f32::MIN
    }
}

impl LlamaConfig {
    /// A randomly initialised model: normal(0, 0.02) matrices, unit norms, zero biases.
    /// Fails if the config is invalid ([`LlamaConfig::validate`]).
    pub fn init(&self, device: &Device) -> Result<Llama, LmError> {
        let model = self.skeleton(device)?;
        // Materialise every parameter now: clones of a lazy module share its lazy state
        // (Burn primer, pitfall 1), so a model handed out must already be initialised.
        struct Materialise;
        impl ModuleVisitor for Materialise {
            fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
                let _ = p.val();
            }
        }
        model.visit(&mut Materialise);
        Ok(model)
    }

    /// The model's module tree with every parameter shaped by this config and initialised
    /// lazily (nothing is allocated until a parameter is read or replaced): the one place
    /// the structure is spelled out, which [`LlamaConfig::init`], the loaders, the export
    /// and the tiny test models walk.
    pub(crate) fn skeleton(&self, device: &Device) -> Result<Llama, LmError> {
        self.validate()?;
        let (h, hd, v) = (self.hidden_size, self.head_dim(), self.vocab_size);
        let (nh, nkv, ff) = (
            self.num_attention_heads,
            self.kv_heads(),
            self.intermediate_size,
        );
        let (eps, qkv_bias) = (self.rms_norm_eps, self.qkv_bias());
        let block = || Block {
            input_layernorm: RmsNorm::new(h, eps, device),
            self_attn: Attention {
                q_proj: Proj::new(h, nh * hd, qkv_bias, device),
                k_proj: Proj::new(h, nkv * hd, qkv_bias, device),
                v_proj: Proj::new(h, nkv * hd, qkv_bias, device),
                o_proj: Proj::new(nh * hd, h, self.o_bias(), device),
                n_heads: nh,
                n_kv_heads: nkv,
                head_dim: hd,
            },
            post_attention_layernorm: RmsNorm::new(h, eps, device),
            mlp: Mlp {
                gate_proj: Proj::new(h, ff, false, device),
                up_proj: Proj::new(h, ff, false, device),
                down_proj: Proj::new(ff, h, false, device),
            },
        };
        Ok(Llama {
            embed_tokens: INIT_WEIGHTS.init([h, v], device),
            layers: (0..self.num_hidden_layers).map(|_| block()).collect(),
            norm: RmsNorm::new(h, eps, device),
            lm_head: (!self.tie_word_embeddings).then(|| INIT_WEIGHTS.init([h, v], device)),
            rope: Rope::new(hd, self.max_position_embeddings, self.rope_theta, device),
            quantized_head: None,
            head_precision: MatmulPrecision::F32,
        })
    }
}

impl Llama {
    /// Final hidden states `[B, S, H]` (after the last norm) of `tokens [B, S]` at
    /// `positions [B, S]`, with `mask [B, 1, S, T]` from [`attention_mask`]. With a cache,
    /// the new keys/values are appended to it.
    pub fn hidden(
        &self,
        tokens: Tensor<2, Int>,
        positions: Tensor<2, Int>,
        mask: &Tensor<4, Bool>,
        mut cache: Option<&mut KvCache>,
    ) -> Tensor<3> {
        let [b, s] = tokens.dims();
        let hdim = self.embed_tokens.dims()[0];
        let mut x = self
            .embed_tokens
            .val()
            .select(1, tokens.reshape([b * s]))
            .transpose()
            .reshape([b, s, hdim]);
        let past = cache.as_deref().map_or(0, KvCache::len);
        if let Some(c) = cache.as_deref_mut() {
            c.layers.resize(self.layers.len(), None);
        }
        let (cos, sin) = self.rope.at(positions);
        let ctx = Context {
            cos,
            sin,
            bias: mask_to_bias(mask),
        };
        let Some(first) = self.layers.first() else {
            return self.norm.forward(x);
        };
        let mut normed = first.input_layernorm.forward(x.clone());
        for (i, layer) in self.layers.iter().enumerate() {
            let slot = cache.as_deref_mut().map(|c| (&mut c.layers[i], past));
            let next_norm = self
                .layers
                .get(i + 1)
                .map_or(&self.norm, |l| &l.input_layernorm);
            (x, normed) = layer.forward(x, normed, next_norm, &ctx, slot);
        }
        if let Some(c) = cache {
            c.len = past + s;
        }
        normed
    }

    /// Logits `[B, S, V]` from hidden states `[B, S, H]`.
    pub fn logits(&self, hidden: Tensor<3>) -> Tensor<3> {
        let w = self.lm_head.as_ref().unwrap_or(&self.embed_tokens);
        let head = self.quantized_head.as_deref();
        match head.and_then(|q| quantized_products(&hidden, &[w], &[q])) {
            Some([y]) => y,
            None => matmul_rows(hidden, w.val(), self.head_precision),
        }
    }

    /// Keeps ggml blocks of the projections and of the output layer for decoding, from
    /// `blocks` keyed by Hugging Face weight names (`model.layers.0.self_attn.q_proj.weight`,
    /// `lm_head.weight`, or `model.embed_tokens.weight` for a tied output layer), each
    /// `[out, in]`; weights without an entry (or whose blocks have another shape) stay f32
    /// only. Returns how many weights got their blocks.
    ///
    /// The blocks are used in place of a weight only while it is frozen (it does not require
    /// a gradient, as after [`Module::no_grad`]) and only for products of at most eight rows
    /// on the flex backend; everything else reads the f32 weight. The blocks must hold the
    /// f32 weight's values (as a GGUF file's blocks do for the model loaded from it): a
    /// weight changed after this call would not be seen by decoding, so a model that will
    /// be trained must not keep blocks ([`Llama::drop_quantized`]).
    pub fn attach_quantized(&mut self, blocks: &HashMap<String, Arc<QuantMatrix>>) -> usize {
        let fits = |name: &str, p: &Param<Tensor<2>>| {
            let [k, n] = p.dims();
            blocks
                .get(name)
                .filter(|q| q.rows() == n && q.cols() == k)
                .cloned()
        };
        let mut count = 0;
        for (i, layer) in self.layers.iter_mut().enumerate() {
            for (name, proj) in layer.projections_mut() {
                proj.quantized = fits(&format!("model.layers.{i}.{name}.weight"), &proj.weight);
                count += usize::from(proj.quantized.is_some());
            }
        }
        self.quantized_head = match &self.lm_head {
            Some(head) => fits("lm_head.weight", head),
            None => fits("model.embed_tokens.weight", &self.embed_tokens),
        };
        count + usize::from(self.quantized_head.is_some())
    }

    /// Sets how every projection and the output layer multiply:
    /// [`MatmulPrecision::Bf16`] rounds the inputs of each product of more than eight rows
    /// (prefill, scoring, training, forward and backward) to bfloat16 and sums in f32 on the
    /// AMX tile unit, as PyTorch's CPU autocast does for `nn.Linear`; the weights, their
    /// gradients and everything else (norms, attention, softmax) stay f32. Kept by the
    /// optimizer's updates (it is not a parameter); not saved with the weights.
    ///
    /// # Errors
    /// [`LmError::Backend`] for [`MatmulPrecision::Bf16`] where it cannot run (another
    /// backend than flex, or a CPU without AMX-BF16: `rlaif_kernels::bf16_available`).
    pub fn set_matmul_precision(&mut self, precision: MatmulPrecision) -> Result<(), LmError> {
        if precision == MatmulPrecision::Bf16 && !rlaif_kernels::bf16_available(&self.device()) {
            return Err(LmError::Backend(
                "bf16 matmuls need the flex backend on a CPU with AMX-BF16 (Intel Sapphire \
                 Rapids or later) and a Linux kernel that grants it"
                    .into(),
            ));
        }
        for layer in &mut self.layers {
            for (_, proj) in layer.projections_mut() {
                proj.precision = precision;
            }
        }
        self.head_precision = precision;
        Ok(())
    }

    /// The precision set by [`Llama::set_matmul_precision`] (that of the output layer).
    pub fn matmul_precision(&self) -> MatmulPrecision {
        self.head_precision
    }

    /// Drops every weight's ggml blocks (see [`Llama::attach_quantized`]): from then on every
    /// product reads the f32 weights.
    pub fn drop_quantized(&mut self) {
        for layer in &mut self.layers {
            for (_, proj) in layer.projections_mut() {
                proj.quantized = None;
            }
        }
        self.quantized_head = None;
    }

    /// Logits `[B, S, V]` of a batch of sequences with `attention_mask [B, S]` (1 = real
    /// token, 0 = padding; left or right padding). Positions count real tokens only.
    pub fn forward(&self, tokens: Tensor<2, Int>, attention_mask: &[Vec<bool>]) -> Tensor<3> {
        let device = tokens.device();
        let (positions, mask) = positions_and_mask(attention_mask, &device);
        self.logits(self.hidden(tokens, positions, &mask, None))
    }

    /// Vocabulary size.
    pub fn vocab_size(&self) -> usize {
        self.embed_tokens.dims()[1]
    }

    /// Longest supported sequence.
    pub fn max_positions(&self) -> usize {
        self.rope.cos.dims()[0]
    }

    /// The device the weights live on.
    pub fn device(&self) -> Device {
        self.embed_tokens.val().device()
    }
}

/// Positions `[B, S]` (index among the row's real tokens, 0 on padding) and the causal
/// padding mask for a batch without cache; `real[b][s]` is true for real tokens.
pub fn positions_and_mask(
    real: &[Vec<bool>],
    device: &Device,
) -> (Tensor<2, Int>, Tensor<4, Bool>) {
    let b = real.len();
    let s = real.first().map_or(0, Vec::len);
    let mut pos = Vec::with_capacity(b * s);
    for row in real {
        let mut n = 0i64;
        for &r in row {
            pos.push(if r { n } else { n.saturating_sub(1).max(0) });
            n += r as i64;
        }
    }
    let pad: Vec<Vec<bool>> = real
        .iter()
        .map(|r| r.iter().map(|x| !x).collect())
        .collect();
    (
        Tensor::from_data(TensorData::new(pos, [b, s]), device),
        attention_mask(&pad, s, device),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::weights::to_host;

    #[test]
    fn bias_is_zero_where_a_query_attends_and_masked_elsewhere() {
        let dev = Device::default();
        let m = attention_mask(&[vec![true, false]], 2, &dev); // [1, 1, 2, 2]
        let b = mask_to_bias(&m);
        assert_eq!(b.dims(), [1, 1, 2, 2]);
        let v: Vec<f32> = b.into_data().iter::<f32>().collect();
        let (o, x) = (0.0, masked_bias(&dev));
        assert!(x == f32::NEG_INFINITY || x == f32::MIN);
        assert_eq!(v, vec![o, x, x, o]);
    }

    #[test]
    fn mask_is_causal_hides_padding_and_keeps_the_diagonal() {
        let dev = Device::default();
        let m = attention_mask(&[vec![true, false, false]], 3, &dev);
        let v: Vec<bool> = m.into_data().iter::<bool>().collect();
        #[rustfmt::skip]
        let want = vec![
            false, true, true,   // the pad query sees only itself
            true, false, true,   // causal, pad key hidden
            true, false, false,
        ];
        assert_eq!(v, want);
        // decoding one token after two cached ones
        let m = attention_mask(&[vec![false, false, false]], 1, &dev);
        assert_eq!(
            m.into_data().iter::<bool>().collect::<Vec<_>>(),
            vec![false; 3]
        );
    }

    #[test]
    fn block_forward_adds_both_residuals() {
        // With zero output projections both sub-layers add nothing: the block is the
        // identity on its input, which only holds if it carries the residual itself.
        let dev = Device::default();
        let cfg = LlamaConfig {
            vocab_size: 16,
            hidden_size: 8,
            intermediate_size: 16,
            num_hidden_layers: 1,
            num_attention_heads: 2,
            num_key_value_heads: Some(1),
            max_position_embeddings: 8,
            ..LlamaConfig::default()
        };
        let mut model = cfg.init(&dev).unwrap();
        let block = &mut model.layers[0];
        let zero = |p: &Param<Tensor<2>>| Param::from_tensor(p.val().zeros_like());
        block.self_attn.o_proj.weight = zero(&block.self_attn.o_proj.weight);
        block.mlp.down_proj.weight = zero(&block.mlp.down_proj.weight);
        let x = Tensor::<3>::random([1, 3, 8], burn::tensor::Distribution::Default, &dev);
        let (positions, mask) = positions_and_mask(&[vec![true; 3]], &dev);
        let (cos, sin) = model.rope.at(positions);
        let ctx = Context {
            cos,
            sin,
            bias: mask_to_bias(&mask),
        };
        let block = &model.layers[0];
        let normed = block.input_layernorm.forward(x.clone());
        let (y, y_normed) = block.forward(x.clone(), normed, &model.norm, &ctx, None);
        assert_eq!(to_host(y).unwrap(), to_host(x.clone()).unwrap());
        // and the norm it returns is the next norm of that stream
        let want = model.norm.forward(x);
        assert_eq!(to_host(y_normed).unwrap(), to_host(want).unwrap());
    }

    #[test]
    fn the_cache_grows_by_a_quarter_and_decodes_through_its_growth_as_recomputation_does() {
        let dev = Device::default();
        let cfg = LlamaConfig {
            vocab_size: 64,
            hidden_size: 16,
            intermediate_size: 32,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            num_key_value_heads: Some(2),
            max_position_embeddings: 512,
            ..LlamaConfig::default()
        };
        let model = cfg.init(&dev).unwrap();
        let ids: Vec<i64> = (0..200).map(|i| (i * 7 + 3) % 64).collect();
        let tokens = |r: std::ops::Range<usize>| {
            let n = r.len();
            Tensor::<2, Int>::from_data(TensorData::new(ids[r].to_vec(), [1, n]), &dev)
        };
        let step = |cache: &mut KvCache, r: std::ops::Range<usize>| {
            let past = cache.len();
            let pos: Vec<i64> = r.clone().map(|p| p as i64).collect();
            let n = r.len();
            let positions = Tensor::<2, Int>::from_data(TensorData::new(pos, [1, n]), &dev);
            let mask = attention_mask(&[vec![false; past + n]], n, &dev);
            model.hidden(tokens(r), positions, &mask, Some(cache))
        };
        let mut cache = KvCache::default();
        step(&mut cache, 0..100);
        // 100 held, room for max(100 / 4, 64) more, rounded up to 64 positions
        assert_eq!((cache.len(), cache.capacity()), (100, 192));
        let mut last = None;
        for p in 100..200 {
            last = Some(step(&mut cache, p..p + 1));
            if p + 1 == 192 {
                assert_eq!(cache.capacity(), 192, "full, not grown yet");
            }
        }
        // grown once, at 193 positions: 193 + 64 rounded up
        assert_eq!((cache.len(), cache.capacity()), (200, 320));
        let (positions, mask) = positions_and_mask(&[vec![true; 200]], &dev);
        let full = model.hidden(tokens(0..200), positions, &mask, None);
        let want = to_host(full.slice([0..1, 199..200, 0..16])).unwrap();
        let got = to_host(last.unwrap()).unwrap();
        let diff = want
            .iter()
            .zip(&got)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(diff < 1e-4, "cached vs recomputed hidden state: {diff}");
    }

    #[test]
    fn init_rejects_an_invalid_config_and_materialises_parameters() {
        let dev = Device::default();
        let e = LlamaConfig::default().init(&dev).unwrap_err().to_string();
        assert!(e.contains("vocab_size") && e.contains("positive"), "{e}");
        let cfg = LlamaConfig {
            vocab_size: 16,
            hidden_size: 8,
            intermediate_size: 16,
            num_hidden_layers: 1,
            num_attention_heads: 2,
            ..LlamaConfig::default()
        };
        let model = cfg.init(&dev).unwrap();
        assert!(model.embed_tokens.is_initialized());
        assert!(model.layers[0].mlp.up_proj.weight.is_initialized());
        assert_eq!(model.embed_tokens.dims(), [8, 16]);
        assert_eq!(model.max_positions(), 2048);
    }
}

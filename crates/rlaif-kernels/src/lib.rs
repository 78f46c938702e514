//! rlaif-kernels: the tensor ops of preference modelling and PPO, built once, right and fast.
//!
//! Every op takes and returns Burn [`Tensor`](burn::prelude::Tensor)s and has a *default body*
//! written in Burn tensor ops, which runs on every backend and is differentiable by Burn's
//! autodiff. Where it pays, a fused kernel is provided through the [`RlKernels`] backend
//! extension: on the flex CPU backend (feature `flex`, the default), [`token_logprobs`] reads
//! the logits once without materialising the `[B, T, V]` log-softmax and has a custom backward
//! that recomputes the softmax instead of storing it, [`gae()`] runs its recursion per row in
//! parallel, and [`linear()`] runs the few-row products of decoding on every core. The public
//! functions pick the fused kernel when [`fused_available`] and fall back
//! to the default body otherwise; the default bodies are public too (`*_default`) for testing
//! and benchmarking.
//!
//! | op | function | source |
//! |---|---|---|
//! | token log-probs (+ entropy) | [`token_logprobs`], [`token_logprobs_with_entropy`] | PPO entropy bonus: Schulman et al. 2017, eq. 9 |
//! | KL estimators k1/k2/k3 | [`kl_estimate`] | Schulman 2020, "Approximating KL divergence" |
//! | masked mean/var/whiten | [`masked_mean`], [`masked_var`], [`masked_whiten`] | PPO advantage normalisation |
//! | GAE | [`gae()`], [`rewards_at_eos`] | Schulman et al. 2016, eq. 16 |
//! | PPO losses | [`ppo_policy_loss`], [`ppo_value_loss`] | Schulman et al. 2017, eq. 7; PPO2 value clipping |
//! | preference loss | [`bradley_terry_loss`] | Bradley & Terry 1952; Ouyang et al. 2022, eq. 1; Touvron et al. 2023; Eisenstein et al. 2023 |
//! | projections of a decoding step (`M ≤ 8` rows) | [`linear()`] | memory-bound `[M, K]·[K, N]`, columns split across threads |
//! | products with bfloat16 inputs on AMX tiles (float32 sums and weights), forward and backward: the bf16 training option | [`linear_with`] with [`MatmulPrecision::Bf16`], [`amx::matmul_bf16`] | Intel AMX `TDPBF16PS`; Kalamkar et al. 2019 (bf16 training); PyTorch's CPU autocast |
//! | the same from ggml blocks (Q8_0, Q4_0, Q4_1), one weight or several with the same input | [`quant::QuantMatrix::matmul_rows`], [`quant::matmul_rows_many`] | ggml's block formats, dequantised in registers (4-bit blocks through a 16-value table) |
//! | grouped-query attention with a bias, keys and values read in place from a KV cache with spare room; with its backward (masked key tiles skipped both ways) | [`attention()`] | Ainslie et al. 2023; online softmax: Milakov & Gimelshein 2018, Dao et al. 2022; backward: Dao 2023 (FlashAttention-2) |
//! | SwiGLU gating `silu(gate) · up`, with its backward | [`swiglu()`] | Shazeer 2020 |
//! | RMSNorm, with its backward; with the residual add before it (one pass in inference) | [`rms_norm()`], [`add_rms_norm()`] | Zhang & Sennrich 2019 |
//! | rotary position embedding (`rotate_half` layout), with its backward; written into a KV cache in place | [`rope()`], [`rope_into_cache()`] | Su et al. 2021, eq. 34 |
//! | an AdamW step (Burn's, bit for bit) | [`adamw_step`] | Loshchilov & Hutter 2019, Alg. 2; Kingma & Ba 2015 |
//! | logit filters and sampling | [`top_k_filter`], [`top_p_filter`] (after top-k: over the renormalised distribution), [`sample_categorical`] | Fan et al. 2018; Holtzman et al. 2020 |
//!
//! ```
//! use burn::prelude::*;
//! use rlaif_kernels::{GaeConfig, gae, masked_mean, token_logprobs_with_entropy};
//!
//! let device = Device::default().autodiff();
//! // logits [B=1, T=2, V=3]
//! let logits = Tensor::<3>::from_floats([[[0.0, 1.0, 2.0], [0.0, 0.0, f32::NEG_INFINITY]]], &device)
//!     .require_grad();
//! let labels = Tensor::<2, Int>::from_ints([[2, 1]], &device);
//! let (logp, entropy) = token_logprobs_with_entropy(logits.clone(), labels, 1.0)?;
//! let lp: Vec<f32> = logp.clone().try_into_vec_as::<f32>().unwrap();
//! assert!((lp[1] - 0.5f32.ln()).abs() < 1e-6); // two equally likely tokens, one impossible
//!
//! let mask = Tensor::<2>::ones([1, 2], &device);
//! let loss = masked_mean(-logp - entropy * 0.01, mask.clone())?;
//! let grads = loss.backward();
//! assert_eq!(logits.grad(&grads).unwrap().dims(), [1, 2, 3]);
//!
//! // GAE with the score at the last real token
//! let rewards = Tensor::<2>::from_floats([[0.0, 1.0]], &device);
//! let values = Tensor::<2>::zeros([1, 2], &device);
//! let out = gae(rewards, values, mask, GaeConfig { gamma: 1.0, lambda: 1.0 })?;
//! assert_eq!(out.advantages.try_into_vec_as::<f32>().unwrap(), vec![1.0, 1.0]);
//! # Ok::<(), rlaif_kernels::KernelError>(())
//! ```
//!
//! Programs that run or train models on the CPU should allocate through [`TensorAllocator`]
//! (feature `mimalloc`, on by default; see [`allocator`]) and run their work inside
//! [`on_pool`]; the `rlaif` command does both.
//!
//! Conventions: masks are float tensors, nonzero = real token; masked slots are replaced
//! before any arithmetic so that NaN/inf there never reaches a value or a gradient. Shape
//! mismatches between arguments are [`KernelError`]s.

#![warn(missing_docs)]

pub mod adamw;
pub mod allocator;
pub mod amx;
pub mod attention;
pub mod error;
pub mod extension;
#[cfg(feature = "flex")]
mod flex;
pub mod gae;
pub mod host;
pub mod kl;
pub mod linear;
pub mod logit_filters;
pub mod logprobs;
pub mod pool;
pub mod ppo;
pub mod preference;
pub mod quant;
pub mod rms_norm;
pub mod rope;
mod simd;
pub mod stats;
pub mod swiglu;

#[cfg(all(test, feature = "flex"))]
mod tests;

/// Throughput probes used by `benches/kernels.rs` to state the floors of the fused kernels.
#[cfg(feature = "flex")]
pub mod probe {
    /// `Σ exp(x_i)` with the vectorised exponential of the fused flex kernels, on the best
    /// instruction set of this CPU (AVX-512, AVX2 + FMA, or the baseline), single-threaded.
    /// Over an L1-resident slice it measures the exp throughput that bounds
    /// [`token_logprobs`](crate::token_logprobs) (one exponential per logit).
    pub fn sum_exp(x: &[f32]) -> f32 {
        crate::simd::sum_exp(x)
    }
}

pub use adamw::{AdamWOutput, AdamWScalars, AdamWStep, adamw_step, adamw_step_default};
#[cfg(feature = "mimalloc")]
pub use allocator::TensorAllocator;
pub use allocator::tune_allocator;
pub use attention::{FUSED_MIN_ROWS, attention, attention_default};
pub use error::{KernelError, Result};
pub use extension::{RlKernels, fused_available};
pub use gae::{GaeConfig, GaeOutput, gae, gae_default, rewards_at_eos};
pub use kl::{KlEstimator, kl_estimate};
pub use linear::{MatmulPrecision, SMALL_M_MAX_ROWS, bf16_available, linear, linear_with};
pub use logit_filters::{sample_categorical, top_k_filter, top_p_filter};
pub use logprobs::{
    token_logprobs, token_logprobs_default, token_logprobs_with_entropy,
    token_logprobs_with_entropy_default,
};
pub use pool::{on_pool, on_pool_spinning};
pub use ppo::{PolicyLoss, PpoConfig, ValueLoss, ppo_policy_loss, ppo_value_loss};
pub use preference::{PreferenceConfig, PreferenceLoss, bradley_terry_loss};
pub use rms_norm::{add_rms_norm, add_rms_norm_default, rms_norm, rms_norm_default};
pub use rope::{rope, rope_default, rope_into_cache, rope_into_cache_default};
pub use stats::{WhitenConfig, masked_mean, masked_sum, masked_var, masked_whiten};
pub use swiglu::{swiglu, swiglu_default};

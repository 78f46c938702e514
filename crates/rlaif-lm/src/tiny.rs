//! Tiny models for fast tests of code built on [`LanguageModel`]: a real byte-level BPE
//! tokenizer with ChatML special tokens, a ChatML chat template, and a small decoder whose
//! random weights come from a seed (not from Burn's global RNG, so a test sees the same
//! weights on every run and in any order).
//!
//! Behind the `test-util` cargo feature: enable it in the `[dev-dependencies]` of a crate
//! whose tests use it (`rlaif-lm = { ..., features = ["test-util"] }`).
//!
//! ```
//! use burn::prelude::Device;
//! use rlaif_core::Conversation;
//! use rlaif_lm::tiny;
//!
//! let lm = tiny::tiny_lm(&tiny::tiny_config(), 7, &Device::default()).unwrap();
//! let prompt = Conversation::new().user("hi").into();
//! let ids = lm.encode_prompt(&prompt).unwrap();
//! assert_eq!(lm.tokenizer.decode(&ids, false).unwrap(), "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n");
//! ```

use crate::weights::zero_weights;
pub use crate::weights::{HostTensor, WeightMap};
use crate::{ChatTemplate, LanguageModel, Llama, LlamaConfig, LmError, TextTokenizer};
use burn::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::Path;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, Tokenizer};

/// ChatML (`<|im_start|>role\ncontent<|im_end|>\n` per message), the format of SmolLM2
/// and Qwen2 without their default system prompts.
pub const CHATML: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// The special tokens of [`byte_tokenizer`], after the 256 byte symbols.
pub const SPECIAL_TOKENS: [&str; 3] = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];

/// A byte-level BPE without merges: ids 0–255 are the bytes (GPT-2's byte-to-symbol map,
/// in symbol order), 256–258 the [`SPECIAL_TOKENS`]. EOS is `<|im_end|>`, padding
/// `<|endoftext|>`. Any text round-trips.
pub fn byte_tokenizer() -> Result<TextTokenizer, LmError> {
    let mut symbols: Vec<String> = ByteLevel::alphabet()
        .into_iter()
        .map(|c| c.to_string())
        .collect();
    symbols.sort();
    let mut vocab: Vocab = symbols
        .into_iter()
        .enumerate()
        .map(|(i, s)| (s, i as u32))
        .collect();
    for (i, s) in SPECIAL_TOKENS.iter().enumerate() {
        vocab.insert(s.to_string(), 256 + i as u32);
    }
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, vec![])
        .build()
        .map_err(|e| LmError::Tokenizer(e.to_string()))?;
    let mut inner = Tokenizer::new(bpe);
    inner.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
    inner.with_decoder(Some(ByteLevelDecoder::default()));
    let specials: Vec<AddedToken> = SPECIAL_TOKENS
        .iter()
        .map(|s| AddedToken::from(*s, true))
        .collect();
    inner.add_special_tokens(&specials);
    Ok(TextTokenizer::new(
        inner,
        None,
        Some("<|im_end|>"),
        Some("<|endoftext|>"),
    ))
}

/// A two-layer decoder over [`byte_tokenizer`]'s 259 tokens: hidden 32, FFN 64, 4 query
/// heads sharing 2 KV heads, 256 positions, tied embeddings.
pub fn tiny_config() -> LlamaConfig {
    LlamaConfig {
        vocab_size: 259,
        hidden_size: 32,
        intermediate_size: 64,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: Some(2),
        tie_word_embeddings: true,
        max_position_embeddings: 256,
        rope_theta: 10_000.0,
        ..LlamaConfig::default()
    }
}

/// Weights for `cfg` drawn from normal(0, 0.02) with a ChaCha8 stream seeded by `seed`
/// (norm weights 1, biases 0), under Hugging Face names and shapes. Change them (plant a
/// NaN, ...) and build the model with [`model_from_weights`].
pub fn random_weights(cfg: &LlamaConfig, seed: u64) -> Result<WeightMap, LmError> {
    // The names and shapes the config implies, filled in name order.
    let mut map = zero_weights(cfg)?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for (name, t) in map.iter_mut() {
        if name.ends_with("norm.weight") {
            t.data.fill(1.0);
        } else if name.ends_with(".bias") {
            t.data.fill(0.0);
        } else {
            t.data.iter_mut().for_each(|x| *x = 0.02 * normal(&mut rng));
        }
    }
    Ok(map)
}

/// One standard normal draw (Box–Muller).
fn normal(rng: &mut ChaCha8Rng) -> f32 {
    let u1: f64 = 1.0 - rng.random::<f64>(); // (0, 1]
    let u2: f64 = rng.random();
    ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
}

/// Builds the model of `cfg` from a weight map under Hugging Face names (as
/// [`random_weights`] returns): every tensor the config implies must be there with its
/// shape, and nothing else. `source` names the weights in errors.
pub fn model_from_weights(
    cfg: &LlamaConfig,
    weights: WeightMap,
    source: &Path,
    device: &Device,
) -> Result<Llama, LmError> {
    crate::weights::model_from_weights(cfg, weights, source, device)
}

/// A [`LanguageModel`] with `cfg`'s shape, seeded random weights, [`byte_tokenizer`] and
/// the [`CHATML`] template. `cfg.vocab_size` must be at least 259.
pub fn tiny_lm(cfg: &LlamaConfig, seed: u64, device: &Device) -> Result<LanguageModel, LmError> {
    let tokenizer = byte_tokenizer()?;
    if cfg.vocab_size < tokenizer.vocab_size() {
        return Err(LmError::Config(format!(
            "vocab_size {} is smaller than the byte tokenizer's {}",
            cfg.vocab_size,
            tokenizer.vocab_size()
        )));
    }
    let model = model_from_weights(
        cfg,
        random_weights(cfg, seed)?,
        Path::new("<tiny random weights>"),
        device,
    )?;
    let template = ChatTemplate::new(CHATML, "", "<|im_end|>")?;
    Ok(LanguageModel::from_parts(
        model,
        cfg.clone(),
        tokenizer,
        Some(template),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::weights::to_host;

    #[test]
    fn byte_tokenizer_round_trips_and_knows_chatml() {
        let t = byte_tokenizer().unwrap();
        assert_eq!(t.vocab_size(), 259);
        let text = "héllo, wörld 🦀\n\t<|im_start|>";
        let ids = t.encode(text).unwrap();
        assert_eq!(ids.last(), Some(&257), "<|im_start|> is one special token");
        assert_eq!(t.decode(&ids, false).unwrap(), text);
        assert_eq!(t.eos_id, Some(258));
        assert_eq!(t.pad_id, Some(256));
        assert_eq!(t.encode("a").unwrap().len(), 1);
    }

    #[test]
    fn seeded_weights_are_reproducible() {
        let dev = Device::default();
        let cfg = tiny_config();
        let logits = |seed| {
            let lm = tiny_lm(&cfg, seed, &dev).unwrap();
            let toks = Tensor::<2, Int>::from_ints([[1, 2, 3, 257]], &dev);
            to_host(lm.model.forward(toks, &[vec![true; 4]])).unwrap()
        };
        let (a, b, c) = (logits(3), logits(3), logits(4));
        assert_eq!(a, b);
        assert_ne!(a, c);
        let w = random_weights(&cfg, 1).unwrap();
        let emb = &w["model.embed_tokens.weight"].data;
        let var = emb.iter().map(|x| x * x).sum::<f32>() / emb.len() as f32;
        assert!((var.sqrt() - 0.02).abs() < 0.001, "std {}", var.sqrt());
        assert!(w["model.norm.weight"].data.iter().all(|&x| x == 1.0));
    }
}

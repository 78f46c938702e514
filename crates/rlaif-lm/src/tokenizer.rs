//! Text ↔ token ids, via the `tokenizers` crate: loaded from `tokenizer.json`, or built from
//! GGUF metadata (`tokenizer.ggml.model = gpt2`: byte-level BPE from tokens + merges) so the
//! GGUF alone is enough.

use crate::LmError;
use crate::gguf::{GgufFile, MetaValue};
use std::path::Path;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer};

/// GGUF token types (llama.cpp `llama_token_type`).
const TOKEN_TYPE_CONTROL: u64 = 3;
const TOKEN_TYPE_USER_DEFINED: u64 = 4;

/// Split regex of Llama 3 (`tokenizer.ggml.pre = llama-bpe`), numbers in groups of ≤ 3.
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Split regex of Qwen2 (`tokenizer.ggml.pre = qwen2`), one digit per piece.
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// A tokenizer with the model's special tokens resolved.
#[derive(Clone)]
pub struct TextTokenizer {
    inner: Tokenizer,
    /// Beginning-of-sequence token.
    pub bos_id: Option<u32>,
    /// End-of-sequence token.
    pub eos_id: Option<u32>,
    /// Padding token.
    pub pad_id: Option<u32>,
    /// Token ids that end generation: the EOS token and the chat end markers
    /// (`<|im_end|>`, `<|endoftext|>`, `<|eot_id|>`) that exist in the vocabulary.
    pub stop_ids: Vec<u32>,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("bos_id", &self.bos_id)
            .field("eos_id", &self.eos_id)
            .field("pad_id", &self.pad_id)
            .field("stop_ids", &self.stop_ids)
            .finish()
    }
}

fn tok_err(e: impl std::fmt::Display) -> LmError {
    LmError::Tokenizer(e.to_string())
}

impl TextTokenizer {
    /// Wraps a `tokenizers` tokenizer; special tokens are given by their text.
    pub fn new(inner: Tokenizer, bos: Option<&str>, eos: Option<&str>, pad: Option<&str>) -> Self {
        let id = |s: Option<&str>| s.and_then(|s| inner.token_to_id(s));
        let (bos_id, eos_id, pad_id) = (id(bos), id(eos), id(pad));
        let mut t = Self {
            inner,
            bos_id,
            eos_id,
            pad_id,
            stop_ids: vec![],
        };
        t.refresh_stop_ids();
        t
    }

    fn refresh_stop_ids(&mut self) {
        let mut stops: Vec<u32> = self.eos_id.into_iter().collect();
        for s in [
            "<|im_end|>",
            "<|endoftext|>",
            "<|eot_id|>",
            "<|end_of_text|>",
        ] {
            if let Some(id) = self.inner.token_to_id(s)
                && !stops.contains(&id)
            {
                stops.push(id);
            }
        }
        self.stop_ids = stops;
    }

    /// Loads `tokenizer.json`; special tokens from `tokenizer_config.json` beside it when
    /// present (`bos_token`, `eos_token`, `pad_token`). A `tokenizer_config.json` that
    /// exists but cannot be read or parsed is an error.
    pub fn from_file(path: &Path) -> Result<Self, LmError> {
        let inner = Tokenizer::from_file(path)
            .map_err(|e| LmError::Tokenizer(format!("{}: {e}", path.display())))?;
        let cfg = crate::hf::read_optional_json(&path.with_file_name("tokenizer_config.json"))?
            .unwrap_or_default();
        // a token is either a string or {"content": "..."}
        let special = |k: &str| {
            let v = cfg.get(k)?;
            v.as_str()
                .or_else(|| v.get("content")?.as_str())
                .map(str::to_string)
        };
        Ok(Self::new(
            inner,
            special("bos_token").as_deref(),
            special("eos_token").as_deref(),
            special("pad_token").as_deref(),
        ))
    }

    /// Builds the tokenizer described by the metadata of a GGUF file (`tokenizer.ggml.*`),
    /// without loading its weights.
    pub fn from_gguf_file(path: &Path) -> Result<Self, LmError> {
        Self::from_gguf(&GgufFile::open(path)?)
    }

    /// Builds the tokenizer described by GGUF metadata (`tokenizer.ggml.*`).
    pub(crate) fn from_gguf(g: &GgufFile) -> Result<Self, LmError> {
        let model = g.meta_str("tokenizer.ggml.model")?;
        if model != "gpt2" {
            return Err(LmError::Tokenizer(format!(
                "{}: tokenizer.ggml.model = {model:?} is not supported (gpt2 byte-level BPE only)",
                g.path().display()
            )));
        }
        let strings = |key: &str| -> Result<Vec<String>, LmError> {
            let arr = g
                .meta(key)
                .and_then(MetaValue::as_array)
                .ok_or_else(|| tok_err(format!("{}: {key} is missing", g.path().display())))?;
            arr.iter()
                .map(|v| v.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| {
                    tok_err(format!(
                        "{}: {key} is not a list of strings",
                        g.path().display()
                    ))
                })
        };
        let tokens = strings("tokenizer.ggml.tokens")?;
        let merges = strings("tokenizer.ggml.merges")?;
        let merges: Vec<(String, String)> = merges
            .iter()
            .enumerate()
            .map(|(i, m)| {
                m.split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .ok_or_else(|| {
                        tok_err(format!(
                            "{}: tokenizer.ggml.merges entry {i} ({m:?}) has no space",
                            g.path().display()
                        ))
                    })
            })
            .collect::<Result<_, _>>()?;
        let vocab: Vocab = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .build()
            .map_err(|e| tok_err(format!("{}: {e}", g.path().display())))?;
        let mut inner = Tokenizer::new(bpe);
        let byte_level = ByteLevel::new(false, true, true);
        let pre = g
            .meta("tokenizer.ggml.pre")
            .and_then(MetaValue::as_str)
            .unwrap_or("default");
        let split = |re: &str| -> Result<PreTokenizerWrapper, LmError> {
            let pattern = SplitPattern::Regex(re.to_string());
            Ok(Split::new(pattern, SplitDelimiterBehavior::Isolated, false)
                .map_err(tok_err)?
                .into())
        };
        let pre_tok: PreTokenizerWrapper = match pre {
            "default" | "gpt2" | "gpt-2" => byte_level.into(),
            // SmolLM / StarCoder: every digit on its own, then GPT-2's regex.
            "smollm" | "starcoder" | "refact" => {
                Sequence::new(vec![Digits::new(true).into(), byte_level.into()]).into()
            }
            "llama-bpe" | "llama3" => Sequence::new(vec![
                split(LLAMA3_SPLIT)?,
                ByteLevel::new(false, true, false).into(),
            ])
            .into(),
            "qwen2" => Sequence::new(vec![
                split(QWEN2_SPLIT)?,
                ByteLevel::new(false, true, false).into(),
            ])
            .into(),
            other => {
                return Err(tok_err(format!(
                    "{}: pre-tokenizer tokenizer.ggml.pre = {other:?} is not supported \
                     (default, gpt2, smollm, starcoder, llama-bpe, qwen2)",
                    g.path().display()
                )));
            }
        };
        inner.with_pre_tokenizer(Some(pre_tok));
        inner.with_decoder(Some(ByteLevelDecoder::default()));
        // Control and user-defined tokens are matched whole before BPE.
        if let Some(types) = g
            .meta("tokenizer.ggml.token_type")
            .and_then(MetaValue::as_array)
        {
            let special: Vec<AddedToken> = types
                .iter()
                .zip(&tokens)
                .filter_map(|(ty, tok)| match ty.as_u64() {
                    Some(TOKEN_TYPE_CONTROL) => Some(AddedToken::from(tok.clone(), true)),
                    Some(TOKEN_TYPE_USER_DEFINED) => {
                        Some(AddedToken::from(tok.clone(), false).normalized(false))
                    }
                    _ => None,
                })
                .collect();
            inner.add_special_tokens(&special);
        }
        let token = |key: &str| {
            g.meta(key)
                .and_then(MetaValue::as_u64)
                .and_then(|i| tokens.get(i as usize))
                .cloned()
        };
        Ok(Self::new(
            inner,
            token("tokenizer.ggml.bos_token_id").as_deref(),
            token("tokenizer.ggml.eos_token_id").as_deref(),
            token("tokenizer.ggml.padding_token_id").as_deref(),
        ))
    }

    /// Token ids of `text`. Special tokens written in the text (`<|im_start|>`) are
    /// recognised; no BOS/EOS is added.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, LmError> {
        Ok(self
            .inner
            .encode(text, false)
            .map_err(tok_err)?
            .get_ids()
            .to_vec())
    }

    /// The text of `ids`; special tokens are skipped when `skip_special` is true.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String, LmError> {
        self.inner.decode(ids, skip_special).map_err(tok_err)
    }

    /// The id of a token's text, if it is in the vocabulary.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The text of a token id.
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The underlying `tokenizers` tokenizer.
    pub fn inner(&self) -> &Tokenizer {
        &self.inner
    }

    /// Writes `tokenizer.json`.
    pub fn save(&self, path: &Path) -> Result<(), LmError> {
        self.inner
            .save(path, false)
            .map_err(|e| LmError::Tokenizer(format!("{}: {e}", path.display())))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::gguf::tests::GgufWriter;

    /// A tiny byte-level BPE in GGUF form: the 256 byte symbols, two merges, two specials.
    pub(crate) fn tiny_gguf_tokenizer() -> Vec<u8> {
        let bl = tokenizers::pre_tokenizers::byte_level::ByteLevel::alphabet();
        let mut syms: Vec<String> = bl.into_iter().map(|c| c.to_string()).collect();
        syms.sort();
        let mut toks: Vec<String> = vec!["<|im_start|>".into(), "<|im_end|>".into()];
        toks.extend(syms);
        toks.push("he".into());
        toks.push("hel".into());
        let mut types = vec![3i32, 3];
        types.extend(std::iter::repeat_n(1, toks.len() - 2));
        let refs: Vec<&str> = toks.iter().map(String::as_str).collect();
        GgufWriter::default()
            .str("tokenizer.ggml.model", "gpt2")
            .str("tokenizer.ggml.pre", "smollm")
            .strs("tokenizer.ggml.tokens", &refs)
            .strs("tokenizer.ggml.merges", &["h e", "he l"])
            .i32s("tokenizer.ggml.token_type", &types)
            .u32("tokenizer.ggml.eos_token_id", 1)
            .finish()
    }

    #[test]
    fn gguf_tokenizer_merges_specials_and_digits() {
        let g = GgufFile::parse(tiny_gguf_tokenizer(), "tok.gguf").unwrap();
        let t = TextTokenizer::from_gguf(&g).unwrap();
        let hel = t.token_to_id("hel").unwrap();
        let ids = t.encode("<|im_start|>hello 12<|im_end|>").unwrap();
        assert_eq!(ids[0], 0);
        assert_eq!(ids[1], hel);
        assert_eq!(*ids.last().unwrap(), 1);
        // "12" is split into single digits, " " is its own byte symbol "Ġ"
        let one = t.token_to_id("1").unwrap();
        let two = t.token_to_id("2").unwrap();
        assert_eq!(&ids[ids.len() - 3..ids.len() - 1], &[one, two]);
        assert_eq!(t.decode(&ids, true).unwrap(), "hello 12");
        assert_eq!(t.eos_id, Some(1));
        assert_eq!(t.stop_ids, vec![1]);
    }

    #[test]
    fn unsupported_tokenizer_is_named() {
        let b = GgufWriter::default()
            .str("tokenizer.ggml.model", "llama")
            .finish();
        let g = GgufFile::parse(b, "spm.gguf").unwrap();
        let e = TextTokenizer::from_gguf(&g).unwrap_err().to_string();
        assert!(e.contains("spm.gguf") && e.contains("\"llama\""), "{e}");
    }
}

//! Model configuration: read from a Hugging Face `config.json` or from GGUF metadata.

use crate::LmError;
use crate::gguf::GgufFile;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The architecture family: what the config's `model_type` (or a GGUF file's
/// `general.architecture`) names. Serialised as `"llama"` / `"qwen2"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelType {
    /// Llama (and SmolLM2): biases only with `attention_bias`.
    #[default]
    Llama,
    /// Qwen2: biases on the q, k and v projections.
    Qwen2,
}

impl ModelType {
    /// Every supported type, in the order error messages list them.
    pub const ALL: [ModelType; 2] = [ModelType::Llama, ModelType::Qwen2];

    /// The name in `config.json` and in GGUF metadata.
    pub fn name(self) -> &'static str {
        match self {
            ModelType::Llama => "llama",
            ModelType::Qwen2 => "qwen2",
        }
    }

    /// The type called `name` (`"llama"`, `"qwen2"`), if it is supported.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == name)
    }

    /// The message for an unsupported type `name`.
    fn unsupported(name: &str) -> String {
        let all: Vec<&str> = Self::ALL.iter().map(|t| t.name()).collect();
        format!("{name:?} is not supported (supported: {})", all.join(", "))
    }

    /// Whether q, k and v always have biases (Qwen2).
    fn has_qkv_bias(self) -> bool {
        self == ModelType::Qwen2
    }

    /// The `architectures` entry of an exported `config.json`.
    fn hf_architecture(self) -> &'static str {
        match self {
            ModelType::Llama => "LlamaForCausalLM",
            ModelType::Qwen2 => "Qwen2ForCausalLM",
        }
    }

    /// Whether llama.cpp's converter permuted the rows of q and k for ggml's interleaved
    /// RoPE (it does for Llama, not for Qwen2, whose GGUF RoPE is the `rotate_half` kind).
    pub(crate) fn gguf_permutes_qk(self) -> bool {
        self == ModelType::Llama
    }
}

impl<'de> Deserialize<'de> for ModelType {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        Self::from_name(&name).ok_or_else(|| {
            serde::de::Error::custom(format!("model_type {}", Self::unsupported(&name)))
        })
    }
}

/// Hyper-parameters of a Llama-family decoder. Field names follow Hugging Face's
/// `config.json`, so the file deserialises directly (unknown fields are ignored).
///
/// In code, name the sizes and take the rest from [`LlamaConfig::default`]:
///
/// ```
/// use rlaif_lm::LlamaConfig;
///
/// let cfg = LlamaConfig {
///     vocab_size: 64,
///     hidden_size: 32,
///     intermediate_size: 64,
///     num_hidden_layers: 2,
///     num_attention_heads: 4,
///     num_key_value_heads: Some(2),
///     ..LlamaConfig::default()
/// };
/// assert_eq!(cfg.head_dim(), 8);
/// cfg.validate()?;
/// # Ok::<(), rlaif_lm::LmError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlamaConfig {
    /// The architecture (Qwen2 has biases on the q/k/v projections). Default: Llama.
    #[serde(default)]
    pub model_type: ModelType,
    /// Vocabulary size (rows of the embedding matrix).
    pub vocab_size: usize,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the SwiGLU MLP.
    pub intermediate_size: usize,
    /// Number of decoder blocks.
    pub num_hidden_layers: usize,
    /// Number of query heads.
    pub num_attention_heads: usize,
    /// Number of key/value heads (grouped-query attention). Default: `num_attention_heads`.
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    /// Width of one head. Default: `hidden_size / num_attention_heads`.
    #[serde(default)]
    pub head_dim: Option<usize>,
    /// Longest sequence the model supports (size of the RoPE tables). Default 2048.
    #[serde(default = "default_max_pos")]
    pub max_position_embeddings: usize,
    /// RoPE base frequency θ. Default 10000.
    #[serde(default = "default_theta")]
    pub rope_theta: f64,
    /// RMSNorm ε. Default 1e-6.
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f64,
    /// Whether the output projection reuses the embedding matrix. Default false.
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// Llama's `attention_bias`: biases on q, k, v and o. Default false.
    #[serde(default)]
    pub attention_bias: bool,
    /// Beginning-of-sequence token id, if the model has one.
    #[serde(default)]
    pub bos_token_id: Option<u32>,
    /// End-of-sequence token id(s) (a number or a list in `config.json`).
    #[serde(default, deserialize_with = "one_or_many")]
    pub eos_token_id: Vec<u32>,
    /// RoPE scaling (not supported: must be absent or null).
    #[serde(default, skip_serializing)]
    pub rope_scaling: Option<serde_json::Value>,
}

impl Default for LlamaConfig {
    /// The defaults of the optional fields (those of `config.json`), and 0 for the six
    /// sizes, which must be set: [`LlamaConfig::validate`] names any left at 0.
    fn default() -> Self {
        Self {
            model_type: ModelType::Llama,
            vocab_size: 0,
            hidden_size: 0,
            intermediate_size: 0,
            num_hidden_layers: 0,
            num_attention_heads: 0,
            num_key_value_heads: None,
            head_dim: None,
            max_position_embeddings: default_max_pos(),
            rope_theta: default_theta(),
            rms_norm_eps: default_eps(),
            tie_word_embeddings: false,
            attention_bias: false,
            bos_token_id: None,
            eos_token_id: vec![],
            rope_scaling: None,
        }
    }
}

fn default_max_pos() -> usize {
    2048
}
fn default_theta() -> f64 {
    10000.0
}
fn default_eps() -> f64 {
    1e-6
}

/// Upper bounds on the sizes, far above any released Llama or Qwen2 (Llama 3.1 405B:
/// vocabulary 128 256, hidden 16 384, MLP 53 248, 126 layers, 128 heads). They keep a
/// corrupt or hostile config from building millions of layers or multi-gigabyte RoPE tables
/// before the weights are even looked at.
const MAX_SIZES: [(&str, usize); 8] = [
    ("vocab_size", 1 << 22),
    ("hidden_size", 1 << 17),
    ("intermediate_size", 1 << 19),
    ("num_hidden_layers", 1 << 12),
    ("num_attention_heads", 1 << 12),
    ("num_key_value_heads", 1 << 12),
    ("head_dim", 1 << 12),
    ("max_position_embeddings", 1 << 22),
];
/// Largest `max_position_embeddings × head_dim`: the entries of each RoPE table (2²⁵ is
/// 128 MiB of f32; Llama 3.1's 131 072 × 128 is 2²⁴).
const MAX_ROPE_ENTRIES: usize = 1 << 25;

fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u32>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(u32),
        Many(Vec<u32>),
        Null,
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(x) => vec![x],
        OneOrMany::Many(v) => v,
        OneOrMany::Null => vec![],
    })
}

impl LlamaConfig {
    /// Reads and validates `config.json`; every error names the file (and the field, for
    /// invalid values).
    pub fn from_json_file(path: &Path) -> Result<Self, LmError> {
        let text = std::fs::read_to_string(path).map_err(|e| LmError::io(path, e))?;
        Self::from_json_str(&text, path)
    }

    /// Parses and validates the text of a `config.json`; `path` names it in errors.
    pub(crate) fn from_json_str(text: &str, path: &Path) -> Result<Self, LmError> {
        let cfg: Self = serde_json::from_str(text).map_err(|e| LmError::Json {
            path: path.to_path_buf(),
            msg: e.to_string(),
        })?;
        cfg.validate().map_err(|e| e.in_file(path))?;
        Ok(cfg)
    }

    /// Reads the `{arch}.*` metadata of a GGUF file (`llama` and `qwen2`); errors name the
    /// file and the metadata key.
    pub(crate) fn from_gguf(g: &GgufFile) -> Result<Self, LmError> {
        let bad = |key: &str, msg: String| LmError::invalid_config(key, msg).in_file(g.path());
        let arch = g.meta_str("general.architecture")?;
        let model_type = ModelType::from_name(arch)
            .ok_or_else(|| bad("general.architecture", ModelType::unsupported(arch)))?;
        let key = |k: &str| format!("{arch}.{k}");
        let u = |k: &str| g.meta_usize(&key(k));
        let n_heads = u("attention.head_count")?;
        let vocab = match g.meta(&key("vocab_size")) {
            Some(_) => u("vocab_size")?,
            None => g
                .meta("tokenizer.ggml.tokens")
                .and_then(|v| v.as_array())
                .map(|a| a.len())
                .ok_or_else(|| {
                    bad(
                        &key("vocab_size"),
                        "is missing, and so is tokenizer.ggml.tokens".into(),
                    )
                })?,
        };
        let optional = |k: &str| match g.meta(&key(k)) {
            Some(_) => u(k).map(Some),
            None => Ok(None),
        };
        let float = |k: &str, default: f64| match g.meta(&key(k)) {
            Some(_) => g.meta_f64(&key(k)),
            None => Ok(default),
        };
        let token = |k: &str| g.meta(k).and_then(|v| v.as_u64()).map(|v| v as u32);
        if g.meta(&key("rope.scaling.type")).is_some() {
            return Err(bad(
                &key("rope.scaling.type"),
                "RoPE scaling is not supported".into(),
            ));
        }
        let cfg = Self {
            model_type,
            vocab_size: vocab,
            hidden_size: u("embedding_length")?,
            intermediate_size: u("feed_forward_length")?,
            num_hidden_layers: u("block_count")?,
            num_attention_heads: n_heads,
            num_key_value_heads: Some(optional("attention.head_count_kv")?.unwrap_or(n_heads)),
            head_dim: optional("attention.key_length")?,
            max_position_embeddings: optional("context_length")?.unwrap_or(default_max_pos()),
            rope_theta: float("rope.freq_base", default_theta())?,
            rms_norm_eps: float("attention.layer_norm_rms_epsilon", default_eps())?,
            tie_word_embeddings: g.tensor_info("output.weight").is_none(),
            attention_bias: false,
            bos_token_id: token("tokenizer.ggml.bos_token_id"),
            eos_token_id: token("tokenizer.ggml.eos_token_id").into_iter().collect(),
            rope_scaling: None,
        };
        cfg.validate().map_err(|e| match e {
            // name the GGUF key of the config field
            LmError::InvalidConfig { field, msg, .. } => bad(&key(gguf_key(&field)), msg),
            other => other,
        })?;
        Ok(cfg)
    }

    /// Number of key/value heads.
    pub fn kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }

    /// Whether q/k/v have biases (Qwen2, or Llama with `attention_bias`).
    pub fn qkv_bias(&self) -> bool {
        self.attention_bias || self.model_type.has_qkv_bias()
    }

    /// Whether the output projection has a bias (Llama with `attention_bias`).
    pub fn o_bias(&self) -> bool {
        self.attention_bias
    }

    /// Checks that the sizes are positive, within bounds and consistent; the error
    /// ([`LmError::InvalidConfig`]) names the field.
    pub fn validate(&self) -> Result<(), LmError> {
        let err = |field: &str, m: String| Err(LmError::invalid_config(field, m));
        if self.rope_scaling.as_ref().is_some_and(|v| !v.is_null()) {
            return err("rope_scaling", "RoPE scaling is not supported".into());
        }
        let sizes = [
            self.vocab_size,
            self.hidden_size,
            self.intermediate_size,
            self.num_hidden_layers,
            self.num_attention_heads,
            self.kv_heads(),
            self.head_dim(),
            self.max_position_embeddings,
        ];
        for ((name, max), v) in MAX_SIZES.into_iter().zip(sizes) {
            if v == 0 {
                return err(name, "must be positive".into());
            }
            if v > max {
                return err(name, format!("{v} is larger than the supported {max}"));
            }
        }
        if !self.num_attention_heads.is_multiple_of(self.kv_heads()) {
            return err(
                "num_key_value_heads",
                format!(
                    "num_attention_heads ({}) must be a multiple of num_key_value_heads ({})",
                    self.num_attention_heads,
                    self.kv_heads()
                ),
            );
        }
        if self.head_dim.is_none() && !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return err(
                "hidden_size",
                format!(
                    "hidden_size ({}) must be a multiple of num_attention_heads ({}) when head_dim is not given",
                    self.hidden_size, self.num_attention_heads
                ),
            );
        }
        if !self.head_dim().is_multiple_of(2) {
            return err(
                "head_dim",
                format!("{} must be even for RoPE", self.head_dim()),
            );
        }
        if self.max_position_embeddings * self.head_dim() > MAX_ROPE_ENTRIES {
            return err(
                "max_position_embeddings",
                format!(
                    "{} positions × head_dim {} exceed the supported {MAX_ROPE_ENTRIES} RoPE table entries",
                    self.max_position_embeddings,
                    self.head_dim()
                ),
            );
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 0.0) {
            return err(
                "rope_theta",
                format!("{} must be positive", self.rope_theta),
            );
        }
        if !(self.rms_norm_eps.is_finite() && self.rms_norm_eps > 0.0) {
            return err(
                "rms_norm_eps",
                format!("{} must be positive", self.rms_norm_eps),
            );
        }
        Ok(())
    }

    /// The JSON written to `config.json` on export (Hugging Face `LlamaForCausalLM` /
    /// `Qwen2ForCausalLM`).
    pub fn to_hf_json(&self) -> serde_json::Value {
        let mut o = match serde_json::to_value(self) {
            Ok(serde_json::Value::Object(o)) => o,
            // a struct of numbers, strings and lists always serialises to an object
            _ => unreachable!("LlamaConfig serialises to a JSON object"),
        };
        let arch = self.model_type.hf_architecture();
        o.insert("architectures".into(), serde_json::json!([arch]));
        o.insert("num_key_value_heads".into(), self.kv_heads().into());
        o.insert("head_dim".into(), self.head_dim().into());
        o.insert("hidden_act".into(), "silu".into());
        o.insert("torch_dtype".into(), "float32".into());
        o.insert("mlp_bias".into(), false.into());
        o.insert("rope_scaling".into(), serde_json::Value::Null);
        match self.eos_token_id.as_slice() {
            [] => o.insert("eos_token_id".into(), serde_json::Value::Null),
            [one] => o.insert("eos_token_id".into(), (*one).into()),
            many => o.insert("eos_token_id".into(), many.into()),
        };
        serde_json::Value::Object(o)
    }
}

/// The GGUF key (after `{arch}.`) that a `config.json` field is read from.
fn gguf_key(field: &str) -> &str {
    match field {
        "vocab_size" => "vocab_size",
        "hidden_size" => "embedding_length",
        "intermediate_size" => "feed_forward_length",
        "num_hidden_layers" => "block_count",
        "num_attention_heads" => "attention.head_count",
        "num_key_value_heads" => "attention.head_count_kv",
        "head_dim" => "attention.key_length",
        "max_position_embeddings" => "context_length",
        "rope_theta" => "rope.freq_base",
        "rms_norm_eps" => "attention.layer_norm_rms_epsilon",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sizes(vocab: usize, hidden: usize, heads: usize, kv: usize) -> LlamaConfig {
        LlamaConfig {
            vocab_size: vocab,
            hidden_size: hidden,
            intermediate_size: 128,
            num_hidden_layers: 2,
            num_attention_heads: heads,
            num_key_value_heads: Some(kv),
            ..LlamaConfig::default()
        }
    }

    #[test]
    fn reads_hf_config_with_defaults_and_eos_list() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.json");
        std::fs::write(
            &p,
            r#"{"model_type":"llama","vocab_size":100,"hidden_size":64,"intermediate_size":128,
                "num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,
                "eos_token_id":[1,2],"some_unknown_field":true,"rope_scaling":null}"#,
        )
        .unwrap();
        let c = LlamaConfig::from_json_file(&p).unwrap();
        assert_eq!(c.kv_heads(), 2);
        assert_eq!(c.head_dim(), 16);
        assert_eq!(c.eos_token_id, vec![1, 2]);
        assert_eq!(c.rope_theta, 10000.0);
        let back: LlamaConfig = serde_json::from_value(c.to_hf_json()).unwrap();
        assert_eq!(back.num_key_value_heads, Some(2));
        assert_eq!(back.eos_token_id, vec![1, 2]);
    }

    #[test]
    fn bad_configs_are_named_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.json");
        std::fs::write(&p, r#"{"vocab_size":100,"hidden_size":64}"#).unwrap();
        let e = LlamaConfig::from_json_file(&p).unwrap_err().to_string();
        assert!(
            e.contains("config.json") && e.contains("intermediate_size"),
            "{e}"
        );

        let mut c = sizes(10, 64, 4, 3);
        assert!(c.validate().unwrap_err().to_string().contains("multiple"));
        c.num_key_value_heads = Some(2);
        c.rope_scaling = Some(serde_json::json!({"type": "linear"}));
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("rope_scaling")
        );
    }

    #[test]
    fn model_type_is_an_enum_with_hf_names() {
        let c: LlamaConfig = serde_json::from_str(
            r#"{"model_type":"qwen2","vocab_size":10,"hidden_size":8,"intermediate_size":8,
                "num_hidden_layers":1,"num_attention_heads":2}"#,
        )
        .unwrap();
        assert_eq!(c.model_type, ModelType::Qwen2);
        assert!(c.qkv_bias() && !c.o_bias());
        assert_eq!(c.to_hf_json()["model_type"], "qwen2");
        assert_eq!(c.to_hf_json()["architectures"][0], "Qwen2ForCausalLM");
        assert_eq!(LlamaConfig::default().model_type, ModelType::Llama);
        assert_eq!(ModelType::from_name("llama"), Some(ModelType::Llama));
        assert_eq!(ModelType::from_name("mistral"), None);
    }

    #[test]
    fn unknown_model_type_names_the_file_and_field() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.json");
        std::fs::write(
            &p,
            r#"{"model_type":"mistral","vocab_size":10,"hidden_size":8,"intermediate_size":8,
                "num_hidden_layers":1,"num_attention_heads":2}"#,
        )
        .unwrap();
        let e = LlamaConfig::from_json_file(&p).unwrap_err().to_string();
        assert!(
            e.contains("config.json")
                && e.contains("model_type")
                && e.contains("\"mistral\"")
                && e.contains("line 1"),
            "{e}"
        );
    }

    #[test]
    fn invalid_values_in_config_json_name_the_file_and_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.json");
        let base = serde_json::json!({
            "vocab_size": 10, "hidden_size": 8, "intermediate_size": 8,
            "num_hidden_layers": 1, "num_attention_heads": 2,
        });
        for (key, value, field) in [
            (
                "num_attention_heads",
                serde_json::json!(0),
                "num_attention_heads",
            ),
            ("hidden_size", serde_json::json!(9), "hidden_size"),
            (
                "num_key_value_heads",
                serde_json::json!(0),
                "num_key_value_heads",
            ),
            (
                "num_key_value_heads",
                serde_json::json!(3),
                "num_key_value_heads",
            ),
            ("head_dim", serde_json::json!(5), "head_dim"),
            ("rope_theta", serde_json::json!(-1.0), "rope_theta"),
            ("rms_norm_eps", serde_json::json!(0.0), "rms_norm_eps"),
            (
                "max_position_embeddings",
                serde_json::json!(1u64 << 40),
                "max_position_embeddings",
            ),
            (
                "num_hidden_layers",
                serde_json::json!(99_999_999),
                "num_hidden_layers",
            ),
        ] {
            let mut json = base.clone();
            json[key] = value;
            std::fs::write(&p, json.to_string()).unwrap();
            let e = LlamaConfig::from_json_file(&p).unwrap_err();
            assert!(
                matches!(&e, LmError::InvalidConfig { path: Some(f), field: got, .. }
                    if f == &p && got == field),
                "{key}: {e:?}"
            );
            let msg = e.to_string();
            assert!(msg.contains("config.json") && msg.contains(field), "{msg}");
        }
        // each size within bounds, but RoPE tables of 2²¹ positions × 32 too large
        let big = LlamaConfig {
            max_position_embeddings: 1 << 21,
            ..sizes(10, 64, 2, 2)
        };
        let e = big.validate().unwrap_err().to_string();
        assert!(
            e.contains("max_position_embeddings") && e.contains("RoPE"),
            "{e}"
        );
    }
}

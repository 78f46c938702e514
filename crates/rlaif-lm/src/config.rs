//! Model configuration: read from a Hugging Face `config.json` or from GGUF metadata.

use crate::LmError;
use crate::gguf::GgufFile;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Hyper-parameters of a Llama-family decoder. Field names follow Hugging Face's
/// `config.json`, so the file deserialises directly (unknown fields are ignored).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlamaConfig {
    /// `"llama"` or `"qwen2"` (Qwen2 has biases on the q/k/v projections).
    #[serde(default = "default_model_type")]
    pub model_type: String,
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

fn default_model_type() -> String {
    "llama".into()
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
    /// A config with the given sizes and defaults elsewhere (handy for tiny test models).
    pub fn new(
        vocab_size: usize,
        hidden_size: usize,
        intermediate_size: usize,
        num_hidden_layers: usize,
        num_attention_heads: usize,
        num_key_value_heads: usize,
    ) -> Self {
        Self {
            model_type: default_model_type(),
            vocab_size,
            hidden_size,
            intermediate_size,
            num_hidden_layers,
            num_attention_heads,
            num_key_value_heads: Some(num_key_value_heads),
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

    /// Reads `config.json`.
    pub fn from_json_file(path: &Path) -> Result<Self, LmError> {
        let text = std::fs::read_to_string(path).map_err(|e| LmError::io(path, e))?;
        let cfg: Self = serde_json::from_str(&text).map_err(|e| LmError::Json {
            path: path.to_path_buf(),
            msg: e.to_string(),
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Reads the `{arch}.*` metadata of a GGUF file (`llama` and `qwen2`).
    pub fn from_gguf(g: &GgufFile) -> Result<Self, LmError> {
        let arch = g.meta_str("general.architecture")?.to_string();
        if arch != "llama" && arch != "qwen2" {
            return Err(LmError::Config(format!(
                "{}: architecture {arch:?} is not supported (llama, qwen2)",
                g.path().display()
            )));
        }
        let u = |k: &str| g.meta_u64(&format!("{arch}.{k}")).map(|v| v as usize);
        let n_heads = u("attention.head_count")?;
        let hidden = u("embedding_length")?;
        let vocab = match u("vocab_size") {
            Ok(v) => v,
            Err(_) => g
                .meta("tokenizer.ggml.tokens")
                .and_then(|v| v.as_array())
                .map(|a| a.len())
                .ok_or_else(|| LmError::Config("GGUF has no vocab size".into()))?,
        };
        let token = |k: &str| g.meta(k).and_then(|v| v.as_u64()).map(|v| v as u32);
        let cfg = Self {
            model_type: arch.clone(),
            vocab_size: vocab,
            hidden_size: hidden,
            intermediate_size: u("feed_forward_length")?,
            num_hidden_layers: u("block_count")?,
            num_attention_heads: n_heads,
            num_key_value_heads: Some(u("attention.head_count_kv").unwrap_or(n_heads)),
            head_dim: u("attention.key_length").ok(),
            max_position_embeddings: u("context_length").unwrap_or(default_max_pos()),
            rope_theta: g
                .meta_f64(&format!("{arch}.rope.freq_base"))
                .unwrap_or(default_theta()),
            rms_norm_eps: g
                .meta_f64(&format!("{arch}.attention.layer_norm_rms_epsilon"))
                .unwrap_or(default_eps()),
            tie_word_embeddings: g.tensor_info("output.weight").is_none(),
            attention_bias: false,
            bos_token_id: token("tokenizer.ggml.bos_token_id"),
            eos_token_id: token("tokenizer.ggml.eos_token_id").into_iter().collect(),
            rope_scaling: None,
        };
        if g.meta(&format!("{arch}.rope.scaling.type")).is_some() {
            return Err(LmError::Config("RoPE scaling is not supported".into()));
        }
        cfg.validate()?;
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
        self.attention_bias || self.model_type == "qwen2"
    }

    /// Whether the output projection has a bias (Llama with `attention_bias`).
    pub fn o_bias(&self) -> bool {
        self.attention_bias
    }

    /// Checks that the sizes are consistent.
    pub fn validate(&self) -> Result<(), LmError> {
        let err = |m: String| Err(LmError::Config(m));
        if self.model_type != "llama" && self.model_type != "qwen2" {
            return err(format!(
                "model_type {:?} is not supported (llama, qwen2)",
                self.model_type
            ));
        }
        if self.rope_scaling.as_ref().is_some_and(|v| !v.is_null()) {
            return err("rope_scaling is not supported".into());
        }
        let sizes = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.kv_heads()),
            ("head_dim", self.head_dim()),
            ("max_position_embeddings", self.max_position_embeddings),
        ];
        if let Some((name, _)) = sizes.iter().find(|(_, v)| *v == 0) {
            return err(format!("{name} must be positive"));
        }
        if !self.num_attention_heads.is_multiple_of(self.kv_heads()) {
            return err(format!(
                "num_attention_heads ({}) must be a multiple of num_key_value_heads ({})",
                self.num_attention_heads,
                self.kv_heads()
            ));
        }
        if !self.head_dim().is_multiple_of(2) {
            return err(format!(
                "head_dim ({}) must be even for RoPE",
                self.head_dim()
            ));
        }
        Ok(())
    }

    /// The JSON written to `config.json` on export (Hugging Face `LlamaForCausalLM` /
    /// `Qwen2ForCausalLM`).
    pub fn to_hf_json(&self) -> serde_json::Value {
        let arch = if self.model_type == "qwen2" {
            "Qwen2ForCausalLM"
        } else {
            "LlamaForCausalLM"
        };
        let mut v = serde_json::to_value(self).expect("config serialises");
        let o = v.as_object_mut().expect("object");
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
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

        let mut c = LlamaConfig::new(10, 64, 128, 2, 4, 3);
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
}

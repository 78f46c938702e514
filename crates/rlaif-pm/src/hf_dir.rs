//! The preference model as a Hugging Face directory: what
//! `transformers.AutoModelForSequenceClassification` loads (`LlamaForSequenceClassification`
//! / `Qwen2ForSequenceClassification`, one label), with the same scores.
//!
//! | file | holds |
//! |---|---|
//! | `config.json` | the decoder's config plus `architectures: ["LlamaForSequenceClassification"]`, `num_labels: 1` (`id2label` / `label2id` with one label), `pad_token_id` (a token the scored sequences never end with, so transformers' "last non-padding token" is our last real token) |
//! | `model.safetensors` | f32, `format = pt`: the decoder under its Hugging Face names (`model.…`, no `lm_head`) and `score.weight` `[1, hidden]` |
//! | `tokenizer.json`, `tokenizer_config.json`, `generation_config.json` | as `rlaif-lm` writes them for the language model (with the chat template) |
//! | `reward_stats.json` | [`RewardStats`] of a reference set, when known |
//!
//! The decoder's files are written by [`rlaif_lm::LanguageModel::save_pretrained`];
//! `score.weight` is then added to `model.safetensors` and `config.json` made a sequence
//! classifier's. Loading reads the decoder's parameters under the names and in the layout
//! `rlaif-lm` documents for its modules (every module path is the Hugging Face name under
//! `model.`; matrices stored as the transpose of the file's), which a test pins against
//! `rlaif-lm`'s own loader.

use crate::error::{PmError, Result};
use crate::model::{PreferenceModel, RewardStats};
use burn::module::{Module, ModuleMapper, Param};
use burn::prelude::*;
use half::{bf16, f16};
use rlaif_core::fs::write_atomic;
use rlaif_lm::{ChatTemplate, LanguageModel, LlamaConfig, ModelType, TextTokenizer};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// The file of the reward statistics in a preference-model directory.
pub const REWARD_STATS_FILE: &str = "reward_stats.json";

/// The Hugging Face name of the head.
const HEAD_NAME: &str = "score.weight";

/// One tensor read from a file: row-major shape and f32 values.
struct HostTensor {
    shape: Vec<usize>,
    data: Vec<f32>,
}

impl PreferenceModel {
    /// The `pad_token_id` written to `config.json`: transformers reads a sequence
    /// classifier's score at the last token that is not this one, so it must never be the
    /// token our sequences end with (the EOS / end-of-turn token). The tokenizer's padding
    /// token when it is not one of those, else `<|endoftext|>`, `<|end_of_text|>`, BOS or 0.
    pub fn hf_pad_token_id(&self) -> u32 {
        let t = &self.lm.tokenizer;
        let ends: Vec<u32> = t
            .eos_id
            .into_iter()
            .chain(
                ["<|im_end|>", "<|eot_id|>"]
                    .iter()
                    .filter_map(|s| t.token_to_id(s)),
            )
            .collect();
        [
            t.pad_id,
            t.token_to_id("<|endoftext|>"),
            t.token_to_id("<|end_of_text|>"),
            t.bos_id,
            Some(0),
            Some(1),
        ]
        .into_iter()
        .flatten()
        .find(|id| !ends.contains(id))
        .unwrap_or(0)
    }

    /// Writes a Hugging Face sequence-classification directory (see the
    /// [module docs](self)); each file atomically.
    pub fn save_pretrained(&self, dir: impl AsRef<Path>) -> Result<()> {
        let dir = dir.as_ref();
        self.lm.save_pretrained(dir)?;

        // config.json: a sequence classifier with one label.
        let config_path = dir.join("config.json");
        let text = std::fs::read(&config_path).map_err(|e| PmError::io(&config_path, e))?;
        let mut config: Value = serde_json::from_slice(&text)?;
        let arch = match self.lm.config.model_type {
            ModelType::Qwen2 => "Qwen2ForSequenceClassification",
            _ => "LlamaForSequenceClassification",
        };
        config["architectures"] = json!([arch]);
        config["num_labels"] = json!(1);
        config["id2label"] = json!({"0": "LABEL_0"});
        config["label2id"] = json!({"LABEL_0": 0});
        config["pad_token_id"] = json!(self.hf_pad_token_id());
        write_atomic(&config_path, &serde_json::to_vec_pretty(&config)?)?;

        // model.safetensors: the decoder as written, plus the head.
        let weights_path = dir.join("model.safetensors");
        let bytes = std::fs::read(&weights_path).map_err(|e| PmError::io(&weights_path, e))?;
        let bad = |msg: String| PmError::dir(&weights_path, msg);
        let st = SafeTensors::deserialize(&bytes).map_err(|e| bad(e.to_string()))?;
        let head: Vec<f32> = self
            .head
            .val()
            .try_into_vec_as::<f32>()
            .map_err(|e| bad(format!("reading the head back: {e:?}")))?;
        let head_bytes: Vec<u8> = head.iter().flat_map(|x| x.to_le_bytes()).collect();
        let mut views: Vec<(String, TensorView<'_>)> = st
            .tensors()
            .into_iter()
            .filter(|(name, _)| name != "lm_head.weight")
            .collect();
        views.push((
            HEAD_NAME.to_string(),
            TensorView::new(Dtype::F32, vec![1, head.len()], &head_bytes)
                .map_err(|e| bad(e.to_string()))?,
        ));
        let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
        let out = safetensors::serialize(views, Some(meta)).map_err(|e| bad(e.to_string()))?;
        drop(bytes);
        write_atomic(&weights_path, &out)?;

        let stats_path = dir.join(REWARD_STATS_FILE);
        match &self.reward_stats {
            Some(s) => write_atomic(&stats_path, &serde_json::to_vec_pretty(s)?)?,
            None if stats_path.exists() => {
                std::fs::remove_file(&stats_path).map_err(|e| PmError::io(&stats_path, e))?
            }
            None => {}
        }
        Ok(())
    }

    /// Loads a preference-model directory written by [`PreferenceModel::save_pretrained`]
    /// (or by transformers for a Llama / Qwen2 sequence classifier with one label) onto
    /// `device`. A language-model directory has no head: make it a preference model with
    /// [`PreferenceModel::from_lm`].
    pub fn load(dir: impl AsRef<Path>, device: &Device) -> Result<Self> {
        let dir = dir.as_ref();
        let config_path = dir.join("config.json");
        let config = LlamaConfig::from_json_file(&config_path)?;
        let raw: Value = serde_json::from_slice(
            &std::fs::read(&config_path).map_err(|e| PmError::io(&config_path, e))?,
        )?;
        let labels = raw
            .get("id2label")
            .and_then(Value::as_object)
            .map(|m| m.len())
            .or_else(|| {
                raw.get("num_labels")
                    .and_then(Value::as_u64)
                    .map(|n| n as usize)
            });
        if let Some(n) = labels.filter(|&n| n != 1) {
            return Err(PmError::dir(
                &config_path,
                format!("field `id2label`: a preference model has one label, this config has {n}"),
            ));
        }
        let tokenizer = TextTokenizer::from_file(&dir.join("tokenizer.json"))?;
        let chat_template = read_chat_template(&dir.join("tokenizer_config.json"), &tokenizer)?;
        let (mut weights, source) = read_weights(dir)?;

        let head = weights.remove(HEAD_NAME).ok_or_else(|| {
            PmError::dir(
                &source,
                format!(
                    "no `{HEAD_NAME}`: not a preference-model directory (a language model \
                     becomes one with PreferenceModel::from_lm)"
                ),
            )
        })?;
        let hidden = config.hidden_size;
        if head.shape != [1, hidden] {
            return Err(PmError::dir(
                &source,
                format!(
                    "`{HEAD_NAME}` has shape {:?}, the config needs [1, {hidden}]",
                    head.shape
                ),
            ));
        }
        let mut skeleton = config.init(device)?;
        skeleton.lm_head = None;
        let mut load = Load {
            path: Vec::new(),
            map: weights,
            source: source.clone(),
            error: None,
        };
        let model = skeleton.map(&mut load);
        if let Some(e) = load.error {
            return Err(e);
        }
        let mut rest = load.map;
        rest.remove("lm_head.weight");
        rest.retain(|k, _| !k.ends_with("rotary_emb.inv_freq"));
        if let Some(extra) = rest.keys().next() {
            return Err(PmError::dir(
                &source,
                format!(
                    "unexpected weight {extra} ({} unused tensors): does config.json match the checkpoint?",
                    rest.len()
                ),
            ));
        }
        let head = Param::from_tensor(Tensor::from_data(
            TensorData::new(head.data, [hidden, 1]),
            device,
        ));
        let stats_path = dir.join(REWARD_STATS_FILE);
        let reward_stats = match std::fs::read(&stats_path) {
            Ok(bytes) => Some(
                serde_json::from_slice::<RewardStats>(&bytes)
                    .map_err(|e| PmError::dir(&stats_path, e.to_string()))?,
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(PmError::io(&stats_path, e)),
        };
        let lm = LanguageModel::from_parts(model, config, tokenizer, chat_template);
        Ok(Self::from_parts(lm, head, reward_stats))
    }
}

/// The chat template of `tokenizer_config.json`, if the file exists and has one.
fn read_chat_template(path: &Path, tok: &TextTokenizer) -> Result<Option<ChatTemplate>> {
    let json: Value = match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b).map_err(|e| PmError::dir(path, e.to_string()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(PmError::io(path, e)),
    };
    let name = |id: Option<u32>| id.and_then(|i| tok.id_to_token(i)).unwrap_or_default();
    match json.get("chat_template").and_then(Value::as_str) {
        Some(src) => Ok(Some(ChatTemplate::new(
            src,
            &name(tok.bos_id),
            &name(tok.eos_id),
        )?)),
        None => Ok(None),
    }
}

/// Every tensor of `model.safetensors`, or of the shards of `model.safetensors.index.json`,
/// as f32, and the file that names them.
fn read_weights(dir: &Path) -> Result<(BTreeMap<String, HostTensor>, PathBuf)> {
    let mut map = BTreeMap::new();
    let single = dir.join("model.safetensors");
    if single.is_file() {
        read_safetensors(&single, &mut map)?;
        return Ok((map, single));
    }
    let index = dir.join("model.safetensors.index.json");
    let text = std::fs::read(&index).map_err(|e| PmError::io(&index, e))?;
    let json: Value =
        serde_json::from_slice(&text).map_err(|e| PmError::dir(&index, e.to_string()))?;
    let files: std::collections::BTreeSet<&str> = json
        .get("weight_map")
        .and_then(Value::as_object)
        .ok_or_else(|| PmError::dir(&index, "no \"weight_map\" object"))?
        .values()
        .map(|f| {
            f.as_str()
                .filter(|f| Path::new(f).file_name().is_some_and(|n| n == *f))
                .ok_or_else(|| PmError::dir(&index, format!("{f} is not a plain file name")))
        })
        .collect::<Result<_>>()?;
    for f in files {
        read_safetensors(&dir.join(f), &mut map)?;
    }
    Ok((map, index))
}

/// The tensors of one safetensors file (F32, F16, BF16), converted to f32.
fn read_safetensors(path: &Path, map: &mut BTreeMap<String, HostTensor>) -> Result<()> {
    let bytes = std::fs::read(path).map_err(|e| PmError::io(path, e))?;
    let bad = |msg: String| PmError::dir(path, msg);
    let st =
        SafeTensors::deserialize(&bytes).map_err(|e| bad(format!("invalid safetensors: {e}")))?;
    for (name, view) in st.tensors() {
        let raw = view.data();
        let data: Vec<f32> = match view.dtype() {
            Dtype::F32 => raw
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            Dtype::F16 => raw
                .chunks_exact(2)
                .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            Dtype::BF16 => raw
                .chunks_exact(2)
                .map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            other => {
                return Err(bad(format!(
                    "tensor {name} has dtype {other:?} (supported: F32, F16, BF16)"
                )));
            }
        };
        if map.contains_key(&name) {
            return Err(bad(format!("tensor {name} is also in another file")));
        }
        map.insert(
            name,
            HostTensor {
                shape: view.shape().to_vec(),
                data,
            },
        );
    }
    Ok(())
}

/// Replaces every parameter of the decoder by its tensor from the file: the module path
/// `p` is the Hugging Face name `model.p` (`embed_tokens` is `model.embed_tokens.weight`),
/// and a matrix is stored as the transpose of the file's.
struct Load {
    path: Vec<String>,
    map: BTreeMap<String, HostTensor>,
    source: PathBuf,
    error: Option<PmError>,
}

impl Load {
    fn take(&mut self, stored: &[usize]) -> Result<Vec<f32>> {
        let path = self.path.join(".");
        let name = match path.as_str() {
            "embed_tokens" => "model.embed_tokens.weight".to_string(),
            p => format!("model.{p}"),
        };
        let want: Vec<usize> = stored.iter().rev().copied().collect();
        let t = self
            .map
            .remove(&name)
            .ok_or_else(|| PmError::dir(&self.source, format!("missing weight {name}")))?;
        if t.shape != want {
            return Err(PmError::dir(
                &self.source,
                format!(
                    "weight {name} has shape {:?}, the config needs {want:?}",
                    t.shape
                ),
            ));
        }
        Ok(match *want.as_slice() {
            [rows, cols] => {
                let mut out = vec![0f32; t.data.len()];
                for r in 0..rows {
                    for c in 0..cols {
                        out[c * rows + r] = t.data[r * cols + c];
                    }
                }
                out
            }
            _ => t.data,
        })
    }
}

impl ModuleMapper for Load {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn map_float<const D: usize>(&mut self, p: Param<Tensor<D>>) -> Param<Tensor<D>> {
        if self.error.is_some() {
            return p;
        }
        let stored: Vec<usize> = p.lazy_shape().as_slice().to_vec();
        match self.take(&stored) {
            Ok(values) => {
                let (id, device) = (p.id, p.lazy_device());
                p.transform_for_load(
                    Tensor::from_data(TensorData::new(values, stored), &device),
                    id,
                )
            }
            Err(e) => {
                self.error = Some(e);
                p
            }
        }
    }
}

//! Weights as plain f32 arrays under Hugging Face names, the common ground between the
//! file formats (safetensors, GGUF) and the Burn model.
//!
//! The model's structure is not repeated here: loading maps over the module tree of
//! `LlamaConfig::skeleton` ([`model_from_weights`]), export visits the model
//! ([`weights_from_model`]), and both turn a module path into a checkpoint name with
//! [`hf_name`] and convert the layout with [`hf_shape`] / [`swap_layout`].

use crate::model::Llama;
use crate::{LlamaConfig, LmError};
use burn::module::{ModuleMapper, ModuleVisitor, Param};
use burn::prelude::*;
use rayon::prelude::*;
use rlaif_kernels::quant::QuantMatrix;
use std::collections::BTreeMap;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One tensor: row-major shape and values.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    /// Row-major (PyTorch) shape.
    pub shape: Vec<usize>,
    /// Values.
    pub data: Vec<f32>,
}

/// Hugging Face tensor name (`model.layers.0.self_attn.q_proj.weight`, ...) → tensor.
pub type WeightMap = BTreeMap<String, HostTensor>;

/// Reads a tensor back to the host as f32.
pub(crate) fn to_host<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>, LmError> {
    t.try_into_vec_as::<f32>()
        .map_err(|e| LmError::Backend(format!("reading a tensor back: {e:?}")))
}

/// The Hugging Face name of the parameter at a module path of [`Llama`]
/// (`layers.0.self_attn.q_proj.weight`, `embed_tokens`, ...). The fields are named after
/// Hugging Face's modules, so this is the path under `model.`, except for the two bare
/// matrices.
pub(crate) fn hf_name(path: &str) -> String {
    match path {
        "embed_tokens" => "model.embed_tokens.weight".into(),
        "lm_head" => "lm_head.weight".into(),
        p => format!("model.{p}"),
    }
}

/// The Hugging Face shape of a parameter stored with shape `stored`: every matrix is
/// stored as the transpose of its checkpoint tensor (`[in, out]` for PyTorch's
/// `[out, in]`, the embedding `[hidden, vocab]`), a vector as it is.
pub(crate) fn hf_shape(stored: &[usize]) -> Vec<usize> {
    stored.iter().rev().copied().collect()
}

/// Converts row-major values of shape `shape` to the other layout (a transpose for
/// matrices, nothing for vectors); the inverse is the same call with [`hf_shape`]`(shape)`.
pub(crate) fn swap_layout(data: Vec<f32>, shape: &[usize]) -> Vec<f32> {
    match *shape {
        [rows, cols] => transpose(&data, rows, cols),
        _ => data,
    }
}

/// Transposes a row-major `[rows, cols]` matrix (cache-blocked, parallel over row blocks
/// of the output).
pub(crate) fn transpose(data: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    const BLOCK: usize = 64;
    let mut out = vec![0f32; data.len()];
    if data.is_empty() {
        return out;
    }
    // out is [cols, rows]: each task fills BLOCK whole rows of out (= BLOCK columns of data).
    out.par_chunks_mut(BLOCK * rows)
        .enumerate()
        .for_each(|(cb, chunk)| {
            let c0 = cb * BLOCK;
            let cn = chunk.len() / rows;
            for r in 0..rows {
                let src = &data[r * cols + c0..r * cols + c0 + cn];
                for (dc, &v) in src.iter().enumerate() {
                    chunk[dc * rows + r] = v;
                }
            }
        });
    out
}

/// The module path of the parameter being visited, for the mapper and the visitor.
#[derive(Default)]
struct PathTracker(Vec<String>);

impl PathTracker {
    fn enter(&mut self, name: &str) {
        self.0.push(name.to_string());
    }
    fn exit(&mut self) {
        self.0.pop();
    }
    /// The Hugging Face name of the current parameter.
    fn hf_name(&self) -> String {
        hf_name(&self.0.join("."))
    }
}

/// Replaces every parameter of a skeleton by its tensor from the map.
struct Load<'a> {
    path: PathTracker,
    map: WeightMap,
    source: &'a Path,
    error: Option<LmError>,
}

impl Load<'_> {
    /// The values of `name`, checked against the parameter's shape and converted to the
    /// stored layout.
    fn take(&mut self, name: &str, stored: &[usize]) -> Result<TensorData, LmError> {
        let want = hf_shape(stored);
        let t = self
            .map
            .remove(name)
            .ok_or_else(|| LmError::MissingWeight {
                name: name.to_string(),
                source_file: self.source.to_path_buf(),
            })?;
        if t.shape != want {
            return Err(LmError::ShapeMismatch {
                name: name.to_string(),
                expected: want,
                found: t.shape,
            });
        }
        if t.data.len() != stored.iter().product::<usize>() {
            return Err(LmError::Config(format!(
                "{}: tensor {name} has {} values for its shape {:?}",
                self.source.display(),
                t.data.len(),
                t.shape
            )));
        }
        Ok(TensorData::new(swap_layout(t.data, &want), stored.to_vec()))
    }
}

impl ModuleMapper for Load<'_> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.enter(name);
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.exit();
    }

    fn map_float<const D: usize>(&mut self, p: Param<Tensor<D>>) -> Param<Tensor<D>> {
        if self.error.is_some() {
            return p;
        }
        let name = self.path.hf_name();
        match self.take(&name, p.lazy_shape().as_slice()) {
            Ok(data) => {
                let (id, device) = (p.id, p.lazy_device());
                p.transform_for_load(Tensor::from_data(data, &device), id)
            }
            Err(e) => {
                self.error = Some(e);
                p
            }
        }
    }
}

/// Builds a model from a weight map (consumed). `source` names the checkpoint in errors.
///
/// Every tensor the config implies must be present with the right shape; a tied model
/// ignores a `lm_head.weight` in the file. Leftover tensors are an error (they usually mean
/// the wrong config).
pub(crate) fn model_from_weights(
    cfg: &LlamaConfig,
    map: WeightMap,
    source: &Path,
    device: &Device,
) -> Result<Llama, LmError> {
    let skeleton = cfg.skeleton(device).map_err(|e| e.in_file(source))?;
    let mut load = Load {
        path: PathTracker::default(),
        map,
        source,
        error: None,
    };
    let model = skeleton.map(&mut load);
    if let Some(e) = load.error {
        return Err(e);
    }
    let mut rest = load.map;
    if cfg.tie_word_embeddings {
        rest.remove("lm_head.weight");
    }
    // Rotary inverse frequencies are sometimes stored; they are recomputed from θ.
    rest.retain(|k, _| !k.ends_with("rotary_emb.inv_freq"));
    if let Some(extra) = rest.keys().next() {
        return Err(LmError::Config(format!(
            "{}: unexpected weight {extra} ({} unused tensors): does config.json match the checkpoint?",
            source.display(),
            rest.len()
        )));
    }
    Ok(model)
}

/// Collects every parameter under its Hugging Face name and layout.
struct Export {
    path: PathTracker,
    /// Read the values (`false`: zeros, without initialising lazy parameters).
    read: bool,
    map: WeightMap,
    error: Option<LmError>,
}

impl ModuleVisitor for Export {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.enter(name);
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.exit();
    }

    fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
        if self.error.is_some() {
            return;
        }
        let stored = p.lazy_shape().to_vec();
        let data = if self.read {
            match to_host(p.val()) {
                Ok(v) => swap_layout(v, &stored),
                Err(e) => {
                    self.error = Some(e);
                    return;
                }
            }
        } else {
            vec![0.0; stored.iter().product()]
        };
        let shape = hf_shape(&stored);
        self.map
            .insert(self.path.hf_name(), HostTensor { shape, data });
    }
}

/// Every parameter of `model` under its Hugging Face name and shape: its values
/// (`read`), or zeros.
fn export(model: &Llama, read: bool) -> Result<WeightMap, LmError> {
    let mut v = Export {
        path: PathTracker::default(),
        read,
        map: WeightMap::new(),
        error: None,
    };
    model.visit(&mut v);
    match v.error {
        Some(e) => Err(e),
        None => Ok(v.map),
    }
}

/// Reads every parameter of `model` back to the host under Hugging Face names and layout.
pub(crate) fn weights_from_model(model: &Llama) -> Result<WeightMap, LmError> {
    export(model, true)
}

/// The Hugging Face names and shapes of the parameters of a model with config `cfg`, each
/// filled with zeros (nothing is drawn, nothing is allocated on a device).
#[cfg(any(test, feature = "test-util"))]
pub(crate) fn zero_weights(cfg: &LlamaConfig) -> Result<WeightMap, LmError> {
    export(&cfg.skeleton(&Device::default())?, false)
}

/// Maps a GGUF tensor name to its Hugging Face name (`None` for tensors we do not use).
fn gguf_to_hf_name(name: &str) -> Option<String> {
    let fixed = match name {
        "token_embd.weight" => Some("model.embed_tokens.weight"),
        "output_norm.weight" => Some("model.norm.weight"),
        "output.weight" => Some("lm_head.weight"),
        _ => None,
    };
    if let Some(f) = fixed {
        return Some(f.to_string());
    }
    let rest = name.strip_prefix("blk.")?;
    let (idx, tail) = rest.split_once('.')?;
    let idx: usize = idx.parse().ok()?;
    let (part, kind) = tail.rsplit_once('.')?;
    let hf = match part {
        "attn_norm" => "input_layernorm",
        "ffn_norm" => "post_attention_layernorm",
        "attn_q" => "self_attn.q_proj",
        "attn_k" => "self_attn.k_proj",
        "attn_v" => "self_attn.v_proj",
        "attn_output" => "self_attn.o_proj",
        "ffn_gate" => "mlp.gate_proj",
        "ffn_up" => "mlp.up_proj",
        "ffn_down" => "mlp.down_proj",
        _ => return None,
    };
    Some(format!("model.layers.{idx}.{hf}.{kind}"))
}

/// Undoes the row permutation that llama.cpp's converter applies to Llama q/k projections
/// (`LlamaModel.permute`: HF's `rotate_half` pairs `(i, i + d/2)` become adjacent rows
/// `(2i, 2i+1)` for ggml's interleaved RoPE). Row `h·d + 2j + t` of the GGUF tensor is row
/// `h·d + t·d/2 + j` of the Hugging Face tensor. Works for weights `[out, in]` and biases
/// `[out]` (`cols = 1`); `rows` must be a multiple of `2 · n_heads` and `data` must hold
/// `rows · cols` values.
fn unpermute_rows<T: Copy + Default>(
    data: &[T],
    n_heads: usize,
    rows: usize,
    cols: usize,
) -> Vec<T> {
    let hd = rows / n_heads;
    let half = hd / 2;
    let mut out = vec![T::default(); data.len()];
    for h in 0..n_heads {
        for j in 0..half {
            for t in 0..2 {
                let src = (h * hd + 2 * j + t) * cols;
                let dst = (h * hd + t * half + j) * cols;
                out[dst..dst + cols].copy_from_slice(&data[src..src + cols]);
            }
        }
    }
    out
}

/// [`unpermute_rows`] on `data` (`rows` rows of equal length, f32 values or ggml blocks) when
/// `hf` names a q or k projection of an architecture whose GGUF files permute them; every
/// other tensor passes through. `Err` says what is wrong with the row count.
fn unpermute_qk<T: Copy + Default>(
    cfg: &LlamaConfig,
    hf: &str,
    data: Vec<T>,
    rows: usize,
) -> Result<Vec<T>, String> {
    let heads = if !cfg.model_type.gguf_permutes_qk() {
        return Ok(data);
    } else if hf.contains("q_proj") {
        cfg.num_attention_heads
    } else if hf.contains("k_proj") {
        cfg.kv_heads()
    } else {
        return Ok(data);
    };
    if rows == 0 || !rows.is_multiple_of(2 * heads) {
        return Err(format!(
            "has {rows} rows, not a multiple of 2 × {heads} heads"
        ));
    }
    let cols = data.len() / rows;
    Ok(unpermute_rows(&data, heads, rows, cols))
}

/// Reads every tensor of a GGUF model into a weight map under Hugging Face names, with
/// Llama's q/k permutation undone.
pub(crate) fn weights_from_gguf(
    g: &crate::gguf::GgufFile,
    cfg: &LlamaConfig,
) -> Result<WeightMap, LmError> {
    let bad = |msg: String| LmError::Gguf {
        path: PathBuf::from(g.path()),
        msg,
    };
    let mut map = WeightMap::new();
    for info in &g.tensors {
        let Some(hf) = gguf_to_hf_name(&info.name) else {
            if info.name.starts_with("rope_") {
                continue; // precomputed RoPE factors are not used
            }
            return Err(bad(format!("unexpected tensor {}", info.name)));
        };
        let (shape, data) = g.tensor_f32(&info.name)?;
        let rows = match *shape.as_slice() {
            [rows, _] | [rows] => rows,
            _ => 0, // not a projection: passes through unless named as q or k
        };
        let data = unpermute_qk(cfg, &hf, data, rows)
            .map_err(|m| bad(format!("tensor {} (shape {shape:?}) {m}", info.name)))?;
        if map.insert(hf, HostTensor { shape, data }).is_some() {
            return Err(bad(format!("tensor {} appears twice", info.name)));
        }
    }
    Ok(map)
}

/// The quantised 2-D tensors of a GGUF model (Q8_0, Q4_0, Q4_1) as ggml blocks `[out, in]`
/// under Hugging Face names, with Llama's q/k row permutation undone on whole rows of
/// blocks, for [`Llama::attach_quantized`](crate::Llama::attach_quantized). Tensors of other
/// types are left out.
pub(crate) fn quantized_from_gguf(
    g: &crate::gguf::GgufFile,
    cfg: &LlamaConfig,
) -> Result<HashMap<String, Arc<QuantMatrix>>, LmError> {
    let bad = |msg: String| LmError::Gguf {
        path: PathBuf::from(g.path()),
        msg,
    };
    let mut out = HashMap::new();
    for info in &g.tensors {
        let (Some(format), Some(hf), &[cols, rows]) = (
            info.ggml_type.block_format(),
            gguf_to_hf_name(&info.name),
            info.dims.as_slice(),
        ) else {
            continue;
        };
        let bytes = g
            .tensor_bytes(info)
            .ok_or_else(|| bad(format!("tensor {} lies outside the file", info.name)))?;
        let data = unpermute_qk(cfg, &hf, bytes.to_vec(), rows)
            .map_err(|m| bad(format!("tensor {} {m}", info.name)))?;
        let q = QuantMatrix::new(format, rows, cols, data)
            .map_err(|e| bad(format!("tensor {}: {e}", info.name)))?;
        out.insert(hf, Arc::new(q));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// llama.cpp's `permute` (convert_hf_to_gguf.py), written independently as index maps.
    fn permute_rows(data: &[f32], n_heads: usize, rows: usize, cols: usize) -> Vec<f32> {
        // w.reshape(n_head, 2, hd/2, cols).swapaxes(1, 2).reshape(rows, cols)
        let hd = rows / n_heads;
        let mut out = Vec::with_capacity(data.len());
        for h in 0..n_heads {
            for j in 0..hd / 2 {
                for t in 0..2 {
                    let r = h * hd + t * (hd / 2) + j;
                    out.extend_from_slice(&data[r * cols..(r + 1) * cols]);
                }
            }
        }
        out
    }

    #[test]
    fn unpermute_inverts_llama_cpp_permute() {
        let (heads, rows, cols) = (3, 12, 5);
        let w: Vec<f32> = (0..rows * cols).map(|x| x as f32).collect();
        let p = permute_rows(&w, heads, rows, cols);
        assert_ne!(p, w);
        assert_eq!(unpermute_rows(&p, heads, rows, cols), w);
    }

    #[test]
    fn transpose_matches_index_definition() {
        for (r, c) in [(1, 1), (3, 5), (70, 130), (129, 64), (1, 7), (7, 1)] {
            let m: Vec<f32> = (0..r * c).map(|x| x as f32).collect();
            let t = transpose(&m, r, c);
            for i in 0..r {
                for j in 0..c {
                    assert_eq!(t[j * r + i], m[i * c + j]);
                }
            }
        }
    }

    #[test]
    fn gguf_names() {
        assert_eq!(
            gguf_to_hf_name("blk.12.attn_output.weight").as_deref(),
            Some("model.layers.12.self_attn.o_proj.weight")
        );
        assert_eq!(
            gguf_to_hf_name("blk.0.attn_q.bias").as_deref(),
            Some("model.layers.0.self_attn.q_proj.bias")
        );
        assert_eq!(
            gguf_to_hf_name("token_embd.weight").as_deref(),
            Some("model.embed_tokens.weight")
        );
        assert_eq!(gguf_to_hf_name("blk.x.attn_q.weight"), None);
    }

    #[test]
    fn the_module_tree_gives_hugging_face_names_and_shapes() {
        let cfg = LlamaConfig {
            vocab_size: 10,
            hidden_size: 8,
            intermediate_size: 12,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            num_key_value_heads: Some(2),
            attention_bias: true,
            ..LlamaConfig::default()
        };
        let w = zero_weights(&cfg).unwrap();
        let shape = |n: &str| w[n].shape.clone();
        assert_eq!(shape("model.embed_tokens.weight"), [10, 8]);
        assert_eq!(shape("lm_head.weight"), [10, 8]);
        assert_eq!(shape("model.norm.weight"), [8]);
        assert_eq!(shape("model.layers.1.self_attn.q_proj.weight"), [8, 8]);
        assert_eq!(shape("model.layers.1.self_attn.k_proj.weight"), [4, 8]);
        assert_eq!(shape("model.layers.1.self_attn.k_proj.bias"), [4]);
        assert_eq!(shape("model.layers.0.self_attn.o_proj.bias"), [8]);
        assert_eq!(shape("model.layers.0.mlp.gate_proj.weight"), [12, 8]);
        assert_eq!(shape("model.layers.0.mlp.down_proj.weight"), [8, 12]);
        assert_eq!(shape("model.layers.0.post_attention_layernorm.weight"), [8]);
        // 3 + 2 × (2 norms + 4 projections with bias + 3 MLP matrices)
        assert_eq!(w.len(), 3 + 2 * (2 + 8 + 3));
        let tied = LlamaConfig {
            tie_word_embeddings: true,
            attention_bias: false,
            ..cfg
        };
        let w = zero_weights(&tied).unwrap();
        assert!(!w.contains_key("lm_head.weight"));
        assert_eq!(w.len(), 2 + 2 * (2 + 4 + 3));
    }

    #[test]
    fn load_then_export_is_bit_exact() {
        let cfg = LlamaConfig {
            vocab_size: 10,
            hidden_size: 8,
            intermediate_size: 12,
            num_hidden_layers: 1,
            num_attention_heads: 2,
            model_type: crate::ModelType::Qwen2,
            ..LlamaConfig::default()
        };
        let mut w = zero_weights(&cfg).unwrap();
        let mut x = 0.1f32;
        for t in w.values_mut() {
            for v in &mut t.data {
                x = (x * 3.7 + 0.13).fract() - 0.5;
                *v = x;
            }
        }
        let model =
            model_from_weights(&cfg, w.clone(), Path::new("mem"), &Device::default()).unwrap();
        assert_eq!(weights_from_model(&model).unwrap(), w);
        assert_eq!(model.embed_tokens.dims(), [8, 10]);
    }
}

//! Weights as plain f32 arrays under Hugging Face names, the common ground between the
//! file formats (safetensors, GGUF) and the Burn model.

use crate::model::{Attention, Block, Llama, Mlp, Proj, RmsNorm};
use crate::{LlamaConfig, LmError};
use burn::module::Param;
use burn::prelude::*;
use rayon::prelude::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

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

struct Loader<'a> {
    map: WeightMap,
    source: &'a Path,
    device: &'a Device,
}

/// Transposes a row-major `[rows, cols]` matrix (cache-blocked, parallel over row blocks
/// of the output).
pub fn transpose(data: &[f32], rows: usize, cols: usize) -> Vec<f32> {
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

impl Loader<'_> {
    /// A Hugging Face `[out, in]` matrix, stored `[in, out]`.
    fn matrix(&mut self, name: &str, hf_shape: [usize; 2]) -> Result<Param<Tensor<2>>, LmError> {
        let [rows, cols] = hf_shape;
        let t = self.checked(name, &hf_shape)?;
        let data = TensorData::new(transpose(&t.data, rows, cols), [cols, rows]);
        Ok(Param::from_tensor(Tensor::from_data(data, self.device)))
    }

    fn vector(&mut self, name: &str, len: usize) -> Result<Param<Tensor<1>>, LmError> {
        let t = self.checked(name, &[len])?;
        let data = TensorData::new(t.data, [len]);
        Ok(Param::from_tensor(Tensor::from_data(data, self.device)))
    }

    fn checked(&mut self, name: &str, shape: &[usize]) -> Result<HostTensor, LmError> {
        let t = self
            .map
            .remove(name)
            .ok_or_else(|| LmError::MissingWeight {
                name: name.to_string(),
                source_file: self.source.to_path_buf(),
            })?;
        if t.shape != shape {
            return Err(LmError::ShapeMismatch {
                name: name.to_string(),
                expected: shape.to_vec(),
                found: t.shape,
            });
        }
        Ok(t)
    }

    fn proj(
        &mut self,
        prefix: &str,
        d_in: usize,
        d_out: usize,
        bias: bool,
    ) -> Result<Proj, LmError> {
        Ok(Proj {
            weight: self.matrix(&format!("{prefix}.weight"), [d_out, d_in])?,
            bias: if bias {
                Some(self.vector(&format!("{prefix}.bias"), d_out)?)
            } else {
                None
            },
        })
    }

    fn norm(&mut self, name: &str, d: usize, eps: f64) -> Result<RmsNorm, LmError> {
        Ok(RmsNorm {
            weight: self.vector(name, d)?,
            eps,
        })
    }
}

/// Builds a model from a weight map (consumed). `source` names the checkpoint in errors.
///
/// Every tensor the config implies must be present with the right shape; a tied model
/// ignores a `lm_head.weight` in the file. Leftover tensors are an error (they usually mean
/// the wrong config).
pub fn model_from_weights(
    cfg: &LlamaConfig,
    map: WeightMap,
    source: &Path,
    device: &Device,
) -> Result<Llama, LmError> {
    cfg.validate()?;
    let mut l = Loader {
        map,
        source,
        device,
    };
    let (h, hd, v) = (cfg.hidden_size, cfg.head_dim(), cfg.vocab_size);
    let (nh, nkv, ff) = (
        cfg.num_attention_heads,
        cfg.kv_heads(),
        cfg.intermediate_size,
    );
    let embed_tokens = l.matrix("model.embed_tokens.weight", [v, h])?;
    let norm = l.norm("model.norm.weight", h, cfg.rms_norm_eps)?;
    let lm_head = if cfg.tie_word_embeddings {
        l.map.remove("lm_head.weight");
        None
    } else {
        Some(l.matrix("lm_head.weight", [v, h])?)
    };
    let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
    let (eps, qkv_bias) = (cfg.rms_norm_eps, cfg.qkv_bias());
    for i in 0..cfg.num_hidden_layers {
        let p = format!("model.layers.{i}");
        let b = Block {
            input_layernorm: l.norm(&format!("{p}.input_layernorm.weight"), h, eps)?,
            self_attn: Attention {
                q_proj: l.proj(&format!("{p}.self_attn.q_proj"), h, nh * hd, qkv_bias)?,
                k_proj: l.proj(&format!("{p}.self_attn.k_proj"), h, nkv * hd, qkv_bias)?,
                v_proj: l.proj(&format!("{p}.self_attn.v_proj"), h, nkv * hd, qkv_bias)?,
                o_proj: l.proj(&format!("{p}.self_attn.o_proj"), nh * hd, h, cfg.o_bias())?,
                n_heads: nh,
                n_kv_heads: nkv,
                head_dim: hd,
            },
            post_attention_layernorm: l.norm(
                &format!("{p}.post_attention_layernorm.weight"),
                h,
                eps,
            )?,
            mlp: Mlp {
                gate_proj: l.proj(&format!("{p}.mlp.gate_proj"), h, ff, false)?,
                up_proj: l.proj(&format!("{p}.mlp.up_proj"), h, ff, false)?,
                down_proj: l.proj(&format!("{p}.mlp.down_proj"), ff, h, false)?,
            },
        };
        layers.push(b);
    }
    // Rotary inverse frequencies are sometimes stored; they are recomputed from θ.
    l.map.retain(|k, _| !k.ends_with("rotary_emb.inv_freq"));
    if let Some(extra) = l.map.keys().next() {
        return Err(LmError::Config(format!(
            "{}: unexpected weight {extra} ({} unused tensors): does config.json match the checkpoint?",
            source.display(),
            l.map.len()
        )));
    }
    Ok(Llama {
        embed_tokens,
        layers,
        norm,
        lm_head,
        rope: cfg.init_rope(device),
    })
}

/// Reads every parameter of `model` back to the host under Hugging Face names and layout.
pub fn weights_from_model(model: &Llama) -> Result<WeightMap, LmError> {
    // Matrices are stored [in, out]: back to PyTorch's [out, in].
    let matrix = |t: Tensor<2>| -> Result<HostTensor, LmError> {
        let [rows, cols] = t.dims();
        let data = transpose(&to_host(t)?, rows, cols);
        Ok(HostTensor {
            shape: vec![cols, rows],
            data,
        })
    };
    let vector = |t: Tensor<1>| -> Result<HostTensor, LmError> {
        let data = to_host(t)?;
        Ok(HostTensor {
            shape: vec![data.len()],
            data,
        })
    };
    let mut map = WeightMap::new();
    map.insert(
        "model.embed_tokens.weight".into(),
        matrix(model.embed_tokens.val())?,
    );
    map.insert("model.norm.weight".into(), vector(model.norm.weight.val())?);
    if let Some(head) = &model.lm_head {
        map.insert("lm_head.weight".into(), matrix(head.val())?);
    }
    for (i, b) in model.layers.iter().enumerate() {
        let p = format!("model.layers.{i}");
        let norms = [
            ("input_layernorm", &b.input_layernorm),
            ("post_attention_layernorm", &b.post_attention_layernorm),
        ];
        for (name, norm) in norms {
            map.insert(format!("{p}.{name}.weight"), vector(norm.weight.val())?);
        }
        let projs = [
            ("self_attn.q_proj", &b.self_attn.q_proj),
            ("self_attn.k_proj", &b.self_attn.k_proj),
            ("self_attn.v_proj", &b.self_attn.v_proj),
            ("self_attn.o_proj", &b.self_attn.o_proj),
            ("mlp.gate_proj", &b.mlp.gate_proj),
            ("mlp.up_proj", &b.mlp.up_proj),
            ("mlp.down_proj", &b.mlp.down_proj),
        ];
        for (name, proj) in projs {
            map.insert(format!("{p}.{name}.weight"), matrix(proj.weight.val())?);
            if let Some(bias) = &proj.bias {
                map.insert(format!("{p}.{name}.bias"), vector(bias.val())?);
            }
        }
    }
    Ok(map)
}

/// Maps a GGUF tensor name to its Hugging Face name (`None` for tensors we do not use).
pub fn gguf_to_hf_name(name: &str) -> Option<String> {
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
/// `[out]` (`cols = 1`).
pub fn unpermute_rows(data: &[f32], n_heads: usize, rows: usize, cols: usize) -> Vec<f32> {
    let hd = rows / n_heads;
    let half = hd / 2;
    let mut out = vec![0f32; data.len()];
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

/// Reads every tensor of a GGUF model into a weight map under Hugging Face names, with
/// Llama's q/k permutation undone.
pub fn weights_from_gguf(
    g: &crate::gguf::GgufFile,
    cfg: &LlamaConfig,
) -> Result<WeightMap, LmError> {
    let mut map = WeightMap::new();
    for info in &g.tensors {
        let Some(hf) = gguf_to_hf_name(&info.name) else {
            if info.name.starts_with("rope_") {
                continue; // precomputed RoPE factors are not used
            }
            return Err(LmError::Gguf {
                path: PathBuf::from(g.path()),
                msg: format!("unexpected tensor {}", info.name),
            });
        };
        let (shape, mut data) = g.tensor_f32(&info.name)?;
        if cfg.model_type.gguf_permutes_qk() {
            let heads = if hf.contains("q_proj") {
                Some(cfg.num_attention_heads)
            } else if hf.contains("k_proj") {
                Some(cfg.kv_heads())
            } else {
                None
            };
            if let Some(n) = heads {
                let cols = if shape.len() == 2 { shape[1] } else { 1 };
                data = unpermute_rows(&data, n, shape[0], cols);
            }
        }
        map.insert(hf, HostTensor { shape, data });
    }
    Ok(map)
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
}

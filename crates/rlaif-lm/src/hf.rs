//! Hugging Face model directories: `model.safetensors` (single file or sharded with
//! `model.safetensors.index.json`, f32 / f16 / bf16) read and written (loadable by
//! transformers), and optional JSON files.

use crate::LmError;
use crate::weights::{HostTensor, WeightMap};
use half::{bf16, f16};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

/// Reads every tensor of one safetensors file into `map` (converted to f32).
pub(crate) fn read_safetensors(path: &Path, map: &mut WeightMap) -> Result<(), LmError> {
    let bytes = std::fs::read(path).map_err(|e| LmError::io(path, e))?;
    parse_safetensors(&bytes, path, map)
}

/// Parses the bytes of a safetensors file into `map` (converted to f32); `path` names it
/// in errors. A tensor already in `map` (from another shard) is an error.
pub(crate) fn parse_safetensors(
    bytes: &[u8],
    path: &Path,
    map: &mut WeightMap,
) -> Result<(), LmError> {
    let err = |msg: String| LmError::Safetensors {
        path: path.to_path_buf(),
        msg,
    };
    let st =
        SafeTensors::deserialize(bytes).map_err(|e| err(format!("invalid safetensors: {e}")))?;
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
                return Err(err(format!(
                    "tensor {name} has dtype {other:?} (supported: F32, F16, BF16)"
                )));
            }
        };
        let shape = view.shape().to_vec();
        if shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)) != Some(data.len()) {
            return Err(err(format!(
                "tensor {name}: shape {shape:?} does not match its {} values",
                data.len()
            )));
        }
        if map.contains_key(&name) {
            return Err(err(format!("tensor {name} is also in another file")));
        }
        map.insert(name, HostTensor { shape, data });
    }
    Ok(())
}

/// The shard files named by a `model.safetensors.index.json` (its text), and the tensor
/// names it lists. `path` names the index in errors. A shard must be a plain file name in
/// the index's directory.
pub(crate) fn parse_index(
    text: &str,
    path: &Path,
) -> Result<(BTreeSet<String>, Vec<String>), LmError> {
    let bad = |msg: String| LmError::Json {
        path: path.to_path_buf(),
        msg,
    };
    let json: serde_json::Value = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
    let weight_map = json
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| bad("no \"weight_map\" object".into()))?;
    let mut files = BTreeSet::new();
    for (name, file) in weight_map {
        let f = file
            .as_str()
            .ok_or_else(|| bad(format!("weight_map.{name} is not a file name")))?;
        let plain = Path::new(f)
            .file_name()
            .is_some_and(|n| n == std::ffi::OsStr::new(f));
        if !plain || f.contains('/') || f.contains('\\') || f == ".." {
            return Err(bad(format!(
                "weight_map.{name}: {f:?} is not a plain file name"
            )));
        }
        files.insert(f.to_string());
    }
    Ok((files, weight_map.keys().cloned().collect()))
}

/// Reads the weights of a model directory: `model.safetensors`, or the shards listed in
/// `model.safetensors.index.json`.
pub(crate) fn read_weights(dir: &Path) -> Result<(WeightMap, PathBuf), LmError> {
    let mut map = WeightMap::new();
    let single = dir.join("model.safetensors");
    if single.is_file() {
        read_safetensors(&single, &mut map)?;
        return Ok((map, single));
    }
    let index = dir.join("model.safetensors.index.json");
    let text = match std::fs::read_to_string(&index) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(LmError::io(
                &single,
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "neither model.safetensors nor model.safetensors.index.json exists",
                ),
            ));
        }
        Err(e) => return Err(LmError::io(&index, e)),
    };
    let (files, names) = parse_index(&text, &index)?;
    for f in &files {
        read_safetensors(&dir.join(f), &mut map)?;
    }
    if let Some(missing) = names.iter().find(|k| !map.contains_key(*k)) {
        return Err(LmError::MissingWeight {
            name: missing.clone(),
            source_file: index.clone(),
        });
    }
    Ok((map, index))
}

/// Reads an optional JSON file: `None` if it does not exist; any other read error, and
/// malformed JSON, is an error naming the file.
pub(crate) fn read_optional_json(path: &Path) -> Result<Option<serde_json::Value>, LmError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(LmError::io(path, e)),
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| LmError::Json {
            path: path.to_path_buf(),
            msg: e.to_string(),
        })
}

/// Writes `map` as one f32 safetensors file with `format = pt` metadata (what transformers
/// expects), atomically and durably ([`rlaif_core::fs::write_atomic`]).
pub(crate) fn write_safetensors(map: &WeightMap, path: &Path) -> Result<(), LmError> {
    let bytes: Vec<(&String, Vec<u8>, &[usize])> = map
        .iter()
        .map(|(k, t)| {
            (
                k,
                t.data.iter().flat_map(|x| x.to_le_bytes()).collect(),
                t.shape.as_slice(),
            )
        })
        .collect();
    let views = bytes
        .iter()
        .map(|(k, b, s)| {
            TensorView::new(Dtype::F32, s.to_vec(), b)
                .map(|v| (k.as_str(), v))
                .map_err(|e| LmError::Safetensors {
                    path: path.to_path_buf(),
                    msg: format!("tensor {k}: {e}"),
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
    let bytes = safetensors::serialize(views, Some(meta)).map_err(|e| LmError::Safetensors {
        path: path.to_path_buf(),
        msg: e.to_string(),
    })?;
    Ok(rlaif_core::fs::write_atomic(path, &bytes)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safetensors_round_trip_and_dtype_conversion() {
        let dir = tempfile::tempdir().unwrap();
        let mut map = WeightMap::new();
        map.insert(
            "a".into(),
            HostTensor {
                shape: vec![2, 3],
                data: vec![1., -2., 3.5, 0., 1e-3, 7.],
            },
        );
        map.insert(
            "b".into(),
            HostTensor {
                shape: vec![1],
                data: vec![42.],
            },
        );
        let p = dir.path().join("model.safetensors");
        write_safetensors(&map, &p).unwrap();
        let mut back = WeightMap::new();
        read_safetensors(&p, &mut back).unwrap();
        assert_eq!(back, map);

        // bf16 and f16 files are converted to f32
        let vals = [1.5f32, -0.25];
        let b16: Vec<u8> = vals
            .iter()
            .flat_map(|x| bf16::from_f32(*x).to_le_bytes())
            .collect();
        let h16: Vec<u8> = vals
            .iter()
            .flat_map(|x| f16::from_f32(*x).to_le_bytes())
            .collect();
        let views = vec![
            ("x", TensorView::new(Dtype::BF16, vec![2], &b16).unwrap()),
            ("y", TensorView::new(Dtype::F16, vec![2], &h16).unwrap()),
        ];
        let p2 = dir.path().join("half.safetensors");
        safetensors::serialize_to_file(views, None, &p2).unwrap();
        let mut m = WeightMap::new();
        read_safetensors(&p2, &mut m).unwrap();
        assert_eq!(m["x"].data, vals);
        assert_eq!(m["y"].data, vals);
    }

    #[test]
    fn corrupt_and_unsupported_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.safetensors");
        std::fs::write(&p, b"\x10\0\0\0\0\0\0\0{not json").unwrap();
        let e = read_safetensors(&p, &mut WeightMap::new())
            .unwrap_err()
            .to_string();
        assert!(e.contains("bad.safetensors"), "{e}");

        let raw = [1u8, 2, 3, 4];
        let views = vec![("ints", TensorView::new(Dtype::I32, vec![1], &raw).unwrap())];
        let p = dir.path().join("int.safetensors");
        safetensors::serialize_to_file(views, None, &p).unwrap();
        let e = read_safetensors(&p, &mut WeightMap::new())
            .unwrap_err()
            .to_string();
        assert!(e.contains("ints") && e.contains("I32"), "{e}");

        let e = read_weights(dir.path()).unwrap_err().to_string();
        assert!(e.contains("model.safetensors"), "{e}");
    }
}

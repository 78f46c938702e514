//! GGUF reader: header, metadata, tensor infos, alignment, and dequantisation to f32.
//!
//! Format: <https://github.com/ggml-org/ggml/blob/master/docs/gguf.md>. Every length and
//! count read from the file is checked against the bytes that remain before anything is
//! allocated, so a truncated or corrupt file is an [`LmError::Gguf`], never a panic or a
//! huge allocation.
//!
//! Supported tensor types: F32, F16, BF16, Q8_0, Q4_0, Q4_1. Others are reported by name
//! ([`LmError::UnsupportedTensorType`]).

use crate::LmError;
use half::{bf16, f16};
use rayon::prelude::*;
use rlaif_kernels::quant::{self, BlockFormat};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 4] = b"GGUF";
const DEFAULT_ALIGNMENT: u64 = 32;
/// GGML_MAX_DIMS.
const MAX_DIMS: usize = 4;

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum MetaValue {
    /// Any unsigned integer type (u8, u16, u32, u64).
    U64(u64),
    /// Any signed integer type (i8, i16, i32, i64).
    I64(i64),
    /// f32 or f64.
    F64(f64),
    /// bool.
    Bool(bool),
    /// UTF-8 string.
    Str(String),
    /// Array of values (one type).
    Array(Vec<MetaValue>),
}

impl MetaValue {
    /// The value as an unsigned integer, if it is a non-negative integer.
    pub(crate) fn as_u64(&self) -> Option<u64> {
        match *self {
            MetaValue::U64(v) => Some(v),
            MetaValue::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }
    /// The value as a float, if it is a number.
    pub(crate) fn as_f64(&self) -> Option<f64> {
        match *self {
            MetaValue::F64(v) => Some(v),
            MetaValue::U64(v) => Some(v as f64),
            MetaValue::I64(v) => Some(v as f64),
            _ => None,
        }
    }
    /// The value as a string slice, if it is a string.
    pub(crate) fn as_str(&self) -> Option<&str> {
        match self {
            MetaValue::Str(s) => Some(s),
            _ => None,
        }
    }
    /// The value as an array, if it is one.
    pub(crate) fn as_array(&self) -> Option<&[MetaValue]> {
        match self {
            MetaValue::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// GGML tensor types (the numbering of `ggml.h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GgmlType {
    /// 32-bit float.
    F32,
    /// 16-bit IEEE float.
    F16,
    /// bfloat16.
    BF16,
    /// Blocks of 32: f16 scale `d`, 32 × i8; `x = d·q`.
    Q8_0,
    /// Blocks of 32: f16 scale `d`, 16 bytes of nibbles; `x = d·(q − 8)`.
    Q4_0,
    /// Blocks of 32: f16 scale `d`, f16 minimum `m`, 16 bytes of nibbles; `x = d·q + m`.
    Q4_1,
    /// A type this reader does not dequantise (its ggml number and name).
    Other(u32, &'static str),
}

impl GgmlType {
    fn from_u32(v: u32) -> Self {
        match v {
            0 => Self::F32,
            1 => Self::F16,
            2 => Self::Q4_0,
            3 => Self::Q4_1,
            8 => Self::Q8_0,
            30 => Self::BF16,
            other => Self::Other(other, ggml_type_name(other)),
        }
    }

    /// (elements per block, bytes per block), or `None` for unsupported types.
    fn block(self) -> Option<(usize, usize)> {
        if let Some(format) = self.block_format() {
            return Some((quant::BLOCK_VALUES, format.block_bytes()));
        }
        Some(match self {
            Self::F32 => (1, 4),
            Self::F16 | Self::BF16 => (1, 2),
            _ => return None,
        })
    }

    /// The block format of the quantised types (`rlaif_kernels::quant` decodes them).
    pub(crate) fn block_format(self) -> Option<BlockFormat> {
        match self {
            Self::Q8_0 => Some(BlockFormat::Q8_0),
            Self::Q4_0 => Some(BlockFormat::Q4_0),
            Self::Q4_1 => Some(BlockFormat::Q4_1),
            _ => None,
        }
    }

    /// The ggml name of the type (`"Q4_1"`, ...).
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::F32 => "F32",
            Self::F16 => "F16",
            Self::BF16 => "BF16",
            Self::Q8_0 => "Q8_0",
            Self::Q4_0 => "Q4_0",
            Self::Q4_1 => "Q4_1",
            Self::Other(_, n) => n,
        }
    }
}

fn ggml_type_name(v: u32) -> &'static str {
    match v {
        6 => "Q5_0",
        7 => "Q5_1",
        9 => "Q8_1",
        10 => "Q2_K",
        11 => "Q3_K",
        12 => "Q4_K",
        13 => "Q5_K",
        14 => "Q6_K",
        15 => "Q8_K",
        16..=23 | 29 => "IQ (importance-matrix quant)",
        24 => "I8",
        25 => "I16",
        26 => "I32",
        27 => "I64",
        28 => "F64",
        _ => "unknown",
    }
}

/// Where a tensor lies in the file.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TensorInfo {
    /// Tensor name (`blk.0.attn_q.weight`, ...).
    pub(crate) name: String,
    /// Dimensions in ggml order: `dims[0]` varies fastest (the reverse of PyTorch's shape).
    pub(crate) dims: Vec<usize>,
    /// Storage type.
    pub(crate) ggml_type: GgmlType,
    /// Byte offset from the start of the data section.
    pub(crate) offset: u64,
}

impl TensorInfo {
    /// Number of elements.
    /// ([`GgufFile::parse`] checks that it fits.)
    pub(crate) fn numel(&self) -> usize {
        self.dims.iter().fold(1usize, |a, &d| a.saturating_mul(d))
    }
    /// The shape in row-major (PyTorch) order.
    pub(crate) fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().copied().collect()
    }
}

/// A parsed GGUF file, with its bytes in memory.
#[derive(Debug)]
pub(crate) struct GgufFile {
    path: PathBuf,
    /// Format version (2 or 3).
    #[cfg_attr(
        not(test),
        expect(dead_code, reason = "shown by Debug, checked by tests")
    )]
    pub(crate) version: u32,
    /// Metadata key → value.
    pub(crate) metadata: BTreeMap<String, MetaValue>,
    /// Tensor infos, in file order.
    pub(crate) tensors: Vec<TensorInfo>,
    bytes: Vec<u8>,
    data_offset: usize,
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Cursor<'a> {
    fn err(&self, msg: impl Into<String>) -> LmError {
        LmError::Gguf {
            path: self.path.to_path_buf(),
            msg: format!("{} (at byte {})", msg.into(), self.pos),
        }
    }
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], LmError> {
        if n > self.bytes.len() - self.pos {
            return Err(self.err(format!(
                "truncated file: {what} needs {n} bytes, {} remain",
                self.bytes.len() - self.pos
            )));
        }
        let s = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }
    fn u8(&mut self, what: &str) -> Result<u8, LmError> {
        Ok(self.take(1, what)?[0])
    }
    fn u16(&mut self, what: &str) -> Result<u16, LmError> {
        Ok(u16::from_le_bytes(self.take(2, what)?.try_into().unwrap()))
    }
    fn u32(&mut self, what: &str) -> Result<u32, LmError> {
        Ok(u32::from_le_bytes(self.take(4, what)?.try_into().unwrap()))
    }
    fn u64(&mut self, what: &str) -> Result<u64, LmError> {
        Ok(u64::from_le_bytes(self.take(8, what)?.try_into().unwrap()))
    }
    /// A length or count that must fit in the remaining bytes at `min_size` bytes each.
    fn count(&mut self, min_size: usize, what: &str) -> Result<usize, LmError> {
        let n = self.u64(what)?;
        let limit = (self.remaining() / min_size.max(1)) as u64;
        if n > limit {
            return Err(self.err(format!(
                "{what} = {n} is impossible: only {} bytes remain",
                self.remaining()
            )));
        }
        Ok(n as usize)
    }
    fn string(&mut self, what: &str) -> Result<String, LmError> {
        let n = self.count(1, what)?;
        let raw = self.take(n, what)?;
        String::from_utf8(raw.to_vec()).map_err(|_| self.err(format!("{what} is not UTF-8")))
    }
    fn value(&mut self, ty: u32, key: &str, depth: usize) -> Result<MetaValue, LmError> {
        Ok(match ty {
            0 => MetaValue::U64(self.u8(key)? as u64),
            1 => MetaValue::I64(self.u8(key)? as i8 as i64),
            2 => MetaValue::U64(self.u16(key)? as u64),
            3 => MetaValue::I64(self.u16(key)? as i16 as i64),
            4 => MetaValue::U64(self.u32(key)? as u64),
            5 => MetaValue::I64(self.u32(key)? as i32 as i64),
            6 => MetaValue::F64(f32::from_bits(self.u32(key)?) as f64),
            7 => match self.u8(key)? {
                0 => MetaValue::Bool(false),
                1 => MetaValue::Bool(true),
                b => return Err(self.err(format!("metadata {key}: bad bool byte {b}"))),
            },
            8 => MetaValue::Str(self.string(key)?),
            9 => {
                if depth > 2 {
                    return Err(self.err(format!("metadata {key}: arrays nested too deep")));
                }
                let elem = self.u32(key)?;
                let min = match elem {
                    0 | 1 | 7 => 1,
                    2 | 3 => 2,
                    4..=6 => 4,
                    8 | 10..=12 => 8,
                    9 => 12,
                    t => return Err(self.err(format!("metadata {key}: unknown value type {t}"))),
                };
                let n = self.count(min, key)?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.value(elem, key, depth + 1)?);
                }
                MetaValue::Array(items)
            }
            10 => MetaValue::U64(self.u64(key)?),
            11 => MetaValue::I64(self.u64(key)? as i64),
            12 => MetaValue::F64(f64::from_bits(self.u64(key)?)),
            t => return Err(self.err(format!("metadata {key}: unknown value type {t}"))),
        })
    }
}

impl GgufFile {
    /// Reads and parses a GGUF file.
    pub(crate) fn open(path: impl AsRef<Path>) -> Result<Self, LmError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| LmError::io(path, e))?;
        Self::parse(bytes, path)
    }

    /// Parses GGUF bytes; `path` is only used in error messages.
    pub(crate) fn parse(bytes: Vec<u8>, path: impl AsRef<Path>) -> Result<Self, LmError> {
        let path = path.as_ref();
        let mut c = Cursor {
            bytes: &bytes,
            pos: 0,
            path,
        };
        if c.take(4, "magic")? != MAGIC {
            return Err(c.err("not a GGUF file (bad magic)"));
        }
        let version = c.u32("version")?;
        if !(2..=3).contains(&version) {
            return Err(c.err(format!("unsupported GGUF version {version}")));
        }
        // A tensor info is at least 8 (name len) + 4 (n_dims) + 4 (type) + 8 (offset) bytes;
        // a metadata pair at least 8 (key len) + 4 (type) + 1 (value) bytes.
        let n_tensors = c.count(24, "tensor count")?;
        let n_kv = c.count(13, "metadata count")?;
        let mut metadata = BTreeMap::new();
        for _ in 0..n_kv {
            let key = c.string("metadata key")?;
            let ty = c.u32("metadata type")?;
            let v = c.value(ty, &key, 0)?;
            metadata.insert(key, v);
        }
        let mut tensors = Vec::with_capacity(n_tensors);
        for _ in 0..n_tensors {
            let name = c.string("tensor name")?;
            let n_dims = c.u32("tensor n_dims")? as usize;
            if n_dims == 0 || n_dims > MAX_DIMS {
                return Err(c.err(format!("tensor {name}: {n_dims} dimensions")));
            }
            let mut dims = Vec::with_capacity(n_dims);
            for _ in 0..n_dims {
                dims.push(c.u64("tensor dim")? as usize);
            }
            let ggml_type = GgmlType::from_u32(c.u32("tensor type")?);
            let offset = c.u64("tensor offset")?;
            tensors.push(TensorInfo {
                name,
                dims,
                ggml_type,
                offset,
            });
        }
        let alignment = match metadata.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(v) => match v.as_u64() {
                Some(a) if a > 0 && a.is_power_of_two() => a,
                _ => return Err(c.err(format!("general.alignment {v:?} is not a power of two"))),
            },
        };
        let data_offset = (c.pos as u64).div_ceil(alignment) * alignment;
        if data_offset > bytes.len() as u64 {
            return Err(c.err("truncated file: no tensor data section"));
        }
        let data_len = bytes.len() as u64 - data_offset;
        for t in &tensors {
            let numel = t
                .dims
                .iter()
                .try_fold(1usize, |a, &d| a.checked_mul(d))
                .ok_or_else(|| c.err(format!("tensor {}: element count overflows", t.name)))?
                as u64;
            if let Some((per, size)) = t.ggml_type.block() {
                if !numel.is_multiple_of(per as u64) {
                    return Err(c.err(format!(
                        "tensor {}: {numel} elements is not a multiple of the {} block ({per})",
                        t.name,
                        t.ggml_type.name()
                    )));
                }
                let nbytes = (numel / per as u64)
                    .checked_mul(size as u64)
                    .ok_or_else(|| c.err(format!("tensor {}: byte size overflows", t.name)))?;
                if t.offset
                    .checked_add(nbytes)
                    .is_none_or(|end| end > data_len)
                {
                    return Err(c.err(format!(
                        "truncated file: tensor {} needs bytes {}..{} of a {data_len}-byte data section",
                        t.name,
                        t.offset,
                        t.offset.saturating_add(nbytes)
                    )));
                }
            }
        }
        Ok(Self {
            path: path.to_path_buf(),
            version,
            metadata,
            tensors,
            bytes,
            data_offset: data_offset as usize,
        })
    }

    /// Where the tensor data section begins (the end of the header, metadata and tensor
    /// infos, plus alignment padding).
    #[cfg(test)]
    pub(crate) fn data_offset(&self) -> usize {
        self.data_offset
    }

    /// The file this was read from.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Looks up a metadata value.
    pub(crate) fn meta(&self, key: &str) -> Option<&MetaValue> {
        self.metadata.get(key)
    }

    /// A metadata string, or an error naming the key.
    pub(crate) fn meta_str(&self, key: &str) -> Result<&str, LmError> {
        self.meta(key)
            .and_then(MetaValue::as_str)
            .ok_or_else(|| self.missing(key, "string"))
    }

    /// A metadata unsigned integer, or an error naming the key.
    pub(crate) fn meta_u64(&self, key: &str) -> Result<u64, LmError> {
        self.meta(key)
            .and_then(MetaValue::as_u64)
            .ok_or_else(|| self.missing(key, "unsigned integer"))
    }

    /// A metadata unsigned integer that fits in `usize`, or an error naming the key.
    pub(crate) fn meta_usize(&self, key: &str) -> Result<usize, LmError> {
        usize::try_from(self.meta_u64(key)?).map_err(|_| self.missing(key, "size"))
    }

    /// A metadata number, or an error naming the key.
    pub(crate) fn meta_f64(&self, key: &str) -> Result<f64, LmError> {
        self.meta(key)
            .and_then(MetaValue::as_f64)
            .ok_or_else(|| self.missing(key, "number"))
    }

    fn missing(&self, key: &str, kind: &str) -> LmError {
        LmError::Gguf {
            path: self.path.clone(),
            msg: format!("metadata key {key} is missing or not a {kind}"),
        }
    }

    /// The info of a tensor by name.
    pub(crate) fn tensor_info(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// The stored bytes of a tensor (blocks for the quantised types).
    pub(crate) fn tensor_bytes(&self, info: &TensorInfo) -> Option<&[u8]> {
        let (per, size) = info.ggml_type.block()?;
        let start = self.data_offset + info.offset as usize;
        self.bytes.get(start..start + info.numel() / per * size)
    }

    /// Dequantises a tensor to f32; returns (row-major shape, values).
    pub(crate) fn tensor_f32(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>), LmError> {
        let info = self
            .tensor_info(name)
            .ok_or_else(|| LmError::MissingWeight {
                name: name.to_string(),
                source_file: self.path.clone(),
            })?;
        let (per, size) = info
            .ggml_type
            .block()
            .ok_or_else(|| LmError::UnsupportedTensorType {
                name: name.to_string(),
                ggml_type: info.ggml_type.name().to_string(),
                path: self.path.clone(),
            })?;
        let numel = info.numel();
        let start = self.data_offset + info.offset as usize;
        let raw = &self.bytes[start..start + numel / per * size];
        Ok((info.shape(), dequantize(info.ggml_type, raw)))
    }
}

/// Dequantises raw GGUF tensor bytes of a supported type to f32.
///
/// `raw.len()` must be a whole number of blocks (checked by [`GgufFile::parse`]).
/// Unsupported types give an empty vector.
pub(crate) fn dequantize(ty: GgmlType, raw: &[u8]) -> Vec<f32> {
    let Some((per, size)) = ty.block() else {
        return Vec::new();
    };
    let mut out = vec![0f32; raw.len() / size * per];
    // Parallel over chunks of blocks: each output chunk depends on one input chunk only.
    const BLOCKS_PER_TASK: usize = 4096;
    out.par_chunks_mut(per * BLOCKS_PER_TASK)
        .zip(raw.par_chunks(size * BLOCKS_PER_TASK))
        .for_each(|(o, r)| {
            for (ob, rb) in o.chunks_exact_mut(per).zip(r.chunks_exact(size)) {
                dequantize_block(ty, rb, ob);
            }
        });
    out
}

fn dequantize_block(ty: GgmlType, b: &[u8], out: &mut [f32]) {
    let f16_at = |i: usize| f16::from_le_bytes([b[i], b[i + 1]]).to_f32();
    match ty {
        GgmlType::F32 => out[0] = f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        GgmlType::F16 => out[0] = f16_at(0),
        GgmlType::BF16 => out[0] = bf16::from_le_bytes([b[0], b[1]]).to_f32(),
        GgmlType::Q8_0 | GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Other(..) => {
            if let Some(format) = ty.block_format() {
                quant::dequantize_block(format, b, out);
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A minimal GGUF writer for tests: metadata of strings/u32/f32/string arrays, and raw
    /// tensor bytes.
    #[derive(Default)]
    pub(crate) struct GgufWriter {
        kv: Vec<u8>,
        n_kv: u64,
        tensors: Vec<(String, Vec<u64>, u32, Vec<u8>)>,
    }

    fn put_str(buf: &mut Vec<u8>, s: &str) {
        buf.extend((s.len() as u64).to_le_bytes());
        buf.extend(s.as_bytes());
    }

    impl GgufWriter {
        pub(crate) fn str(&mut self, k: &str, v: &str) -> &mut Self {
            put_str(&mut self.kv, k);
            self.kv.extend(8u32.to_le_bytes());
            put_str(&mut self.kv, v);
            self.n_kv += 1;
            self
        }
        pub(crate) fn u32(&mut self, k: &str, v: u32) -> &mut Self {
            put_str(&mut self.kv, k);
            self.kv.extend(4u32.to_le_bytes());
            self.kv.extend(v.to_le_bytes());
            self.n_kv += 1;
            self
        }
        pub(crate) fn f32(&mut self, k: &str, v: f32) -> &mut Self {
            put_str(&mut self.kv, k);
            self.kv.extend(6u32.to_le_bytes());
            self.kv.extend(v.to_le_bytes());
            self.n_kv += 1;
            self
        }
        pub(crate) fn strs(&mut self, k: &str, v: &[&str]) -> &mut Self {
            put_str(&mut self.kv, k);
            self.kv.extend(9u32.to_le_bytes());
            self.kv.extend(8u32.to_le_bytes());
            self.kv.extend((v.len() as u64).to_le_bytes());
            for s in v {
                put_str(&mut self.kv, s);
            }
            self.n_kv += 1;
            self
        }
        /// A metadata value of type `ty` whose encoding is `value` (any type, arrays
        /// included: `value` starts with the element type and count).
        pub(crate) fn raw(&mut self, k: &str, ty: u32, value: &[u8]) -> &mut Self {
            put_str(&mut self.kv, k);
            self.kv.extend(ty.to_le_bytes());
            self.kv.extend(value);
            self.n_kv += 1;
            self
        }
        pub(crate) fn i32s(&mut self, k: &str, v: &[i32]) -> &mut Self {
            put_str(&mut self.kv, k);
            self.kv.extend(9u32.to_le_bytes());
            self.kv.extend(5u32.to_le_bytes());
            self.kv.extend((v.len() as u64).to_le_bytes());
            for x in v {
                self.kv.extend(x.to_le_bytes());
            }
            self.n_kv += 1;
            self
        }
        /// `dims` in ggml order (fastest first).
        pub(crate) fn tensor(
            &mut self,
            name: &str,
            dims: &[u64],
            ty: u32,
            raw: Vec<u8>,
        ) -> &mut Self {
            self.tensors
                .push((name.to_string(), dims.to_vec(), ty, raw));
            self
        }
        pub(crate) fn f32_tensor(&mut self, name: &str, shape: &[usize], v: &[f32]) -> &mut Self {
            let dims: Vec<u64> = shape.iter().rev().map(|&d| d as u64).collect();
            let raw = v.iter().flat_map(|x| x.to_le_bytes()).collect();
            self.tensor(name, &dims, 0, raw)
        }
        pub(crate) fn finish(&self) -> Vec<u8> {
            let mut b = Vec::new();
            b.extend(MAGIC);
            b.extend(3u32.to_le_bytes());
            b.extend((self.tensors.len() as u64).to_le_bytes());
            b.extend(self.n_kv.to_le_bytes());
            b.extend(&self.kv);
            let mut offset = 0u64;
            let mut offsets = Vec::new();
            for (name, dims, ty, raw) in &self.tensors {
                put_str(&mut b, name);
                b.extend((dims.len() as u32).to_le_bytes());
                for d in dims {
                    b.extend(d.to_le_bytes());
                }
                b.extend(ty.to_le_bytes());
                b.extend(offset.to_le_bytes());
                offsets.push(offset);
                offset = (offset + raw.len() as u64).div_ceil(32) * 32;
            }
            while b.len() % 32 != 0 {
                b.push(0);
            }
            let base = b.len();
            for ((_, _, _, raw), off) in self.tensors.iter().zip(offsets) {
                b.resize(base + off as usize, 0);
                b.extend(raw);
            }
            b
        }
    }

    fn h(x: f32) -> [u8; 2] {
        f16::from_f32(x).to_le_bytes()
    }

    #[test]
    fn q8_0_block_by_hand() {
        let mut b = h(0.5).to_vec();
        b.extend((0..32).map(|i| (i as i8 - 16) as u8));
        let v = dequantize(GgmlType::Q8_0, &b);
        let want: Vec<f32> = (0..32).map(|i| 0.5 * (i - 16) as f32).collect();
        assert_eq!(v, want);
    }

    #[test]
    fn q4_0_block_by_hand() {
        // qs[j] = low nibble j % 16, high nibble 15 - j % 16
        let mut b = h(0.25).to_vec();
        b.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
        let v = dequantize(GgmlType::Q4_0, &b);
        for j in 0..16 {
            assert_eq!(v[j], 0.25 * (j as f32 - 8.0));
            assert_eq!(v[j + 16], 0.25 * ((15 - j) as f32 - 8.0));
        }
    }

    #[test]
    fn q4_1_block_by_hand() {
        let mut b = h(2.0).to_vec();
        b.extend(h(-3.0));
        b.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
        let v = dequantize(GgmlType::Q4_1, &b);
        for j in 0..16 {
            assert_eq!(v[j], 2.0 * j as f32 - 3.0);
            assert_eq!(v[j + 16], 2.0 * (15 - j) as f32 - 3.0);
        }
        // two blocks: the second one is independent
        let mut two = b.clone();
        two.extend(h(1.0));
        two.extend(h(0.5));
        two.extend([0x21u8; 16]);
        let v2 = dequantize(GgmlType::Q4_1, &two);
        assert_eq!(&v2[..32], &v[..]);
        assert_eq!(v2[32], 1.5);
        assert_eq!(v2[48], 2.5);
    }

    #[test]
    fn f16_bf16_f32() {
        let raw: Vec<u8> = [1.5f32, -2.25].iter().flat_map(|x| h(*x)).collect();
        assert_eq!(dequantize(GgmlType::F16, &raw), vec![1.5, -2.25]);
        let raw: Vec<u8> = [1.5f32, -2.25]
            .iter()
            .flat_map(|x| bf16::from_f32(*x).to_le_bytes())
            .collect();
        assert_eq!(dequantize(GgmlType::BF16, &raw), vec![1.5, -2.25]);
        let raw: Vec<u8> = [1.5f32, -2.25]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        assert_eq!(dequantize(GgmlType::F32, &raw), vec![1.5, -2.25]);
    }

    fn sample_file() -> Vec<u8> {
        let mut q41 = h(1.0).to_vec();
        q41.extend(h(0.0));
        q41.extend([0x10u8; 16]);
        GgufWriter::default()
            .str("general.architecture", "llama")
            .u32("llama.block_count", 2)
            .f32("llama.rope.freq_base", 10000.0)
            .strs("tokenizer.ggml.tokens", &["a", "b"])
            .f32_tensor("t.f32", &[2, 3], &[1., 2., 3., 4., 5., 6.])
            .tensor("t.q41", &[32], 3, q41)
            .finish()
    }

    #[test]
    fn parses_metadata_and_tensors() {
        let g = GgufFile::parse(sample_file(), "mem.gguf").unwrap();
        assert_eq!(g.version, 3);
        assert_eq!(g.meta_str("general.architecture").unwrap(), "llama");
        assert_eq!(g.meta_u64("llama.block_count").unwrap(), 2);
        assert_eq!(g.meta_f64("llama.rope.freq_base").unwrap(), 10000.0);
        assert_eq!(
            g.meta("tokenizer.ggml.tokens")
                .unwrap()
                .as_array()
                .unwrap()
                .len(),
            2
        );
        let (shape, v) = g.tensor_f32("t.f32").unwrap();
        assert_eq!(shape, vec![2, 3]);
        assert_eq!(v, vec![1., 2., 3., 4., 5., 6.]);
        let (shape, v) = g.tensor_f32("t.q41").unwrap();
        assert_eq!(shape, vec![32]);
        assert_eq!(
            &v[..17],
            &[0.0; 16]
                .iter()
                .chain([1.0].iter())
                .copied()
                .collect::<Vec<_>>()[..]
        );
        let e = g.meta_u64("general.architecture").unwrap_err().to_string();
        assert!(
            e.contains("general.architecture") && e.contains("mem.gguf"),
            "{e}"
        );
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let full = sample_file();
        for cut in 0..full.len() {
            let r = GgufFile::parse(full[..cut].to_vec(), "cut.gguf");
            assert!(r.is_err(), "truncated at {cut} parsed");
        }
    }

    #[test]
    fn huge_counts_are_rejected_without_allocating() {
        let mut b = Vec::new();
        b.extend(MAGIC);
        b.extend(3u32.to_le_bytes());
        b.extend(u64::MAX.to_le_bytes()); // tensor count
        b.extend(0u64.to_le_bytes());
        let e = GgufFile::parse(b, "evil.gguf").unwrap_err().to_string();
        assert!(
            e.contains("tensor count") && e.contains("impossible"),
            "{e}"
        );

        let mut w = GgufWriter::default();
        w.str("k", "v");
        let mut b = w.finish();
        // overwrite the key length with a huge number
        b[24..32].copy_from_slice(&(1u64 << 60).to_le_bytes());
        let e = GgufFile::parse(b, "evil.gguf").unwrap_err().to_string();
        assert!(e.contains("impossible"), "{e}");
    }

    /// Found by `fuzz::fuzz_gguf`: 2⁶² f32 elements fit in a `u64` count, but their
    /// 2⁶⁴ bytes do not; the size computation overflowed (a panic in debug builds).
    #[test]
    fn tensor_byte_size_overflow_is_an_error() {
        for (dims, ty) in [
            (vec![1u64 << 31, 1 << 31], 0u32),
            (vec![1 << 62], 1),
            (vec![1 << 32, 1 << 31], 8),
        ] {
            let b = GgufWriter::default()
                .tensor("huge", &dims, ty, vec![0u8; 64])
                .finish();
            let e = GgufFile::parse(b, "huge.gguf").unwrap_err().to_string();
            assert!(e.contains("huge.gguf") && e.contains("tensor huge"), "{e}");
        }
    }

    #[test]
    fn bad_magic_and_unsupported_type() {
        let e = GgufFile::parse(b"GGML\x03\0\0\0".to_vec(), "x.bin").unwrap_err();
        assert!(e.to_string().contains("bad magic"));
        let b = GgufWriter::default()
            .tensor("k.q6", &[256], 14, vec![0u8; 210])
            .finish();
        let g = GgufFile::parse(b, "q6.gguf").unwrap();
        let e = g.tensor_f32("k.q6").unwrap_err().to_string();
        assert!(e.contains("Q6_K") && e.contains("k.q6"), "{e}");
        let e = g.tensor_f32("nope").unwrap_err().to_string();
        assert!(e.contains("nope"), "{e}");
    }
}

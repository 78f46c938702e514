//! Weights kept in ggml's block formats (Q8_0, Q4_0, Q4_1), and the few-row product of a
//! decoding step computed from the blocks, dequantised in registers.
//!
//! A GGUF file stores a weight `W [N, K]` (`N` outputs, `K` inputs, PyTorch's `weight`
//! layout) as `N` rows of `K / 32` blocks; a block holds 32 consecutive inputs of one output
//! as small integers and one or two f16 scales:
//!
//! | format | block | value of element `j` |
//! |---|---|---|
//! | Q8_0 | `d: f16, q: [i8; 32]` (34 bytes) | `d · q[j]` |
//! | Q4_0 | `d: f16, q: [u8; 16]` (18 bytes) | `d · (nibble_j − 8)` |
//! | Q4_1 | `d: f16, m: f16, q: [u8; 16]` (20 bytes) | `d · nibble_j + m` |
//!
//! (element `j < 16` is the low nibble of `q[j]`, element `j + 16` its high nibble; ggml's
//! `block_q8_0`, `block_q4_0`, `block_q4_1`). These are exactly the values a model loaded
//! from the file holds in f32, so a product over the blocks computes the same function as
//! the f32 product; only the rounding of the sums differs (they run in another order, and
//! factored by block as below).
//!
//! A decoding step is bound by reading the weights: SmolLM2-135M reads 540 MB per step in
//! f32, 97 MB as its GGUF's Q4_1 (and Q8_0 embedding) blocks (111 MB as [`QuantMatrix`]
//! keeps them, with f32 scales). [`QuantMatrix::matmul_rows`] reads each block once for all
//! `M ≤ 8` rows of `x`. Every value is `d · q + o` (scale, quant, the block's offset), so a
//! block's share of an output is `d · Σ q x + o · Σ x`: with AVX-512 the quants become two
//! vectors of 16 floats in registers (one widening load, one mask or shift, two converts),
//! `Σ q x` is one multiply and one multiply-add per row, and one more multiply-add scales it
//! by `d` into the row's accumulator; the offsets' part is one dot product per output of the
//! block offsets with the rows' per-block sums `Σ x`. The outputs are split into ranges
//! across rayon's threads. Each output is summed block after block in the same order
//! whatever the number of threads. Elsewhere a scalar loop computes the same products from
//! the dequantised values.

use crate::error::{Result, check_arg, check_shape};
use half::f16;
use rayon::prelude::*;

/// Inputs per block, in every format.
pub const BLOCK_VALUES: usize = 32;

/// A ggml block format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BlockFormat {
    /// `d: f16, q: [i8; 32]`: `d · q`.
    Q8_0,
    /// `d: f16, q: [u8; 16]` (two nibbles per byte): `d · (q − 8)`.
    Q4_0,
    /// `d: f16, m: f16, q: [u8; 16]`: `d · q + m`.
    Q4_1,
}

impl BlockFormat {
    /// Bytes per block of [`BLOCK_VALUES`] inputs.
    pub const fn block_bytes(self) -> usize {
        match self {
            Self::Q8_0 => 34,
            Self::Q4_0 => 18,
            Self::Q4_1 => 20,
        }
    }

    /// ggml's name (`"Q4_1"`, ...).
    pub const fn name(self) -> &'static str {
        match self {
            Self::Q8_0 => "Q8_0",
            Self::Q4_0 => "Q4_0",
            Self::Q4_1 => "Q4_1",
        }
    }
}

/// Writes the 32 values of one block of `format` (`block.len()` = its
/// [`block_bytes`](BlockFormat::block_bytes)) into `out[..32]`.
///
/// # Panics
/// If `block` or `out` is shorter than one block.
pub fn dequantize_block(format: BlockFormat, block: &[u8], out: &mut [f32]) {
    let block = &block[..format.block_bytes()];
    let out = &mut out[..BLOCK_VALUES];
    let f16_at = |i: usize| f16::from_le_bytes([block[i], block[i + 1]]).to_f32();
    match format {
        BlockFormat::Q8_0 => {
            let d = f16_at(0);
            for (o, &q) in out.iter_mut().zip(&block[2..34]) {
                *o = d * (q as i8) as f32;
            }
        }
        BlockFormat::Q4_0 => {
            let d = f16_at(0);
            for (j, &q) in block[2..18].iter().enumerate() {
                out[j] = d * ((q & 0x0f) as i32 - 8) as f32;
                out[j + 16] = d * ((q >> 4) as i32 - 8) as f32;
            }
        }
        BlockFormat::Q4_1 => {
            let (d, m) = (f16_at(0), f16_at(2));
            for (j, &q) in block[4..20].iter().enumerate() {
                out[j] = d * (q & 0x0f) as f32 + m;
                out[j + 16] = d * (q >> 4) as f32 + m;
            }
        }
    }
}

/// A weight `W [N, K]` from ggml blocks: row `n` (output `n`) is `K / 32` blocks, as in a
/// GGUF file.
///
/// The blocks are kept split into their parts, in the layout the kernel reads: the quants of
/// every block (16 bytes of nibbles, or 32 signed bytes), and each block's scale `d` and
/// offset as f32. Every value is `d · q + offset`, exactly ggml's: Q4_1's offset is its `m`,
/// Q4_0's is `−8d` (`d · (q − 8)`), Q8_0 has none. (24 bytes per Q4_1 block instead of the
/// file's 20, 36 per Q8_0 block instead of 34: the f16 scales are converted once, at load,
/// instead of once per block in every product.)
#[derive(Clone, Debug, PartialEq)]
pub struct QuantMatrix {
    format: BlockFormat,
    rows: usize,
    cols: usize,
    /// The quants of every block, block after block, row after row.
    quants: Vec<u8>,
    /// `d` of every block, `[N, K / 32]`.
    scales: Vec<f32>,
    /// The offset of every block, `[N, K / 32]`; empty for Q8_0.
    offsets: Vec<f32>,
}

impl BlockFormat {
    /// Bytes of quants per block: 16 nibble pairs, or 32 signed bytes.
    const fn quant_bytes(self) -> usize {
        match self {
            Self::Q8_0 => 32,
            Self::Q4_0 | Self::Q4_1 => 16,
        }
    }
}

impl QuantMatrix {
    /// `rows` outputs × `cols` inputs of `format` blocks, `data` row after row (the bytes of
    /// a GGUF tensor whose dimensions are `[cols, rows]` in ggml's order).
    ///
    /// # Errors
    /// [`InvalidArgument`](crate::KernelError::InvalidArgument) when `cols` is not a multiple
    /// of 32; [`ShapeMismatch`](crate::KernelError::ShapeMismatch) when `data` is not
    /// `rows · cols / 32` blocks.
    pub fn new(format: BlockFormat, rows: usize, cols: usize, data: Vec<u8>) -> Result<Self> {
        check_arg(
            "QuantMatrix::new",
            cols.is_multiple_of(BLOCK_VALUES),
            || {
                format!(
                    "{} rows are whole blocks of {BLOCK_VALUES} inputs; {cols} inputs are not",
                    format.name()
                )
            },
        )?;
        let blocks = rows * cols / BLOCK_VALUES;
        let bytes = blocks * format.block_bytes();
        check_shape("QuantMatrix::new", "data bytes", &[data.len()], &[bytes])?;
        let mut quants = Vec::with_capacity(blocks * format.quant_bytes());
        let mut scales = Vec::with_capacity(blocks);
        let mut offsets = Vec::with_capacity(if format == BlockFormat::Q8_0 {
            0
        } else {
            blocks
        });
        for block in data.chunks_exact(format.block_bytes()) {
            let f16_at = |i: usize| f16::from_le_bytes([block[i], block[i + 1]]).to_f32();
            let d = f16_at(0);
            scales.push(d);
            match format {
                BlockFormat::Q8_0 => quants.extend_from_slice(&block[2..34]),
                BlockFormat::Q4_0 => {
                    offsets.push(-8.0 * d); // exact: d is an f16
                    quants.extend_from_slice(&block[2..18]);
                }
                BlockFormat::Q4_1 => {
                    offsets.push(f16_at(2));
                    quants.extend_from_slice(&block[4..20]);
                }
            }
        }
        Ok(Self {
            format,
            rows,
            cols,
            quants,
            scales,
            offsets,
        })
    }

    /// The block format.
    pub fn format(&self) -> BlockFormat {
        self.format
    }

    /// `N`, the outputs.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// `K`, the inputs.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The blocks in ggml's format, row after row: the `data` this matrix was made from.
    pub fn to_blocks(&self) -> Vec<u8> {
        let qb = self.format.quant_bytes();
        let mut out = Vec::with_capacity(self.scales.len() * self.format.block_bytes());
        for (i, &d) in self.scales.iter().enumerate() {
            out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
            if self.format == BlockFormat::Q4_1 {
                out.extend_from_slice(&f16::from_f32(self.offsets[i]).to_le_bytes());
            }
            out.extend_from_slice(&self.quants[i * qb..(i + 1) * qb]);
        }
        out
    }

    /// Bytes held, all of which a product reads: the quants, scales and offsets.
    pub fn bytes(&self) -> usize {
        self.quants.len() + 4 * (self.scales.len() + self.offsets.len())
    }

    /// Blocks per row.
    fn row_blocks(&self) -> usize {
        self.cols / BLOCK_VALUES
    }

    /// The 32 values of block `i` (counted row after row), as [`dequantize_block`] gives them.
    fn block_values(&self, i: usize, out: &mut [f32]) {
        let out = &mut out[..BLOCK_VALUES];
        let d = self.scales[i];
        if self.format == BlockFormat::Q8_0 {
            for (o, &q) in out.iter_mut().zip(&self.quants[i * 32..(i + 1) * 32]) {
                *o = d * (q as i8) as f32;
            }
            return;
        }
        // d · q is exact (an f16 times 4 bits), so adding the offset rounds once, as ggml's
        // `d · q + m` and `d · (q − 8)` do
        let off = self.offsets[i];
        for (j, &q) in self.quants[i * 16..(i + 1) * 16].iter().enumerate() {
            out[j] = d * (q & 0x0f) as f32 + off;
            out[j + 16] = d * (q >> 4) as f32 + off;
        }
    }

    /// `W` in f32, `[N, K]` row-major.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.rows * self.cols];
        out.par_chunks_mut(BLOCK_VALUES * 4096)
            .enumerate()
            .for_each(|(c, o)| {
                for (i, ob) in o.chunks_exact_mut(BLOCK_VALUES).enumerate() {
                    self.block_values(c * 4096 + i, ob);
                }
            });
        out
    }

    /// `y = x · Wᵀ` for `x: [m, K]` (row-major), `1 ≤ m ≤` [`SMALL_M_MAX_ROWS`](crate::SMALL_M_MAX_ROWS):
    /// `y: [m, N]`, computed from the blocks (see the [module docs](self)).
    ///
    /// # Errors
    /// [`ShapeMismatch`](crate::KernelError::ShapeMismatch) when `x` is not `m · K` values;
    /// [`InvalidArgument`](crate::KernelError::InvalidArgument) when `m` is 0 or above 8.
    pub fn matmul_rows(&self, x: &[f32], m: usize) -> Result<Vec<f32>> {
        const OP: &str = "QuantMatrix::matmul_rows";
        check_arg(OP, (1..=crate::SMALL_M_MAX_ROWS).contains(&m), || {
            format!("takes 1 to {} rows, not {m}", crate::SMALL_M_MAX_ROWS)
        })?;
        check_shape(OP, "x", &[x.len()], &[m * self.cols])?;
        let (n, k) = (self.rows, self.cols);
        // Σ x over each block of each row, for the offsets: Σ (d q + o) x = d Σ q x + o Σ x
        let sx: Vec<f32> = if self.offsets.is_empty() {
            Vec::new()
        } else {
            x.chunks_exact(BLOCK_VALUES)
                .map(|b| b.iter().sum())
                .collect()
        };
        // Computed as yᵀ [N, m], one output's m values together, then transposed.
        let mut yt = vec![0f32; n * m];
        let simd = kernel_available();
        let run = |n0: usize, out: &mut [f32]| {
            let count = out.len() / m;
            if simd {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: AVX-512F is present (`kernel_available`); outputs n0 .. n0 + count
                // are rows of the matrix, `x` is [m, k], `sx` is empty or [m, k / 32], `out`
                // is [count, m].
                unsafe {
                    avx512::rows(self, x, &sx, m, n0, count, out)
                }
            } else {
                self.scalar_rows(x, m, n0, out);
            }
        };
        // One task per range of outputs when the weight is large enough to pay for the
        // hand-off (the same threshold as the f32 small-row kernel: 1 MiB of f32 weights).
        let chunk = if n * k < 1 << 18 {
            n.max(1)
        } else {
            let tasks = rayon::current_num_threads().max(1);
            n.div_ceil(tasks).next_multiple_of(8).max(8)
        };
        yt.par_chunks_mut(chunk * m)
            .enumerate()
            .for_each(|(i, out)| run(i * chunk, out));
        if m == 1 {
            return Ok(yt);
        }
        let mut y = vec![0f32; m * n];
        for (j, v) in yt.chunks_exact(m).enumerate() {
            for (r, &val) in v.iter().enumerate() {
                y[r * n + j] = val;
            }
        }
        Ok(y)
    }

    /// `out [count, m]`: outputs `n0 ..` of `x [m, k] · Wᵀ` from the dequantised blocks,
    /// without SIMD.
    fn scalar_rows(&self, x: &[f32], m: usize, n0: usize, out: &mut [f32]) {
        let (k, nb) = (self.cols, self.row_blocks());
        let mut w = [0f32; BLOCK_VALUES];
        for (j, o) in out.chunks_exact_mut(m).enumerate() {
            let mut acc = [0f32; crate::SMALL_M_MAX_ROWS];
            for b in 0..nb {
                self.block_values((n0 + j) * nb + b, &mut w);
                for (r, a) in acc.iter_mut().take(m).enumerate() {
                    let xb = &x[r * k + b * BLOCK_VALUES..][..BLOCK_VALUES];
                    *a += w.iter().zip(xb).map(|(w, x)| w * x).sum::<f32>();
                }
            }
            o.copy_from_slice(&acc[..m]);
        }
    }
}

/// Whether [`QuantMatrix::matmul_rows`] runs its AVX-512 kernel on this CPU; otherwise it
/// runs a scalar loop.
pub fn kernel_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        crate::simd::isa() == crate::simd::Isa::Avx512
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{BLOCK_VALUES, BlockFormat, QuantMatrix};
    use std::arch::x86_64::*;

    /// One kind of quants: their bytes per block and their 32 values as two vectors.
    trait Quants {
        const BYTES: usize;
        /// Values 0..16 and 16..32 of the block's quants at `q`, as floats.
        unsafe fn load(q: *const u8) -> (__m512, __m512);
    }

    /// Q4_0 and Q4_1: element `j < 16` is the low nibble of byte `j`, `j + 16` its high one.
    struct Nibbles;
    impl Quants for Nibbles {
        const BYTES: usize = 16;
        #[inline(always)]
        unsafe fn load(q: *const u8) -> (__m512, __m512) {
            // SAFETY: the caller's block holds 16 bytes at `q`.
            unsafe {
                let bytes = _mm512_cvtepu8_epi32(_mm_loadu_si128(q as *const __m128i));
                let lo = _mm512_and_si512(bytes, _mm512_set1_epi32(0x0f));
                let hi = _mm512_srli_epi32::<4>(bytes);
                (_mm512_cvtepi32_ps(lo), _mm512_cvtepi32_ps(hi))
            }
        }
    }

    /// Q8_0: 32 signed bytes.
    struct Bytes;
    impl Quants for Bytes {
        const BYTES: usize = 32;
        #[inline(always)]
        unsafe fn load(q: *const u8) -> (__m512, __m512) {
            // SAFETY: the caller's block holds 32 bytes at `q`.
            unsafe {
                let at = |o: usize| {
                    _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(
                        q.add(o) as *const __m128i
                    )))
                };
                (at(0), at(16))
            }
        }
    }

    /// Where one call's data lies: the quants, scales and offsets of its first output, the
    /// rows of `x` and their block sums.
    #[derive(Clone, Copy)]
    struct Operands {
        q: *const u8,
        d: *const f32,
        /// Null for Q8_0.
        off: *const f32,
        x: *const f32,
        /// `[M, k / 32]`; null for Q8_0.
        sx: *const f32,
        k: usize,
    }

    impl Operands {
        /// The same operands `t` outputs further on.
        #[inline(always)]
        unsafe fn output<Q: Quants>(self, t: usize) -> Self {
            let nb = self.k / BLOCK_VALUES;
            // SAFETY: the caller keeps output `t` inside the matrix.
            unsafe {
                Self {
                    q: self.q.add(t * nb * Q::BYTES),
                    d: self.d.add(t * nb),
                    off: if self.off.is_null() {
                        self.off
                    } else {
                        self.off.add(t * nb)
                    },
                    ..self
                }
            }
        }
    }

    /// `out [count, m] = x [m, k] · W[n0 .. n0 + count]ᵀ`.
    ///
    /// # Safety
    /// AVX-512F; outputs `n0 .. n0 + count` are rows of `w`, `x` is `[m, k]` with
    /// `1 ≤ m ≤ 8`, `sx` is `[m, k / 32]` (or empty for Q8_0), `out` is `[count, m]`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn rows(
        w: &QuantMatrix,
        x: &[f32],
        sx: &[f32],
        m: usize,
        n0: usize,
        count: usize,
        out: &mut [f32],
    ) {
        debug_assert_eq!(out.len(), count * m);
        debug_assert_eq!(x.len(), m * w.cols);
        let nb = w.row_blocks();
        let ops = Operands {
            q: w.quants[n0 * nb * w.format.quant_bytes()..].as_ptr(),
            d: w.scales[n0 * nb..].as_ptr(),
            off: if w.offsets.is_empty() {
                std::ptr::null()
            } else {
                w.offsets[n0 * nb..].as_ptr()
            },
            x: x.as_ptr(),
            sx: if sx.is_empty() {
                std::ptr::null()
            } else {
                sx.as_ptr()
            },
            k: w.cols,
        };
        let o = out.as_mut_ptr();
        // SAFETY: forwarded from the caller.
        unsafe {
            match w.format {
                BlockFormat::Q8_0 => by_rows::<Bytes>(ops, m, count, o),
                BlockFormat::Q4_0 | BlockFormat::Q4_1 => by_rows::<Nibbles>(ops, m, count, o),
            }
        }
    }

    /// Dispatches on the row count; `NT` outputs are computed together so that a row count
    /// of one still has eight independent chains of multiply-adds (`M · NT ≤ 8` accumulators).
    #[inline(always)]
    unsafe fn by_rows<Q: Quants>(ops: Operands, m: usize, count: usize, o: *mut f32) {
        // SAFETY: forwarded from the caller.
        unsafe {
            match m {
                1 => outputs::<Q, 1, 8>(ops, count, o),
                2 => outputs::<Q, 2, 4>(ops, count, o),
                3 => outputs::<Q, 3, 2>(ops, count, o),
                4 => outputs::<Q, 4, 2>(ops, count, o),
                5 => outputs::<Q, 5, 1>(ops, count, o),
                6 => outputs::<Q, 6, 1>(ops, count, o),
                7 => outputs::<Q, 7, 1>(ops, count, o),
                8 => outputs::<Q, 8, 1>(ops, count, o),
                _ => unreachable!("checked by matmul_rows"),
            }
        }
    }

    /// Tiles of `NT` outputs, then single outputs.
    #[inline(always)]
    unsafe fn outputs<Q: Quants, const M: usize, const NT: usize>(
        ops: Operands,
        count: usize,
        o: *mut f32,
    ) {
        let mut j = 0;
        // SAFETY: outputs j .. j + NT (or j + 1) lie inside 0..count.
        unsafe {
            while count - j >= NT {
                tile::<Q, M, NT>(ops.output::<Q>(j), o.add(j * M));
                j += NT;
            }
            while j < count {
                tile::<Q, M, 1>(ops.output::<Q>(j), o.add(j * M));
                j += 1;
            }
        }
    }

    /// `o[t·M + r] = Σ_blocks x[r, block] · W[t, block]` for `NT` consecutive outputs `t` and
    /// the `M` rows `r`, as `Σ_b d_b · (q_b · x_b) + Σ_b offset_b · Σ x_b`: the first sum
    /// lane-wise over the blocks in order, then one horizontal sum; the second 16 blocks at a
    /// time.
    #[inline(always)]
    unsafe fn tile<Q: Quants, const M: usize, const NT: usize>(ops: Operands, o: *mut f32) {
        let (k, nb) = (ops.k, ops.k / BLOCK_VALUES);
        // SAFETY: the caller's bounds: NT outputs of `nb` blocks from `ops`, x is [M, k], sx
        // is [M, nb] when there are offsets, o holds NT · M values.
        unsafe {
            let mut acc = [[_mm512_setzero_ps(); M]; NT];
            for b in 0..nb {
                // the M rows' inputs of this block, loaded once for the NT outputs
                let xs: [(__m512, __m512); M] = std::array::from_fn(|r| {
                    let xp = ops.x.add(r * k + b * BLOCK_VALUES);
                    (_mm512_loadu_ps(xp), _mm512_loadu_ps(xp.add(16)))
                });
                for (t, a) in acc.iter_mut().enumerate() {
                    let (lo, hi) = Q::load(ops.q.add((t * nb + b) * Q::BYTES));
                    let d = _mm512_set1_ps(*ops.d.add(t * nb + b));
                    for (a, &(xl, xh)) in a.iter_mut().zip(&xs) {
                        let p = _mm512_fmadd_ps(hi, xh, _mm512_mul_ps(lo, xl));
                        *a = _mm512_fmadd_ps(p, d, *a);
                    }
                }
            }
            for (t, a) in acc.iter().enumerate() {
                for (r, v) in a.iter().enumerate() {
                    let mut sum = _mm512_reduce_add_ps(*v);
                    if !ops.off.is_null() {
                        sum += offsets_dot(ops.off.add(t * nb), ops.sx.add(r * nb), nb);
                    }
                    *o.add(t * M + r) = sum;
                }
            }
        }
    }

    /// `Σ_b off[b] · sx[b]` over `nb` blocks, 16 at a time.
    #[inline(always)]
    unsafe fn offsets_dot(off: *const f32, sx: *const f32, nb: usize) -> f32 {
        // SAFETY: the caller's `off` and `sx` hold `nb` values.
        unsafe {
            let mut a = _mm512_setzero_ps();
            let mut b = 0;
            while b + 16 <= nb {
                a = _mm512_fmadd_ps(_mm512_loadu_ps(off.add(b)), _mm512_loadu_ps(sx.add(b)), a);
                b += 16;
            }
            if b < nb {
                let mask: __mmask16 = (1u16 << (nb - b)) - 1;
                a = _mm512_fmadd_ps(
                    _mm512_maskz_loadu_ps(mask, off.add(b)),
                    _mm512_maskz_loadu_ps(mask, sx.add(b)),
                    a,
                );
            }
            _mm512_reduce_add_ps(a)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// Random blocks with scales of a trained model's size (|d| ≲ 0.01).
    fn random_matrix(format: BlockFormat, rows: usize, cols: usize, seed: u64) -> QuantMatrix {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let blocks = rows * cols / BLOCK_VALUES;
        let mut data = Vec::with_capacity(blocks * format.block_bytes());
        for _ in 0..blocks {
            let d = f16::from_f32(rng.random_range(-0.01f32..0.01));
            data.extend_from_slice(&d.to_le_bytes());
            if format == BlockFormat::Q4_1 {
                let m = f16::from_f32(rng.random_range(-0.08f32..0.0));
                data.extend_from_slice(&m.to_le_bytes());
            }
            let q = if format == BlockFormat::Q8_0 { 32 } else { 16 };
            data.extend((0..q).map(|_| rng.random::<u8>()));
        }
        QuantMatrix::new(format, rows, cols, data).expect("whole blocks")
    }

    fn random_x(m: usize, k: usize, seed: u64) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..m * k).map(|_| rng.random_range(-2f32..2.0)).collect()
    }

    const FORMATS: [BlockFormat; 3] = [BlockFormat::Q8_0, BlockFormat::Q4_0, BlockFormat::Q4_1];

    #[test]
    fn blocks_decode_as_ggml_defines_them() {
        // Q4_1 with d = 0.5, m = -1: element j is the low nibble of q[j], j + 16 the high.
        let mut b = Vec::new();
        b.extend_from_slice(&f16::from_f32(0.5).to_le_bytes());
        b.extend_from_slice(&f16::from_f32(-1.0).to_le_bytes());
        b.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
        let mut out = [0f32; 32];
        dequantize_block(BlockFormat::Q4_1, &b, &mut out);
        for j in 0..16 {
            assert_eq!(out[j], 0.5 * j as f32 - 1.0);
            assert_eq!(out[j + 16], 0.5 * (15 - j) as f32 - 1.0);
        }
        // Q4_0: d · (q − 8); Q8_0: d · q as a signed byte.
        let mut b = f16::from_f32(2.0).to_le_bytes().to_vec();
        b.extend([0x0fu8; 16]);
        dequantize_block(BlockFormat::Q4_0, &b, &mut out);
        assert_eq!((out[0], out[16]), (14.0, -16.0));
        let mut b = f16::from_f32(0.25).to_le_bytes().to_vec();
        b.extend((0..32u8).map(|j| (j as i8 - 16) as u8));
        dequantize_block(BlockFormat::Q8_0, &b, &mut out);
        assert_eq!((out[0], out[31]), (-4.0, 3.75));
    }

    /// The product from the blocks against an f64 product of the dequantised matrix, for
    /// every format, 1 to 8 rows, output counts that leave remainders, and both the split
    /// and the single-task paths.
    #[test]
    fn products_from_blocks_match_the_dequantised_product() {
        for format in FORMATS {
            // 2, 18 and 48 blocks per row: the offsets' 16-block steps with and without a tail
            for (n, k) in [(13, 64), (1000, 576), (37, 1536)] {
                let w = random_matrix(format, n, k, 7);
                let dense = w.dequantize();
                for m in 1..=8 {
                    let x = random_x(m, k, m as u64);
                    let y = w.matmul_rows(&x, m).expect("shapes");
                    for r in 0..m {
                        for j in 0..n {
                            let want: f64 = (0..k)
                                .map(|i| x[r * k + i] as f64 * dense[j * k + i] as f64)
                                .sum();
                            let got = y[r * n + j] as f64;
                            assert!(
                                (got - want).abs() <= 1e-5 * (1.0 + want.abs()),
                                "{format:?} m={m} n={n} [{r},{j}]: {got} vs {want}"
                            );
                        }
                    }
                }
            }
        }
    }

    /// The split layout holds exactly the file's values, and gives the file's bytes back.
    #[test]
    fn the_kept_blocks_are_the_files_values_and_bytes() {
        for format in FORMATS {
            let w = random_matrix(format, 7, 96, 21);
            let data = w.to_blocks();
            assert_eq!(
                QuantMatrix::new(format, 7, 96, data.clone()).expect("whole blocks"),
                w
            );
            let mut want = vec![0f32; 7 * 96];
            for (o, b) in want
                .chunks_exact_mut(BLOCK_VALUES)
                .zip(data.chunks_exact(format.block_bytes()))
            {
                dequantize_block(format, b, o);
            }
            // equal as numbers (Q4_0's d · 8 − 8d is +0 where ggml's d · 0 may be −0)
            let got = w.dequantize();
            assert!(
                got.iter().zip(&want).all(|(a, b)| a == b),
                "{format:?}: dequantised values differ from ggml's"
            );
        }
    }

    #[test]
    fn the_scalar_loop_computes_the_same_products() {
        let (n, k, m) = (40, 96, 3);
        for format in FORMATS {
            let w = random_matrix(format, n, k, 3);
            let x = random_x(m, k, 5);
            let y = w.matmul_rows(&x, m).expect("shapes");
            let mut yt = vec![0f32; n * m];
            w.scalar_rows(&x, m, 0, &mut yt);
            for j in 0..n {
                for r in 0..m {
                    let (a, b) = (y[r * n + j], yt[j * m + r]);
                    assert!(
                        (a - b).abs() <= 1e-5 * (1.0 + b.abs()),
                        "{format:?} {a} vs {b}"
                    );
                }
            }
        }
    }

    #[test]
    fn results_do_not_depend_on_the_thread_count() {
        let w = random_matrix(BlockFormat::Q4_1, 2048, 576, 11);
        let x = random_x(4, 576, 12);
        let all = w.matmul_rows(&x, 4).expect("shapes");
        let one = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .expect("a pool")
            .install(|| w.matmul_rows(&x, 4).expect("shapes"));
        assert_eq!(all, one);
    }

    #[test]
    fn bad_shapes_are_named() {
        let err = QuantMatrix::new(BlockFormat::Q4_1, 2, 40, vec![0; 40]).unwrap_err();
        assert!(err.to_string().contains("40 inputs"), "{err}");
        let err = QuantMatrix::new(BlockFormat::Q4_1, 2, 64, vec![0; 79]).unwrap_err();
        assert!(
            err.to_string()
                .contains("data bytes is [79], expected [80]"),
            "{err}"
        );
        let w = random_matrix(BlockFormat::Q8_0, 4, 64, 1);
        let err = w.matmul_rows(&[0.0; 63], 1).unwrap_err();
        assert!(
            err.to_string().contains("x is [63], expected [64]"),
            "{err}"
        );
        let err = w.matmul_rows(&[0.0; 9 * 64], 9).unwrap_err();
        assert!(err.to_string().contains("not 9"), "{err}");
    }
}

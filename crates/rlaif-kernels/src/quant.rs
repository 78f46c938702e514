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
//! the f32 product; only the rounding of the sums differs (the sums run in another order).
//!
//! A decoding step reads every weight once: SmolLM2-135M reads 540 MB per step in f32, 97 MB
//! as its GGUF's Q4_1 (and Q8_0 embedding) blocks. [`QuantMatrix::matmul_rows`] reads each
//! block once for all `M ≤ 8` rows of `x` and multiplies it into `M` accumulators; the
//! outputs are split into ranges across rayon's threads ([`matmul_rows_many`] splits the
//! outputs of several weights with the same input together). Each output is summed block
//! after block in the same order whatever the number of threads. Elsewhere a scalar loop
//! computes the same products.
//!
//! With AVX-512 a block becomes two vectors of 16 floats in registers. A 4-bit block takes one
//! multiply-add to make its 16 possible values (`d · q + m` for `q = 0..15`, the same
//! operation and rounding as dequantising element by element), one widening shuffle of its 16
//! bytes, a shift, and two table lookups (`vpermps`, which reads only the low four bits of
//! each index); a Q8_0 block is widened, converted and scaled. On this project's 2-core AMD
//! EPYC machine the kernel is bound by these instructions rather than by memory: the 97 MB of
//! a step stream through it at ≈ 13–19 GB/s on two threads while a plain read of them runs
//! at 33–45 GB/s (`docs/benchmarks.md`).

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

/// A weight `W [N, K]` kept as ggml blocks: row `n` (output `n`) is `K / 32` consecutive
/// blocks, as in a GGUF file.
#[derive(Clone, Debug, PartialEq)]
pub struct QuantMatrix {
    format: BlockFormat,
    rows: usize,
    cols: usize,
    data: Vec<u8>,
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
        let bytes = rows * cols / BLOCK_VALUES * format.block_bytes();
        check_shape("QuantMatrix::new", "data bytes", &[data.len()], &[bytes])?;
        Ok(Self {
            format,
            rows,
            cols,
            data,
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

    /// The blocks, row after row.
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// `W` in f32, `[N, K]` row-major.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.rows * self.cols];
        let bytes = self.format.block_bytes();
        out.par_chunks_mut(BLOCK_VALUES * 4096)
            .zip(self.data.par_chunks(bytes * 4096))
            .for_each(|(o, d)| {
                for (ob, db) in o.chunks_exact_mut(BLOCK_VALUES).zip(d.chunks_exact(bytes)) {
                    dequantize_block(self.format, db, ob);
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
        let mut ys = matmul_rows_many(&[self], x, m)?;
        Ok(ys.pop().expect("one matrix, one product"))
    }

    /// Bytes of one row (one output).
    fn row_bytes(&self) -> usize {
        self.cols / BLOCK_VALUES * self.format.block_bytes()
    }

    /// `out [count, m] = x [m, K] · (rows n0 .. n0 + count of W)ᵀ`.
    fn rows_into(&self, x: &[f32], m: usize, n0: usize, out: &mut [f32]) {
        let count = out.len() / m;
        let rows = &self.data[n0 * self.row_bytes()..(n0 + count) * self.row_bytes()];
        if kernel_available() {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: AVX-512F and F16C are present (`kernel_available`); `rows` holds
            // `count` rows of `K / 32` blocks, `x` is [m, K], `out` is [count, m].
            unsafe {
                avx512::rows(self.format, x, m, self.cols, rows, count, out)
            }
        } else {
            scalar_rows(self.format, x, m, self.cols, rows, count, out);
        }
    }
}

/// `y_i = x · W_iᵀ` for several weights with the same inputs `K` (a layer's q, k and v
/// projections; its gate and up projections) in one parallel pass: `x: [m, K]` row-major,
/// `1 ≤ m ≤` [`SMALL_M_MAX_ROWS`](crate::SMALL_M_MAX_ROWS); returns one `[m, N_i]` per weight.
///
/// The outputs of all the weights are split into ranges across rayon's threads together, so
/// a decoding step hands work to the other threads once per group instead of once per
/// weight. Each output is computed exactly as by [`QuantMatrix::matmul_rows`] (its blocks in
/// order, whatever the split), so the results are the same bits.
///
/// # Errors
/// [`InvalidArgument`](crate::KernelError::InvalidArgument) when `mats` is empty, `m` is 0 or
/// above 8, or the weights do not all have `K` inputs;
/// [`ShapeMismatch`](crate::KernelError::ShapeMismatch) when `x` is not `m · K` values.
pub fn matmul_rows_many(mats: &[&QuantMatrix], x: &[f32], m: usize) -> Result<Vec<Vec<f32>>> {
    const OP: &str = "quant::matmul_rows_many";
    check_arg(OP, !mats.is_empty(), || "takes at least one matrix".into())?;
    check_arg(OP, (1..=crate::SMALL_M_MAX_ROWS).contains(&m), || {
        format!("takes 1 to {} rows, not {m}", crate::SMALL_M_MAX_ROWS)
    })?;
    let k = mats[0].cols;
    check_arg(OP, mats.iter().all(|w| w.cols == k), || {
        let cols: Vec<usize> = mats.iter().map(|w| w.cols).collect();
        format!("the matrices share their inputs, but have {cols:?} columns")
    })?;
    check_shape(OP, "x", &[x.len()], &[m * k])?;
    // Computed as yᵀ [ΣN, m] (the weights' outputs one after another, one output's m values
    // together), then split and transposed.
    let total: usize = mats.iter().map(|w| w.rows).sum();
    let mut yt = vec![0f32; total * m];
    // One task per range of outputs when the weights are large enough to pay for the
    // hand-off (the same threshold as the f32 small-row kernel: 1 MiB of f32 weights); ranges
    // of a multiple of 8 outputs (the kernel's tile), which may span two weights.
    let chunk = if total * k < 1 << 18 {
        total.max(1)
    } else {
        let tasks = rayon::current_num_threads().max(1);
        total.div_ceil(tasks).next_multiple_of(8).max(8)
    };
    let starts: Vec<usize> = mats
        .iter()
        .scan(0, |acc, w| {
            let s = *acc;
            *acc += w.rows;
            Some(s)
        })
        .collect();
    yt.par_chunks_mut(chunk * m)
        .enumerate()
        .for_each(|(i, out)| {
            // the outputs g0 .. g0 + len of the concatenation, weight by weight
            let (g0, len) = (i * chunk, out.len() / m);
            for (w, &s) in mats.iter().zip(&starts) {
                let (lo, hi) = (g0.max(s), (g0 + len).min(s + w.rows));
                if lo < hi {
                    w.rows_into(x, m, lo - s, &mut out[(lo - g0) * m..(hi - g0) * m]);
                }
            }
        });
    Ok(mats
        .iter()
        .zip(&starts)
        .map(|(w, &s)| {
            let part = &yt[s * m..(s + w.rows) * m];
            if m == 1 {
                return part.to_vec();
            }
            let n = w.rows;
            let mut y = vec![0f32; m * n];
            for (j, v) in part.chunks_exact(m).enumerate() {
                for (r, &val) in v.iter().enumerate() {
                    y[r * n + j] = val;
                }
            }
            y
        })
        .collect())
}

/// Whether [`QuantMatrix::matmul_rows`] runs its AVX-512 kernel on this CPU (AVX-512F and
/// F16C); otherwise it runs a scalar loop.
pub fn kernel_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        crate::simd::isa() == crate::simd::Isa::Avx512
            && std::arch::is_x86_feature_detected!("f16c")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `out [count, m] = (x [m, k] · rowsᵀ)` block by block, without SIMD.
fn scalar_rows(
    format: BlockFormat,
    x: &[f32],
    m: usize,
    k: usize,
    rows: &[u8],
    count: usize,
    out: &mut [f32],
) {
    let row_bytes = rows.len() / count.max(1);
    let mut w = [0f32; BLOCK_VALUES];
    for (j, o) in out.chunks_exact_mut(m).enumerate() {
        let row = &rows[j * row_bytes..(j + 1) * row_bytes];
        let mut acc = [0f32; crate::SMALL_M_MAX_ROWS];
        for (b, block) in row.chunks_exact(format.block_bytes()).enumerate() {
            dequantize_block(format, block, &mut w);
            for (r, a) in acc.iter_mut().take(m).enumerate() {
                let xb = &x[r * k + b * BLOCK_VALUES..][..BLOCK_VALUES];
                *a += w.iter().zip(xb).map(|(w, x)| w * x).sum::<f32>();
            }
        }
        o.copy_from_slice(&acc[..m]);
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{BLOCK_VALUES, BlockFormat};
    use std::arch::x86_64::*;

    /// One block format: its size and its two vectors of values.
    trait Block {
        const BYTES: usize;
        /// Values 0..16 and 16..32 of the block at `b`.
        unsafe fn load(b: *const u8) -> (__m512, __m512);
    }

    /// The f16 at `p` (little-endian) as f32.
    #[inline(always)]
    unsafe fn f16_at(p: *const u8) -> f32 {
        // SAFETY: the caller's block holds two bytes at `p`; F16C is enabled by the caller.
        unsafe {
            let bits = u16::from_le_bytes([*p, *p.add(1)]) as i32;
            _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits)))
        }
    }

    /// The two f16 at `p` and `p + 2` (little-endian) as f32, each broadcast to 16 lanes.
    #[inline(always)]
    unsafe fn f16_pair(p: *const u8) -> (__m512, __m512) {
        // SAFETY: the caller's block holds four bytes at `p`; F16C is enabled by the caller.
        unsafe {
            let both = _mm_cvtph_ps(_mm_cvtsi32_si128((p as *const i32).read_unaligned()));
            (
                _mm512_broadcastss_ps(both),
                _mm512_broadcastss_ps(_mm_movehdup_ps(both)),
            )
        }
    }

    /// The 32 values of a 4-bit block whose nibble `q` stands for `table[q]`: elements
    /// `0..16` (the low nibbles of the 16 bytes at `q`) and `16..32` (the high nibbles).
    ///
    /// One widening shuffle puts byte `j` in lane `j`; `vpermps` reads only the low four bits
    /// of each lane's index, so the low nibbles index the table as they are and the high
    /// nibbles after a shift, with no masking and no integer-to-float conversion.
    #[inline(always)]
    unsafe fn lookup_nibbles(q: *const u8, table: __m512) -> (__m512, __m512) {
        // SAFETY: the caller's block holds 16 bytes at `q`.
        unsafe {
            let idx = _mm512_cvtepu8_epi32(_mm_loadu_si128(q as *const __m128i));
            (
                _mm512_permutexvar_ps(idx, table),
                _mm512_permutexvar_ps(_mm512_srli_epi32(idx, 4), table),
            )
        }
    }

    /// `0, 1, …, 15`: the nibble values, from which a block's table of 16 values is made
    /// with one multiply-add.
    #[inline(always)]
    unsafe fn nibble_values() -> __m512 {
        // SAFETY: AVX-512F is enabled by the caller.
        unsafe {
            _mm512_setr_ps(
                0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0, 13.0, 14.0,
                15.0,
            )
        }
    }

    struct Q8_0;
    impl Block for Q8_0 {
        const BYTES: usize = 34;
        #[inline(always)]
        unsafe fn load(b: *const u8) -> (__m512, __m512) {
            // SAFETY: a Q8_0 block is 34 bytes at `b`.
            unsafe {
                let d = _mm512_set1_ps(f16_at(b));
                let q = |o: usize| {
                    _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(
                        b.add(o) as *const __m128i
                    )))
                };
                (_mm512_mul_ps(q(2), d), _mm512_mul_ps(q(18), d))
            }
        }
    }

    struct Q4_0;
    impl Block for Q4_0 {
        const BYTES: usize = 18;
        #[inline(always)]
        unsafe fn load(b: *const u8) -> (__m512, __m512) {
            // SAFETY: a Q4_0 block is 18 bytes at `b`.
            unsafe {
                // the table d · (q − 8) for q = 0..15, computed as fma(q, d, −8d)
                let d = f16_at(b);
                let (dv, off) = (_mm512_set1_ps(d), _mm512_set1_ps(-8.0 * d));
                lookup_nibbles(b.add(2), _mm512_fmadd_ps(nibble_values(), dv, off))
            }
        }
    }

    struct Q4_1;
    impl Block for Q4_1 {
        const BYTES: usize = 20;
        #[inline(always)]
        unsafe fn load(b: *const u8) -> (__m512, __m512) {
            // SAFETY: a Q4_1 block is 20 bytes at `b`.
            unsafe {
                // the table d · q + m for q = 0..15, computed as fma(q, d, m)
                let (d, m) = f16_pair(b);
                lookup_nibbles(b.add(4), _mm512_fmadd_ps(nibble_values(), d, m))
            }
        }
    }

    /// `out [count, m] = x [m, k] · rowsᵀ`.
    ///
    /// # Safety
    /// AVX-512F and F16C; `rows` is `count` rows of `k / 32` blocks of `format`, `x` is
    /// `[m, k]` with `1 ≤ m ≤ 8`, `out` is `[count, m]`.
    #[target_feature(enable = "avx512f,f16c")]
    pub(super) unsafe fn rows(
        format: BlockFormat,
        x: &[f32],
        m: usize,
        k: usize,
        rows: &[u8],
        count: usize,
        out: &mut [f32],
    ) {
        debug_assert_eq!(out.len(), count * m);
        debug_assert_eq!(x.len(), m * k);
        let (x, w, o) = (x.as_ptr(), rows.as_ptr(), out.as_mut_ptr());
        // SAFETY: forwarded from the caller.
        unsafe {
            match format {
                BlockFormat::Q8_0 => by_rows::<Q8_0>(x, m, k, w, count, o),
                BlockFormat::Q4_0 => by_rows::<Q4_0>(x, m, k, w, count, o),
                BlockFormat::Q4_1 => by_rows::<Q4_1>(x, m, k, w, count, o),
            }
        }
    }

    /// Dispatches on the row count; `NT` outputs are computed together so that a row count
    /// of one still has eight independent chains of multiply-adds (`M · NT ≤ 8` accumulators).
    #[inline(always)]
    unsafe fn by_rows<B: Block>(
        x: *const f32,
        m: usize,
        k: usize,
        w: *const u8,
        count: usize,
        o: *mut f32,
    ) {
        // SAFETY: forwarded from the caller.
        unsafe {
            match m {
                1 => outputs::<B, 1, 8>(x, k, w, count, o),
                2 => outputs::<B, 2, 4>(x, k, w, count, o),
                3 => outputs::<B, 3, 2>(x, k, w, count, o),
                4 => outputs::<B, 4, 2>(x, k, w, count, o),
                5 => outputs::<B, 5, 1>(x, k, w, count, o),
                6 => outputs::<B, 6, 1>(x, k, w, count, o),
                7 => outputs::<B, 7, 1>(x, k, w, count, o),
                8 => outputs::<B, 8, 1>(x, k, w, count, o),
                _ => unreachable!("checked by matmul_rows"),
            }
        }
    }

    /// Tiles of `NT` outputs, then single outputs.
    #[inline(always)]
    unsafe fn outputs<B: Block, const M: usize, const NT: usize>(
        x: *const f32,
        k: usize,
        w: *const u8,
        count: usize,
        o: *mut f32,
    ) {
        let row_bytes = k / BLOCK_VALUES * B::BYTES;
        let mut j = 0;
        // SAFETY: outputs j .. j + NT (or j + 1) lie inside 0..count.
        unsafe {
            while count - j >= NT {
                tile::<B, M, NT>(x, k, w.add(j * row_bytes), row_bytes, o.add(j * M));
                j += NT;
            }
            while j < count {
                tile::<B, M, 1>(x, k, w.add(j * row_bytes), row_bytes, o.add(j * M));
                j += 1;
            }
        }
    }

    /// `o[t·M + r] = Σ_blocks x[r, block] · W[t, block]` for `NT` consecutive outputs `t` and
    /// the `M` rows `r`: lane-wise sums over the blocks in order, then one horizontal sum.
    #[inline(always)]
    unsafe fn tile<B: Block, const M: usize, const NT: usize>(
        x: *const f32,
        k: usize,
        w: *const u8,
        row_bytes: usize,
        o: *mut f32,
    ) {
        // SAFETY: the caller's bounds: NT rows of `row_bytes` at `w`, x is [M, k], o holds
        // NT · M values.
        unsafe {
            let mut acc = [[_mm512_setzero_ps(); M]; NT];
            for b in 0..k / BLOCK_VALUES {
                for (t, a) in acc.iter_mut().enumerate() {
                    let (lo, hi) = B::load(w.add(t * row_bytes + b * B::BYTES));
                    for (r, a) in a.iter_mut().enumerate() {
                        let xp = x.add(r * k + b * BLOCK_VALUES);
                        *a = _mm512_fmadd_ps(lo, _mm512_loadu_ps(xp), *a);
                        *a = _mm512_fmadd_ps(hi, _mm512_loadu_ps(xp.add(16)), *a);
                    }
                }
            }
            for (t, a) in acc.iter().enumerate() {
                for (r, v) in a.iter().enumerate() {
                    *o.add(t * M + r) = _mm512_reduce_add_ps(*v);
                }
            }
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
            for (n, k) in [(13, 64), (1000, 576)] {
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

    #[test]
    fn the_scalar_loop_computes_the_same_products() {
        let (n, k, m) = (40, 96, 3);
        for format in FORMATS {
            let w = random_matrix(format, n, k, 3);
            let x = random_x(m, k, 5);
            let y = w.matmul_rows(&x, m).expect("shapes");
            let mut yt = vec![0f32; n * m];
            scalar_rows(format, &x, m, k, w.data(), n, &mut yt);
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
    fn one_hot_rows_read_back_each_weight_exactly() {
        // x = e_i gives y_j = w[j, i] · 1 plus zeros: every value the kernel builds in its
        // registers must be the value ggml's definition gives (`dequantize_block`), exactly
        // (compared as floats: a zero weight's sign is lost in the sum either way).
        for format in FORMATS {
            let (n, k) = (24, 64);
            let w = random_matrix(format, n, k, 21);
            let dense = w.dequantize();
            for i in [0, 5, 15, 16, 31, 32, 47, 63] {
                let mut x = vec![0f32; k];
                x[i] = 1.0;
                let y = w.matmul_rows(&x, 1).expect("shapes");
                for j in 0..n {
                    assert_eq!(y[j], dense[j * k + i], "{format:?} [{j},{i}]");
                }
            }
        }
    }

    #[test]
    fn a_group_of_weights_gives_the_bits_of_each_product_alone() {
        // 300 + 104 + 96 outputs of 576 inputs: enough to split across threads, with ranges
        // that cross from one weight into the next at 1, 2 and 3 threads
        let mats = [
            random_matrix(BlockFormat::Q4_1, 300, 576, 1),
            random_matrix(BlockFormat::Q8_0, 104, 576, 2),
            random_matrix(BlockFormat::Q4_0, 96, 576, 3),
        ];
        let refs: Vec<&QuantMatrix> = mats.iter().collect();
        for m in [1, 3, 8] {
            let x = random_x(m, 576, 4);
            let alone: Vec<Vec<f32>> = mats
                .iter()
                .map(|w| w.matmul_rows(&x, m).expect("shapes"))
                .collect();
            for threads in 1..=3 {
                let group = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .expect("a pool")
                    .install(|| matmul_rows_many(&refs, &x, m).expect("shapes"));
                assert_eq!(group, alone, "m = {m}, {threads} threads");
            }
        }
    }

    #[test]
    fn a_group_needs_weights_with_the_same_inputs() {
        let (a, b) = (
            random_matrix(BlockFormat::Q4_1, 8, 64, 1),
            random_matrix(BlockFormat::Q4_1, 8, 96, 2),
        );
        let err = matmul_rows_many(&[&a, &b], &[0.0; 64], 1).unwrap_err();
        assert!(err.to_string().contains("[64, 96] columns"), "{err}");
        let err = matmul_rows_many(&[], &[0.0; 64], 1).unwrap_err();
        assert!(err.to_string().contains("at least one matrix"), "{err}");
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

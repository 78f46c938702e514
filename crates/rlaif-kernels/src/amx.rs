//! bfloat16 matrix products on Intel AMX, with float32 inputs, accumulation and output.
//!
//! `C = A · B` where `A` and `B` are float32 matrices read through strides (so a transposed
//! view costs no copy), rounded to bfloat16 (round to nearest even, as PyTorch's
//! `autocast(dtype=torch.bfloat16)` rounds its matmul inputs), multiplied on the AMX tile
//! unit (`TDPBF16PS`: 16 × 16 float32 accumulators += 16 × 32 bf16 · 32 × 16 bf16 per
//! instruction) and summed in float32. The product of two bf16 values is exact in float32, so
//! the only differences from a float32 product of the rounded inputs are the order of the
//! sums; the difference from the float32 product of the *unrounded* inputs is the rounding of
//! the inputs to 8 significant bits (a relative 2⁻⁹ per input).
//!
//! The work, for `A: [M, K]`, `B: [K, N]`:
//!
//! 1. **Pack** (parallel over 16-row / 16-column blocks): `A` into 16 × 32 bf16 tiles, `B`
//!    into 16 × 16 pairs (the "VNNI" layout `TDPBF16PS` reads: `B[2p][j]`, `B[2p + 1][j]`
//!    side by side), each tile 1 KiB and contiguous, zero-padded to whole tiles. Reading
//!    `M·K + K·N` floats and writing half as many bytes.
//! 2. **Multiply** (parallel over 256 × 256 blocks of `C`): per 32 × 32 block of `C`, four
//!    accumulator tiles, two `A` and two `B` tiles per 32 values of `K` (all eight tile
//!    registers), `2·M·N·K` FLOPs; each 32 × 32 block is stored straight into `C`, or
//!    through a scratch tile where it overhangs `C`'s edge.
//!
//! Linux must grant a process the AMX register state before it may use it
//! (`arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`); [`available`] asks once, and is
//! false on CPUs without AMX-BF16 (everything before Sapphire Rapids, all AMD), on other
//! architectures, without this crate's `flex` feature (which brings the system-call binding)
//! and where the kernel refuses. [`matmul_bf16`] runs anywhere: without AMX it
//! computes the same rounded product with scalar float32 sums (slowly; the tests' reference).
//!
//! The instructions are issued through `asm!` (Rust's AMX intrinsics are not yet stable).

use rayon::prelude::*;

/// A float32 matrix view: element `(i, j)` is `data[offset + i·row_stride + j·col_stride]`.
#[derive(Debug, Clone, Copy)]
pub struct MatRef<'a> {
    /// The storage.
    pub data: &'a [f32],
    /// Index of element `(0, 0)`.
    pub offset: usize,
    /// Rows.
    pub rows: usize,
    /// Columns.
    pub cols: usize,
    /// Distance between rows, in elements.
    pub row_stride: usize,
    /// Distance between columns, in elements.
    pub col_stride: usize,
}

impl<'a> MatRef<'a> {
    /// A row-major `[rows, cols]` matrix.
    pub fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self {
            data,
            offset: 0,
            rows,
            cols,
            row_stride: cols,
            col_stride: 1,
        }
    }

    /// The transpose (no copy).
    pub fn t(self) -> Self {
        Self {
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
            ..self
        }
    }

    /// Element `(i, j)`.
    #[inline(always)]
    fn at(&self, i: usize, j: usize) -> f32 {
        self.data[self.offset + i * self.row_stride + j * self.col_stride]
    }

    /// Panics unless every element lies inside `data`.
    fn check(&self, what: &str) {
        if self.rows == 0 || self.cols == 0 {
            return;
        }
        let last =
            self.offset + (self.rows - 1) * self.row_stride + (self.cols - 1) * self.col_stride;
        assert!(
            last < self.data.len(),
            "amx::matmul_bf16: {what} reaches element {last} of {}",
            self.data.len()
        );
    }
}

/// `x` rounded to bfloat16 (round to nearest even; a NaN stays a quiet NaN; subnormal inputs
/// become zero of the same sign, as `VCVTNEPS2BF16` and AMX treat them), as its 16 bits.
#[inline(always)]
pub fn bf16_bits(x: f32) -> u16 {
    let b = x.to_bits();
    if x.is_nan() {
        ((b >> 16) | 0x40) as u16
    } else if b & 0x7f80_0000 == 0 {
        ((b >> 16) & 0x8000) as u16
    } else {
        ((b + 0x7fff + ((b >> 16) & 1)) >> 16) as u16
    }
}

/// The float32 value of bfloat16 bits.
#[inline(always)]
pub fn bf16_value(bits: u16) -> f32 {
    f32::from_bits(u32::from(bits) << 16)
}

/// Whether [`matmul_bf16`] runs on the AMX tile unit here: an x86-64 CPU with AMX-TILE,
/// AMX-BF16 and AVX-512 BF16, and a Linux kernel that grants this process the tile state
/// (asked once, on the first call).
pub fn available() -> bool {
    #[cfg(all(target_arch = "x86_64", target_os = "linux", feature = "flex"))]
    {
        static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *AVAILABLE.get_or_init(x86::request_tiles)
    }
    #[cfg(not(all(target_arch = "x86_64", target_os = "linux", feature = "flex")))]
    {
        false
    }
}

/// `a · b` (`[M, K]·[K, N]`, returned row-major `[M, N]`) with both inputs rounded to
/// bfloat16 and float32 sums: on the AMX tile unit when [`available`], otherwise by scalar
/// float32 sums in order of `k` (same inputs, other rounding of the sums).
///
/// # Panics
/// If `a.cols != b.rows` or a view reaches outside its storage.
pub fn matmul_bf16(a: MatRef<'_>, b: MatRef<'_>) -> Vec<f32> {
    assert_eq!(
        a.cols, b.rows,
        "amx::matmul_bf16: [{}, {}]·[{}, {}]",
        a.rows, a.cols, b.rows, b.cols
    );
    a.check("a");
    b.check("b");
    let (m, n) = (a.rows, b.cols);
    if m == 0 || n == 0 {
        return Vec::new();
    }
    #[cfg(all(target_arch = "x86_64", target_os = "linux", feature = "flex"))]
    if available() {
        return x86::matmul(a, b);
    }
    matmul_bf16_scalar(a, b)
}

/// The rounded product by scalar float32 sums in order of `k`, one row of `C` per task.
pub(crate) fn matmul_bf16_scalar(a: MatRef<'_>, b: MatRef<'_>) -> Vec<f32> {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    let mut c = vec![0.0f32; m * n];
    if n == 0 {
        return c;
    }
    c.par_chunks_mut(n).enumerate().for_each(|(i, row)| {
        for (j, out) in row.iter_mut().enumerate() {
            let mut s = 0.0f32;
            for kk in 0..k {
                s += bf16_value(bf16_bits(a.at(i, kk))) * bf16_value(bf16_bits(b.at(kk, j)));
            }
            *out = s;
        }
    });
    c
}

#[cfg(all(target_arch = "x86_64", target_os = "linux", feature = "flex"))]
mod x86 {
    use super::{MatRef, bf16_bits};
    use rayon::prelude::*;
    use std::arch::asm;
    use std::arch::x86_64::*;
    use std::mem::MaybeUninit;

    /// Rows (of `A`'s tiles and `C`'s accumulators).
    const TILE_ROWS: usize = 16;
    /// bf16 values of `K` per tile row (64 bytes).
    const TILE_K: usize = 32;
    /// u16 per packed tile (1 KiB).
    const TILE_LEN: usize = TILE_ROWS * TILE_K;
    /// Rows and columns of the `C` block one task computes (in 32 × 32 steps).
    const BLOCK: usize = 256;

    /// Asks Linux for the tile state (`arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`)
    /// after checking the CPU's AMX-TILE, AMX-BF16 and AVX-512 BF16 bits.
    pub(super) fn request_tiles() -> bool {
        // CPUID.(EAX=7, ECX=0):EDX bit 22 AMX-BF16, bit 24 AMX-TILE
        let leaf7 = __cpuid_count(7, 0);
        let amx = leaf7.edx & (1 << 22) != 0 && leaf7.edx & (1 << 24) != 0;
        if !amx
            || !std::arch::is_x86_feature_detected!("avx512bf16")
            || !std::arch::is_x86_feature_detected!("avx512bw")
        {
            return false;
        }
        const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
        const XFEATURE_XTILEDATA: libc::c_long = 18;
        let granted = unsafe {
            libc::syscall(
                libc::SYS_arch_prctl,
                ARCH_REQ_XCOMP_PERM,
                XFEATURE_XTILEDATA,
            )
        };
        granted == 0
    }

    /// The tile configuration `LDTILECFG` reads: palette 1, tiles 0–7 all 16 rows × 64
    /// bytes.
    #[repr(C, align(64))]
    struct TileConfig {
        palette: u8,
        start_row: u8,
        reserved: [u8; 14],
        colsb: [u16; 16],
        rows: [u8; 16],
    }

    const CONFIG: TileConfig = TileConfig {
        palette: 1,
        start_row: 0,
        reserved: [0; 14],
        colsb: [64, 64, 64, 64, 64, 64, 64, 64, 0, 0, 0, 0, 0, 0, 0, 0],
        rows: [16, 16, 16, 16, 16, 16, 16, 16, 0, 0, 0, 0, 0, 0, 0, 0],
    };

    /// Packed bf16 tiles of one operand: `blocks` blocks of 16 rows (`A`) or 16 columns
    /// (`B`), each `chunks` tiles of 32 values of `K`, 1 KiB per tile.
    struct Packed {
        tiles: Vec<u16>,
        chunks: usize,
    }

    impl Packed {
        /// The tile for block `block`, chunk `chunk`.
        #[inline(always)]
        fn tile(&self, block: usize, chunk: usize) -> *const u16 {
            self.tiles[(block * self.chunks + chunk) * TILE_LEN..].as_ptr()
        }
    }

    fn round_up(x: usize, to: usize) -> usize {
        x.div_ceil(to) * to
    }

    pub(super) fn matmul(a: MatRef<'_>, b: MatRef<'_>) -> Vec<f32> {
        let (m, k, n) = (a.rows, a.cols, b.cols);
        // whole 32 × 32 blocks of C, whole 32-value chunks of K
        let (mp, np, kp) = (round_up(m, 32), round_up(n, 32), round_up(k.max(1), TILE_K));
        let chunks = kp / TILE_K;
        let pa = Packed {
            tiles: pack(mp / TILE_ROWS, chunks, |block, chunk, tile| unsafe {
                pack_a_tile(a, block * TILE_ROWS, chunk * TILE_K, tile)
            }),
            chunks,
        };
        let pb = Packed {
            tiles: pack(np / TILE_ROWS, chunks, |block, chunk, tile| unsafe {
                pack_b_tile(b, block * TILE_ROWS, chunk * TILE_K, tile)
            }),
            chunks,
        };
        // every element of C is stored once below (whole blocks by the tile unit, edges
        // through a scratch block), so it is not zeroed first
        let mut c: Vec<f32> = Vec::with_capacity(m * n);
        let c_addr = c.spare_capacity_mut().as_mut_ptr() as usize;
        let (row_blocks, col_blocks) = (mp.div_ceil(BLOCK), np.div_ceil(BLOCK));
        (0..row_blocks * col_blocks)
            .into_par_iter()
            .for_each(|task| {
                let (r0, c0) = ((task / col_blocks) * BLOCK, (task % col_blocks) * BLOCK);
                // SAFETY: the tasks write disjoint blocks of C; the tile unit was granted
                // (`available`) and is configured on this thread before use and released after.
                unsafe {
                    asm!("ldtilecfg [{0}]", in(reg) &CONFIG, options(nostack, readonly));
                    let c_ptr = c_addr as *mut f32;
                    for j in (c0..(c0 + BLOCK).min(np)).step_by(32) {
                        for i in (r0..(r0 + BLOCK).min(mp)).step_by(32) {
                            block_32x32(&pa, &pb, i, j, c_ptr, m, n);
                        }
                    }
                    asm!("tilerelease", options(nostack, nomem));
                }
            });
        // SAFETY: the blocks cover C (rows up to `mp ≥ m`, columns up to `np ≥ n`)
        unsafe { c.set_len(m * n) };
        c
    }

    /// Packs every tile of an operand with `fill(block, chunk, tile)`, blocks in parallel.
    /// `fill` must write all `TILE_LEN` values of its tile (the buffer is not zeroed first:
    /// at a 201 MB output layer gradient, zeroing cost as much as packing).
    fn pack(
        blocks: usize,
        chunks: usize,
        fill: impl Fn(usize, usize, &mut [MaybeUninit<u16>]) + Sync,
    ) -> Vec<u16> {
        let len = blocks * chunks * TILE_LEN;
        let mut tiles: Vec<u16> = Vec::with_capacity(len);
        tiles.spare_capacity_mut()[..len]
            .par_chunks_mut(chunks * TILE_LEN)
            .enumerate()
            .for_each(|(block, block_tiles)| {
                for (chunk, tile) in block_tiles.chunks_mut(TILE_LEN).enumerate() {
                    fill(block, chunk, tile);
                }
            });
        // SAFETY: every tile was written by `fill`
        unsafe { tiles.set_len(len) };
        tiles
    }

    /// Loads `n ≤ 16` floats from `p` (the rest zero).
    #[inline(always)]
    unsafe fn load16(p: *const f32, n: usize) -> __m512 {
        unsafe {
            if n >= 16 {
                _mm512_loadu_ps(p)
            } else {
                _mm512_maskz_loadu_ps(((1u32 << n) - 1) as u16, p)
            }
        }
    }

    /// Two rows of 16 floats as 16 bf16 pairs `(even[c], odd[c])`, one per 32-bit lane.
    #[inline(always)]
    unsafe fn pairs(even: __m512, odd: __m512) -> __m512i {
        unsafe {
            let interleave = _mm512_set_epi16(
                31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22, 6, 21, 5,
                20, 4, 19, 3, 18, 2, 17, 1, 16, 0,
            );
            let v: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(odd, even));
            _mm512_permutexvar_epi16(interleave, v)
        }
    }

    /// 32 floats from `p` (the first `n`, the rest zero) as 32 bf16 in order.
    #[inline(always)]
    unsafe fn bf16x32(p: *const f32, n: usize) -> __m512i {
        unsafe {
            let lo = load16(p, n);
            let hi = load16(p.add(16), n.saturating_sub(16));
            std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo))
        }
    }

    /// Transposes a 16 × 16 matrix of 32-bit lanes held in 16 registers (row `i` becomes
    /// column `i`): unpacks of 32- and 64-bit lanes, then two rounds of 128-bit shuffles.
    #[inline(always)]
    unsafe fn transpose_16x16(r: &mut [__m512i; 16]) {
        unsafe {
            let mut t = [_mm512_setzero_si512(); 16];
            for i in 0..8 {
                t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
                t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
            }
            for b in (0..16).step_by(4) {
                r[b] = _mm512_unpacklo_epi64(t[b], t[b + 2]);
                r[b + 1] = _mm512_unpackhi_epi64(t[b], t[b + 2]);
                r[b + 2] = _mm512_unpacklo_epi64(t[b + 1], t[b + 3]);
                r[b + 3] = _mm512_unpackhi_epi64(t[b + 1], t[b + 3]);
            }
            for b in [0, 8] {
                for i in b..b + 4 {
                    t[i] = _mm512_shuffle_i32x4::<0x88>(r[i], r[i + 4]);
                    t[i + 4] = _mm512_shuffle_i32x4::<0xdd>(r[i], r[i + 4]);
                }
            }
            for i in 0..8 {
                r[i] = _mm512_shuffle_i32x4::<0x88>(t[i], t[i + 8]);
                r[i + 8] = _mm512_shuffle_i32x4::<0xdd>(t[i], t[i + 8]);
            }
        }
    }

    /// Stores 16 registers as the 16 rows (64 bytes each) of a tile.
    #[inline(always)]
    unsafe fn store_rows(tile: *mut u16, rows: &[__m512i; 16]) {
        for (r, v) in rows.iter().enumerate() {
            unsafe { _mm512_storeu_si512(tile.add(r * TILE_K) as *mut _, *v) };
        }
    }

    /// One `A` tile: rows `i0..i0 + 16`, columns `k0..k0 + 32` of `a`, as 16 rows × 32 bf16
    /// (zero outside `a`).
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16,avx512vl")]
    unsafe fn pack_a_tile(a: MatRef<'_>, i0: usize, k0: usize, tile: &mut [MaybeUninit<u16>]) {
        let rows = a.rows.saturating_sub(i0).min(TILE_ROWS);
        let ks = a.cols.saturating_sub(k0).min(TILE_K);
        let out = tile.as_mut_ptr() as *mut u16;
        unsafe {
            let mut regs = [_mm512_setzero_si512(); 16];
            if rows == 0 || ks == 0 {
                // padding
            } else if a.col_stride == 1 {
                // rows of A contiguous: 32 values of a row → one 64-byte tile row
                for (r, reg) in regs.iter_mut().enumerate().take(rows) {
                    let p = a.data.as_ptr().add(a.offset + (i0 + r) * a.row_stride + k0);
                    *reg = bf16x32(p, ks);
                }
            } else if a.row_stride == 1 {
                // columns of A contiguous (a transposed view, as xᵀ in ∂w = xᵀ·g): columns
                // 2p and 2p + 1 → 16 pairs, one per row; the 16 × 16 pairs transposed are the
                // tile's rows
                let zero = _mm512_setzero_ps();
                for (p, reg) in regs.iter_mut().enumerate() {
                    let col = |kk: usize| {
                        if kk < ks {
                            let at = a.offset + i0 + (k0 + kk) * a.col_stride;
                            load16(a.data.as_ptr().add(at), rows)
                        } else {
                            zero
                        }
                    };
                    *reg = pairs(col(2 * p), col(2 * p + 1));
                }
                transpose_16x16(&mut regs);
            } else {
                let mut vals = [0u16; TILE_LEN];
                for r in 0..rows {
                    for kk in 0..ks {
                        vals[r * TILE_K + kk] = bf16_bits(a.at(i0 + r, k0 + kk));
                    }
                }
                std::ptr::copy_nonoverlapping(vals.as_ptr(), out, TILE_LEN);
                return;
            }
            store_rows(out, &regs);
        }
    }

    /// One `B` tile: rows `k0..k0 + 32` (16 pairs), columns `j0..j0 + 16` of `b`, in the pair
    /// layout: tile row `p`, column `j` holds `B[2p][j]`, `B[2p + 1][j]` (zero outside `b`).
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16,avx512vl")]
    unsafe fn pack_b_tile(b: MatRef<'_>, j0: usize, k0: usize, tile: &mut [MaybeUninit<u16>]) {
        let cols = b.cols.saturating_sub(j0).min(TILE_ROWS);
        let ks = b.rows.saturating_sub(k0).min(TILE_K);
        let out = tile.as_mut_ptr() as *mut u16;
        unsafe {
            let mut regs = [_mm512_setzero_si512(); 16];
            if cols == 0 || ks == 0 {
                // padding
            } else if b.col_stride == 1 {
                // rows of B contiguous: rows 2p and 2p + 1 → interleaved into tile row p
                let zero = _mm512_setzero_ps();
                for (p, reg) in regs.iter_mut().enumerate() {
                    let row = |kk: usize| {
                        if kk < ks {
                            let at = b.offset + (k0 + kk) * b.row_stride + j0;
                            load16(b.data.as_ptr().add(at), cols)
                        } else {
                            zero
                        }
                    };
                    *reg = pairs(row(2 * p), row(2 * p + 1));
                }
            } else if b.row_stride == 1 {
                // columns of B contiguous (a transposed view, as wᵀ in ∂x = g·wᵀ): 32 values
                // of column j → its 16 pairs; the 16 × 16 pairs transposed are the tile's rows
                for (jj, reg) in regs.iter_mut().enumerate().take(cols) {
                    let at = b.offset + (j0 + jj) * b.col_stride + k0;
                    *reg = bf16x32(b.data.as_ptr().add(at), ks);
                }
                transpose_16x16(&mut regs);
            } else {
                let mut vals = [0u16; TILE_LEN];
                for kk in 0..ks {
                    for jj in 0..cols {
                        vals[(kk / 2) * 32 + 2 * jj + kk % 2] = bf16_bits(b.at(k0 + kk, j0 + jj));
                    }
                }
                std::ptr::copy_nonoverlapping(vals.as_ptr(), out, TILE_LEN);
                return;
            }
            store_rows(out, &regs);
        }
    }

    /// `C[i..i + 32, j..j + 32] = A[i..i + 32, :] · B[:, j..j + 32]` (the parts inside `C`'s
    /// `m × n`): accumulators in tiles 0–3, `A` in 4–5, `B` in 6–7.
    ///
    /// # Safety
    /// The tile configuration [`CONFIG`] is loaded on this thread; `c` is `m × n`.
    #[inline(always)]
    unsafe fn block_32x32(
        pa: &Packed,
        pb: &Packed,
        i: usize,
        j: usize,
        c: *mut f32,
        m: usize,
        n: usize,
    ) {
        let (bi, bj) = (i / TILE_ROWS, j / TILE_ROWS);
        let (a0, a1) = (pa.tile(bi, 0), pa.tile(bi + 1, 0));
        let (b0, b1) = (pb.tile(bj, 0), pb.tile(bj + 1, 0));
        let stride = 64usize;
        unsafe {
            asm!(
                "tilezero tmm0",
                "tilezero tmm1",
                "tilezero tmm2",
                "tilezero tmm3",
                options(nostack, nomem)
            );
            for chunk in 0..pa.chunks {
                let at = chunk * TILE_LEN;
                asm!(
                    "tileloadd tmm4, [{a0} + {s}*1]",
                    "tileloadd tmm6, [{b0} + {s}*1]",
                    "tdpbf16ps tmm0, tmm4, tmm6",
                    "tileloadd tmm7, [{b1} + {s}*1]",
                    "tdpbf16ps tmm1, tmm4, tmm7",
                    "tileloadd tmm5, [{a1} + {s}*1]",
                    "tdpbf16ps tmm2, tmm5, tmm6",
                    "tdpbf16ps tmm3, tmm5, tmm7",
                    a0 = in(reg) a0.add(at),
                    a1 = in(reg) a1.add(at),
                    b0 = in(reg) b0.add(at),
                    b1 = in(reg) b1.add(at),
                    s = in(reg) stride,
                    options(nostack, readonly)
                );
            }
            if i + 32 <= m && j + 32 <= n {
                let ld = n * 4;
                let c00 = c.add(i * n + j);
                asm!(
                    "tilestored [{c00} + {ld}*1], tmm0",
                    "tilestored [{c01} + {ld}*1], tmm1",
                    "tilestored [{c10} + {ld}*1], tmm2",
                    "tilestored [{c11} + {ld}*1], tmm3",
                    c00 = in(reg) c00,
                    c01 = in(reg) c00.add(16),
                    c10 = in(reg) c00.add(16 * n),
                    c11 = in(reg) c00.add(16 * n + 16),
                    ld = in(reg) ld,
                    options(nostack)
                );
            } else {
                // overhangs C: through a scratch block
                let mut scratch = [0.0f32; 32 * 32];
                let s = scratch.as_mut_ptr();
                asm!(
                    "tilestored [{c00} + {ld}*1], tmm0",
                    "tilestored [{c01} + {ld}*1], tmm1",
                    "tilestored [{c10} + {ld}*1], tmm2",
                    "tilestored [{c11} + {ld}*1], tmm3",
                    c00 = in(reg) s,
                    c01 = in(reg) s.add(16),
                    c10 = in(reg) s.add(16 * 32),
                    c11 = in(reg) s.add(16 * 32 + 16),
                    ld = in(reg) 128usize,
                    options(nostack)
                );
                for r in 0..32.min(m.saturating_sub(i)) {
                    let cols = 32.min(n.saturating_sub(j));
                    std::ptr::copy_nonoverlapping(s.add(r * 32), c.add((i + r) * n + j), cols);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// `Σ_k bf16(a_ik)·bf16(b_kj)` in f64, and `Σ_k |a_ik·b_kj|` (the scale of its rounding).
    fn reference(a: MatRef<'_>, b: MatRef<'_>) -> (Vec<f64>, Vec<f64>) {
        let (m, k, n) = (a.rows, a.cols, b.cols);
        let (mut c, mut scale) = (vec![0.0; m * n], vec![0.0; m * n]);
        for i in 0..m {
            for j in 0..n {
                for kk in 0..k {
                    let x = f64::from(bf16_value(bf16_bits(a.at(i, kk))));
                    let y = f64::from(bf16_value(bf16_bits(b.at(kk, j))));
                    c[i * n + j] += x * y;
                    scale[i * n + j] += (x * y).abs();
                }
            }
        }
        (c, scale)
    }

    fn random(len: usize, seed: u64) -> Vec<f32> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        (0..len).map(|_| rng.random_range(-2.0f32..2.0)).collect()
    }

    /// Checks `matmul_bf16` (and the scalar route) against the f64 reference: float32 sums
    /// of exact products, so within a few float32 roundings of `Σ|a·b|`.
    fn check(a: MatRef<'_>, b: MatRef<'_>, what: &str) {
        let (want, scale) = reference(a, b);
        for (route, got) in [
            ("tiles", matmul_bf16(a, b)),
            ("scalar", matmul_bf16_scalar(a, b)),
        ] {
            assert_eq!(got.len(), want.len(), "{what} {route}");
            for (idx, ((&g, &w), &s)) in got.iter().zip(&want).zip(&scale).enumerate() {
                let tol = 1e-6 * (a.cols as f64).sqrt() * s + 1e-30;
                assert!(
                    (f64::from(g) - w).abs() <= tol,
                    "{what} {route}: C[{idx}] = {g}, reference {w} (tolerance {tol})"
                );
            }
        }
    }

    #[test]
    fn products_match_an_f64_reference_for_every_layout_and_edge() {
        // whole tiles, ragged edges in M, N and K, K below one chunk, one element
        for (t, &(m, k, n)) in [
            (64, 576, 192),
            (33, 45, 17),
            (1, 1, 1),
            (40, 70, 100),
            (3, 7, 50),
        ]
        .iter()
        .enumerate()
        {
            let (a, b) = (random(m * k, 2 * t as u64), random(k * n, 2 * t as u64 + 1));
            let a_rm = MatRef::row_major(&a, m, k);
            let b_rm = MatRef::row_major(&b, k, n);
            // the same values stored transposed, read through transposed views
            let at: Vec<f32> = (0..k * m).map(|idx| a[(idx % m) * k + idx / m]).collect();
            let bt: Vec<f32> = (0..n * k).map(|idx| b[(idx % k) * n + idx / k]).collect();
            let a_t = MatRef::row_major(&at, k, m).t();
            let b_t = MatRef::row_major(&bt, n, k).t();
            let shape = format!("[{m}, {k}]·[{k}, {n}]");
            check(a_rm, b_rm, &format!("{shape} A·B"));
            check(a_t, b_rm, &format!("{shape} (Aᵀ)ᵀ·B"));
            check(a_rm, b_t, &format!("{shape} A·(Bᵀ)ᵀ"));
            check(a_t, b_t, &format!("{shape} (Aᵀ)ᵀ·(Bᵀ)ᵀ"));
            // a strided view (every other column of a wider matrix, with an offset): the
            // generic packing
            let wide = random(2 * m * k + 3, 99);
            let a_strided = MatRef {
                data: &wide,
                offset: 3,
                rows: m,
                cols: k,
                row_stride: 2 * k,
                col_stride: 2,
            };
            check(a_strided, b_t, &format!("{shape} strided A"));
            // neither stride 1: the generic packing of B
            let wide_b = random((2 * k + 1) * n + 1, 98);
            let b_strided = MatRef {
                data: &wide_b,
                offset: 1,
                rows: k,
                cols: n,
                row_stride: 2,
                col_stride: 2 * k + 1,
            };
            check(a_t, b_strided, &format!("{shape} strided B"));
            // the layouts agree bit for bit: the same rounded inputs, the same sums
            let base = matmul_bf16(a_rm, b_rm);
            assert_eq!(matmul_bf16(a_t, b_t), base, "{shape}: transposed views");
        }
    }

    #[test]
    fn rounding_is_to_nearest_even_with_subnormals_flushed() {
        for &x in &[
            1.0f32,
            -3.5,
            1.0 + 1.0 / 256.0,
            1.0 + 3.0 / 256.0,
            65504.0,
            1e-30,
            3.4e38,
        ] {
            assert_eq!(bf16_bits(x), half::bf16::from_f32(x).to_bits(), "{x}");
        }
        // halfway cases: 1 + 2⁻⁸ rounds down to 1 (even), 1 + 3·2⁻⁸ up to 1 + 2⁻⁶
        assert_eq!(bf16_value(bf16_bits(1.0 + 1.0 / 256.0)), 1.0);
        assert_eq!(bf16_value(bf16_bits(1.0 + 3.0 / 256.0)), 1.0 + 1.0 / 64.0);
        assert_eq!(bf16_bits(1e-40), 0);
        assert_eq!(bf16_bits(-1e-40), 0x8000);
        assert!(bf16_value(bf16_bits(f32::NAN)).is_nan());
        assert_eq!(bf16_value(bf16_bits(f32::INFINITY)), f32::INFINITY);
    }

    #[test]
    fn the_thread_count_does_not_change_the_bits() {
        let (m, k, n) = (300, 200, 520); // several 256 × 256 tasks
        let (a, b) = (random(m * k, 7), random(k * n, 8));
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| matmul_bf16(MatRef::row_major(&a, m, k), MatRef::row_major(&b, k, n)))
        };
        assert_eq!(run(1), run(3));
    }
}

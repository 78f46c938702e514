//! What the benchmarks share.

/// `rows` sequences of `len` deterministic pseudo-random token ids (an LCG started at
/// `seed`), away from the first 100 ids, where the special tokens are.
pub fn random_ids(seed: u64, rows: usize, len: usize, vocab: usize) -> Vec<Vec<u32>> {
    let mut x = seed;
    (0..rows)
        .map(|_| {
            (0..len)
                .map(|_| {
                    x = x
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    (100 + (x >> 33) as usize % (vocab - 100)) as u32
                })
                .collect()
        })
        .collect()
}

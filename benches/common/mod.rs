//! What the benchmarks share.

/// The allocator of the `rlaif` command (`rlaif_kernels::allocator`), so that the numbers
/// are what the command gets.
#[cfg(feature = "cli")]
#[global_allocator]
static ALLOCATOR: rlaif_kernels::TensorAllocator = rlaif_kernels::TensorAllocator;

/// `rows` sequences of `len` deterministic pseudo-random token ids (an LCG started at
/// `seed`), away from the first 100 ids, where the special tokens are.
#[allow(dead_code)] // the ppo bench builds its prompts from text
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

/// `b.iter(work)` with each iteration on rayon's pool, as the `rlaif` command runs
/// ([`rlaif_kernels::on_pool`]).
pub fn iter_on_pool<R: Send>(b: &mut criterion::Bencher<'_>, work: impl Fn() -> R + Sync) {
    b.iter(|| rlaif_kernels::on_pool(&work))
}

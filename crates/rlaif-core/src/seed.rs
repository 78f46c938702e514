//! Seeded random streams: the one way every crate turns a user's seed into random numbers.
//!
//! - [`derive_seed`] folds a list of integers (the run's seed, a chunk, a stage, an
//!   epoch, ...) into one seed, so that each use of randomness gets its own seed that
//!   depends only on where it is used, never on what ran before it.
//! - [`stream_rng`] gives stream `index` of the ChaCha8 generator seeded with `seed`: item
//!   `index` of a batch (a prompt, a chain of principle draws) draws the same numbers
//!   whatever else is in the batch.
//!
//! ```
//! use rand::Rng;
//! use rlaif_core::seed::{derive_seed, stream_rng};
//!
//! let seed = derive_seed(&[42, 7]);
//! assert_eq!(seed, derive_seed(&[42, 7]));
//! assert_ne!(seed, derive_seed(&[7, 42]));
//! let a: u64 = stream_rng(seed, 3).random();
//! assert_eq!(a, stream_rng(seed, 3).random::<u64>());
//! assert_ne!(a, stream_rng(seed, 4).random::<u64>());
//! ```

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// SplitMix64 (Steele et al. 2014) of the parts, folded in order.
pub fn derive_seed(parts: &[u64]) -> u64 {
    let mut h = 0x243F_6A88_85A3_08D3u64;
    for &p in parts {
        h = splitmix64(h ^ p);
    }
    h
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Stream `index` of the ChaCha8 generator seeded with `seed`.
pub fn stream_rng(seed: u64, index: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(index);
    rng
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::RngCore;

    #[test]
    fn derive_seed_is_stable_across_versions() {
        // Pinned values: seeds stored in output files must keep meaning the same thing.
        assert_eq!(derive_seed(&[]), 0x243F_6A88_85A3_08D3);
        assert_eq!(derive_seed(&[0]), splitmix64(0x243F_6A88_85A3_08D3));
        assert_eq!(splitmix64(0), 0xE220_A839_7B1D_CDAF); // SplitMix64's first output from 0
    }

    #[test]
    fn streams_are_independent_of_each_other() {
        let mut a = stream_rng(1, 0);
        let mut b = stream_rng(1, 1);
        let xs: Vec<u32> = (0..4).map(|_| a.next_u32()).collect();
        let ys: Vec<u32> = (0..4).map(|_| b.next_u32()).collect();
        assert_ne!(xs, ys);
        let mut c = ChaCha8Rng::seed_from_u64(1);
        assert_eq!(
            xs,
            (0..4).map(|_| c.next_u32()).collect::<Vec<_>>(),
            "stream 0 is the default stream"
        );
    }
}

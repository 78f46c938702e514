//! [`Fnv1a`]: a small stable hash for fingerprints stored in files (the constitution a
//! run used, the training data a checkpoint was made from). Unlike `std`'s `DefaultHasher`,
//! its value never changes between Rust versions.

/// 64-bit FNV-1a.
///
/// ```
/// use rlaif_core::Fnv1a;
///
/// let mut h = Fnv1a::default();
/// h.bytes(b"a");
/// assert_eq!(h.hex(), "af63dc4c8601ec8c"); // the FNV-1a test vector of "a"
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fnv1a(pub u64);

impl Default for Fnv1a {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv1a {
    /// Feeds raw bytes.
    pub fn bytes(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    /// Feeds a `u64` (little-endian bytes).
    pub fn u64(&mut self, x: u64) {
        self.bytes(&x.to_le_bytes());
    }

    /// Feeds a string, prefixed by its length so that field boundaries count.
    pub fn str(&mut self, s: &str) {
        self.u64(s.len() as u64);
        self.bytes(s.as_bytes());
    }

    /// The hash as 16 hex digits.
    pub fn hex(&self) -> String {
        format!("{:016x}", self.0)
    }
}

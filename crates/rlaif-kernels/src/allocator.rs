//! The process's allocator, set for tensor work on the CPU.
//!
//! Every tensor op on the flex backend writes a freshly allocated buffer, and a training
//! step of the 135M model allocates and frees gigabytes of them. glibc's `malloc` (the
//! allocator of Rust programs on Linux by default) serves every block above its mmap
//! threshold with a fresh `mmap` and unmaps it when it is freed; the threshold starts at
//! 128 KiB and only rises, one freed block at a time, up to 32 MiB. It also gives the top
//! of its heap back to the system once 128 KiB are free there. Either way the next step
//! gets new pages, which the kernel faults in and zeroes one by one: page clearing and
//! faults were about a fifth of a 4 × 256 train step in perf (docs/benchmarks.md).
//!
//! [`tune_allocator`] sets the two thresholds once, at a fixed value, with `mallopt`:
//! blocks up to 32 MiB (the largest threshold glibc accepts on 64-bit) come from the heap,
//! and the heap is never trimmed, so a freed block's pages are reused by the next
//! allocation. The price is that the process keeps its peak heap size until it exits. The
//! `rlaif` command, the examples and the benches call it at start-up; a program that uses
//! the library crates calls it in its `main`. It is the same as starting the process with
//! `GLIBC_TUNABLES=glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=…`.
//!
//! Measured (6 train steps of 4 × 256 tokens on 2 cores): 6.66 M page faults and 6.4–7.5 s
//! per step without, 2.85 M and 4.8–5.5 s with it (the environment variables: 2.79 M,
//! 4.8–5.2 s).

/// The mmap threshold set by [`tune_allocator`]: 32 MiB, glibc's upper bound on 64-bit
/// (`DEFAULT_MMAP_THRESHOLD_MAX`).
pub const MMAP_THRESHOLD: usize = 32 << 20;

/// Sets glibc's `malloc` for tensor work (see the [module docs](self)): blocks up to
/// [`MMAP_THRESHOLD`] from the heap, and the heap never trimmed. Call it once, first thing
/// in `main`; later calls do nothing. Returns whether the setting is in force: `false` on
/// targets other than Linux with glibc, or without the `flex` feature, where it does
/// nothing.
pub fn tune_allocator() -> bool {
    imp::tune()
}

#[cfg(all(feature = "flex", target_os = "linux", target_env = "gnu"))]
mod imp {
    use std::sync::OnceLock;

    pub fn tune() -> bool {
        static DONE: OnceLock<bool> = OnceLock::new();
        *DONE.get_or_init(|| {
            // SAFETY: `mallopt` only changes malloc's parameters, under malloc's own lock.
            // M_TRIM_THRESHOLD = -1 is SIZE_MAX once glibc converts it: never trim.
            let mmap = unsafe {
                libc::mallopt(libc::M_MMAP_THRESHOLD, super::MMAP_THRESHOLD as libc::c_int)
            };
            let trim = unsafe { libc::mallopt(libc::M_TRIM_THRESHOLD, -1) };
            mmap == 1 && trim == 1
        })
    }
}

#[cfg(not(all(feature = "flex", target_os = "linux", target_env = "gnu")))]
mod imp {
    pub fn tune() -> bool {
        false
    }
}

#[cfg(all(test, feature = "flex", target_os = "linux", target_env = "gnu"))]
mod tests {
    use super::*;

    /// Minor page faults taken by the calling thread so far.
    fn thread_faults() -> i64 {
        // SAFETY: getrusage writes into the struct it is given.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        let rc = unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) };
        assert_eq!(rc, 0, "getrusage");
        usage.ru_minflt
    }

    /// Allocates `bytes`, writes every page, frees it; returns the faults this took.
    fn touch_block(bytes: usize) -> i64 {
        let before = thread_faults();
        let mut block = vec![0u8; bytes];
        for i in (0..bytes).step_by(4096) {
            block[i] = 1;
        }
        std::hint::black_box(&block);
        drop(block);
        thread_faults() - before
    }

    #[test]
    fn a_freed_block_is_reused_without_new_page_faults() {
        assert!(tune_allocator());
        assert!(tune_allocator(), "a second call reports the same");
        let bytes = 16 << 20;
        let pages = (bytes / 4096) as i64;
        // The first time the pages are new (or the arena is grown) ...
        touch_block(bytes);
        // ... the second time the same pages come back, already mapped. Without the
        // setting a 16 MiB block is mmapped and unmapped each time: every page faults.
        let again = touch_block(bytes);
        assert!(
            again < pages / 8,
            "{again} page faults for a reused {pages}-page block"
        );
    }
}

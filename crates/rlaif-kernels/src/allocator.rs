//! The process's allocator, set for tensor work on the CPU.
//!
//! Every tensor op on the flex backend writes a freshly allocated buffer, and a training
//! step of the 135M model allocates and frees gigabytes of them. Whatever the allocator
//! gives back to the system between two steps, the next step gets as new pages, which the
//! kernel faults in and zeroes one by one. Two ways to keep those pages:
//!
//! - **[`TensorAllocator`]** (feature `mimalloc`, on by default): mimalloc (Leijen, Zorn
//!   and de Moura 2019, through the `mimalloc` crate) as the program's `#[global_allocator]`,
//!   with purging turned off so that memory a program frees stays mapped for its next
//!   allocation. The `rlaif` command, the examples and the benches install it. Measured on
//!   the 4 × 256 train step of the 135M model (`docs/benchmarks.md`, 2026-12-03; three
//!   alternating runs of the bench binary against one with glibc's `malloc` tuned as below):
//!   medians of 3.69, 4.03 and 4.45 s per step against 5.92, 4.64 and 4.89 s; 2.6–2.7
//!   thousand page faults per run against 5.6–11.0 million; a peak resident size of 3.5–3.8
//!   GB against 3.4–5.2 GB.
//! - **[`tune_allocator`]**, for programs that keep glibc's `malloc` (the default of Rust
//!   programs on Linux). glibc serves every block above its mmap threshold with a fresh
//!   `mmap` and unmaps it when it is freed; the threshold starts at 128 KiB and only rises,
//!   one freed block at a time, up to 32 MiB. It also gives the top of its heap back to the
//!   system once 128 KiB are free there. [`tune_allocator`] sets the two thresholds once,
//!   with `mallopt`: blocks up to 32 MiB (the largest threshold glibc accepts on 64-bit)
//!   come from the heap, and the heap is never trimmed. It is the same as starting the
//!   process with `GLIBC_TUNABLES=glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=…`.
//!   It cannot keep larger blocks (the 201 MB logits of a 4 × 256 batch, the 113 MB
//!   embedding gradient), nor the heaps of glibc's per-thread arenas, which glibc unmaps
//!   whenever one is wholly free whatever the trim threshold: page clearing and faults were
//!   still 18–28 % of a train step in perf with it. Measured (6 train steps of 4 × 256
//!   tokens on 2 cores): 6.66 M page faults and 6.4–7.5 s per step without, 2.85 M and
//!   4.8–5.5 s with it.
//!
//! Either way the process keeps its peak memory until it exits.
//!
//! ```
//! // in a program's main.rs (the `rlaif` command does this)
//! #[global_allocator]
//! static ALLOCATOR: rlaif_kernels::TensorAllocator = rlaif_kernels::TensorAllocator;
//!
//! fn main() {
//!     rlaif_kernels::tune_allocator(); // for C code still on glibc's malloc; harmless
//!     let v = vec![0f32; 1 << 20];
//!     assert_eq!(v.len(), 1 << 20);
//! }
//! ```

#[cfg(feature = "mimalloc")]
pub use tensor_allocator::TensorAllocator;

#[cfg(feature = "mimalloc")]
mod tensor_allocator {
    use std::alloc::{GlobalAlloc, Layout};
    use std::sync::atomic::{AtomicBool, Ordering};

    /// mimalloc v3's `mi_option_purge_delay`: how long (ms) freed memory stays mapped before
    /// mimalloc gives it back to the system (`MADV_DONTNEED`; 1000 by default, `-1`: never).
    /// Its index in `mi_option_e` (mimalloc 3.3, `include/mimalloc.h`); libmimalloc-sys
    /// 0.1.49 (pinned in the workspace) builds that version but does not name the option.
    /// The test `a_freed_block_stays_mapped_past_the_purge_delay` fails if the index is
    /// wrong.
    pub(super) const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

    /// Whether [`TensorAllocator`] has set mimalloc's options.
    static CONFIGURED: AtomicBool = AtomicBool::new(false);

    /// The global allocator for programs that run or train models on the CPU: mimalloc,
    /// with purging of freed memory turned off (see the [module docs](super)). Install it
    /// with `#[global_allocator]` in the program's main file; nothing else is needed.
    ///
    /// Without purging, memory freed by one train step is reused by the next without new
    /// page faults, and mimalloc's size-segregated pages fit a step's many equal-sized
    /// tensors tighter than glibc's heaps (a lower peak than glibc's). The price is that
    /// the process keeps its peak memory until it exits.
    #[derive(Clone, Copy, Debug, Default)]
    pub struct TensorAllocator;

    impl TensorAllocator {
        /// Turns purging off, once: on the first allocation, before any memory was freed.
        #[inline]
        fn configure() {
            if !CONFIGURED.load(Ordering::Relaxed) {
                // SAFETY: `mi_option_set` stores an integer in mimalloc's option table;
                // it does not allocate. Two threads racing here store the same value.
                unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
                CONFIGURED.store(true, Ordering::Relaxed);
            }
        }
    }

    // SAFETY: every method forwards to mimalloc's `GlobalAlloc`, which upholds the trait's
    // contract; `configure` only changes an option.
    unsafe impl GlobalAlloc for TensorAllocator {
        #[inline]
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            Self::configure();
            // SAFETY: the caller upholds `alloc`'s contract.
            unsafe { mimalloc::MiMalloc.alloc(layout) }
        }

        #[inline]
        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            Self::configure();
            // SAFETY: the caller upholds `alloc_zeroed`'s contract.
            unsafe { mimalloc::MiMalloc.alloc_zeroed(layout) }
        }

        #[inline]
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            // SAFETY: `ptr` came from this allocator, i.e. from mimalloc.
            unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) }
        }

        #[inline]
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            // SAFETY: `ptr` came from this allocator, i.e. from mimalloc.
            unsafe { mimalloc::MiMalloc.realloc(ptr, layout, new_size) }
        }
    }
}

/// The mmap threshold set by [`tune_allocator`]: 32 MiB, glibc's upper bound on 64-bit
/// (`DEFAULT_MMAP_THRESHOLD_MAX`).
pub const MMAP_THRESHOLD: usize = 32 << 20;

/// Sets glibc's `malloc` for tensor work (see the [module docs](self)): blocks up to
/// [`MMAP_THRESHOLD`] from the heap, and the heap never trimmed. Call it once, first thing
/// in `main`; later calls do nothing. A program with [`TensorAllocator`] as its global
/// allocator does not need it (it still helps C code that calls `malloc`). Returns whether
/// the setting is in force: `false` on targets other than Linux with glibc, or without the
/// `flex` feature, where it does
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

#[cfg(all(test, feature = "flex", target_os = "linux"))]
mod tests {
    #[allow(unused_imports)]
    use super::*;

    /// Minor page faults taken by the calling thread so far.
    #[allow(dead_code)]
    fn thread_faults() -> i64 {
        // SAFETY: getrusage writes into the struct it is given.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        let rc = unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) };
        assert_eq!(rc, 0, "getrusage");
        usage.ru_minflt
    }

    /// Allocates `bytes` with `alloc`, writes every page, frees it with `free`; returns the
    /// page faults this took.
    #[allow(dead_code)]
    fn touch_block(bytes: usize, alloc: impl Fn(usize) -> *mut u8, free: impl Fn(*mut u8)) -> i64 {
        let before = thread_faults();
        let block = alloc(bytes);
        assert!(!block.is_null(), "allocation of {bytes} bytes failed");
        for i in (0..bytes).step_by(4096) {
            // SAFETY: `block` holds `bytes` bytes.
            unsafe { block.add(i).write_volatile(1) };
        }
        free(block);
        thread_faults() - before
    }

    #[cfg(all(feature = "flex", target_env = "gnu"))]
    #[test]
    fn a_freed_block_is_reused_without_new_page_faults() {
        assert!(tune_allocator());
        assert!(tune_allocator(), "a second call reports the same");
        let bytes = 16 << 20;
        let pages = (bytes / 4096) as i64;
        // SAFETY: plain malloc and free of a block this test alone uses.
        let malloc = |n| unsafe { libc::malloc(n).cast::<u8>() };
        let free = |p: *mut u8| unsafe { libc::free(p.cast()) };
        // The first time the pages are new (or the arena is grown) ...
        touch_block(bytes, malloc, free);
        // ... the second time the same pages come back, already mapped. Without the
        // setting a 16 MiB block is mmapped and unmapped each time: every page faults.
        let again = touch_block(bytes, malloc, free);
        assert!(
            again < pages / 8,
            "{again} page faults for a reused {pages}-page block"
        );
    }

    #[cfg(feature = "mimalloc")]
    #[test]
    fn a_freed_block_stays_mapped_past_the_purge_delay() {
        use std::alloc::{GlobalAlloc, Layout};
        let layout = |n| Layout::from_size_align(n, 64).expect("a valid layout");
        // SAFETY: blocks of this allocator, freed with the layout they were made with.
        let alloc = |n| unsafe { TensorAllocator.alloc(layout(n)) };
        let free = |p| unsafe { TensorAllocator.dealloc(p, layout(BYTES)) };
        const BYTES: usize = 96 << 20;
        let first = touch_block(BYTES, alloc, free);
        assert!(first > 0, "a new 96 MiB block took no page faults");
        // mimalloc's default purge delay is 1 s: a block freed for longer is given back
        // (`MADV_DONTNEED`) at the allocator's next visit, and its pages fault again.
        std::thread::sleep(std::time::Duration::from_millis(1500));
        for _ in 0..4 {
            touch_block(1 << 20, alloc, |p| unsafe {
                TensorAllocator.dealloc(p, layout(1 << 20))
            });
        }
        let again = touch_block(BYTES, alloc, free);
        assert!(
            again * 8 <= first,
            "{again} page faults for a reused block against {first} when it was new"
        );
        // SAFETY: reads an integer from mimalloc's option table.
        let delay =
            unsafe { libmimalloc_sys::mi_option_get(tensor_allocator::MI_OPTION_PURGE_DELAY) };
        assert_eq!(delay, -1, "purging is off");
    }
}

//! Running tensor work on rayon's pool instead of beside it.
//!
//! The flex backend and this crate's kernels split each op across rayon's global pool.
//! Called from a thread outside the pool (a program's main thread), every such op hands
//! its work to the pool through rayon's injector, wakes a sleeping worker, and puts the
//! calling thread to sleep on a latch until the pool is done: two futex waits and wakes,
//! with their context switches, per op. A decoding step of SmolLM2-135M is about 300 ops of
//! tens of microseconds each, so on 2 cores this hand-off was about 30 % of the step in
//! perf (the scheduler's `finish_task_switch`, `_raw_spin_unlock_irqrestore`,
//! `sched_yield`).
//!
//! [`on_pool`] runs a closure on one of the pool's workers (rayon's `scope`). Every op it
//! issues then splits with `join`: the calling worker runs its own half at once and the
//! other worker, still spinning from the last op, steals the rest, with no hand-off to a
//! sleeping thread. Results do not change (every kernel of this crate splits its work into
//! fixed tasks, whatever thread runs them). Measured (`cargo bench --bench lm`, 2 cores):
//! greedy decoding at batch 1 40.1 → 48.7 tokens/s, from the GGUF's blocks 61.1 → 76.9
//! (docs/benchmarks.md).
//!
//! `rlaif_lm::generate::generate`, the `rlaif` command and the examples run on the pool; a
//! program that drives the library crates from its own `main` wraps its work in
//! [`on_pool`] as well. A call from inside the pool runs the closure in place.

/// Runs `work` on a worker of rayon's global pool and returns its result; the calling
/// thread waits. From a thread of the pool, `work` runs in place.
///
/// Worker threads have rayon's default stack size (the platform's default for spawned
/// threads, 2 MiB on Linux), not the main thread's 8 MiB.
///
/// ```
/// let on_worker = rlaif_kernels::on_pool(|| rayon::current_thread_index().is_some());
/// assert!(on_worker);
/// ```
pub fn on_pool<R: Send>(work: impl FnOnce() -> R + Send) -> R {
    rayon::scope(|_| work())
}

#[cfg(test)]
mod tests {
    use super::on_pool;

    #[test]
    fn runs_on_a_worker_and_in_place_from_one() {
        assert_eq!(rayon::current_thread_index(), None);
        let (outer, inner) = on_pool(|| {
            let outer = rayon::current_thread_index();
            (outer, on_pool(rayon::current_thread_index))
        });
        assert!(outer.is_some(), "the closure ran outside the pool");
        assert_eq!(inner, outer, "a nested call moved to another thread");
    }
}

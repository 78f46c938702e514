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
//!
//! [`on_pool_spinning`] goes one step further for a decoding loop: while the closure runs,
//! every other worker polls the pool for work (`rayon::yield_now`) instead of going to sleep
//! when it runs out, as llama.cpp's threads spin between ops. A rayon worker that finds no
//! work for a while sleeps, and on a shared virtual machine a sleeping vCPU can take tens of
//! microseconds or more to run again; a decoding step hands work over about 120 times. The
//! cost is the other cores busy for the duration of the call.

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

/// [`on_pool`], with every other worker of the pool polling for work until `work` returns,
/// instead of sleeping between the ops `work` issues (see the [module docs](self)). Results
/// are those of [`on_pool`]; the other cores are busy while `work` runs.
///
/// The polling workers run any job of the pool they find (that is how they take their half
/// of each op), and return as soon as `work` has returned.
///
/// ```
/// let sum: u64 = rlaif_kernels::on_pool_spinning(|| {
///     use rayon::prelude::*;
///     (0..1000u64).into_par_iter().sum()
/// });
/// assert_eq!(sum, 499_500);
/// ```
pub fn on_pool_spinning<R: Send>(work: impl FnOnce() -> R + Send) -> R {
    use std::sync::atomic::{AtomicBool, Ordering};
    let running = AtomicBool::new(true);
    rayon::scope(|scope| {
        for _ in 1..rayon::current_num_threads() {
            scope.spawn(|_| {
                while running.load(Ordering::Acquire) {
                    if rayon::yield_now() != Some(rayon::Yield::Executed) {
                        std::hint::spin_loop();
                    }
                }
            });
        }
        // stops the polling when `work` returns or unwinds (a panic must reach the caller,
        // not leave the scope waiting for workers that never stop)
        struct Stop<'a>(&'a AtomicBool);
        impl Drop for Stop<'_> {
            fn drop(&mut self) {
                self.0.store(false, Ordering::Release);
            }
        }
        let _stop = Stop(&running);
        work()
    })
}

#[cfg(test)]
mod tests {
    use super::{on_pool, on_pool_spinning};

    #[test]
    fn spinning_workers_take_their_share_and_stop_when_the_work_returns() {
        use rayon::prelude::*;
        use std::collections::HashSet;
        use std::sync::Mutex;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .expect("a pool");
        let threads = Mutex::new(HashSet::new());
        let total: u64 = pool.install(|| {
            on_pool_spinning(|| {
                (0..64usize)
                    .into_par_iter()
                    .with_max_len(1)
                    .map(|i| {
                        threads
                            .lock()
                            .expect("no panic")
                            .insert(rayon::current_thread_index());
                        std::thread::sleep(std::time::Duration::from_millis(2));
                        i as u64
                    })
                    .sum()
            })
        });
        assert_eq!(total, 2016);
        assert!(
            threads.into_inner().expect("no panic").len() > 1,
            "no other worker helped"
        );
        // returned: the polling workers stopped (the pool is free for the next call)
        assert_eq!(pool.install(|| on_pool_spinning(|| 7)), 7);
    }

    #[test]
    fn a_panic_in_the_work_reaches_the_caller_instead_of_hanging() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .expect("a pool");
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            pool.install(|| on_pool_spinning(|| panic!("bad input")))
        }));
        assert!(caught.is_err());
        assert_eq!(pool.install(|| on_pool_spinning(|| 7)), 7);
    }

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

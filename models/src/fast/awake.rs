//! A pass run in rayon's pool with the pool's other threads kept awake while it has work.
//!
//! A pass is some fifty to a hundred parallel steps of 0.1-1 ms on a door controller's few
//! cores. Between two steps rayon lets an idle thread sleep, and the next step waits while
//! the operating system wakes it (a futex, then the scheduler): in `perf`, 5-8% of a
//! ResNet-50 pass went to sleeping and waking. Here each other thread gets a helper that
//! takes work as it appears (`rayon::yield_now`) and spins between, as OpenMP runtimes keep
//! their threads spinning for a while after a parallel region.
//!
//! Helpers are for threads that were idle when the pass began. One taken up later than
//! `START_LIMIT` after the pass began returns at once: its thread was busy with other work
//! (the minutiae beside the network in a fused decision), and a helper taken up while that
//! work waits inside rayon would hold it up, beneath the helper, for the rest of the pass
//! (the service benchmark's fused p99 went from 24 to 30-33 ms that way). A helper returns
//! when the pass ends, or after `IDLE_LIMIT` without work; the second bound means that a
//! helper which found itself under a step of the pass (the step then waiting on it) returns
//! once the pass, blocked on that step, gives it nothing more to do. So helpers never wait
//! on the pass, and nothing waits on a helper for longer than `IDLE_LIMIT` past its work.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How long a helper spins without work before it gives its thread back to rayon (longer
/// than the serial stretches between a pass's steps, which are tens of microseconds).
const IDLE_LIMIT: Duration = Duration::from_micros(300);

/// How late after the pass began a helper may still start (a sleeping thread's wake-up takes
/// tens of microseconds).
const START_LIMIT: Duration = Duration::from_millis(1);

/// Runs `pass` on one of rayon's threads, the pool's others helping while it has work.
pub(super) fn run<R: Send>(pass: impl FnOnce() -> R + Send) -> R {
    let done = AtomicBool::new(false);
    rayon::scope(|scope| {
        // Counted from here, on the pool's thread: a caller outside the pool waits for one to
        // take the scope up first.
        let began = Instant::now();
        for _ in 1..rayon::current_num_threads() {
            let done = &done;
            scope.spawn(move |_| {
                if began.elapsed() <= START_LIMIT {
                    help(done)
                }
            });
        }
        let result = pass();
        done.store(true, Ordering::Release);
        result
    })
}

fn help(done: &AtomicBool) {
    let mut last_work = Instant::now();
    while !done.load(Ordering::Acquire) {
        if rayon::yield_now() == Some(rayon::Yield::Executed) {
            last_work = Instant::now();
        } else if last_work.elapsed() > IDLE_LIMIT {
            return;
        } else {
            std::hint::spin_loop();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use rayon::prelude::*;

    /// Runs `f` on a thread of its own; fails if it has not returned within a minute (a
    /// pass that waited on its helpers, or they on it, would never return).
    fn returns_in_time<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        rx.recv_timeout(Duration::from_secs(60))
            .expect("the pass did not return")
    }

    fn sum_of_squares(n: u64) -> u64 {
        (0..n).into_par_iter().map(|i| i * i).sum()
    }

    #[test]
    fn a_helper_without_work_gives_its_thread_back() {
        // The pass it helps has not ended (and never will): it must return all the same, or a
        // step of the pass that it ran beneath would wait on it for good.
        returns_in_time(|| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(2)
                .build()
                .expect("a thread pool");
            let never_done = std::sync::atomic::AtomicBool::new(false);
            pool.install(|| super::help(&never_done));
        });
    }

    #[test]
    fn a_pass_returns_its_result_in_pools_of_every_size() {
        for threads in [1, 2, 3, 8] {
            let total = returns_in_time(move || {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .expect("a thread pool");
                pool.install(|| {
                    (0..50)
                        .map(|_| super::run(|| sum_of_squares(10_000)))
                        .sum::<u64>()
                })
            });
            assert_eq!(
                total,
                50 * (0..10_000u64).map(|i| i * i).sum::<u64>(),
                "{threads}"
            );
        }
    }

    #[test]
    fn passes_inside_parallel_work_and_beside_each_other_return() {
        // Passes run from inside another parallel loop's items (their threads busy), passes
        // within passes, and passes started by several callers at once.
        let sums = returns_in_time(|| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(3)
                .build()
                .expect("a thread pool");
            std::thread::scope(|callers| {
                let pool = &pool;
                let handles: Vec<_> = (0..3)
                    .map(|_| {
                        callers.spawn(move || {
                            pool.install(|| {
                                (0..12u64)
                                    .into_par_iter()
                                    .map(|i| {
                                        super::run(|| {
                                            sum_of_squares(1_000 + i)
                                                + super::run(|| sum_of_squares(500))
                                        })
                                    })
                                    .sum::<u64>()
                            })
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().expect("a caller"))
                    .collect::<Vec<u64>>()
            })
        });
        let expected: u64 = (0..12u64)
            .map(|i| sum_of_squares(1_000 + i) + sum_of_squares(500))
            .sum();
        assert_eq!(sums, vec![expected; 3]);
    }
}

//! The kernels' thread pool: sized by `PICKAXE_NUM_THREADS`, `set_num_threads` or the
//! number of cores, and rebuilt in a forked child (a fork copies no threads, so the
//! parent's pool would wait forever for workers that do not exist there).

/// Below this many values (row values, Gram values, pair values) a kernel call runs on
/// the calling thread: waking the pool costs more than it saves.
pub(crate) const PARALLEL_MIN_VALUES: usize = 1 << 16;
/// Values per parallel task: big enough to amortise scheduling, small enough to balance.
pub(crate) const TASK_VALUES: usize = 1 << 16;

use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};

use rayon::{ThreadPool, ThreadPoolBuilder};

use crate::error::Error;

struct PoolState {
    threads: usize,
    pool: Option<(u32, Arc<ThreadPool>)>,
}

static STATE: Mutex<Option<PoolState>> = Mutex::new(None);

fn default_threads() -> usize {
    std::env::var("PICKAXE_NUM_THREADS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1))
}

fn with_state<R>(f: impl FnOnce(&mut PoolState) -> R) -> R {
    // A poisoned lock only means another thread panicked while holding it; the state
    // itself (a count and an Arc) is always consistent.
    let mut guard = STATE.lock().unwrap_or_else(|e| e.into_inner());
    let state = guard.get_or_insert_with(|| PoolState { threads: default_threads(), pool: None });
    f(state)
}

/// Number of threads the kernels use.
pub fn num_threads() -> usize {
    with_state(|s| s.threads)
}

/// Bound the kernels' threads; 1 runs everything on the calling thread.
pub fn set_num_threads(n: usize) -> Result<(), Error> {
    if n == 0 {
        return Err(Error::argument("n", "the number of threads must be at least 1; got 0"));
    }
    with_state(|s| {
        if s.threads != n {
            s.threads = n;
            s.pool = None;
        }
    });
    Ok(())
}

/// The pool to run parallel work on, or None when one thread is asked for (or a pool
/// cannot be made, in which case the work runs on the calling thread).
pub(crate) fn pool() -> Option<Arc<ThreadPool>> {
    with_state(|s| {
        if s.threads <= 1 {
            return None;
        }
        let pid = std::process::id();
        if let Some((owner, pool)) = &s.pool {
            if *owner == pid {
                return Some(pool.clone());
            }
            // Forked child: the parent's workers are not here; leak the old handle
            // rather than run its destructor against threads that do not exist.
            if let Some((_, old)) = s.pool.take() {
                std::mem::forget(old);
            }
        }
        let pool = ThreadPoolBuilder::new()
            .num_threads(s.threads)
            .thread_name(|i| format!("pickaxe-{i}"))
            .build()
            .ok()
            .map(Arc::new)?;
        s.pool = Some((pid, pool.clone()));
        Some(pool)
    })
}

/// Runs `job` on the kernels' pool while the calling thread runs `watch`, which receives
/// the channel `job`'s result arrives on (the bindings wait on it and handle Ctrl-C).
/// Returns what `watch` returns, and only once `job` has ended, even when `watch` returns
/// first: `job` may borrow from the caller. A panic in `job` closes the channel without a
/// value and resumes here after `watch` returns.
///
/// The job goes straight to a pool worker, as `install` sends work, so the handoff costs
/// no more than a direct call; with the pool off (one thread) it runs on a new thread.
pub fn run_beside<R, J, W, O>(job: J, watch: W) -> O
where
    R: Send,
    J: FnOnce() -> R + Send,
    W: FnOnce(Receiver<R>) -> O,
{
    let (tx, rx) = mpsc::channel();
    // The receiver is gone only if `watch` itself panicked; the result is not wanted then.
    let job = move || drop(tx.send(job()));
    match pool() {
        // The scope waits for its jobs when `watch` returns (or unwinds) and then
        // resumes a job's panic with its own payload.
        Some(pool) => pool.in_place_scope(|s| {
            s.spawn(move |_| job());
            watch(rx)
        }),
        None => {
            // Through a slot, so that the job can still run here if no thread starts.
            let slot = Mutex::new(Some(job));
            let take = || slot.lock().unwrap_or_else(|e| e.into_inner()).take();
            std::thread::scope(|s| {
                let worker = std::thread::Builder::new().name("pickaxe-call".into()).spawn_scoped(s, move || {
                    if let Some(job) = take() {
                        job()
                    }
                });
                match worker {
                    Ok(worker) => {
                        let out = watch(rx);
                        if let Err(payload) = worker.join() {
                            std::panic::resume_unwind(payload);
                        }
                        out
                    }
                    Err(_) => {
                        if let Some(job) = take() {
                            job()
                        }
                        watch(rx)
                    }
                }
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    /// The result arrives on the channel; `run_beside` returns only after the job, even
    /// when `watch` returns at once; a job's panic resumes in the caller with its payload.
    /// On the pool (2 threads) and on a new thread (1).
    #[test]
    fn run_beside_waits_for_the_job_and_passes_panics_on() {
        for threads in [2, 1] {
            set_num_threads(threads).unwrap();
            let data = [1u64, 2, 3];
            let got = run_beside(|| data.iter().sum::<u64>(), |rx| rx.recv().unwrap());
            assert_eq!(got, 6);
            let done = AtomicBool::new(false);
            run_beside(
                || {
                    std::thread::sleep(Duration::from_millis(30));
                    done.store(true, Ordering::SeqCst);
                },
                |_rx| (),
            );
            assert!(done.load(Ordering::SeqCst), "threads={threads}");
            let caught =
                std::panic::catch_unwind(|| run_beside(|| -> u8 { panic!("kernel bug") }, |rx| rx.recv().is_err()))
                    .unwrap_err();
            assert_eq!(caught.downcast_ref::<&str>(), Some(&"kernel bug"));
        }
    }
}

//! The kernels' thread pool: sized by `PICKAXE_NUM_THREADS`, `set_num_threads` or the
//! number of cores, and rebuilt in a forked child (a fork copies no threads, so the
//! parent's pool would wait forever for workers that do not exist there).

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
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        })
}

fn with_state<R>(f: impl FnOnce(&mut PoolState) -> R) -> R {
    // A poisoned lock only means another thread panicked while holding it; the state
    // itself (a count and an Arc) is always consistent.
    let mut guard = STATE.lock().unwrap_or_else(|e| e.into_inner());
    let state = guard.get_or_insert_with(|| PoolState {
        threads: default_threads(),
        pool: None,
    });
    f(state)
}

/// Number of threads the kernels use.
pub fn num_threads() -> usize {
    with_state(|s| s.threads)
}

/// Bound the kernels' threads; 1 runs everything on the calling thread.
pub fn set_num_threads(n: usize) -> Result<(), Error> {
    if n == 0 {
        return Err(Error::argument(
            "n",
            "the number of threads must be at least 1; got 0",
        ));
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

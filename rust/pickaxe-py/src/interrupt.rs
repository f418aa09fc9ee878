//! Ctrl-C during a long kernel. Python only runs its signal handlers (the one that raises
//! `KeyboardInterrupt`) on the main thread, between bytecodes or when C code calls
//! `PyErr_CheckSignals`, so a kernel that holds the calling thread for minutes would hold
//! the interrupt back as long. Long kernels therefore run on a helper thread while the
//! calling thread, GIL released, waits for them and every `POLL` re-attaches and lets
//! Python handle pending signals. When a handler raises, the kernel's `Cancel` is set, the
//! kernel stops at its next chunk (pickaxe-core reads the flag between chunks) and the
//! handler's exception is returned once the kernel has stopped: its threads borrow the
//! caller's arrays, so they may not outlive the call.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Mutex;
use std::time::Duration;

use pickaxe_core::{Cancel, Error};
use pyo3::prelude::*;

use crate::error::to_pyerr;

/// Work (about how many values a kernel reads) below which it runs on the calling thread:
/// it ends within tens of milliseconds, and starting a helper thread (tens of µs) would be
/// a visible share of a small call.
pub const MIN_WORK: usize = 1 << 24;

/// How often the waiting thread lets Python handle signals.
const POLL: Duration = Duration::from_millis(50);

enum Outcome<R> {
    Done(Result<R, Error>),
    /// A signal handler raised (KeyboardInterrupt, or whatever a user's handler raises).
    Signal(PyErr),
    /// The kernel panicked: its result channel closed without a value.
    Panicked,
}

/// Runs `kernel` with the GIL released; above `MIN_WORK`, on a helper thread while this
/// one handles signals (see the module). `work` estimates the values the kernel reads.
pub fn run<R, F>(py: Python<'_>, work: usize, kernel: F) -> PyResult<R>
where
    R: Send,
    F: FnOnce(&Cancel) -> Result<R, Error> + Send,
{
    let cancel = Cancel::new();
    if work < MIN_WORK {
        return py.detach(|| kernel(&cancel)).map_err(to_pyerr);
    }
    // The kernel goes through a slot so that it can still run here if no thread starts.
    let slot = Mutex::new(Some(kernel));
    let take = || slot.lock().unwrap_or_else(|e| e.into_inner()).take();
    let cancel = &cancel;
    std::thread::scope(|s| {
        let (tx, rx) = mpsc::channel();
        let worker = std::thread::Builder::new()
            .name("pickaxe-call".into())
            .spawn_scoped(s, move || {
                if let Some(k) = take() {
                    // The receiver is gone only if the waiting thread itself panicked.
                    let _ = tx.send(k(cancel));
                }
            });
        let worker = match worker {
            Ok(w) => w,
            // No thread to be had: run here, as small calls do (uninterruptible).
            Err(_) => {
                let k = take().expect("the kernel runs once");
                return py.detach(|| k(cancel)).map_err(to_pyerr);
            }
        };
        let outcome = py.detach(move || loop {
            match rx.recv_timeout(POLL) {
                Ok(r) => return Outcome::Done(r),
                Err(RecvTimeoutError::Disconnected) => return Outcome::Panicked,
                Err(RecvTimeoutError::Timeout) => {
                    if let Err(e) = Python::attach(|py| py.check_signals()) {
                        cancel.cancel();
                        // Wait (GIL released) until the kernel has stopped; its result,
                        // if it finished meanwhile, is dropped: the call was interrupted.
                        let _ = rx.recv();
                        return Outcome::Signal(e);
                    }
                }
            }
        });
        match outcome {
            Outcome::Done(r) => r.map_err(to_pyerr),
            Outcome::Signal(e) => Err(e),
            // The kernel's own panic, unchanged, as if it had run on this thread.
            Outcome::Panicked => match worker.join() {
                Err(payload) => std::panic::resume_unwind(payload),
                Ok(()) => unreachable!("the kernel sends its result before it returns"),
            },
        }
    })
}

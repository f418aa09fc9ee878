//! Ctrl-C during a long kernel. Python only runs its signal handlers (the one that raises
//! `KeyboardInterrupt`) on the main thread, between bytecodes or when C code calls
//! `PyErr_CheckSignals`, so a kernel that holds the calling thread for minutes would hold
//! the interrupt back as long. Long kernels therefore run on the kernels' pool
//! (`threads::run_beside`) while the calling thread, GIL released, waits for them and every
//! `POLL` re-attaches and lets Python handle pending signals. When a handler raises, the
//! kernel's `Cancel` is set, the kernel stops at its next chunk (pickaxe-core reads the
//! flag between chunks) and the handler's exception is returned once the kernel has
//! stopped: it borrows the caller's arrays, so it may not outlive the call.

use std::sync::mpsc::RecvTimeoutError;
use std::time::Duration;

use pickaxe_core::{Cancel, Error};
use pyo3::prelude::*;

use crate::error::to_pyerr;

/// Work (about how many values a kernel reads) below which it runs directly on the
/// calling thread: such a call ends within tens of milliseconds, and the handoff to the
/// pool and back (tens of µs) would be a visible share of a small call.
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

/// Runs `kernel` with the GIL released; above `MIN_WORK`, on the kernels' pool while this
/// thread handles signals (see the module). `work` estimates the values the kernel reads.
pub fn run<R, F>(py: Python<'_>, work: usize, kernel: F) -> PyResult<R>
where
    R: Send,
    F: FnOnce(&Cancel) -> Result<R, Error> + Send,
{
    let cancel = Cancel::new();
    if work < MIN_WORK {
        return py.detach(|| kernel(&cancel)).map_err(to_pyerr);
    }
    let cancel = &cancel;
    let outcome = pickaxe_core::threads::run_beside(
        || kernel(cancel),
        |rx| {
            py.detach(move || loop {
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
            })
        },
    );
    match outcome {
        Outcome::Done(r) => r.map_err(to_pyerr),
        Outcome::Signal(e) => Err(e),
        // run_beside resumes the kernel's panic before returning this.
        Outcome::Panicked => unreachable!("a kernel that sends no result has panicked"),
    }
}

//! The one place where kernel errors become Python exceptions.

use numpy::BorrowError;
use pickaxe_core::Error;
use pyo3::exceptions::{PyKeyboardInterrupt, PyTypeError, PyValueError};
use pyo3::PyErr;

/// Kernel errors are all about values (invalid rows, shapes, arguments out of range):
/// `ValueError`, with the kernel's message, which names the field, row and fault; a
/// cancelled kernel is `KeyboardInterrupt` (`interrupt.rs` cancels one only on Ctrl-C and
/// returns the signal handler's own exception, so this arm is a fallback).
pub fn to_pyerr(e: Error) -> PyErr {
    match e {
        Error::Interrupted => PyKeyboardInterrupt::new_err(e.to_string()),
        Error::InvalidRow { .. }
        | Error::InvalidPixel { .. }
        | Error::InvalidBox { .. }
        | Error::InvalidDetectionBox { .. }
        | Error::Shape(_) | Error::Argument { .. } => {
            PyValueError::new_err(e.to_string())
        }
    }
}

/// An array the bindings cannot read as float32 or float64 (the Python layer converts
/// every other real dtype first, so this means a caller bypassed it).
pub fn dtype_error(what: &str, ndim: usize) -> PyErr {
    PyTypeError::new_err(format!(
        "{what} must be a {ndim}-D numpy array of float32 or float64"
    ))
}

/// An array that must have one given dtype (`why` says why, e.g. "the dtype of gram").
pub fn dtype_is_error(what: &str, ndim: usize, dtype: &str, why: &str) -> PyErr {
    let why = if why.is_empty() {
        String::new()
    } else {
        format!(" ({why})")
    };
    PyTypeError::new_err(format!(
        "{what} must be a {ndim}-D numpy array of {dtype}{why}"
    ))
}

/// An array numpy's borrow tracking refuses: read-only where it is written to, or
/// overlapping another argument that is written to.
pub fn borrow_error(what: &str, e: BorrowError) -> PyErr {
    PyValueError::new_err(format!(
        "{what}: {e}; pass writeable arrays that share no memory with the other arguments"
    ))
}

//! The one place where kernel errors become Python exceptions.

use pickaxe_core::Error;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::PyErr;

/// Kernel errors are all about values (invalid rows, shapes, arguments out of range):
/// `ValueError`, with the kernel's message, which names the field, row and fault.
pub fn to_pyerr(e: Error) -> PyErr {
    match e {
        Error::InvalidRow { .. } | Error::Shape(_) | Error::Argument { .. } => {
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

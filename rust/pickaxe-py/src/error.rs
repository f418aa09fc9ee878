//! The one place where kernel errors become Python exceptions.
//!
//! Bad data (`Error::InvalidRow`, `InvalidPixel`, `InvalidBox`, `InvalidDetectionBox`)
//! becomes `pickaxe.errors.InvalidInputError` with its location as attributes (`field`,
//! `row`, `member`, `image`, `pixel`, `box`, `box_in_image`) and the fault as `reason`;
//! the Python class words the message from them, so a miner re-bases a batch's row to
//! the pool's by its attributes, never by parsing text (pydantic-core's way).

use numpy::BorrowError;
use pickaxe_core::{fault_message, Error, Field};
use pyo3::exceptions::{PyImportError, PyKeyboardInterrupt, PyMemoryError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyType};
use pyo3::PyErr;

/// Kernel errors are all about values: bad data is `InvalidInputError` (a `ValueError`);
/// shapes and arguments out of range are `ValueError`; a cancelled kernel is
/// `KeyboardInterrupt` (`interrupt.rs` cancels one only on Ctrl-C and returns the signal
/// handler's own exception, so that arm is a fallback).
pub fn to_pyerr(e: Error) -> PyErr {
    match e {
        Error::Interrupted => PyKeyboardInterrupt::new_err(e.to_string()),
        Error::InvalidRow { field, row, member, fault } => Python::attach(|py| {
            invalid_input(py, "row", field.name(), &fault_message(&fault, field), |kw| {
                kw.set_item("row", row)?;
                member_items(kw, field, member)
            })
        }),
        Error::InvalidPixel { field, image, y, x, member, fault } => Python::attach(|py| {
            invalid_input(py, "pixel", field.name(), &fault_message(&fault, field), |kw| {
                kw.set_item("row", image)?;
                kw.set_item("image", image)?;
                kw.set_item("pixel", (y, x))?;
                member_items(kw, field, member)
            })
        }),
        Error::InvalidBox { field, row, image, index, member, fault } => Python::attach(|py| {
            invalid_input(py, "box", field.name(), &fault_message(&fault, field), |kw| {
                kw.set_item("row", image)?;
                kw.set_item("image", image)?;
                kw.set_item("box", row)?;
                kw.set_item("box_in_image", index)?;
                member_items(kw, field, member)
            })
        }),
        Error::InvalidDetectionBox { field, row, image, member, index, fault } => Python::attach(|py| {
            invalid_input(py, "box_array", field, &fault, |kw| {
                kw.set_item("row", image)?;
                kw.set_item("image", image)?;
                kw.set_item("box", row)?;
                kw.set_item("box_in_image", index)?;
                kw.set_item("member", member)
            })
        }),
        Error::OutOfMemory { .. } => PyMemoryError::new_err(e.to_string()),
        Error::Shape(_) | Error::Argument { .. } => PyValueError::new_err(e.to_string()),
    }
}

/// A setting read at import (`PICKAXE_SIMD`) that the core refuses: the import fails.
pub fn import_error(e: Error) -> PyErr {
    PyImportError::new_err(e.to_string())
}

fn member_items(kw: &Bound<'_, PyDict>, field: Field, member: Option<usize>) -> PyResult<()> {
    kw.set_item("member", member)?;
    kw.set_item("member_word", field.member_word())
}

/// `pickaxe.errors.InvalidInputError(kind=..., field=..., reason=..., **located)`: the
/// class is looked up once per interpreter.
fn invalid_input(
    py: Python<'_>, kind: &str, field: &str, reason: &str, located: impl FnOnce(&Bound<'_, PyDict>) -> PyResult<()>,
) -> PyErr {
    static CLASS: PyOnceLock<Py<PyType>> = PyOnceLock::new();
    let made = (|| -> PyResult<Bound<'_, PyAny>> {
        let cls = CLASS.import(py, "pickaxe.errors", "InvalidInputError")?;
        let kw = PyDict::new(py);
        kw.set_item("kind", kind)?;
        kw.set_item("field", field)?;
        kw.set_item("reason", reason)?;
        located(&kw)?;
        cls.call((), Some(&kw))
    })();
    match made {
        Ok(err) => PyErr::from_value(err),
        Err(e) => e, // the error module itself failed: say so rather than hide it
    }
}

/// An array the bindings cannot read as float32 or float64 (the Python layer converts
/// every other real dtype first, so this means a caller bypassed it).
pub fn dtype_error(what: &str, ndim: usize) -> PyErr {
    PyTypeError::new_err(format!("{what} must be a {ndim}-D numpy array of float32 or float64"))
}

/// An array that must have one given dtype (`why` says why, e.g. "the dtype of gram").
pub fn dtype_is_error(what: &str, ndim: usize, dtype: &str, why: &str) -> PyErr {
    let why = if why.is_empty() { String::new() } else { format!(" ({why})") };
    PyTypeError::new_err(format!("{what} must be a {ndim}-D numpy array of {dtype}{why}"))
}

/// An array numpy's borrow tracking refuses: read-only where it is written to, or
/// overlapping another argument that is written to.
pub fn borrow_error(what: &str, e: BorrowError) -> PyErr {
    PyValueError::new_err(format!("{what}: {e}; pass writeable arrays that share no memory with the other arguments"))
}

//! Binding of `pickaxe.select`: the positions of the k highest scores.

use ndarray::Ix1;
use numpy::{IntoPyArray, PyArray1};
use pyo3::prelude::*;

use crate::convert::{readonly, with_float};
use crate::interrupt;

/// Positions of the k highest scores, highest first (ties: ascending position; NaN never).
#[pyfunction]
fn top_k<'py>(
    py: Python<'py>,
    scores: &Bound<'py, PyAny>,
    k: usize,
) -> PyResult<Bound<'py, PyArray1<i64>>> {
    with_float!(scores, Ix1, "scores", |T| {
        let a = readonly::<T, Ix1>(scores, "scores", "")?;
        let v = a.as_array();
        let top = interrupt::run(py, v.len(), |cancel| pickaxe_core::top_k(v, k, cancel))?;
        let top: Vec<i64> = top.into_iter().map(|i| i as i64).collect();
        Ok(top.into_pyarray(py))
    })
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(top_k, m)?)
}

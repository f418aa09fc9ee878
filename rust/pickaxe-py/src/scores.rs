//! Bindings of `pickaxe.scores`: per-row scores of a (N, C) field or of the (N,) field
//! `confidence`, and committee / dropout scores of a (N, M, C) stack.

use ndarray::{Ix1, Ix2, Ix3};
use pickaxe_core::{Field, NanPolicy, RowScore, StackScore};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::convert::{add_functions, parse, run_on, with_float, ScoreKeywords};

/// Per-row score of a (N, C) field, or least_confidence of the (N,) `confidence` field.
#[pyfunction]
#[pyo3(signature = (field, score, x, nan_policy="raise", **options))]
fn score_rows<'py>(
    py: Python<'py>, field: &str, score: &str, x: &Bound<'py, PyAny>, nan_policy: &str,
    options: Option<&Bound<'py, PyDict>>,
) -> PyResult<Bound<'py, PyAny>> {
    let field: Field = parse(field)?;
    let policy: NanPolicy = parse(nan_policy)?;
    let options = ScoreKeywords::from_kwargs("score_rows", options)?.options;
    let score = RowScore::from_name(score, options).map_err(crate::error::to_pyerr)?;
    let what = field.name();
    if field == Field::Confidence {
        return with_float!(x, Ix1, what, |T| run_on::<T, Ix1, _>(py, x, what, |v, cancel| {
            pickaxe_core::score_confidence(&score, v, policy, cancel)
        }));
    }
    with_float!(x, Ix2, what, |T| run_on::<T, Ix2, _>(py, x, what, |v, cancel| {
        pickaxe_core::score_rows(field, &score, v, policy, cancel)
    }))
}

/// Committee or dropout score of a (N, M, C) field.
#[pyfunction]
#[pyo3(signature = (field, score, x, logits=false, nan_policy="raise", reduce="mean"))]
fn score_stack<'py>(
    py: Python<'py>, field: &str, score: &str, x: &Bound<'py, PyAny>, logits: bool, nan_policy: &str, reduce: &str,
) -> PyResult<Bound<'py, PyAny>> {
    let field: Field = parse(field)?;
    let policy: NanPolicy = parse(nan_policy)?;
    let score = StackScore::from_name(score, reduce).map_err(crate::error::to_pyerr)?;
    let what = field.name();
    with_float!(x, Ix3, what, |T| run_on::<T, Ix3, _>(py, x, what, |v, cancel| {
        pickaxe_core::score_stack(field, score, v, logits, policy, cancel)
    }))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    add_functions!(m, score_rows, score_stack)
}

//! Binding of `pickaxe.segmentation`: per-pixel scores reduced per image, or the maps.

use ndarray::IxDyn;
use numpy::PyReadonlyArray3;
use pickaxe_core::Reduce;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::convert::{add_functions, run_on, with_float, ScoreKeywords};
use crate::error::to_pyerr;

/// Segmentation: per-pixel score reduced per image ("mean", "max", "top" with `q`) to
/// (N,), or the (N, H, W) maps ("none").
#[pyfunction]
#[pyo3(signature = (field, score, x, class_axis, reduce, q=1.0, mask=None, nan_policy="raise", **options))]
#[allow(clippy::too_many_arguments)]
fn score_pixels<'py>(
    py: Python<'py>, field: &str, score: &str, x: &Bound<'py, PyAny>, class_axis: isize, reduce: &str, q: f64,
    mask: Option<PyReadonlyArray3<'py, bool>>, nan_policy: &str, options: Option<&Bound<'py, PyDict>>,
) -> PyResult<Bound<'py, PyAny>> {
    let (field, policy, score) =
        ScoreKeywords::from_kwargs("score_pixels", options)?.pixel_score(field, nan_policy, score)?;
    let reduce = Reduce::from_name(reduce, q).map_err(to_pyerr)?;
    let mask = mask.as_ref().map(|m| m.as_array());
    let what = field.name();
    with_float!(x, IxDyn, what, 4, |T| run_on::<T, IxDyn, _>(py, x, what, |v, cancel| {
        pickaxe_core::score_pixels(field, &score, v, class_axis, reduce, mask, policy, cancel)
    }))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    add_functions!(m, score_pixels)
}

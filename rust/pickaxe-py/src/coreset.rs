//! Binding of k-center greedy, the core-set selection of `pickaxe.miners` (`_exact`).

use ndarray::{Array1, Ix1, Ix2};
use numpy::IntoPyArray;
use pickaxe_core::Metric;
use pyo3::prelude::*;
use pyo3::types::PyTuple;

use crate::convert::{add_functions, parse, readonly, with_float};
use crate::interrupt;

/// k-center greedy: (picks int64 (s,), each pick's distance to its nearest center when
/// picked (s,)). `min_dist` (N,) is copied in: +inf where no center covers a row yet.
#[pyfunction]
fn kcenter_greedy<'py>(
    py: Python<'py>, points: &Bound<'py, PyAny>, size: usize, min_dist: &Bound<'py, PyAny>, metric: &str,
) -> PyResult<Bound<'py, PyTuple>> {
    let metric: Metric = parse(metric)?;
    with_float!(points, Ix2, "points", |T| {
        let p = readonly::<T, Ix2>(points, "points", "")?;
        let md = readonly::<T, Ix1>(min_dist, "min_dist", "the dtype of points")?;
        let md: Array1<T> = md.as_array().to_owned();
        let p = p.as_array();
        // One pass over the points per pick.
        let work = p.len().saturating_mul(size);
        let (picks, dists) =
            interrupt::run(py, work, |cancel| pickaxe_core::kcenter_greedy(p, size, md, metric, cancel))?;
        let picks: Vec<i64> = picks.into_iter().map(|i| i as i64).collect();
        PyTuple::new(py, [picks.into_pyarray(py).into_any(), dists.into_pyarray(py).into_any()])
    })
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    add_functions!(m, kcenter_greedy)
}

//! Bindings of exact nearest-neighbour search (`pickaxe.index`, `pickaxe._exact`): the
//! merge of a Gram block into the running k nearest, exact distances of given pairs, and
//! the direct search of every pair for a k near the reference's size.

use ndarray::{Ix1, Ix2};
use numpy::IntoPyArray;
use pickaxe_core::knn::Aggregate;
use pickaxe_core::Metric;
use pyo3::prelude::*;
use pyo3::types::PyTuple;

use crate::convert::{add_functions, parse, readonly, readwrite, with_float};
use crate::interrupt;

/// Merges a Gram block g = Q_b · R_cᵀ (b, mc) into the running k nearest of its queries:
/// `ids` (b, k) int64 and `dists` (b, k) are updated in place.
#[pyfunction]
#[allow(clippy::too_many_arguments)]
fn knn_update<'py>(
    py: Python<'py>, gram: &Bound<'py, PyAny>, q_norms: &Bound<'py, PyAny>, r_norms: &Bound<'py, PyAny>,
    id_offset: usize, metric: &str, ids: &Bound<'py, PyAny>, dists: &Bound<'py, PyAny>,
) -> PyResult<()> {
    let metric: Metric = parse(metric)?;
    with_float!(gram, Ix2, "gram", |T| {
        let why = "the dtype of gram";
        let g = readonly::<T, Ix2>(gram, "gram", "")?;
        let qn = readonly::<T, Ix1>(q_norms, "q_norms", why)?;
        let rn = readonly::<T, Ix1>(r_norms, "r_norms", why)?;
        let mut ids = readwrite::<i64>(ids, "ids", "")?;
        let mut dists = readwrite::<T>(dists, "dists", why)?;
        let (g, qn, rn) = (g.as_array(), qn.as_array(), rn.as_array());
        let (iv, dv) = (ids.as_array_mut(), dists.as_array_mut());
        interrupt::run(py, g.len(), |cancel| pickaxe_core::knn_update(g, qn, rn, id_offset, metric, iv, dv, cancel))
    })
}

/// Exact distances of the pairs (query i, reference ids[i, j]), each row re-sorted by
/// (distance, id): returns (ids, distances), both (n, k).
#[pyfunction]
fn pair_distances<'py>(
    py: Python<'py>, queries: &Bound<'py, PyAny>, reference: &Bound<'py, PyAny>, ids: &Bound<'py, PyAny>, metric: &str,
) -> PyResult<Bound<'py, PyTuple>> {
    let metric: Metric = parse(metric)?;
    with_float!(queries, Ix2, "queries", |T| {
        let q = readonly::<T, Ix2>(queries, "queries", "")?;
        let r = readonly::<T, Ix2>(reference, "reference", "the dtype of queries")?;
        let ids = readonly::<i64, Ix2>(ids, "ids", "")?;
        let (q, r, i) = (q.as_array(), r.as_array(), ids.as_array());
        // Each pair reads a query row and a reference row.
        let work = i.len().saturating_mul(2 * q.ncols());
        let (ids, d) = interrupt::run(py, work, |cancel| pickaxe_core::pair_distances(q, r, i, metric, cancel))?;
        PyTuple::new(py, [ids.into_pyarray(py).into_any(), d.into_pyarray(py).into_any()])
    })
}

/// The k nearest reference rows of every query from the direct distance of every pair
/// (as `pair_distances` computes them), each row sorted by (distance, id): returns
/// (ids, distances), both (n, k), k <= the reference's rows.
#[pyfunction]
fn knn_direct<'py>(
    py: Python<'py>, queries: &Bound<'py, PyAny>, reference: &Bound<'py, PyAny>, k: usize, metric: &str,
) -> PyResult<Bound<'py, PyTuple>> {
    let metric: Metric = parse(metric)?;
    with_float!(queries, Ix2, "queries", |T| {
        let q = readonly::<T, Ix2>(queries, "queries", "")?;
        let r = readonly::<T, Ix2>(reference, "reference", "the dtype of queries")?;
        let (q, r) = (q.as_array(), r.as_array());
        // Every pair reads a reference row.
        let work = q.nrows().saturating_mul(r.len());
        let (ids, d) = interrupt::run(py, work, |cancel| pickaxe_core::knn::knn_direct(q, r, k, metric, cancel))?;
        PyTuple::new(py, [ids.into_pyarray(py).into_any(), d.into_pyarray(py).into_any()])
    })
}

/// One score per query from its k nearest reference rows by the direct distance of every
/// pair: "mean" (summed in f64) or "kth"; 1 <= k <= the reference's rows. Returns (n,).
#[pyfunction]
fn knn_direct_scores<'py>(
    py: Python<'py>, queries: &Bound<'py, PyAny>, reference: &Bound<'py, PyAny>, k: usize, metric: &str,
    aggregate: &str,
) -> PyResult<Bound<'py, PyAny>> {
    let metric: Metric = parse(metric)?;
    let aggregate: Aggregate = parse(aggregate)?;
    with_float!(queries, Ix2, "queries", |T| {
        let q = readonly::<T, Ix2>(queries, "queries", "")?;
        let r = readonly::<T, Ix2>(reference, "reference", "the dtype of queries")?;
        let (q, r) = (q.as_array(), r.as_array());
        let work = q.nrows().saturating_mul(r.len());
        let s = interrupt::run(py, work, |cancel| {
            pickaxe_core::knn::knn_direct_scores(q, r, k, metric, aggregate, cancel)
        })?;
        Ok(s.into_pyarray(py).into_any())
    })
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    add_functions!(m, knn_update, knn_direct, knn_direct_scores, pair_distances)
}

//! Binding of the search of an hnswlib graph in its own layout (`pickaxe.index`'s graph):
//! the level-0 block, the upper-level lists and the layout numbers, read in place.

use ndarray::{Ix1, Ix2};
use numpy::IntoPyArray;
use pickaxe_core::hnsw::{search, Graph};
use pickaxe_core::Metric;
use pyo3::prelude::*;
use pyo3::types::PyTuple;

use crate::convert::{add_functions, parse, readonly};
use crate::interrupt;

/// The k nearest graph elements (labels, distances) of each float32 query row, as
/// hnswlib's knn_query finds them with search ef max(ef, k): both (n, k), nearest first;
/// rows short of k neighbours end in (-1, inf). `layout` is (offset_data, label_offset,
/// dim, max_m0, max_m, entry point, max level), offsets in 32-bit words.
#[pyfunction]
#[allow(clippy::too_many_arguments)]
fn graph_search<'py>(
    py: Python<'py>, level0: &Bound<'py, PyAny>, upper: &Bound<'py, PyAny>, upper_start: &Bound<'py, PyAny>,
    levels: &Bound<'py, PyAny>, layout: (usize, usize, usize, usize, usize, usize, usize), metric: &str,
    queries: &Bound<'py, PyAny>, k: usize, ef: usize, threads: usize,
) -> PyResult<Bound<'py, PyTuple>> {
    let metric: Metric = parse(metric)?;
    let (offset_data, label_offset, dim, max_m0, max_m, entry, max_level) = layout;
    let level0 = readonly::<u32, Ix2>(level0, "level0", "")?;
    let upper = readonly::<u32, Ix1>(upper, "upper", "")?;
    let upper_start = readonly::<u64, Ix1>(upper_start, "upper_start", "")?;
    let levels = readonly::<u32, Ix1>(levels, "levels", "")?;
    let q = readonly::<f32, Ix2>(queries, "queries", "")?;
    let graph = Graph {
        level0: level0.as_array(),
        offset_data,
        label_offset,
        dim,
        max_m0,
        max_m,
        upper: upper.as_array(),
        upper_start: upper_start.as_array(),
        levels: levels.as_array(),
        entry,
        max_level,
        metric,
    };
    let q = q.as_array();
    // A query reads about ef * max_m0 / 2 vectors.
    let work = q.nrows().saturating_mul(ef.max(k)).saturating_mul(dim).saturating_mul(max_m0 / 2);
    let (ids, d) = interrupt::run(py, work, |cancel| search(&graph, q, k, ef, threads, cancel))?;
    PyTuple::new(py, [ids.into_pyarray(py).into_any(), d.into_pyarray(py).into_any()])
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    add_functions!(m, graph_search)
}

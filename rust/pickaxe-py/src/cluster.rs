//! Bindings of the clustering kernels (`pickaxe_core::{kmeans, badge, typicality}`): numpy
//! arrays in (float32 or float64, C-contiguous: the kernels read every row many times, so
//! the Python layer makes one contiguous copy rather than the kernels read strides), the GIL
//! released and Ctrl-C honoured (`interrupt::run`), errors mapped by `error::to_pyerr`.

use numpy::{
    Element, IntoPyArray, PyArray1, PyArray2, PyArrayMethods, PyReadonlyArray1, PyReadonlyArray2,
    PyUntypedArrayMethods,
};
use pickaxe_core::kmeans::{KMeansOptions, Scalar};
use pickaxe_core::Cancel;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyTuple;

use crate::interrupt;

/// `x` as a C-contiguous 2-D array of `T`, or None when its dtype is not `T`.
fn array2<'py, T: Element>(x: &Bound<'py, PyAny>, what: &str) -> PyResult<Option<PyReadonlyArray2<'py, T>>> {
    let Ok(a) = x.cast::<PyArray2<T>>() else { return Ok(None) };
    if !a.is_c_contiguous() {
        return Err(PyValueError::new_err(format!(
            "{what} must be C-contiguous (np.ascontiguousarray); got a strided array"
        )));
    }
    let a = a.try_readonly().map_err(|e| crate::error::borrow_error(what, e))?;
    Ok(Some(a))
}

fn float_error(what: &str) -> PyErr {
    PyTypeError::new_err(format!("{what} must be a 2-D C-contiguous numpy array of float32 or float64"))
}

fn kmeans_of<'py, T: Scalar + Element>(
    py: Python<'py>,
    x: PyReadonlyArray2<'py, T>,
    opts: KMeansOptions,
) -> PyResult<Bound<'py, PyTuple>> {
    let v = x.as_array();
    let work = v.len().saturating_mul(opts.clusters);
    let r = interrupt::run(py, work, |cancel: &Cancel| pickaxe_core::kmeans::kmeans(v, &opts, cancel))?;
    (
        r.labels.into_pyarray(py),
        r.centers.into_pyarray(py),
        r.inertia,
        r.iterations,
        r.converged,
    )
        .into_pyobject(py)
}

/// k-means of the rows of `x` (N, D): `(labels (N,) int64, centers (k, D) x's dtype,
/// inertia, iterations, converged)`.
#[pyfunction]
#[pyo3(signature = (x, n_clusters, *, seed=0, max_iter=100, tol=1e-4, init_rows=None, fit_rows=None, local_trials=None, threads=None))]
#[allow(clippy::too_many_arguments)]
fn kmeans<'py>(
    py: Python<'py>,
    x: &Bound<'py, PyAny>,
    n_clusters: usize,
    seed: u64,
    max_iter: usize,
    tol: f64,
    init_rows: Option<usize>,
    fit_rows: Option<usize>,
    local_trials: Option<usize>,
    threads: Option<usize>,
) -> PyResult<Bound<'py, PyTuple>> {
    let opts = KMeansOptions {
        clusters: n_clusters,
        max_iter,
        tol,
        seed,
        init_rows,
        fit_rows,
        local_trials,
        threads,
    };
    if let Some(a) = array2::<f32>(x, "embeddings")? {
        kmeans_of(py, a, opts)
    } else if let Some(a) = array2::<f64>(x, "embeddings")? {
        kmeans_of(py, a, opts)
    } else {
        Err(float_error("embeddings"))
    }
}

fn badge_of<'py, T: Scalar + Element>(
    py: Python<'py>,
    p: PyReadonlyArray2<'py, T>,
    h: &Bound<'py, PyAny>,
    k: usize,
    seed: u64,
    threads: Option<usize>,
) -> PyResult<Bound<'py, PyTuple>> {
    let h = array2::<T>(h, "embeddings")?.ok_or_else(|| {
        PyTypeError::new_err(format!(
            "embeddings must be a 2-D C-contiguous numpy array of {} (the dtype of probabilities)",
            numpy::dtype::<T>(py)
        ))
    })?;
    let (pv, hv) = (p.as_array(), h.as_array());
    let work = (pv.len() + hv.len()).saturating_mul(k);
    let (picks, d2) = interrupt::run(py, work, |cancel: &Cancel| {
        pickaxe_core::badge::badge_seeds(pv, hv, k, seed, threads, cancel)
    })?;
    let picks: Vec<i64> = picks.into_iter().map(|i| i as i64).collect();
    (picks.into_pyarray(py), d2.into_pyarray(py)).into_pyobject(py)
}

/// BADGE's k-means++ seeding over factorised gradient embeddings: `(picks (k,) int64,
/// d2 (k,) float64)`.
#[pyfunction]
#[pyo3(signature = (probabilities, embeddings, k, *, seed=0, threads=None))]
fn badge_seeds<'py>(
    py: Python<'py>,
    probabilities: &Bound<'py, PyAny>,
    embeddings: &Bound<'py, PyAny>,
    k: usize,
    seed: u64,
    threads: Option<usize>,
) -> PyResult<Bound<'py, PyTuple>> {
    if let Some(p) = array2::<f32>(probabilities, "probabilities")? {
        badge_of(py, p, embeddings, k, seed, threads)
    } else if let Some(p) = array2::<f64>(probabilities, "probabilities")? {
        badge_of(py, p, embeddings, k, seed, threads)
    } else {
        Err(float_error("probabilities"))
    }
}

fn typicality_of<'py, T: Scalar + Element>(
    py: Python<'py>,
    x: PyReadonlyArray2<'py, T>,
    labels: PyReadonlyArray1<'py, i64>,
    k: usize,
    clusters: Option<PyReadonlyArray1<'py, i64>>,
    threads: Option<usize>,
) -> PyResult<Bound<'py, PyArray1<f64>>> {
    let (xv, lv) = (x.as_array(), labels.as_array());
    let wanted: Option<Vec<i64>> = clusters.map(|c| c.as_array().to_vec());
    let work = xv.len().saturating_mul(64);
    let out = interrupt::run(py, work, |cancel: &Cancel| {
        pickaxe_core::typicality::typicality(xv, lv, k, wanted.as_deref(), threads, cancel)
    })?;
    Ok(out.into_pyarray(py))
}

/// Typicality of each row within its cluster (NaN for rows not computed): (N,) float64.
#[pyfunction]
#[pyo3(signature = (x, labels, k, *, clusters=None, threads=None))]
fn typicality<'py>(
    py: Python<'py>,
    x: &Bound<'py, PyAny>,
    labels: PyReadonlyArray1<'py, i64>,
    k: usize,
    clusters: Option<PyReadonlyArray1<'py, i64>>,
    threads: Option<usize>,
) -> PyResult<Bound<'py, PyArray1<f64>>> {
    if let Some(a) = array2::<f32>(x, "embeddings")? {
        typicality_of(py, a, labels, k, clusters, threads)
    } else if let Some(a) = array2::<f64>(x, "embeddings")? {
        typicality_of(py, a, labels, k, clusters, threads)
    } else {
        Err(float_error("embeddings"))
    }
}

/// Adds the clustering functions to `pickaxe._core`.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(kmeans, m)?)?;
    m.add_function(wrap_pyfunction!(badge_seeds, m)?)?;
    m.add_function(wrap_pyfunction!(typicality, m)?)?;
    Ok(())
}

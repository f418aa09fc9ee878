//! Bindings of the clustering kernels (`pickaxe_core::{kmeans, badge, typicality}`): numpy
//! arrays in (float32 or float64, C-contiguous: the kernels read every row many times, so
//! the Python layer makes one contiguous copy rather than the kernels read strides), the GIL
//! released and Ctrl-C honoured (`interrupt::run`), errors mapped by `error::to_pyerr`.

use numpy::ndarray::{Array2, Array3, ArrayView3};
use numpy::{
    Element, IntoPyArray, PyArray1, PyArray2, PyArray3, PyArrayMethods, PyReadonlyArray1, PyReadonlyArray2,
    PyReadonlyArray3, PyReadwriteArray1, PyUntypedArrayMethods,
};
use pickaxe_core::kmeans::{self as km, ExactSum, Far, KMeansOptions, Scalar, EXACT_WORDS};
use pickaxe_core::Cancel;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyTuple;

use crate::convert::add_functions;
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

/// `$call` with `$a` the 2-D array `$x` as float32 or as float64 (C-contiguous), or the
/// TypeError naming `$what`.
macro_rules! by_dtype {
    ($x:expr, $what:expr, |$a:ident| $call:expr) => {
        if let Some($a) = array2::<f32>($x, $what)? {
            $call
        } else if let Some($a) = array2::<f64>($x, $what)? {
            $call
        } else {
            Err(float_error($what))
        }
    };
}

fn kmeans_of<'py, T: Scalar + Element>(
    py: Python<'py>, x: PyReadonlyArray2<'py, T>, opts: KMeansOptions,
) -> PyResult<Bound<'py, PyTuple>> {
    let v = x.as_array();
    let work = v.len().saturating_mul(opts.clusters);
    let r = interrupt::run(py, work, |cancel: &Cancel| pickaxe_core::kmeans::kmeans(v, &opts, cancel))?;
    (r.labels.into_pyarray(py), r.centers.into_pyarray(py), r.inertia, r.iterations, r.converged).into_pyobject(py)
}

/// k-means of the rows of `x` (N, D): `(labels (N,) int64, centers (k, D) x's dtype,
/// inertia, iterations, converged)`.
#[pyfunction]
#[pyo3(signature = (x, n_clusters, *, seed=0, max_iter=100, tol=1e-4, init_rows=None, fit_rows=None, local_trials=None, threads=None))]
#[allow(clippy::too_many_arguments)]
fn kmeans<'py>(
    py: Python<'py>, x: &Bound<'py, PyAny>, n_clusters: usize, seed: u64, max_iter: usize, tol: f64,
    init_rows: Option<usize>, fit_rows: Option<usize>, local_trials: Option<usize>, threads: Option<usize>,
) -> PyResult<Bound<'py, PyTuple>> {
    let opts = KMeansOptions { clusters: n_clusters, max_iter, tol, seed, init_rows, fit_rows, local_trials, threads };
    by_dtype!(x, "embeddings", |a| kmeans_of(py, a, opts))
}

fn badge_of<'py, T: Scalar + Element>(
    py: Python<'py>, p: PyReadonlyArray2<'py, T>, h: &Bound<'py, PyAny>, k: usize, seed: u64, threads: Option<usize>,
) -> PyResult<Bound<'py, PyTuple>> {
    let h = array2::<T>(h, "embeddings")?.ok_or_else(|| {
        PyTypeError::new_err(format!(
            "embeddings must be a 2-D C-contiguous numpy array of {} (the dtype of probabilities)",
            numpy::dtype::<T>(py)
        ))
    })?;
    let (pv, hv) = (p.as_array(), h.as_array());
    let work = (pv.len() + hv.len()).saturating_mul(k);
    let (picks, d2) =
        interrupt::run(py, work, |cancel: &Cancel| pickaxe_core::badge::badge_seeds(pv, hv, k, seed, threads, cancel))?;
    let picks: Vec<i64> = picks.into_iter().map(|i| i as i64).collect();
    (picks.into_pyarray(py), d2.into_pyarray(py)).into_pyobject(py)
}

/// BADGE's k-means++ seeding over factorised gradient embeddings: `(picks (k,) int64,
/// d2 (k,) float64)`.
#[pyfunction]
#[pyo3(signature = (probabilities, embeddings, k, *, seed=0, threads=None))]
fn badge_seeds<'py>(
    py: Python<'py>, probabilities: &Bound<'py, PyAny>, embeddings: &Bound<'py, PyAny>, k: usize, seed: u64,
    threads: Option<usize>,
) -> PyResult<Bound<'py, PyTuple>> {
    by_dtype!(probabilities, "probabilities", |p| badge_of(py, p, embeddings, k, seed, threads))
}

fn typicality_of<'py, T: Scalar + Element>(
    py: Python<'py>, x: PyReadonlyArray2<'py, T>, labels: PyReadonlyArray1<'py, i64>, k: usize,
    clusters: Option<PyReadonlyArray1<'py, i64>>, threads: Option<usize>,
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
    py: Python<'py>, x: &Bound<'py, PyAny>, labels: PyReadonlyArray1<'py, i64>, k: usize,
    clusters: Option<PyReadonlyArray1<'py, i64>>, threads: Option<usize>,
) -> PyResult<Bound<'py, PyArray1<f64>>> {
    by_dtype!(x, "embeddings", |a| typicality_of(py, a, labels, k, clusters, threads))
}

fn most_typical_of<'py, T: Scalar + Element>(
    py: Python<'py>, x: PyReadonlyArray2<'py, T>, labels: PyReadonlyArray1<'py, i64>, k: usize,
    clusters: PyReadonlyArray1<'py, i64>, threads: Option<usize>,
) -> PyResult<Bound<'py, PyTuple>> {
    let (xv, lv) = (x.as_array(), labels.as_array());
    let wanted: Vec<i64> = clusters.as_array().to_vec();
    let work = xv.len().saturating_mul(64);
    let out = interrupt::run(py, work, |cancel: &Cancel| {
        pickaxe_core::typicality::most_typical(xv, lv, k, &wanted, threads, cancel)
    })?;
    let (rows, values): (Vec<i64>, Vec<f64>) = out.into_iter().unzip();
    (rows.into_pyarray(py), values.into_pyarray(py)).into_pyobject(py)
}

/// The most typical row of each of `clusters` and its typicality: `(rows (c,) int64,
/// typicality (c,) float64)`; (-1, NaN) for a cluster with no row.
#[pyfunction]
#[pyo3(signature = (x, labels, k, clusters, *, threads=None))]
fn most_typical<'py>(
    py: Python<'py>, x: &Bound<'py, PyAny>, labels: PyReadonlyArray1<'py, i64>, k: usize,
    clusters: PyReadonlyArray1<'py, i64>, threads: Option<usize>,
) -> PyResult<Bound<'py, PyTuple>> {
    by_dtype!(x, "embeddings", |a| most_typical_of(py, a, labels, k, clusters, threads))
}

// -- k-means in pieces, for the Ray backend (pickaxe.ray.kmeans) ---------------------------
//
// i128 values travel as (lo, hi) pairs of int64: the low 64 bits, then the high ones.

fn split128(v: i128) -> [i64; 2] {
    [v as u64 as i64, (v >> 64) as i64]
}

fn join128(w: &[i64]) -> i128 {
    ((w[1] as i128) << 64) | (w[0] as u64 as i128)
}

fn words<'py>(py: Python<'py>, sums: &[ExactSum]) -> Bound<'py, PyArray3<i64>> {
    let mut a = Array3::<i64>::zeros((sums.len(), EXACT_WORDS, 2));
    for (i, s) in sums.iter().enumerate() {
        for (j, &v) in s.0.iter().enumerate() {
            let [lo, hi] = split128(v);
            a[[i, j, 0]] = lo;
            a[[i, j, 1]] = hi;
        }
    }
    a.into_pyarray(py)
}

fn exact_of(a: &ArrayView3<'_, i64>, what: &str) -> PyResult<Vec<ExactSum>> {
    if a.shape()[1] != EXACT_WORDS || a.shape()[2] != 2 {
        return Err(PyValueError::new_err(format!(
            "{what} must have shape (n, {EXACT_WORDS}, 2); got {:?}",
            a.shape()
        )));
    }
    Ok(a.outer_iter()
        .map(|m| {
            let mut s = ExactSum::default();
            for (j, w) in m.outer_iter().enumerate() {
                s.0[j] = join128(&[w[0], w[1]]);
            }
            s
        })
        .collect())
}

fn pairs<'py>(py: Python<'py>, v: &[i128], shape: (usize, usize)) -> Bound<'py, PyArray3<i64>> {
    let mut a = Array3::<i64>::zeros((shape.0, shape.1, 2));
    for (i, &x) in v.iter().enumerate() {
        let [lo, hi] = split128(x);
        a[[i / shape.1, i % shape.1, 0]] = lo;
        a[[i / shape.1, i % shape.1, 1]] = hi;
    }
    a.into_pyarray(py)
}

fn unpairs(a: &ArrayView3<'_, i64>) -> Vec<i128> {
    a.outer_iter().flat_map(|r| r.outer_iter().map(|w| join128(&[w[0], w[1]])).collect::<Vec<_>>()).collect()
}

/// The fit and seeding rows of `kmeans` (ascending positions, None: every row) and the
/// random state the seeding continues from: `(fit, init, state)`.
#[pyfunction]
fn kmeans_sample<'py>(
    py: Python<'py>, n: usize, fit_rows: usize, init_rows: usize, seed: u64,
) -> PyResult<Bound<'py, PyTuple>> {
    let plan =
        km::sample_rows(n, fit_rows.min(n), init_rows.min(fit_rows).min(n), seed).map_err(crate::error::to_pyerr)?;
    let arr = |v: Option<Vec<u32>>| v.map(|v| v.into_iter().map(i64::from).collect::<Vec<i64>>().into_pyarray(py));
    (arr(plan.fit), arr(plan.init), plan.state).into_pyobject(py)
}

fn seed_of<'py, T: Scalar + Element>(
    py: Python<'py>, x: PyReadonlyArray2<'py, T>, k: usize, trials: usize, state: u64, threads: Option<usize>,
) -> PyResult<Bound<'py, PyAny>> {
    let v = x.as_array();
    let work = v.len().saturating_mul(k);
    let c = interrupt::run(py, work, |cancel: &Cancel| km::seed_centers(v, k, trials, state, threads, cancel))?;
    Ok(c.into_pyarray(py).into_any())
}

/// k-means++ seeding over every row of `x` from the random state `state`: (k, D) centres.
#[pyfunction]
#[pyo3(signature = (x, k, state, *, local_trials=None, threads=None))]
fn kmeans_seed<'py>(
    py: Python<'py>, x: &Bound<'py, PyAny>, k: usize, state: u64, local_trials: Option<usize>, threads: Option<usize>,
) -> PyResult<Bound<'py, PyAny>> {
    let trials = km::local_trials(k, local_trials);
    by_dtype!(x, "embeddings", |a| seed_of(py, a, k, trials, state, threads))
}

fn moments_of<'py, T: Scalar + Element>(
    py: Python<'py>, x: PyReadonlyArray2<'py, T>, mean: Option<PyReadonlyArray1<'py, f64>>, threads: Option<usize>,
) -> PyResult<Bound<'py, PyTuple>> {
    let v = x.as_array();
    let mean: Option<Vec<f64>> = mean.map(|m| m.as_array().to_vec());
    if mean.as_ref().is_some_and(|m| m.len() != v.ncols()) {
        return Err(PyValueError::new_err("mean must have one value per column"));
    }
    let (top, sums) = interrupt::run(py, v.len(), |cancel: &Cancel| {
        km::on_threads(threads, v.len(), |par| km::moments(&v, mean.as_deref(), par, cancel))
    })?;
    (top.into_pyarray(py), words(py, &sums)).into_pyobject(py)
}

/// Per column of `x`: (largest |value| (D,), exact sums of the values (D, 67, 2)); with
/// `mean`, the exact sums of (value − mean)².
#[pyfunction]
#[pyo3(signature = (x, mean=None, *, threads=None))]
fn kmeans_moments<'py>(
    py: Python<'py>, x: &Bound<'py, PyAny>, mean: Option<PyReadonlyArray1<'py, f64>>, threads: Option<usize>,
) -> PyResult<Bound<'py, PyTuple>> {
    by_dtype!(x, "embeddings", |a| moments_of(py, a, mean, threads))
}

/// Element-wise sum of (…, 2) arrays of i128 (lo, hi) pairs, exactly.
#[pyfunction]
fn int128_sum<'py>(py: Python<'py>, parts: Vec<PyReadonlyArray3<'py, i64>>) -> PyResult<Bound<'py, PyArray3<i64>>> {
    let Some(first) = parts.first() else { return Err(PyValueError::new_err("int128_sum needs at least one part")) };
    let shape = first.as_array().dim();
    let mut total = vec![0i128; shape.0 * shape.1];
    for p in &parts {
        let a = p.as_array();
        if a.dim() != shape || shape.2 != 2 {
            return Err(PyValueError::new_err(format!(
                "int128_sum: parts of shape {shape:?} (…, 2) expected; got {:?}",
                a.dim()
            )));
        }
        for (t, v) in total.iter_mut().zip(unpairs(&a)) {
            *t += v;
        }
    }
    Ok(pairs(py, &total, (shape.0, shape.1)))
}

/// The values of exact sums (n, 67, 2): (n,) float64.
#[pyfunction]
fn exact_values<'py>(py: Python<'py>, sums: PyReadonlyArray3<'py, i64>) -> PyResult<Bound<'py, PyArray1<f64>>> {
    let s = exact_of(&sums.as_array(), "sums")?;
    Ok(s.iter().map(|s| s.value()).collect::<Vec<f64>>().into_pyarray(py))
}

/// (scales (D,), absolute tolerance) from the fit rows' column maxima, the exact sums of
/// their squared deviations and their number.
#[pyfunction]
fn kmeans_stats<'py>(
    py: Python<'py>, max_abs: PyReadonlyArray1<'py, f64>, dev: PyReadonlyArray3<'py, i64>, m: usize, tol: f64,
) -> PyResult<Bound<'py, PyTuple>> {
    let dev = exact_of(&dev.as_array(), "dev")?;
    let max_abs = max_abs.as_array().to_vec();
    if dev.len() != max_abs.len() {
        return Err(PyValueError::new_err("max_abs and dev must have one entry per column"));
    }
    let (scales, tol) = km::fit_stats(&max_abs, &dev, m, tol);
    (scales.into_pyarray(py), tol).into_pyobject(py)
}

fn step_of<'py, T: Scalar + Element>(
    py: Python<'py>, x: PyReadonlyArray2<'py, T>, centers: &Bound<'py, PyAny>, scales: PyReadonlyArray1<'py, f64>,
    mut labels: PyReadwriteArray1<'py, i64>, threads: Option<usize>,
) -> PyResult<Bound<'py, PyTuple>> {
    let c = array2::<T>(centers, "centers")?.ok_or_else(|| PyTypeError::new_err("centers must have the dtype of x"))?;
    let (v, cv, sv) = (x.as_array(), c.as_array(), scales.as_array().to_vec());
    let lab = labels.as_slice_mut().map_err(|_| PyValueError::new_err("labels must be C-contiguous"))?;
    if lab.len() != v.nrows() || cv.ncols() != v.ncols() || sv.len() != v.ncols() {
        return Err(PyValueError::new_err("kmeans_step: x, centers, scales and labels disagree in shape"));
    }
    let (k, d) = cv.dim();
    let work = v.len().saturating_mul(k);
    let st = interrupt::run(py, work, |cancel: &Cancel| {
        km::on_threads(threads, v.len(), |par| km::step(&v, &cv, &sv, lab, par, cancel))
    })?;
    (st.counts.into_pyarray(py), pairs(py, &st.sums, (k, d)), st.changed).into_pyobject(py)
}

/// One Lloyd step over the rows of `x`: `labels` (the previous ones, −1 for none) updated
/// in place; returns (counts (k,), fixed-point sums (k, D, 2), labels changed).
#[pyfunction]
#[pyo3(signature = (x, centers, scales, labels, *, threads=None))]
fn kmeans_step<'py>(
    py: Python<'py>, x: &Bound<'py, PyAny>, centers: &Bound<'py, PyAny>, scales: PyReadonlyArray1<'py, f64>,
    labels: PyReadwriteArray1<'py, i64>, threads: Option<usize>,
) -> PyResult<Bound<'py, PyTuple>> {
    by_dtype!(x, "embeddings", |a| step_of(py, a, centers, scales, labels, threads))
}

fn far_of<'py, T: Scalar + Element>(
    py: Python<'py>, x: PyReadonlyArray2<'py, T>, centers: &Bound<'py, PyAny>, labels: PyReadonlyArray1<'py, i64>,
    positions: PyReadonlyArray1<'py, i64>, top: usize, threads: Option<usize>,
) -> PyResult<Bound<'py, PyTuple>> {
    let c = array2::<T>(centers, "centers")?.ok_or_else(|| PyTypeError::new_err("centers must have the dtype of x"))?;
    let (v, cv) = (x.as_array(), c.as_array());
    let (lab, pos) = (labels.as_array().to_vec(), positions.as_array().to_vec());
    if lab.len() != v.nrows() || pos.len() != v.nrows() || lab.iter().any(|&l| l < 0 || l as usize >= cv.nrows()) {
        return Err(PyValueError::new_err(
            "kmeans_farthest: labels and positions must give each row of x its cluster and position",
        ));
    }
    let far = interrupt::run(py, v.len(), |cancel: &Cancel| {
        let p = |i: usize| pos[i] as u64;
        km::on_threads(threads, v.len(), |par| km::farthest(&v, &cv, &lab, &p, top, par, cancel))
    })?;
    let d = v.ncols();
    let mut rows = Array2::<T>::zeros((far.len(), d));
    for (i, f) in far.iter().enumerate() {
        rows.row_mut(i).assign(&numpy::ndarray::ArrayView1::from(&f.row[..]));
    }
    let mind: Vec<f64> = far.iter().map(|f| f.mind).collect();
    let fpos: Vec<i64> = far.iter().map(|f| f.position as i64).collect();
    let flab: Vec<i64> = far.iter().map(|f| f.label).collect();
    (mind.into_pyarray(py), fpos.into_pyarray(py), flab.into_pyarray(py), rows.into_pyarray(py)).into_pyobject(py)
}

/// The `top` rows of `x` farthest from their centres, farthest first (ties: lower
/// position): (squared distances, positions, labels, rows).
#[pyfunction]
#[pyo3(signature = (x, centers, labels, positions, top, *, threads=None))]
fn kmeans_farthest<'py>(
    py: Python<'py>, x: &Bound<'py, PyAny>, centers: &Bound<'py, PyAny>, labels: PyReadonlyArray1<'py, i64>,
    positions: PyReadonlyArray1<'py, i64>, top: usize, threads: Option<usize>,
) -> PyResult<Bound<'py, PyTuple>> {
    by_dtype!(x, "embeddings", |a| far_of(py, a, centers, labels, positions, top, threads))
}

#[allow(clippy::too_many_arguments)]
fn centers_of<'py, T: Scalar + Element>(
    py: Python<'py>, old: PyReadonlyArray2<'py, T>, counts: PyReadonlyArray1<'py, i64>,
    sums: PyReadonlyArray3<'py, i64>, scales: PyReadonlyArray1<'py, f64>, far_mind: PyReadonlyArray1<'py, f64>,
    far_positions: PyReadonlyArray1<'py, i64>, far_labels: PyReadonlyArray1<'py, i64>, far_rows: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyTuple>> {
    let ov = old.as_array();
    let (k, d) = ov.dim();
    let mut counts = counts.as_array().to_vec();
    let sv = sums.as_array();
    let scales = scales.as_array().to_vec();
    if counts.len() != k || sv.dim() != (k, d, 2) || scales.len() != d {
        return Err(PyValueError::new_err("kmeans_centers: old, counts, sums and scales disagree in shape"));
    }
    let mut total = unpairs(&sv);
    let fr = array2::<T>(far_rows, "far_rows")?
        .ok_or_else(|| PyTypeError::new_err("far_rows must have the dtype of the centres"))?;
    let frv = fr.as_array();
    let (fm, fp, fl) = (far_mind.as_array(), far_positions.as_array(), far_labels.as_array());
    if frv.nrows() != fm.len() || fp.len() != fm.len() || fl.len() != fm.len() || (frv.nrows() > 0 && frv.ncols() != d)
    {
        return Err(PyValueError::new_err("kmeans_centers: the far rows disagree in shape"));
    }
    if fl.iter().any(|&l| l < 0 || l as usize >= k) {
        return Err(PyValueError::new_err("kmeans_centers: far_labels out of range"));
    }
    let far: Vec<Far<T>> = (0..fm.len())
        .map(|i| Far { mind: fm[i], position: fp[i] as u64, label: fl[i], row: frv.row(i).to_vec() })
        .collect();
    let (c, shift) = km::new_centers(&mut counts, &mut total, &scales, &ov, &far);
    (c.into_pyarray(py), shift).into_pyobject(py)
}

/// The centres after a Lloyd step from its combined counts and sums, empty clusters
/// re-seeded from the far rows (farthest first): (centres, shift).
#[pyfunction]
#[allow(clippy::too_many_arguments)]
fn kmeans_centers<'py>(
    py: Python<'py>, old: &Bound<'py, PyAny>, counts: PyReadonlyArray1<'py, i64>, sums: PyReadonlyArray3<'py, i64>,
    scales: PyReadonlyArray1<'py, f64>, far_mind: PyReadonlyArray1<'py, f64>,
    far_positions: PyReadonlyArray1<'py, i64>, far_labels: PyReadonlyArray1<'py, i64>, far_rows: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyTuple>> {
    by_dtype!(old, "centers", |a| centers_of(
        py,
        a,
        counts,
        sums,
        scales,
        far_mind,
        far_positions,
        far_labels,
        far_rows
    ))
}

fn label_of<'py, T: Scalar + Element>(
    py: Python<'py>, x: PyReadonlyArray2<'py, T>, centers: &Bound<'py, PyAny>, threads: Option<usize>,
) -> PyResult<Bound<'py, PyTuple>> {
    let c = array2::<T>(centers, "centers")?.ok_or_else(|| PyTypeError::new_err("centers must have the dtype of x"))?;
    let (v, cv) = (x.as_array(), c.as_array());
    if cv.ncols() != v.ncols() || cv.nrows() == 0 {
        return Err(PyValueError::new_err("kmeans_label: centers must be (k >= 1, D) for x (N, D)"));
    }
    let work = v.len().saturating_mul(cv.nrows());
    let (labels, inertia) = interrupt::run(py, work, |cancel: &Cancel| {
        km::on_threads(threads, v.len(), |par| km::label_all(&v, &cv, par, cancel))
    })?;
    (labels.into_pyarray(py), words(py, &[inertia])).into_pyobject(py)
}

/// Every row's nearest centre and the exact sum of the squared distances:
/// (labels (N,), inertia (1, 67, 2)).
#[pyfunction]
#[pyo3(signature = (x, centers, *, threads=None))]
fn kmeans_label<'py>(
    py: Python<'py>, x: &Bound<'py, PyAny>, centers: &Bound<'py, PyAny>, threads: Option<usize>,
) -> PyResult<Bound<'py, PyTuple>> {
    by_dtype!(x, "embeddings", |a| label_of(py, a, centers, threads))
}

/// Adds the clustering functions to `pickaxe._core`.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    add_functions!(
        m,
        kmeans,
        kmeans_sample,
        kmeans_seed,
        kmeans_moments,
        kmeans_stats,
        kmeans_step,
        kmeans_farthest,
        kmeans_centers,
        kmeans_label,
        int128_sum,
        exact_values,
        badge_seeds,
        typicality,
        most_typical
    )
}

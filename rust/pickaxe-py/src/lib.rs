//! `pickaxe._core`: converts numpy arrays to views (no copy), releases the GIL while the
//! pickaxe-core kernels run (long ones interruptible by Ctrl-C: `interrupt.rs`), and maps
//! their errors (see `error.rs`). Nothing else.

mod error;
mod interrupt;

use ndarray::Array1;
use numpy::{
    Element, IntoPyArray, PyArray, PyArray1, PyArray2, PyArrayMethods, PyReadonlyArray,
    PyReadonlyArray1, PyReadonlyArray2, PyReadonlyArray3, PyReadwriteArray,
};
use numpy::{PyReadonlyArrayDyn, ToPyArray};
use pickaxe_core::{
    simd, BoxReduce, Error, Field, Metric, NanPolicy, PixelScore, Real, Reduce, RowScore,
    StackScore,
};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use crate::error::{borrow_error, dtype_error, dtype_is_error, to_pyerr};

// Names are parsed by the core (`FromStr`): the bindings only convert.
fn parse_field(name: &str) -> PyResult<Field> {
    name.parse().map_err(to_pyerr)
}

fn parse_policy(name: &str) -> PyResult<NanPolicy> {
    name.parse().map_err(to_pyerr)
}

/// Runs `f` on the array as float32 or float64 with the GIL released (interruptible
/// when large); returns a 1-D array of the same dtype.
macro_rules! with_float_array {
    ($py:expr, $x:expr, $arr:ident, $ndim:literal, $what:expr, |$view:ident, $cancel:ident| $body:expr) => {{
        if let Ok(a) = $x.extract::<$arr<'_, f32>>() {
            let $view = a.as_array();
            let out = interrupt::run($py, $view.len(), |$cancel| $body)?;
            Ok(out.into_pyarray($py).into_any())
        } else if let Ok(a) = $x.extract::<$arr<'_, f64>>() {
            let $view = a.as_array();
            let out = interrupt::run($py, $view.len(), |$cancel| $body)?;
            Ok(out.into_pyarray($py).into_any())
        } else {
            Err(dtype_error($what, $ndim))
        }
    }};
}

fn row_score(
    score: &str,
    normalize: bool,
    class_weights: Option<Vec<f64>>,
    temperature: f64,
    ord: f64,
) -> PyResult<RowScore> {
    Ok(match score {
        "least_confidence" => RowScore::LeastConfidence,
        "margin" => RowScore::Margin,
        "ratio" => RowScore::Ratio,
        "entropy" => RowScore::Entropy {
            normalize,
            class_weights,
        },
        "energy" => RowScore::Energy { temperature },
        "max_logit" => RowScore::MaxLogit,
        "norm" => RowScore::Norm { ord },
        other => {
            return Err(PyValueError::new_err(format!(
                "unknown row score {other:?}"
            )))
        }
    })
}

/// Per-row score of a (N, C) field, or least_confidence of the (N,) `confidence` field.
#[pyfunction]
#[pyo3(signature = (field, score, x, nan_policy="raise", normalize=false, class_weights=None, temperature=1.0, ord=2.0))]
#[allow(clippy::too_many_arguments)]
fn score_rows<'py>(
    py: Python<'py>,
    field: &str,
    score: &str,
    x: &Bound<'py, PyAny>,
    nan_policy: &str,
    normalize: bool,
    class_weights: Option<Vec<f64>>,
    temperature: f64,
    ord: f64,
) -> PyResult<Bound<'py, PyAny>> {
    let field = parse_field(field)?;
    let policy = parse_policy(nan_policy)?;
    let score = row_score(score, normalize, class_weights, temperature, ord)?;
    if field == Field::Confidence {
        if !matches!(score, RowScore::LeastConfidence) {
            return Err(PyValueError::new_err(
                "confidence only supports least_confidence",
            ));
        }
        return with_float_array!(py, x, PyReadonlyArray1, 1, field.name(), |v, cancel| {
            pickaxe_core::least_confidence_1d(v, policy, cancel)
        });
    }
    with_float_array!(py, x, PyReadonlyArray2, 2, field.name(), |v, cancel| {
        pickaxe_core::score_rows(field, &score, v, policy, cancel)
    })
}

fn stack_score(score: &str, reduce: &str) -> PyResult<StackScore> {
    Ok(match score {
        "vote_entropy" => StackScore::VoteEntropy,
        "consensus_entropy" => StackScore::ConsensusEntropy,
        "kl_disagreement" => match reduce {
            "mean" => StackScore::KlDisagreement { max: false },
            "max" => StackScore::KlDisagreement { max: true },
            other => {
                return Err(PyValueError::new_err(format!(
                    "reduce must be \"mean\" or \"max\"; got {other:?}"
                )))
            }
        },
        "mutual_information" => StackScore::MutualInformation,
        "predictive_entropy" => StackScore::PredictiveEntropy,
        "variation_ratio" => StackScore::VariationRatio,
        "variance" => StackScore::Variance,
        other => {
            return Err(PyValueError::new_err(format!(
                "unknown stack score {other:?}"
            )))
        }
    })
}

/// The per-pixel or per-box score: a row score for confidences / logits, a stack score
/// for query_by_committee / mc_dropout.
#[allow(clippy::too_many_arguments)]
fn pixel_score(
    field: Field,
    score: &str,
    logits: bool,
    normalize: bool,
    class_weights: Option<Vec<f64>>,
    temperature: f64,
    kl_reduce: &str,
) -> PyResult<PixelScore> {
    Ok(match field {
        Field::QueryByCommittee | Field::McDropout => PixelScore::Stack {
            score: stack_score(score, kl_reduce)?,
            logits,
        },
        _ => PixelScore::Row(row_score(score, normalize, class_weights, temperature, 2.0)?),
    })
}

/// Segmentation: per-pixel score reduced per image ("mean", "max", "top" with `q`) or
/// the (N, H, W) maps ("none").
#[pyfunction]
#[pyo3(signature = (field, score, x, class_axis, reduce, q=1.0, mask=None, logits=false, nan_policy="raise", normalize=false, class_weights=None, temperature=1.0, kl_reduce="mean"))]
#[allow(clippy::too_many_arguments)]
fn score_pixels<'py>(
    py: Python<'py>,
    field: &str,
    score: &str,
    x: &Bound<'py, PyAny>,
    class_axis: isize,
    reduce: &str,
    q: f64,
    mask: Option<PyReadonlyArray3<'py, bool>>,
    logits: bool,
    nan_policy: &str,
    normalize: bool,
    class_weights: Option<Vec<f64>>,
    temperature: f64,
    kl_reduce: &str,
) -> PyResult<Bound<'py, PyAny>> {
    let field = parse_field(field)?;
    let policy = parse_policy(nan_policy)?;
    let score = pixel_score(field, score, logits, normalize, class_weights, temperature, kl_reduce)?;
    let red = match reduce {
        "mean" => Reduce::Mean,
        "max" => Reduce::Max,
        "top" => Reduce::Top(q),
        "none" => Reduce::Map,
        other => {
            return Err(PyValueError::new_err(format!(
                "reduce must be \"mean\", \"max\", (\"top\", q) or None; got {other:?}"
            )))
        }
    };
    let mask_view = mask.as_ref().map(|m| m.as_array());
    macro_rules! go {
        ($t:ty) => {{
            let a = x.extract::<PyReadonlyArrayDyn<'_, $t>>()?;
            let v = a.as_array();
            let sh = v.shape().to_vec();
            let out = interrupt::run(py, v.len(), |cancel| {
                pickaxe_core::score_pixels(field, &score, v, class_axis, red, mask_view, policy, cancel)
            })?;
            if red == Reduce::Map {
                let stacked = sh.len() == 5;
                let (h, w) = if (class_axis == -1) || (class_axis as usize == sh.len() - 1) {
                    (sh[sh.len() - 3], sh[sh.len() - 2])
                } else {
                    (sh[sh.len() - 2], sh[sh.len() - 1])
                };
                let _ = stacked;
                let arr = ndarray::Array3::from_shape_vec((sh[0], h, w), out)
                    .map_err(|e| PyValueError::new_err(e.to_string()))?;
                Ok(arr.to_pyarray(py).into_any())
            } else {
                Ok(out.into_pyarray(py).into_any())
            }
        }};
    }
    if x.extract::<PyReadonlyArrayDyn<'_, f32>>().is_ok() {
        go!(f32)
    } else if x.extract::<PyReadonlyArrayDyn<'_, f64>>().is_ok() {
        go!(f64)
    } else {
        Err(dtype_error(field.name(), 4))
    }
}

/// Detection: per-box score of the stacked boxes, reduced per image over `offsets`.
#[pyfunction]
#[pyo3(signature = (field, score, boxes, offsets, reduce, objectness=None, logits=false, nan_policy="raise", normalize=false, class_weights=None, temperature=1.0, kl_reduce="mean"))]
#[allow(clippy::too_many_arguments)]
fn score_boxes<'py>(
    py: Python<'py>,
    field: &str,
    score: &str,
    boxes: &Bound<'py, PyAny>,
    offsets: PyReadonlyArray1<'py, i64>,
    reduce: &str,
    objectness: Option<&Bound<'py, PyAny>>,
    logits: bool,
    nan_policy: &str,
    normalize: bool,
    class_weights: Option<Vec<f64>>,
    temperature: f64,
    kl_reduce: &str,
) -> PyResult<Bound<'py, PyAny>> {
    let field = parse_field(field)?;
    let policy = parse_policy(nan_policy)?;
    let score = pixel_score(field, score, logits, normalize, class_weights, temperature, kl_reduce)?;
    let red = match reduce {
        "max" => BoxReduce::Max,
        "mean" => BoxReduce::Mean,
        "sum" => BoxReduce::Sum,
        other => {
            return Err(PyValueError::new_err(format!(
                "reduce must be \"max\", \"mean\" or \"sum\"; got {other:?}"
            )))
        }
    };
    let off = offsets.as_array();
    macro_rules! go {
        ($t:ty) => {{
            let a = boxes.extract::<PyReadonlyArrayDyn<'_, $t>>()?;
            let o = match objectness {
                Some(o) => Some(readonly::<$t, ndarray::Ix1>(o, "objectness", "the dtype of the boxes")?),
                None => None,
            };
            let ov = o.as_ref().map(|o| o.as_array());
            let v = a.as_array();
            let out = interrupt::run(py, v.len(), |cancel| {
                pickaxe_core::score_boxes(field, &score, v, off, red, ov, policy, cancel)
            })?;
            Ok(out.into_pyarray(py).into_any())
        }};
    }
    if boxes.extract::<PyReadonlyArrayDyn<'_, f32>>().is_ok() {
        go!(f32)
    } else if boxes.extract::<PyReadonlyArrayDyn<'_, f64>>().is_ok() {
        go!(f64)
    } else {
        Err(dtype_error(field.name(), 2))
    }
}

/// Committee or dropout score of a (N, M, C) field.
#[pyfunction]
#[pyo3(signature = (field, score, x, logits=false, nan_policy="raise", reduce="mean"))]
fn score_stack<'py>(
    py: Python<'py>,
    field: &str,
    score: &str,
    x: &Bound<'py, PyAny>,
    logits: bool,
    nan_policy: &str,
    reduce: &str,
) -> PyResult<Bound<'py, PyAny>> {
    let field = parse_field(field)?;
    let policy = parse_policy(nan_policy)?;
    let score = stack_score(score, reduce)?;
    with_float_array!(py, x, PyReadonlyArray3, 3, field.name(), |v, cancel| {
        pickaxe_core::score_stack(field, score, v, logits, policy, cancel)
    })
}

fn top_k_of<T: Real + numpy::Element>(
    py: Python<'_>,
    scores: PyReadonlyArray1<'_, T>,
    k: usize,
) -> PyResult<Vec<i64>> {
    let view = scores.as_array();
    let top = interrupt::run(py, view.len(), |cancel| pickaxe_core::top_k(view, k, cancel))?;
    Ok(top.into_iter().map(|i| i as i64).collect())
}

/// Positions of the k highest scores, highest first (ties: ascending position; NaN never).
#[pyfunction]
fn top_k<'py>(
    py: Python<'py>,
    scores: &Bound<'py, PyAny>,
    k: usize,
) -> PyResult<Bound<'py, PyArray1<i64>>> {
    let out = if let Ok(a) = scores.extract::<PyReadonlyArray1<'_, f64>>() {
        top_k_of(py, a, k)?
    } else if let Ok(a) = scores.extract::<PyReadonlyArray1<'_, f32>>() {
        top_k_of(py, a, k)?
    } else {
        return Err(dtype_error("scores", 1));
    };
    Ok(out.into_pyarray(py))
}

fn parse_metric(name: &str) -> PyResult<Metric> {
    Metric::parse(name).map_err(to_pyerr)
}

/// `x` read in place as a `D`-dimensional array of `T`; `why` explains a dtype error.
fn readonly<'py, T: Element, D: ndarray::Dimension>(
    x: &Bound<'py, PyAny>,
    what: &str,
    why: &str,
) -> PyResult<PyReadonlyArray<'py, T, D>> {
    let ndim = D::NDIM.unwrap_or(0);
    let a = x
        .cast::<PyArray<T, D>>()
        .map_err(|_| dtype_is_error(what, ndim, &dtype_name::<T>(x.py()), why))?;
    a.try_readonly().map_err(|e| borrow_error(what, e))
}

/// `x` borrowed for writing in place (numpy refuses read-only or overlapping arrays).
fn readwrite<'py, T: Element>(
    x: &Bound<'py, PyAny>,
    what: &str,
    why: &str,
) -> PyResult<PyReadwriteArray<'py, T, ndarray::Ix2>> {
    let a = x
        .cast::<PyArray2<T>>()
        .map_err(|_| dtype_is_error(what, 2, &dtype_name::<T>(x.py()), why))?;
    a.try_readwrite().map_err(|e| borrow_error(what, e))
}

fn dtype_name<T: Element>(py: Python<'_>) -> String {
    numpy::dtype::<T>(py).to_string()
}

fn knn_update_of<'py, T: Real + Element>(
    py: Python<'py>,
    gram: PyReadonlyArray2<'py, T>,
    norms: (&Bound<'py, PyAny>, &Bound<'py, PyAny>),
    id_offset: usize,
    metric: Metric,
    ids: &Bound<'py, PyAny>,
    dists: &Bound<'py, PyAny>,
) -> PyResult<()> {
    let why = "the dtype of gram";
    let qn = readonly::<T, ndarray::Ix1>(norms.0, "q_norms", why)?;
    let rn = readonly::<T, ndarray::Ix1>(norms.1, "r_norms", why)?;
    let mut ids = readwrite::<i64>(ids, "ids", "")?;
    let mut dists = readwrite::<T>(dists, "dists", why)?;
    let (g, qn, rn) = (gram.as_array(), qn.as_array(), rn.as_array());
    let (iv, dv) = (ids.as_array_mut(), dists.as_array_mut());
    interrupt::run(py, g.len(), |cancel| {
        pickaxe_core::knn_update(g, qn, rn, id_offset, metric, iv, dv, cancel)
    })
}

/// Merges a Gram block g = Q_b · R_cᵀ (b, mc) into the running k nearest of its queries:
/// `ids` (b, k) int64 and `dists` (b, k) are updated in place.
#[pyfunction]
#[allow(clippy::too_many_arguments)]
fn knn_update<'py>(
    py: Python<'py>,
    gram: &Bound<'py, PyAny>,
    q_norms: &Bound<'py, PyAny>,
    r_norms: &Bound<'py, PyAny>,
    id_offset: usize,
    metric: &str,
    ids: &Bound<'py, PyAny>,
    dists: &Bound<'py, PyAny>,
) -> PyResult<()> {
    let metric = parse_metric(metric)?;
    let norms = (q_norms, r_norms);
    if let Ok(g) = gram.cast::<PyArray2<f32>>() {
        let g = g.try_readonly().map_err(|e| borrow_error("gram", e))?;
        knn_update_of(py, g, norms, id_offset, metric, ids, dists)
    } else if let Ok(g) = gram.cast::<PyArray2<f64>>() {
        let g = g.try_readonly().map_err(|e| borrow_error("gram", e))?;
        knn_update_of(py, g, norms, id_offset, metric, ids, dists)
    } else {
        Err(dtype_error("gram", 2))
    }
}

fn pair_distances_of<'py, T: Real + Element>(
    py: Python<'py>,
    queries: PyReadonlyArray2<'py, T>,
    reference: &Bound<'py, PyAny>,
    ids: &Bound<'py, PyAny>,
    metric: Metric,
) -> PyResult<Bound<'py, PyTuple>> {
    let r = readonly::<T, ndarray::Ix2>(reference, "reference", "the dtype of queries")?;
    let ids = readonly::<i64, ndarray::Ix2>(ids, "ids", "")?;
    let (q, r, i) = (queries.as_array(), r.as_array(), ids.as_array());
    // Each pair reads a query row and a reference row.
    let work = i.len().saturating_mul(2 * q.ncols());
    let (ids, d) = interrupt::run(py, work, |cancel| {
        pickaxe_core::pair_distances(q, r, i, metric, cancel)
    })?;
    PyTuple::new(
        py,
        [
            ids.into_pyarray(py).into_any(),
            d.into_pyarray(py).into_any(),
        ],
    )
}

/// Exact distances of the pairs (query i, reference ids[i, j]), each row re-sorted by
/// (distance, id): returns (ids, distances), both (n, k).
#[pyfunction]
fn pair_distances<'py>(
    py: Python<'py>,
    queries: &Bound<'py, PyAny>,
    reference: &Bound<'py, PyAny>,
    ids: &Bound<'py, PyAny>,
    metric: &str,
) -> PyResult<Bound<'py, PyTuple>> {
    let metric = parse_metric(metric)?;
    if let Ok(q) = queries.extract::<PyReadonlyArray2<'_, f32>>() {
        pair_distances_of(py, q, reference, ids, metric)
    } else if let Ok(q) = queries.extract::<PyReadonlyArray2<'_, f64>>() {
        pair_distances_of(py, q, reference, ids, metric)
    } else {
        Err(dtype_error("queries", 2))
    }
}

fn kcenter_of<'py, T: Real + Element>(
    py: Python<'py>,
    points: PyReadonlyArray2<'py, T>,
    size: usize,
    min_dist: &Bound<'py, PyAny>,
    metric: Metric,
) -> PyResult<Bound<'py, PyTuple>> {
    let md = readonly::<T, ndarray::Ix1>(min_dist, "min_dist", "the dtype of points")?;
    let md: Array1<T> = md.as_array().to_owned();
    let p = points.as_array();
    // One pass over the points per pick.
    let work = p.len().saturating_mul(size);
    let (picks, dists) = interrupt::run(py, work, |cancel| {
        pickaxe_core::kcenter_greedy(p, size, md, metric, cancel)
    })?;
    let picks: Vec<i64> = picks.into_iter().map(|i| i as i64).collect();
    PyTuple::new(
        py,
        [
            picks.into_pyarray(py).into_any(),
            dists.into_pyarray(py).into_any(),
        ],
    )
}

/// k-center greedy: (picks int64 (s,), each pick's distance to its nearest center when
/// picked (s,)). `min_dist` (N,) is copied in: +inf where no center covers a row yet.
#[pyfunction]
fn kcenter_greedy<'py>(
    py: Python<'py>,
    points: &Bound<'py, PyAny>,
    size: usize,
    min_dist: &Bound<'py, PyAny>,
    metric: &str,
) -> PyResult<Bound<'py, PyTuple>> {
    let metric = parse_metric(metric)?;
    if let Ok(x) = points.extract::<PyReadonlyArray2<'_, f32>>() {
        kcenter_of(py, x, size, min_dist, metric)
    } else if let Ok(x) = points.extract::<PyReadonlyArray2<'_, f64>>() {
        kcenter_of(py, x, size, min_dist, metric)
    } else {
        Err(dtype_error("points", 2))
    }
}

/// Localisation disagreement of committee boxes against reference boxes (`iou.rs`):
/// per image (N,), or per reference box (B,) with reduce "none". Every float array has
/// the dtype of `boxes` (the Python layer converts).
#[pyfunction]
#[pyo3(signature = (boxes, classes, logits, offsets, member_boxes, member_classes, member_logits, member_offsets, members, iou_threshold=0.5, per_class=false, reduce="max", objectness=None))]
#[allow(clippy::too_many_arguments)]
fn localization_disagreement<'py>(
    py: Python<'py>,
    boxes: &Bound<'py, PyAny>,
    classes: &Bound<'py, PyAny>,
    logits: bool,
    offsets: PyReadonlyArray1<'py, i64>,
    member_boxes: &Bound<'py, PyAny>,
    member_classes: &Bound<'py, PyAny>,
    member_logits: bool,
    member_offsets: PyReadonlyArray1<'py, i64>,
    members: usize,
    iou_threshold: f64,
    per_class: bool,
    reduce: &str,
    objectness: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let red = match reduce {
        "max" => Some(BoxReduce::Max),
        "mean" => Some(BoxReduce::Mean),
        "sum" => Some(BoxReduce::Sum),
        "none" => None,
        other => {
            return Err(PyValueError::new_err(format!(
                "reduce must be \"max\", \"mean\", \"sum\" or None; got {other:?}"
            )))
        }
    };
    let opts = pickaxe_core::LocOptions {
        iou_threshold,
        per_class,
        reduce: red,
    };
    let (off, moff) = (offsets.as_array(), member_offsets.as_array());
    macro_rules! go {
        ($t:ty) => {{
            let why = "the dtype of boxes";
            let b = readonly::<$t, ndarray::Ix2>(boxes, "boxes", why)?;
            let c = readonly::<$t, ndarray::Ix2>(classes, if logits { "logits" } else { "confidences" }, why)?;
            let mb = readonly::<$t, ndarray::Ix2>(member_boxes, "member_boxes", why)?;
            let mname = if member_logits { "member_logits" } else { "member_confidences" };
            let mc = readonly::<$t, ndarray::Ix2>(member_classes, mname, why)?;
            let o = match objectness {
                Some(o) => Some(readonly::<$t, ndarray::Ix1>(o, "objectness", why)?),
                None => None,
            };
            let ov = o.as_ref().map(|o| o.as_array());
            let reference = pickaxe_core::BoxSet {
                bbox: b.as_array(),
                classes: c.as_array(),
                logits,
                offsets: off,
            };
            let committee = pickaxe_core::BoxSet {
                bbox: mb.as_array(),
                classes: mc.as_array(),
                logits: member_logits,
                offsets: moff,
            };
            // Every box and class score read, and each reference box of an image against
            // the member boxes of its image (on average).
            let (rb, mbn) = (b.as_array().nrows(), mb.as_array().nrows());
            let work = (rb + mbn)
                .saturating_mul(4 + c.as_array().ncols())
                .saturating_add(rb.saturating_mul(mbn) / (off.len().max(2) - 1));
            let out = interrupt::run(py, work, |cancel| {
                pickaxe_core::localization_disagreement(reference, committee, members, opts, ov, cancel)
            })?;
            Ok(out.into_pyarray(py).into_any())
        }};
    }
    if boxes.cast::<PyArray2<f32>>().is_ok() {
        go!(f32)
    } else if boxes.cast::<PyArray2<f64>>().is_ok() {
        go!(f64)
    } else {
        Err(dtype_error("boxes", 2))
    }
}

/// Version, SIMD level in use, the best level of this CPU and the kernels' thread count.
#[pyfunction]
fn build_info(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("version", env!("CARGO_PKG_VERSION"))?;
    d.set_item("simd", simd::level().name())?;
    d.set_item("simd_detected", simd::detected().name())?;
    d.set_item("threads", pickaxe_core::threads::num_threads())?;
    Ok(d)
}

#[pyfunction]
fn set_num_threads(n: usize) -> PyResult<()> {
    pickaxe_core::threads::set_num_threads(n).map_err(to_pyerr)
}

#[pyfunction]
fn set_simd_level(level: &str) -> PyResult<()> {
    let want = simd::SimdLevel::parse(level).ok_or_else(|| {
        to_pyerr(Error::Argument {
            name: "level",
            message: format!("SIMD level must be portable, avx2 or avx512; got {level:?}"),
        })
    })?;
    simd::set_level(want).map_err(to_pyerr)
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    // PICKAXE_SIMD is read once, at import, so a bad value fails loudly and early.
    simd::configure_from_env()
        .map_err(|e| pyo3::exceptions::PyImportError::new_err(e.to_string()))?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_function(wrap_pyfunction!(score_rows, m)?)?;
    m.add_function(wrap_pyfunction!(score_stack, m)?)?;
    m.add_function(wrap_pyfunction!(score_pixels, m)?)?;
    m.add_function(wrap_pyfunction!(score_boxes, m)?)?;
    m.add_function(wrap_pyfunction!(localization_disagreement, m)?)?;
    m.add_function(wrap_pyfunction!(top_k, m)?)?;
    m.add_function(wrap_pyfunction!(knn_update, m)?)?;
    m.add_function(wrap_pyfunction!(pair_distances, m)?)?;
    m.add_function(wrap_pyfunction!(kcenter_greedy, m)?)?;
    m.add_function(wrap_pyfunction!(build_info, m)?)?;
    m.add_function(wrap_pyfunction!(set_num_threads, m)?)?;
    m.add_function(wrap_pyfunction!(set_simd_level, m)?)?;
    Ok(())
}

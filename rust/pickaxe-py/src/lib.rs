//! `pickaxe._core`: converts numpy arrays to views (no copy), releases the GIL while the
//! pickaxe-core kernels run, and maps their errors (see `error.rs`). Nothing else.

mod error;

use numpy::{IntoPyArray, PyArray1, PyReadonlyArray1, PyReadonlyArray2, PyReadonlyArray3};
use pickaxe_core::{simd, Error, Field, NanPolicy, Real, RowScore, StackScore};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::error::{dtype_error, to_pyerr};

fn parse_field(name: &str) -> PyResult<Field> {
    Ok(match name {
        "confidence" => Field::Confidence,
        "confidences" => Field::Confidences,
        "logits" => Field::Logits,
        "query_by_committee" => Field::QueryByCommittee,
        "mc_dropout" => Field::McDropout,
        "embeddings" => Field::Embeddings,
        other => return Err(PyValueError::new_err(format!("unknown field {other:?}"))),
    })
}

fn parse_policy(name: &str) -> PyResult<NanPolicy> {
    match name {
        "raise" => Ok(NanPolicy::Raise),
        "omit" => Ok(NanPolicy::Omit),
        other => Err(PyValueError::new_err(format!(
            "nan_policy must be \"raise\" or \"omit\"; got {other:?}"
        ))),
    }
}

/// Runs `f` on the array as float32 or float64 with the GIL released; returns a 1-D
/// array of the same dtype.
macro_rules! with_float_array {
    ($py:expr, $x:expr, $arr:ident, $ndim:literal, $what:expr, |$view:ident| $body:expr) => {{
        if let Ok(a) = $x.extract::<$arr<'_, f32>>() {
            let $view = a.as_array();
            let out = $py.detach(|| $body).map_err(to_pyerr)?;
            Ok(out.into_pyarray($py).into_any())
        } else if let Ok(a) = $x.extract::<$arr<'_, f64>>() {
            let $view = a.as_array();
            let out = $py.detach(|| $body).map_err(to_pyerr)?;
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
        return with_float_array!(py, x, PyReadonlyArray1, 1, field.name(), |v| {
            pickaxe_core::least_confidence_1d(v, policy)
        });
    }
    with_float_array!(py, x, PyReadonlyArray2, 2, field.name(), |v| {
        pickaxe_core::score_rows(field, &score, v, policy)
    })
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
    let score = match score {
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
    };
    with_float_array!(py, x, PyReadonlyArray3, 3, field.name(), |v| {
        pickaxe_core::score_stack(field, score, v, logits, policy)
    })
}

fn top_k_of<T: Real + numpy::Element>(
    py: Python<'_>,
    scores: PyReadonlyArray1<'_, T>,
    k: usize,
) -> Vec<i64> {
    let view = scores.as_array();
    py.detach(|| {
        pickaxe_core::top_k(view, k)
            .into_iter()
            .map(|i| i as i64)
            .collect()
    })
}

/// Positions of the k highest scores, highest first (ties: ascending position; NaN never).
#[pyfunction]
fn top_k<'py>(
    py: Python<'py>,
    scores: &Bound<'py, PyAny>,
    k: usize,
) -> PyResult<Bound<'py, PyArray1<i64>>> {
    let out = if let Ok(a) = scores.extract::<PyReadonlyArray1<'_, f64>>() {
        top_k_of(py, a, k)
    } else if let Ok(a) = scores.extract::<PyReadonlyArray1<'_, f32>>() {
        top_k_of(py, a, k)
    } else {
        return Err(dtype_error("scores", 1));
    };
    Ok(out.into_pyarray(py))
}

/// Version, SIMD level in use, the best level of this CPU and the kernels' thread count.
#[pyfunction]
fn build_info(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("version", env!("CARGO_PKG_VERSION"))?;
    d.set_item("simd", simd::level().name())?;
    d.set_item("simd_detected", simd::detected().name())?;
    d.set_item("threads", pickaxe_core::pool::num_threads())?;
    Ok(d)
}

#[pyfunction]
fn set_num_threads(n: usize) -> PyResult<()> {
    pickaxe_core::pool::set_num_threads(n).map_err(to_pyerr)
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
    m.add_function(wrap_pyfunction!(top_k, m)?)?;
    m.add_function(wrap_pyfunction!(build_info, m)?)?;
    m.add_function(wrap_pyfunction!(set_num_threads, m)?)?;
    m.add_function(wrap_pyfunction!(set_simd_level, m)?)?;
    Ok(())
}

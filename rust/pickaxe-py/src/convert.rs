//! What every binding does to its arguments: names parsed by the core (`FromStr`), numpy
//! arrays read in place as ndarray views, the one dispatch on float32 / float64
//! (`with_float!`), and a kernel run on a view with its result handed back to numpy.

use numpy::{Element, IntoPyArray, PyArray, PyArray2, PyArrayMethods, PyReadonlyArray, PyReadwriteArray};
use pickaxe_core::{Cancel, Error, Field, NanPolicy, PixelScore, RowOptions};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::error::{borrow_error, dtype_is_error, to_pyerr};
use crate::interrupt;

/// Runs `$body` with the type `$t` bound to the float type of `$x` (float32 or float64,
/// as an array of dimension `$dim`), or returns the dtype error for `$what` ($ndim-D;
/// by default `$dim`'s). Every float dispatch of the bindings goes through here.
macro_rules! with_float {
    ($x:expr, $dim:ty, $what:expr, |$t:ident| $body:expr) => {
        with_float!($x, $dim, $what, <$dim as ndarray::Dimension>::NDIM.unwrap_or(0), |$t| $body)
    };
    ($x:expr, $dim:ty, $what:expr, $ndim:expr, |$t:ident| $body:expr) => {{
        let x: &pyo3::Bound<'_, pyo3::PyAny> = $x;
        if x.cast::<numpy::PyArray<f32, $dim>>().is_ok() {
            type $t = f32;
            $body
        } else if x.cast::<numpy::PyArray<f64, $dim>>().is_ok() {
            type $t = f64;
            $body
        } else {
            Err($crate::error::dtype_error($what, $ndim))
        }
    }};
}
pub(crate) use with_float;

/// Adds each named `#[pyfunction]` to the module: `add_functions!(m, top_k, draw_keys)`.
macro_rules! add_functions {
    ($m:expr, $($f:ident),+ $(,)?) => {{
        $( $m.add_function(wrap_pyfunction!($f, $m)?)?; )+
        Ok(())
    }};
}
pub(crate) use add_functions;

/// A name the core parses (a field, a policy, a metric, ...), its error mapped.
pub fn parse<T: std::str::FromStr<Err = Error>>(name: &str) -> PyResult<T> {
    name.parse().map_err(to_pyerr)
}

/// The options of a score binding, given as keywords (`**options` of the Python layer, which
/// checks their values' kinds and names): the score's `RowOptions`, and for per-pixel and
/// per-box scores whether the field holds logits and how a committee's KL is reduced.
pub struct ScoreKeywords {
    pub options: RowOptions,
    pub logits: bool,
    pub kl_reduce: String,
}

impl ScoreKeywords {
    /// The keywords of `kwargs` (all optional; an unknown one is a TypeError, as for any
    /// Python function).
    pub fn from_kwargs(func: &str, kwargs: Option<&Bound<'_, PyDict>>) -> PyResult<Self> {
        let mut out = ScoreKeywords { options: RowOptions::default(), logits: false, kl_reduce: "mean".to_owned() };
        for (key, value) in kwargs.into_iter().flat_map(|d| d.iter()) {
            let key: String = key.extract()?;
            match key.as_str() {
                "normalize" => out.options.normalize = value.extract()?,
                "class_weights" => out.options.class_weights = value.extract()?,
                "temperature" => out.options.temperature = value.extract()?,
                "ord" => out.options.ord = value.extract()?,
                "logits" => out.logits = value.extract()?,
                "kl_reduce" => out.kl_reduce = value.extract()?,
                _ => return Err(PyTypeError::new_err(format!("{func}() got an unexpected keyword argument '{key}'"))),
            }
        }
        Ok(out)
    }

    /// The field, NaN policy and per-pixel (or per-box) score of a segmentation or
    /// detection call.
    pub fn pixel_score(self, field: &str, nan_policy: &str, score: &str) -> PyResult<(Field, NanPolicy, PixelScore)> {
        let field: Field = parse(field)?;
        let policy: NanPolicy = parse(nan_policy)?;
        let score =
            PixelScore::from_name(field, score, self.logits, self.options, &self.kl_reduce).map_err(to_pyerr)?;
        Ok((field, policy, score))
    }
}

/// `x` read in place as a `D`-dimensional array of `T`; `why` explains a dtype error.
pub fn readonly<'py, T: Element, D: ndarray::Dimension>(
    x: &Bound<'py, PyAny>, what: &str, why: &str,
) -> PyResult<PyReadonlyArray<'py, T, D>> {
    let ndim = D::NDIM.unwrap_or(0);
    let a = x.cast::<PyArray<T, D>>().map_err(|_| dtype_is_error(what, ndim, &dtype_name::<T>(x.py()), why))?;
    a.try_readonly().map_err(|e| borrow_error(what, e))
}

/// `x` borrowed for writing in place (numpy refuses read-only or overlapping arrays).
pub fn readwrite<'py, T: Element>(
    x: &Bound<'py, PyAny>, what: &str, why: &str,
) -> PyResult<PyReadwriteArray<'py, T, ndarray::Ix2>> {
    let a = x.cast::<PyArray2<T>>().map_err(|_| dtype_is_error(what, 2, &dtype_name::<T>(x.py()), why))?;
    a.try_readwrite().map_err(|e| borrow_error(what, e))
}

fn dtype_name<T: Element>(py: Python<'_>) -> String {
    numpy::dtype::<T>(py).to_string()
}

/// `kernel` on `x` read in place (GIL released, interruptible when large: `interrupt`),
/// its result returned as a numpy array that owns the kernel's buffer (no copy).
pub fn run_on<'py, T, D, R>(
    py: Python<'py>, x: &Bound<'py, PyAny>, what: &str,
    kernel: impl FnOnce(ndarray::ArrayView<'_, T, D>, &Cancel) -> Result<R, Error> + Send,
) -> PyResult<Bound<'py, PyAny>>
where
    T: Element + Sync,
    D: ndarray::Dimension,
    R: IntoPyArray + Send,
{
    let a = readonly::<T, D>(x, what, "")?;
    let v = a.as_array();
    let out = interrupt::run(py, v.len(), |cancel| kernel(v, cancel))?;
    Ok(out.into_pyarray(py).into_any())
}

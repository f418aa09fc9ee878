//! Bindings of `pickaxe.select` (the positions of the k highest scores) and of the batch
//! controls' kernels (`pickaxe.per_row`: a draw's keys and top k, each group's top k).

use ndarray::{ArrayView1, Ix1};
use numpy::{IntoPyArray, PyArray1, PyReadonlyArray1};
use pickaxe_core::groups::{self, DrawSpec};
use pickaxe_core::select;
use pyo3::prelude::*;

use crate::convert::{add_functions, parse, readonly, with_float};
use crate::interrupt;

/// Positions of the k highest scores, highest first (ties: ascending position; NaN never).
#[pyfunction]
fn top_k<'py>(py: Python<'py>, scores: &Bound<'py, PyAny>, k: usize) -> PyResult<Bound<'py, PyArray1<i64>>> {
    with_float!(scores, Ix1, "scores", |T| {
        let a = readonly::<T, Ix1>(scores, "scores", "")?;
        let v = a.as_array();
        let top = interrupt::run(py, v.len(), |cancel| pickaxe_core::top_k(v, k, cancel))?;
        let top: Vec<i64> = top.into_iter().map(|i| i as i64).collect();
        Ok(top.into_pyarray(py))
    })
}

fn indices(py: Python<'_>, v: Vec<usize>) -> Bound<'_, PyArray1<i64>> {
    v.into_iter().map(|i| i as i64).collect::<Vec<i64>>().into_pyarray(py)
}

fn row_numbers<'py>(numbers: &Option<Bound<'py, PyAny>>) -> PyResult<Option<PyReadonlyArray1<'py, i64>>> {
    numbers.as_ref().map(|n| readonly::<i64, Ix1>(n, "numbers", "row numbers are int64")).transpose()
}

/// Each row's draw key ln w − ln(−ln u), u hashed from (seed, row number: `numbers[i]`,
/// or `offset + i` when `numbers` is None).
#[pyfunction]
#[pyo3(signature = (scores, numbers, offset, seed, sampling, beta))]
fn draw_keys<'py>(
    py: Python<'py>, scores: &Bound<'py, PyAny>, numbers: Option<Bound<'py, PyAny>>, offset: i64, seed: u64,
    sampling: &str, beta: f64,
) -> PyResult<Bound<'py, PyArray1<f64>>> {
    let nums = row_numbers(&numbers)?;
    let spec = DrawSpec { numbers: nums.as_ref().map(|n| n.as_array()), offset, seed, draw: parse(sampling)?, beta };
    with_float!(scores, Ix1, "scores", |T| {
        let a = readonly::<T, Ix1>(scores, "scores", "")?;
        let v = a.as_array();
        let keys = interrupt::run(py, v.len(), |_| groups::draw_keys(v, &spec))?;
        Ok(keys.into_pyarray(py))
    })
}

/// The `k` rows of highest draw key, best first: (positions, keys).
#[pyfunction]
#[pyo3(signature = (scores, numbers, offset, seed, sampling, beta, k))]
#[allow(clippy::too_many_arguments)]
fn draw_top_k<'py>(
    py: Python<'py>, scores: &Bound<'py, PyAny>, numbers: Option<Bound<'py, PyAny>>, offset: i64, seed: u64,
    sampling: &str, beta: f64, k: usize,
) -> PyResult<(Bound<'py, PyArray1<i64>>, Bound<'py, PyArray1<f64>>)> {
    let nums = row_numbers(&numbers)?;
    let spec = DrawSpec { numbers: nums.as_ref().map(|n| n.as_array()), offset, seed, draw: parse(sampling)?, beta };
    with_float!(scores, Ix1, "scores", |T| {
        let a = readonly::<T, Ix1>(scores, "scores", "")?;
        let v = a.as_array();
        let (rows, keys) = interrupt::run(py, v.len(), |cancel| groups::draw_top_k(v, &spec, k, cancel))?;
        Ok((indices(py, rows), keys.into_pyarray(py)))
    })
}

type RankArrays<'py> = (Bound<'py, PyArray1<i64>>, Bound<'py, PyArray1<i64>>, Bound<'py, PyArray1<i64>>);

/// A `sampling="rank"` draw's candidates (`pickaxe_core::select::rank_draw_candidates`):
/// (positions ascending, their exact competition ranks, each group's rows scoring a
/// number), or None when they would outnumber `limit`.
#[pyfunction]
#[pyo3(signature = (values, numbers, offset, seed, beta, k, codes=None, groups=1, limit=usize::MAX))]
#[allow(clippy::too_many_arguments)] // the Python signature: each argument is one array or number
fn rank_draw_candidates<'py>(
    py: Python<'py>, values: &Bound<'py, PyAny>, numbers: Option<Bound<'py, PyAny>>, offset: i64, seed: u64, beta: f64,
    k: usize, codes: Option<Bound<'py, PyAny>>, groups: usize, limit: usize,
) -> PyResult<Option<RankArrays<'py>>> {
    let nums = row_numbers(&numbers)?;
    let vals = readonly::<f64, Ix1>(values, "values", "scores are float64")?;
    // contiguous slices (a strided array is copied once)
    let (vals, nums) = (vals.as_array(), nums.as_ref().map(|n| n.as_array()));
    let vals = contiguous(&vals);
    let nums = nums.as_ref().map(contiguous);
    macro_rules! draw {
        ($codes:expr) => {{
            let spec = select::RankDraw {
                values: &vals,
                numbers: nums.as_deref(),
                offset,
                seed,
                beta,
                k,
                codes: $codes,
                groups,
                limit,
            };
            interrupt::run(py, 3 * vals.len(), |cancel| select::rank_draw_candidates(&spec, cancel))?
        }};
    }
    let out = match codes {
        None => draw!(None::<&[i64]>),
        Some(c) if c.cast::<PyArray1<i32>>().is_ok() => {
            let c = readonly::<i32, Ix1>(&c, "codes", "")?;
            let c = c.as_array();
            let c = contiguous(&c);
            draw!(Some(&*c))
        }
        Some(c) => {
            let c = readonly::<i64, Ix1>(&c, "codes", "group codes are int32 or int64")?;
            let c = c.as_array();
            let c = contiguous(&c);
            draw!(Some(&*c))
        }
    };
    Ok(out.map(|(rows, ranks, scored)| {
        let scored: Vec<i64> = scored.into_iter().map(|c| c as i64).collect();
        (indices(py, rows), ranks.into_pyarray(py), scored.into_pyarray(py))
    }))
}

/// A 1-D view as a slice: itself when contiguous, else a copy.
fn contiguous<'a, T: Clone>(a: &'a ArrayView1<'_, T>) -> std::borrow::Cow<'a, [T]> {
    a.as_slice().map_or_else(|| std::borrow::Cow::Owned(a.to_vec()), std::borrow::Cow::Borrowed)
}

type GroupArrays<'py> =
    (Bound<'py, PyArray1<i64>>, Bound<'py, PyArray1<i64>>, Bound<'py, PyArray1<i64>>, Bound<'py, PyArray1<i64>>);

/// Each group's `k` best rows (keys descending, then ties or position ascending): (rows
/// grouped by code, each group's end in them, non-NaN rows per group, rows per group).
/// `floors` (one per group, the keys' dtype): rows below their group's floor are counted
/// but not kept.
#[pyfunction]
#[pyo3(signature = (keys, codes, offset, groups, k, ties=None, floors=None))]
#[allow(clippy::too_many_arguments)] // the Python signature: each argument is one array or number
fn group_top_k<'py>(
    py: Python<'py>, keys: &Bound<'py, PyAny>, codes: &Bound<'py, PyAny>, offset: i64, groups: usize, k: usize,
    ties: Option<Bound<'py, PyAny>>, floors: Option<Bound<'py, PyAny>>,
) -> PyResult<GroupArrays<'py>> {
    let ties = ties.as_ref().map(|t| readonly::<i64, Ix1>(t, "ties", "tie keys are int64")).transpose()?;
    with_float!(keys, Ix1, "keys", |T| {
        let a = readonly::<T, Ix1>(keys, "keys", "")?;
        let f = floors.as_ref().map(|f| readonly::<T, Ix1>(f, "floors", "floors have the keys' dtype")).transpose()?;
        let spec = groups::GroupSpec {
            offset,
            groups,
            k,
            ties: ties.as_ref().map(|t| t.as_array()),
            floors: f.as_ref().map(|f| f.as_array()),
        };
        let v = a.as_array();
        let out = if codes.cast::<PyArray1<i32>>().is_ok() {
            let c = readonly::<i32, Ix1>(codes, "codes", "")?;
            run_groups(py, v, c.as_array(), &spec)?
        } else {
            let c = readonly::<i64, Ix1>(codes, "codes", "group codes are int32 or int64")?;
            run_groups(py, v, c.as_array(), &spec)?
        };
        let counts = |x: Vec<u64>| x.into_iter().map(|n| n as i64).collect::<Vec<i64>>().into_pyarray(py);
        Ok((indices(py, out.rows), indices(py, out.ends), counts(out.scored), counts(out.sizes)))
    })
}

fn run_groups<T: pickaxe_core::Real, C: groups::Code>(
    py: Python<'_>, keys: ArrayView1<'_, T>, codes: ArrayView1<'_, C>, spec: &groups::GroupSpec<'_, T>,
) -> PyResult<groups::GroupTops> {
    interrupt::run(py, keys.len(), |cancel| groups::group_top_k(keys, codes, spec, cancel))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    add_functions!(m, top_k, draw_keys, draw_top_k, rank_draw_candidates, group_top_k)
}

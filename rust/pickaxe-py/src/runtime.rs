//! The module's run-time settings (`pickaxe.build_info`, `set_num_threads`, the SIMD
//! level): what the kernels run on, read and set.

use pickaxe_core::simd::{self, SimdLevel};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::convert::add_functions;
use crate::convert::parse;
use crate::error::to_pyerr;

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
    let want: SimdLevel = parse(level)?;
    simd::set_level(want).map_err(to_pyerr)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    add_functions!(m, build_info, set_num_threads, set_simd_level)
}

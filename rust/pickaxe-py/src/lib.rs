//! `pickaxe._core`: converts numpy arrays to views (no copy), releases the GIL while the
//! pickaxe-core kernels run (long ones interruptible by Ctrl-C: `interrupt.rs`), and maps
//! their errors (`error.rs`). Nothing else: names are parsed and arguments checked by the
//! core. One file per Python area registers its functions here; `convert.rs` holds what
//! they share (the float dispatch, array borrowing).

mod cluster;
mod convert;
mod coreset;
mod detection;
mod error;
mod hnsw;
mod interrupt;
mod knn;
mod runtime;
mod scores;
mod segmentation;
mod select;

use pyo3::prelude::*;

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    // PICKAXE_SIMD is read once, at import, so a bad value fails loudly and early.
    pickaxe_core::simd::configure_from_env().map_err(error::import_error)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    scores::register(m)?;
    segmentation::register(m)?;
    detection::register(m)?;
    select::register(m)?;
    knn::register(m)?;
    hnsw::register(m)?;
    coreset::register(m)?;
    runtime::register(m)?;
    cluster::register(m)?;
    Ok(())
}

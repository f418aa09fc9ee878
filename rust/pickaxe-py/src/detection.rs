//! Bindings of `pickaxe.detection`: per-box scores reduced per image, and localisation
//! disagreement of a committee's boxes (`pickaxe_core::localization`).

use ndarray::{Ix1, Ix2, IxDyn};
use numpy::{IntoPyArray, PyReadonlyArray1};
use pickaxe_core::{BoxReduce, BoxSet, LocOptions};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::convert::{add_functions, parse, readonly, run_on, with_float, ScoreKeywords};
use crate::error::to_pyerr;
use crate::interrupt;

/// Detection: per-box score of the stacked boxes, reduced per image over `offsets`.
#[pyfunction]
#[pyo3(signature = (field, score, boxes, offsets, reduce, objectness=None, nan_policy="raise", **options))]
#[allow(clippy::too_many_arguments)]
fn score_boxes<'py>(
    py: Python<'py>, field: &str, score: &str, boxes: &Bound<'py, PyAny>, offsets: PyReadonlyArray1<'py, i64>,
    reduce: &str, objectness: Option<&Bound<'py, PyAny>>, nan_policy: &str, options: Option<&Bound<'py, PyDict>>,
) -> PyResult<Bound<'py, PyAny>> {
    let (field, policy, score) =
        ScoreKeywords::from_kwargs("score_boxes", options)?.pixel_score(field, nan_policy, score)?;
    let reduce: BoxReduce = parse(reduce)?;
    let offsets = offsets.as_array();
    let what = field.name();
    with_float!(boxes, IxDyn, what, 2, |T| {
        let o = objectness.map(|o| readonly::<T, Ix1>(o, "objectness", "the dtype of the boxes")).transpose()?;
        let o = o.as_ref().map(|o| o.as_array());
        run_on::<T, IxDyn, _>(py, boxes, what, |v, cancel| {
            pickaxe_core::score_boxes(field, &score, v, offsets, reduce, o, policy, cancel)
        })
    })
}

/// Localisation disagreement of committee boxes against reference boxes: per image (N,),
/// or per reference box (B,) with reduce "none". Every float array has the dtype of
/// `boxes` (the Python layer converts).
#[pyfunction]
#[pyo3(signature = (boxes, classes, logits, offsets, member_boxes, member_classes, member_logits, member_offsets, members, iou_threshold=0.5, per_class=false, reduce="max", objectness=None))]
#[allow(clippy::too_many_arguments)]
fn localization_disagreement<'py>(
    py: Python<'py>, boxes: &Bound<'py, PyAny>, classes: &Bound<'py, PyAny>, logits: bool,
    offsets: PyReadonlyArray1<'py, i64>, member_boxes: &Bound<'py, PyAny>, member_classes: &Bound<'py, PyAny>,
    member_logits: bool, member_offsets: PyReadonlyArray1<'py, i64>, members: usize, iou_threshold: f64,
    per_class: bool, reduce: &str, objectness: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let opts = LocOptions { iou_threshold, per_class, reduce: BoxReduce::parse_optional(reduce).map_err(to_pyerr)? };
    let (off, moff) = (offsets.as_array(), member_offsets.as_array());
    with_float!(boxes, Ix2, "boxes", |T| {
        let why = "the dtype of boxes";
        let b = readonly::<T, Ix2>(boxes, "boxes", why)?;
        let cname = if logits { "logits" } else { "confidences" };
        let c = readonly::<T, Ix2>(classes, cname, why)?;
        let mb = readonly::<T, Ix2>(member_boxes, "member_boxes", why)?;
        let mname = if member_logits { "member_logits" } else { "member_confidences" };
        let mc = readonly::<T, Ix2>(member_classes, mname, why)?;
        let o = objectness.map(|o| readonly::<T, Ix1>(o, "objectness", why)).transpose()?;
        let o = o.as_ref().map(|o| o.as_array());
        let reference = BoxSet { bbox: b.as_array(), classes: c.as_array(), logits, offsets: off };
        let committee = BoxSet { bbox: mb.as_array(), classes: mc.as_array(), logits: member_logits, offsets: moff };
        // Every box and class score read, and each reference box of an image against
        // the member boxes of its image (on average).
        let (rb, mbn) = (reference.bbox.nrows(), committee.bbox.nrows());
        let work = (rb + mbn)
            .saturating_mul(4 + reference.classes.ncols())
            .saturating_add(rb.saturating_mul(mbn) / (off.len().max(2) - 1));
        let out = interrupt::run(py, work, |cancel| {
            pickaxe_core::localization_disagreement(reference, committee, members, opts, o, cancel)
        })?;
        Ok(out.into_pyarray(py).into_any())
    })
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    add_functions!(m, score_boxes, localization_disagreement)
}

//! pickaxe-core: the uncertainty-sampling kernels of pickaxe, in plain Rust over ndarray
//! views, and the distance kernels of its diversity miners (`knn`: exact nearest
//! neighbours from BLAS Gram blocks; `coreset`: k-center greedy). No Python here: the
//! `pickaxe-py` crate binds these functions as `pickaxe._core`.
//!
//! Every function reads its input in place (any strides), validates it in the same pass
//! that scores it, runs at the SIMD level chosen at run time (`simd::level`) and in
//! parallel above a size threshold (`threads`).

pub mod badge;
mod blocked;
pub mod cancel;
pub mod coreset;
pub mod detect;
mod driver;
pub mod error;
pub mod groups;
pub mod hnsw;
pub mod kmeans;
pub mod knn;
#[cfg(target_arch = "x86_64")]
mod knn_x86;
mod lanes;
mod logits_x86;
mod logits_x86_f64;
pub mod math;
mod names;
mod offsets;
mod passes;
mod rows;
pub mod seg;
pub mod select;
pub mod simd;
mod stack;
pub mod threads;
pub mod typicality;

use ndarray::{ArrayView1, ArrayView2, ArrayView3, Axis};

pub use cancel::Cancel;
pub use coreset::kcenter_greedy;
pub use detect::score_boxes;
pub use error::{fault_message, Error, Fault, Field, RowFault};
pub use knn::{knn_update, pair_distances, Metric};
pub use math::Real;
pub use offsets::BoxReduce;
pub use rows::{RowOptions, RowScore};
pub use seg::{score_pixels, PixelScore, Reduce};
pub use select::top_k;
pub use stack::StackScore;
pub mod localization;
pub use localization::{localization_disagreement, BoxSet, LocOptions};

names::named_enum! {
    /// What to do with an invalid row.
    pub enum NanPolicy("nan_policy") {
        /// Fail on the first invalid row (lowest index).
        Raise = "raise",
        /// Give invalid rows a NaN score.
        Omit = "omit",
    }
}

fn finish<T: Real>(
    field: Field, (out, first): (Vec<T>, Option<(usize, RowFault)>), policy: NanPolicy,
) -> Result<Vec<T>, Error> {
    match (first, policy) {
        (Some((row, f)), NanPolicy::Raise) => Err(Error::InvalidRow { field, row, member: f.member, fault: f.fault }),
        _ => Ok(out),
    }
}

/// Runs `kernel` over the rows of `x` and applies the NaN policy.
fn run_rows<T: Real, K: driver::Kernel<T>>(
    field: Field, kernel: &K, x: ArrayView3<'_, T>, scratch_len: driver::ScratchLen, policy: NanPolicy, cancel: &Cancel,
) -> Result<Vec<T>, Error> {
    let res = driver::run(kernel, x, scratch_len, policy == NanPolicy::Raise, cancel)?;
    finish(field, res, policy)
}

/// The error for an axis of length 0 (`what` names its entries: classes, members, ...).
fn empty_axis(field: Field, what: &str) -> Error {
    Error::Shape(format!("{} has 0 {what}; need at least 1", field.name()))
}

fn route_ok(field: Field, score: &RowScore) -> bool {
    use RowScore::*;
    match field {
        Field::Confidence => matches!(score, LeastConfidence),
        Field::Confidences => matches!(score, LeastConfidence | Margin | Ratio | Entropy { .. }),
        Field::Logits => !matches!(score, Norm { .. }),
        Field::Embeddings | Field::Reference => matches!(score, Norm { .. }),
        Field::QueryByCommittee | Field::McDropout => false,
    }
}

/// A per-row score of a (N, C) field: `confidences`, `logits` (C = 1 is a binary model,
/// scored as the logits [0, x]) or `embeddings` / `reference` (only `RowScore::Norm`, which
/// returns −‖z‖: "higher = more worth labeling" makes the lowest activation score highest).
/// `cancel` stops the work early with `Error::Interrupted`.
pub fn score_rows<T: Real>(
    field: Field, score: &RowScore, x: ArrayView2<'_, T>, policy: NanPolicy, cancel: &Cancel,
) -> Result<Vec<T>, Error> {
    let kernel = row_kernel(field, score, x.len_of(Axis(1)))?;
    run_rows(field, &kernel, x.insert_axis(Axis(1)), (0, 0, 0), policy, cancel)
}

/// The kernel of a per-row score of rows of `c` values, after checking the route and the
/// score's arguments.
pub(crate) fn row_kernel<T: Real>(field: Field, score: &RowScore, c: usize) -> Result<rows::RowKernel<T>, Error> {
    if !route_ok(field, score) {
        return Err(Error::argument("field", format!("{:?} cannot be computed from {}", score, field.name())));
    }
    if c == 0 {
        let unit = if matches!(field, Field::Embeddings | Field::Reference) { "dimensions" } else { "classes" };
        return Err(empty_axis(field, unit));
    }
    let classes = if field == Field::Logits && c == 1 { 2 } else { c };
    let mut weights = Vec::new();
    match score {
        RowScore::Entropy { class_weights: Some(w), .. } => {
            if w.len() != classes {
                return Err(Error::argument(
                    "class_weights",
                    format!("class_weights has {} entries but {} has {classes} classes", w.len(), field.name()),
                ));
            }
            if let Some((i, v)) = w.iter().enumerate().find(|(_, v)| !(v.is_finite() && **v >= 0.0)) {
                return Err(Error::argument(
                    "class_weights",
                    format!("class_weights[{i}] is {v}; weights must be finite and >= 0"),
                ));
            }
            weights = w.iter().map(|&v| T::from_f64(v)).collect();
        }
        RowScore::Energy { temperature } if !(temperature.is_finite() && *temperature > 0.0) => {
            return Err(Error::argument(
                "temperature",
                format!("temperature must be finite and > 0; got {temperature}"),
            ));
        }
        RowScore::Norm { ord } if !(*ord > 0.0) => {
            return Err(Error::argument("ord", format!("ord must be > 0 (or inf); got {ord}")));
        }
        _ => {}
    }
    Ok(rows::RowKernel { field, score: score.clone(), weights, classes })
}

/// A per-row score of the (N,) field `confidence`: only `least_confidence` (1 − p) can
/// be computed from one probability per row.
pub fn score_confidence<T: Real>(
    score: &RowScore, x: ArrayView1<'_, T>, policy: NanPolicy, cancel: &Cancel,
) -> Result<Vec<T>, Error> {
    if !matches!(score, RowScore::LeastConfidence) {
        return Err(Error::argument("score", "confidence only supports least_confidence"));
    }
    least_confidence_1d(x, policy, cancel)
}

/// `least_confidence` of the (N,) field `confidence`: 1 − p.
pub fn least_confidence_1d<T: Real>(x: ArrayView1<'_, T>, policy: NanPolicy, cancel: &Cancel) -> Result<Vec<T>, Error> {
    let kernel =
        rows::RowKernel { field: Field::Confidence, score: RowScore::LeastConfidence, weights: Vec::new(), classes: 1 };
    let x3 = x.insert_axis(Axis(1)).insert_axis(Axis(2));
    run_rows(Field::Confidence, &kernel, x3, (0, 0, 0), policy, cancel)
}

/// A committee or dropout score of a (N, M, C) field; with `logits` the last axis holds
/// logits and each member is softmaxed (C = 1: binary, as the logits [0, x]).
pub fn score_stack<T: Real>(
    field: Field, score: StackScore, x: ArrayView3<'_, T>, logits: bool, policy: NanPolicy, cancel: &Cancel,
) -> Result<Vec<T>, Error> {
    let kernel = stack_kernel(field, score, x.len_of(Axis(1)), x.len_of(Axis(2)), logits)?;
    run_rows(field, &kernel, x, kernel.scratch_len(), policy, cancel)
}

/// The kernel of a committee or dropout score of (M, C) blocks, after checking the route.
pub(crate) fn stack_kernel(
    field: Field, score: StackScore, m: usize, c: usize, logits: bool,
) -> Result<stack::StackKernel, Error> {
    if !field.is_stacked() {
        return Err(Error::argument(
            "field",
            format!("{:?} needs query_by_committee or mc_dropout, not {}", score, field.name()),
        ));
    }
    if matches!(score, StackScore::VoteEntropy | StackScore::ConsensusEntropy | StackScore::KlDisagreement { .. })
        && field != Field::QueryByCommittee
    {
        return Err(Error::argument("field", format!("{:?} is a committee score: it needs query_by_committee", score)));
    }
    if m == 0 {
        let what = if field == Field::McDropout { "passes" } else { "members" };
        return Err(empty_axis(field, what));
    }
    if c == 0 {
        return Err(empty_axis(field, "classes"));
    }
    // Binary logits (C = 1) are scored as the pairs [0, x], built per member on the stack.
    let binary = logits && c == 1;
    let classes = if binary { 2 } else { c };
    Ok(stack::StackKernel::new(score, logits, m, c, classes))
}

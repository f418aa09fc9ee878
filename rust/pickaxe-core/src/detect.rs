//! Detection: per-box scores of all images' boxes stacked in one (B, C) or (B, M, C)
//! array, reduced per image over `offsets` (N + 1 positions, image i owns boxes
//! offsets[i]..offsets[i + 1]). The box scores are the row and stack kernels' own; the
//! reduction is one pass over them. An image with no boxes (or, for the weighted mean, a
//! zero total objectness) scores NaN: never selected by `top_k`. Under
//! `NanPolicy::Omit` an image with an invalid box scores NaN too.

use ndarray::{ArrayView1, ArrayViewD, Axis, Ix2, Ix3};

use crate::cancel::Cancel;
use crate::error::{Error, Field};
use crate::math::Real;
use crate::seg::PixelScore;
use crate::NanPolicy;

/// How the boxes of one image become one score.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BoxReduce {
    /// max_b o_b · s_b.
    Max,
    /// Σ_b o_b · s_b / Σ_b o_b (the plain mean without objectness).
    Mean,
    /// Σ_b o_b · s_b.
    Sum,
}

impl BoxReduce {
    /// The image's value from its running max, Σ o·s and Σ o; a weighted mean with
    /// Σ o = 0 is NaN.
    pub(crate) fn finish(self, best: f64, sum: f64, wsum: f64) -> f64 {
        match self {
            BoxReduce::Max => best,
            BoxReduce::Sum => sum,
            BoxReduce::Mean => {
                if wsum > 0.0 {
                    sum / wsum
                } else {
                    f64::NAN
                }
            }
        }
    }
}

/// Checks `offsets` against `boxes` boxes: returns N.
fn check_offsets(offsets: &ArrayView1<'_, i64>, boxes: usize) -> Result<usize, Error> {
    let len = offsets.len();
    if len == 0 {
        return Err(Error::argument(
            "offsets",
            "offsets must hold N + 1 positions (at least [0]); got an empty array",
        ));
    }
    if offsets[0] != 0 {
        return Err(Error::argument(
            "offsets",
            format!("offsets[0] must be 0; got {}", offsets[0]),
        ));
    }
    for i in 1..len {
        if offsets[i] < offsets[i - 1] {
            return Err(Error::argument(
                "offsets",
                format!(
                    "offsets must not decrease: offsets[{}] = {} < offsets[{}] = {}",
                    i,
                    offsets[i],
                    i - 1,
                    offsets[i - 1]
                ),
            ));
        }
    }
    let last = offsets[len - 1];
    if last != boxes as i64 {
        return Err(Error::argument(
            "offsets",
            format!(
                "offsets[-1] must be the number of boxes, {boxes}; got {last}"
            ),
        ));
    }
    Ok(len - 1)
}

/// Per-image score of stacked boxes: `boxes` is (B, C) for `confidences` / `logits` or
/// (B, M, C) for `query_by_committee` / `mc_dropout`; `objectness` (B,) in [0, 1]
/// weights each box. `cancel` stops the scoring early (`Error::Interrupted`).
#[allow(clippy::too_many_arguments)]
pub fn score_boxes<T: Real>(
    field: Field,
    score: &PixelScore,
    boxes: ArrayViewD<'_, T>,
    offsets: ArrayView1<'_, i64>,
    reduce: BoxReduce,
    objectness: Option<ArrayView1<'_, T>>,
    policy: NanPolicy,
    cancel: &Cancel,
) -> Result<Vec<T>, Error> {
    let stacked = matches!(field, Field::QueryByCommittee | Field::McDropout);
    let ndim = if stacked { 3 } else { 2 };
    if boxes.ndim() != ndim {
        let shape = if stacked { "(B, M, C)" } else { "(B, C)" };
        return Err(Error::Shape(format!(
            "{} must be {ndim}-D {shape} for detection (every image's boxes stacked); got shape {:?}",
            field.name(),
            boxes.shape()
        )));
    }
    let b = boxes.len_of(Axis(0));
    let n = check_offsets(&offsets, b)?;
    if let Some(o) = &objectness {
        if o.len() != b {
            return Err(Error::Shape(format!(
                "objectness must be (B,) = ({b},), one per box; got {} values",
                o.len()
            )));
        }
        if let Some((i, v)) = o.iter().enumerate().find(|(_, v)| {
            let v = v.to_f64();
            !(-1e-6..=1.0 + 1e-6).contains(&v)
        }) {
            return Err(Error::argument(
                "objectness",
                format!("objectness[{i}] is {v:?}; objectness must be in [0, 1]"),
            ));
        }
    }
    let scores = match score {
        PixelScore::Row(s) => {
            let x = boxes.into_dimensionality::<Ix2>().map_err(|e| Error::Shape(e.to_string()))?;
            crate::score_rows(field, s, x, policy, cancel)
        }
        PixelScore::Stack { score, logits } => {
            let x = boxes.into_dimensionality::<Ix3>().map_err(|e| Error::Shape(e.to_string()))?;
            crate::score_stack(field, *score, x, *logits, policy, cancel)
        }
    };
    let scores = scores.map_err(|e| match e {
        Error::InvalidRow {
            field,
            row,
            member,
            fault,
        } => {
            // The image owning box `row`: the last i with offsets[i] <= row.
            let image = offsets
                .as_slice()
                .map(|s| s.partition_point(|&o| o <= row as i64))
                .unwrap_or_else(|| offsets.iter().filter(|&&o| o <= row as i64).count())
                .saturating_sub(1);
            let index = row - offsets[image] as usize;
            Error::InvalidBox {
                field,
                row,
                image,
                index,
                member,
                fault,
            }
        }
        other => other,
    })?;
    let mut out = crate::error::with_room(n)?;
    for i in 0..n {
        let (lo, hi) = (offsets[i] as usize, offsets[i + 1] as usize);
        let mut best = f64::NEG_INFINITY;
        let mut sum = 0.0;
        let mut wsum = 0.0;
        let mut nan = false;
        for j in lo..hi {
            let s = scores[j].to_f64();
            let o = objectness.as_ref().map_or(1.0, |o| o[j].to_f64().clamp(0.0, 1.0));
            nan |= s.is_nan();
            let v = o * s;
            best = if v > best { v } else { best };
            sum += v;
            wsum += o;
        }
        let v = if nan || hi == lo {
            f64::NAN
        } else {
            reduce.finish(best, sum, wsum)
        };
        out.push(T::from_f64(v));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RowScore;
    use ndarray::{arr1, Array2};

    #[test]
    fn reduce_and_empty_images() {
        let x = Array2::from_shape_vec((3, 2), vec![0.9, 0.1, 0.5, 0.5, 0.6, 0.4]).unwrap();
        let off = arr1(&[0i64, 2, 2, 3]);
        let s = PixelScore::Row(RowScore::LeastConfidence);
        let out = score_boxes(
            Field::Confidences,
            &s,
            x.view().into_dyn(),
            off.view(),
            BoxReduce::Max,
            None,
            NanPolicy::Raise,
            &Cancel::new(),
        )
        .unwrap();
        assert!((out[0] - 0.5f64).abs() < 1e-12 && out[1].is_nan() && (out[2] - 0.4f64).abs() < 1e-12);
        let bad = arr1(&[0i64, 3, 2, 3]);
        let e = score_boxes(
            Field::Confidences,
            &s,
            x.view().into_dyn(),
            bad.view(),
            BoxReduce::Sum,
            None,
            NanPolicy::Raise,
            &Cancel::new(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("must not decrease"));
    }
}

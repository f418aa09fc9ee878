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
use crate::offsets::{self, BoxReduce};
use crate::seg::PixelScore;
use crate::NanPolicy;

/// Per-image score of stacked boxes: `boxes` is (B, C) for `confidences` / `logits` or
/// (B, M, C) for `query_by_committee` / `mc_dropout`; `objectness` (B,) in [0, 1]
/// weights each box. `cancel` stops the scoring early (`Error::Interrupted`).
#[allow(clippy::too_many_arguments)]
pub fn score_boxes<T: Real>(
    field: Field, score: &PixelScore, boxes: ArrayViewD<'_, T>, offsets: ArrayView1<'_, i64>, reduce: BoxReduce,
    objectness: Option<ArrayView1<'_, T>>, policy: NanPolicy, cancel: &Cancel,
) -> Result<Vec<T>, Error> {
    field.check_ndim(boxes.shape(), (2, "(B, C)"), (3, "(B, M, C)"), "detection (every image's boxes stacked)")?;
    let b = boxes.len_of(Axis(0));
    let n = offsets::check("offsets", &offsets, b)?;
    if let Some(o) = &objectness {
        offsets::check_objectness(o.iter().copied(), b, "box")?;
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
        Error::InvalidRow { field, row, member, fault } => {
            let (image, index) = offsets::locate(&offsets, row);
            Error::InvalidBox { field, row, image, index, member, fault }
        }
        other => other,
    })?;
    let mut out = crate::error::with_room(n)?;
    for i in 0..n {
        let boxes = offsets[i] as usize..offsets[i + 1] as usize;
        let v = reduce.image(boxes.map(|j| {
            let o = objectness.as_ref().map_or(1.0, |o| o[j].to_f64().clamp(0.0, 1.0));
            (scores[j].to_f64(), o)
        }));
        out.push(T::from_f64(v));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RowScore;
    use ndarray::{arr1, Array2};

    /// Least confidence of the boxes `x` reduced per image over `offsets`.
    fn least_confidence(x: &Array2<f64>, offsets: &[i64], reduce: BoxReduce) -> Result<Vec<f64>, Error> {
        let (s, off) = (PixelScore::Row(RowScore::LeastConfidence), arr1(offsets));
        score_boxes(
            Field::Confidences,
            &s,
            x.view().into_dyn(),
            off.view(),
            reduce,
            None,
            NanPolicy::Raise,
            &Cancel::new(),
        )
    }

    #[test]
    fn reduce_and_empty_images() {
        let x = Array2::from_shape_vec((3, 2), vec![0.9, 0.1, 0.5, 0.5, 0.6, 0.4]).unwrap();
        let out = least_confidence(&x, &[0, 2, 2, 3], BoxReduce::Max).unwrap();
        assert!((out[0] - 0.5f64).abs() < 1e-12 && out[1].is_nan() && (out[2] - 0.4f64).abs() < 1e-12);
        let e = least_confidence(&x, &[0, 3, 2, 3], BoxReduce::Sum).unwrap_err();
        assert!(e.to_string().contains("must not decrease"));
    }
}

//! Boxes of many images stacked in one array, image i owning rows offsets[i]..offsets[i + 1]:
//! the checks of `offsets` and of the per-box `objectness`, and the reduction of an image's
//! box scores to one value. Detection (`detect.rs`) and localisation disagreement
//! (`localization.rs`) share them, so both word a bad offset alike and reduce alike.

use ndarray::ArrayView1;

use crate::error::Error;
use crate::math::Real;

crate::names::named_enum! {
    /// How the boxes of one image become one score (named as in `pickaxe.detection`).
    pub enum BoxReduce("reduce") {
        /// max_b o_b · s_b.
        Max = "max",
        /// Σ_b o_b · s_b / Σ_b o_b (the plain mean without objectness).
        Mean = "mean",
        /// Σ_b o_b · s_b.
        Sum = "sum",
    }
}

impl BoxReduce {
    /// A reduction, or None for "none" (per-box scores, as localisation disagreement
    /// returns them with `reduce=None`).
    pub fn parse_optional(name: &str) -> Result<Option<BoxReduce>, Error> {
        match name {
            "none" => Ok(None),
            other => other.parse().map(Some).map_err(|_| {
                Error::argument("reduce", format!("reduce must be \"max\", \"mean\", \"sum\" or None; got {other:?}"))
            }),
        }
    }

    /// One image's value from its boxes' (score, objectness) pairs, objectness already in
    /// [0, 1] (1 without it), in box order. An image without boxes, with a NaN box score
    /// or (for the weighted mean) with Σ o = 0 is NaN: never selected by `top_k`.
    pub(crate) fn image(self, boxes: impl Iterator<Item = (f64, f64)>) -> f64 {
        let (mut best, mut sum, mut wsum) = (f64::NEG_INFINITY, 0.0, 0.0);
        let (mut any, mut nan) = (false, false);
        for (s, o) in boxes {
            any = true;
            nan |= s.is_nan();
            let v = o * s;
            best = if v > best { v } else { best };
            sum += v;
            wsum += o;
        }
        if nan || !any {
            return f64::NAN;
        }
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

/// Checks the positions `name` against `boxes` stacked boxes: at least one position, the
/// first 0, never decreasing, the last `boxes`. Returns the number of images (or slots).
pub(crate) fn check(name: &'static str, offsets: &ArrayView1<'_, i64>, boxes: usize) -> Result<usize, Error> {
    let len = offsets.len();
    if len == 0 {
        return Err(Error::argument(
            name,
            format!("{name} must hold N + 1 positions (at least [0]); got an empty array"),
        ));
    }
    if offsets[0] != 0 {
        return Err(Error::argument(name, format!("{name}[0] must be 0; got {}", offsets[0])));
    }
    for i in 1..len {
        if offsets[i] < offsets[i - 1] {
            return Err(Error::argument(
                name,
                format!(
                    "{name} must not decrease: {name}[{i}] = {} < {name}[{}] = {}",
                    offsets[i],
                    i - 1,
                    offsets[i - 1]
                ),
            ));
        }
    }
    if offsets[len - 1] != boxes as i64 {
        return Err(Error::argument(
            name,
            format!("{name}[-1] must be the number of boxes, {boxes}; got {}", offsets[len - 1]),
        ));
    }
    Ok(len - 1)
}

/// The image owning stacked box `row` (the last i with offsets[i] <= row) and the box's
/// index within it, for checked `offsets`.
pub(crate) fn locate(offsets: &ArrayView1<'_, i64>, row: usize) -> (usize, usize) {
    let image = offsets
        .as_slice()
        .map(|s| s.partition_point(|&o| o <= row as i64))
        .unwrap_or_else(|| offsets.iter().filter(|&&o| o <= row as i64).count())
        .saturating_sub(1);
    (image, row - offsets[image] as usize)
}

/// Checks `objectness`: one value per box (`per` names a box in the message) in [0, 1]
/// (1e-6 of slack either side, clamped by the reduction). A bad value is shown as `V`
/// prints it.
pub(crate) fn check_objectness<V: Real>(
    objectness: impl ExactSizeIterator<Item = V>, boxes: usize, per: &str,
) -> Result<(), Error> {
    if objectness.len() != boxes {
        return Err(Error::Shape(format!(
            "objectness must be (B,) = ({boxes},), one per {per}; got {} values",
            objectness.len()
        )));
    }
    for (i, v) in objectness.enumerate() {
        if !(-1e-6..=1.0 + 1e-6).contains(&v.to_f64()) {
            return Err(Error::argument(
                "objectness",
                format!("objectness[{i}] is {v:?}; objectness must be in [0, 1]"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::arr1;

    #[test]
    fn offsets_checks_and_location() {
        let ok = arr1(&[0i64, 2, 2, 5]);
        assert_eq!(check("offsets", &ok.view(), 5).unwrap(), 3);
        assert_eq!(locate(&ok.view(), 1), (0, 1));
        assert_eq!(locate(&ok.view(), 2), (2, 0));
        assert_eq!(locate(&ok.view(), 4), (2, 2));
        let cases: [(&[i64], &str); 4] = [
            (&[], "offsets must hold N + 1 positions (at least [0]); got an empty array"),
            (&[1, 5], "offsets[0] must be 0; got 1"),
            (&[0, 3, 2, 5], "offsets must not decrease: offsets[2] = 2 < offsets[1] = 3"),
            (&[0, 4], "offsets[-1] must be the number of boxes, 5; got 4"),
        ];
        for (o, msg) in cases {
            let e = check("offsets", &arr1(o).view(), 5).unwrap_err();
            assert_eq!(e.to_string(), msg);
        }
    }

    #[test]
    fn reductions() {
        let b = [(0.5, 1.0), (0.2, 0.5), (0.9, 0.0)];
        assert_eq!(BoxReduce::Max.image(b.into_iter()), 0.5);
        assert_eq!(BoxReduce::Sum.image(b.into_iter()), 0.6);
        assert!((BoxReduce::Mean.image(b.into_iter()) - 0.6 / 1.5).abs() < 1e-15);
        assert!(BoxReduce::Max.image(std::iter::empty()).is_nan());
        assert!(BoxReduce::Mean.image([(0.3, 0.0)].into_iter()).is_nan());
        assert!(BoxReduce::Sum.image([(f64::NAN, 1.0), (0.1, 1.0)].into_iter()).is_nan());
        assert_eq!("sum".parse::<BoxReduce>().unwrap(), BoxReduce::Sum);
        assert_eq!(BoxReduce::parse_optional("none").unwrap(), None);
        let e = BoxReduce::parse_optional("median").unwrap_err().to_string();
        assert_eq!(e, "reduce must be \"max\", \"mean\", \"sum\" or None; got \"median\"");
    }

    #[test]
    fn objectness_is_one_per_box_in_the_unit_interval() {
        assert!(check_objectness([0.0f32, 1.0].into_iter(), 2, "box").is_ok());
        let e = check_objectness([0.5f64].into_iter(), 3, "reference box").unwrap_err();
        assert_eq!(e.to_string(), "objectness must be (B,) = (3,), one per reference box; got 1 values");
        let e = check_objectness([0.5f32, 1.1].into_iter(), 2, "box").unwrap_err();
        assert_eq!(e.to_string(), "objectness[1] is 1.1; objectness must be in [0, 1]");
    }
}

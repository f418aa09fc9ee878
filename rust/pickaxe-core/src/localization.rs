//! Localisation disagreement of a committee (or of dropout passes) of object detectors.
//!
//! Inputs: the reference prediction's boxes of all images stacked, `bbox` (B, 4) as
//! [x1, y1, x2, y2] and class scores (B, C), with `offsets` (N + 1,): image i owns boxes
//! offsets[i]..offsets[i + 1]; and the members' boxes stacked the same way, (B', 4) and
//! (B', C), with `member_offsets` (N·M + 1,) ordered image-major then member: image i,
//! member m owns member boxes member_offsets[i·M + m]..member_offsets[i·M + m + 1].
//!
//! Matching, per image and per member: the reference boxes in order of confidence (their
//! highest class probability) descending, ties by box index ascending, each take the
//! still unmatched member box of highest IoU, if that IoU is ≥ the threshold (ties by
//! member box index ascending). With `per_class` only member boxes whose argmax class
//! equals the reference box's are candidates (argmax ties: lowest class).
//!
//! A reference box's score, with M members of which K matched it:
//!
//!   (1 − Σ_matched IoU / M) + (M − K) / M + D,
//!
//! i.e. one minus the mean IoU over the members (a member without a match counts IoU 0),
//! plus the fraction of members without a match, plus the class disagreement D of the
//! matched member boxes: D = (1/K) Σ_k KL(p_k ‖ p̄), p̄ = (1/K) Σ_k p_k (0 ln 0 = 0, the
//! reference's own distribution does not take part), and D = 0 when K < 2. The score lies
//! in [0, 2 + ln M].
//!
//! IoU = area(a ∩ b) / area(a ∪ b), and 0 when the union's area is 0 (two zero-area
//! boxes). Box scores are reduced per image as `detect::score_boxes` does (objectness
//! weighted, `offsets.rs`); an image without reference boxes scores NaN.

use std::ops::Range;

use ndarray::{ArrayView1, ArrayView2, Axis};
use rayon::prelude::*;

use crate::cancel::Cancel;
use crate::error::{fault_message, Error, Field};
use crate::math::Real;
use crate::offsets::{self, BoxReduce};
use crate::passes::{diagnose_logits, diagnose_probs};
use crate::threads;

/// One set of boxes: coordinates, class scores and where each image (or image and
/// member) starts.
#[derive(Clone, Copy, Debug)]
pub struct BoxSet<'a, T> {
    /// (B, 4): x1, y1, x2, y2 with x1 ≤ x2 and y1 ≤ y2.
    pub bbox: ArrayView2<'a, T>,
    /// (B, C): class probabilities, or logits when `logits` (C = 1: binary, sigmoid).
    pub classes: ArrayView2<'a, T>,
    pub logits: bool,
    /// Slot boundaries: (N + 1,) for the reference, (N·M + 1,) for the members.
    pub offsets: ArrayView1<'a, i64>,
}

/// How the reference boxes are matched and reduced.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LocOptions {
    /// A match needs IoU ≥ this, in (0, 1].
    pub iou_threshold: f64,
    /// Only match member boxes of the reference box's argmax class.
    pub per_class: bool,
    /// Per-image reduction; None returns the B per-box scores.
    pub reduce: Option<BoxReduce>,
}

/// Names of one box set's arrays in messages.
struct Names {
    bbox: &'static str,
    classes: &'static str,
    offsets: &'static str,
    member: bool,
}

/// IoU of two boxes [x1, y1, x2, y2]; 0 when the union has no area.
#[inline]
pub fn iou(a: &[f64; 4], b: &[f64; 4]) -> f64 {
    let iw = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let ih = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = iw * ih;
    let union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter;
    if union > 0.0 {
        (inter / union).min(1.0)
    } else {
        0.0
    }
}

/// Greedy matching of one member's boxes to the reference boxes: `order` lists the
/// reference boxes by confidence descending (ties by index); each takes the unmatched
/// member box of highest IoU ≥ `threshold` (ties by lowest index), of the same class
/// when `per_class`. `out[r]` is (member box, IoU) or None. `taken` is scratch.
#[allow(clippy::too_many_arguments)]
pub fn greedy_match(
    refs: &[[f64; 4]], ref_class: &[usize], order: &[usize], mem: &[[f64; 4]], mem_class: &[usize], threshold: f64,
    per_class: bool, taken: &mut Vec<bool>, out: &mut [Option<(usize, f64)>],
) {
    taken.clear();
    taken.resize(mem.len(), false);
    for &r in order {
        let mut best: Option<(usize, f64)> = None;
        for (j, b) in mem.iter().enumerate() {
            if taken[j] || (per_class && mem_class[j] != ref_class[r]) {
                continue;
            }
            let v = iou(&refs[r], b);
            if v >= threshold && best.is_none_or(|(_, bv)| v > bv) {
                best = Some((j, v));
            }
        }
        if let Some((j, _)) = best {
            taken[j] = true;
        }
        out[r] = best;
    }
}

/// Checks slot boundaries: `slots + 1` positions (`slots_text` words the count), then
/// `offsets::check`.
fn check_slots(
    name: &'static str, offsets: &ArrayView1<'_, i64>, slots: usize, slots_text: &str, boxes: usize,
) -> Result<(), Error> {
    let len = offsets.len();
    if len != slots + 1 {
        return Err(Error::argument(
            name,
            format!("{name} must hold {slots_text} + 1 = {} positions; got {len}", slots + 1),
        ));
    }
    offsets::check(name, offsets, boxes).map(|_| ())
}

/// The boxes of one slot, read and validated: coordinates, class distributions (`k`
/// values per box), argmax class and confidence (highest probability).
#[derive(Default)]
struct Loaded {
    bbox: Vec<[f64; 4]>,
    probs: Vec<f64>,
    argmax: Vec<usize>,
    confidence: Vec<f64>,
}

const COORD: [&str; 4] = ["x1", "y1", "x2", "y2"];

fn coord_fault(v: [f64; 4]) -> Option<String> {
    for (i, x) in v.iter().enumerate() {
        if x.is_nan() {
            return Some(format!("{} is NaN", COORD[i]));
        }
        if x.is_infinite() {
            let sign = if *x > 0.0 { "+" } else { "-" };
            return Some(format!("{} is {sign}inf", COORD[i]));
        }
    }
    if v[2] < v[0] {
        return Some(format!("x2 = {} < x1 = {}: a box is [x1, y1, x2, y2] with x1 <= x2", v[2], v[0]));
    }
    if v[3] < v[1] {
        return Some(format!("y2 = {} < y1 = {}: a box is [x1, y1, x2, y2] with y1 <= y2", v[3], v[1]));
    }
    let area = (v[2] - v[0]) * (v[3] - v[1]);
    if !area.is_finite() {
        return Some(format!("its area overflows ({v:?})"));
    }
    None
}

impl Loaded {
    #[allow(clippy::too_many_arguments)]
    fn load<T: Real>(
        &mut self, set: &BoxSet<'_, T>, names: &Names, range: Range<usize>, image: usize, member: Option<usize>,
        k: usize, row: &mut Vec<T>,
    ) -> Result<(), Error> {
        self.bbox.clear();
        self.probs.clear();
        self.argmax.clear();
        self.confidence.clear();
        let start = range.start;
        for b in range {
            let bad = |field: &'static str, fault: String| Error::InvalidDetectionBox {
                field,
                row: b,
                image,
                member,
                index: b - start,
                fault,
            };
            let c = set.bbox.row(b);
            let v = [c[0].to_f64(), c[1].to_f64(), c[2].to_f64(), c[3].to_f64()];
            if let Some(f) = coord_fault(v) {
                return Err(bad(names.bbox, f));
            }
            self.bbox.push(v);
            row.clear();
            row.extend(set.classes.row(b).iter().copied());
            if set.logits {
                if let Some(f) = diagnose_logits(row) {
                    return Err(bad(names.classes, fault_message(&f, Field::Logits)));
                }
            } else if let Some(f) = diagnose_probs(row, true) {
                let msg = fault_message(&f, Field::Confidences);
                let msg = if names.member { msg.replace("pass logits=", "pass member_logits=") } else { msg };
                return Err(bad(names.classes, msg));
            }
            let at = self.probs.len();
            if set.logits && row.len() == 1 {
                let x = row[0].to_f64();
                self.probs.push(1.0 / (1.0 + x.exp()));
                self.probs.push(1.0 / (1.0 + (-x).exp()));
            } else if set.logits {
                let m = row.iter().fold(f64::NEG_INFINITY, |a, v| a.max(v.to_f64()));
                let mut s = 0.0;
                for v in row.iter() {
                    let e = (v.to_f64() - m).exp();
                    s += e;
                    self.probs.push(e);
                }
                for p in &mut self.probs[at..] {
                    *p /= s;
                }
            } else {
                self.probs.extend(row.iter().map(|v| v.to_f64().max(0.0)));
            }
            debug_assert_eq!(self.probs.len() - at, k);
            let (mut arg, mut best) = (0, f64::NEG_INFINITY);
            for (c, &p) in self.probs[at..].iter().enumerate() {
                if p > best {
                    arg = c;
                    best = p;
                }
            }
            self.argmax.push(arg);
            self.confidence.push(best);
        }
        Ok(())
    }
}

/// Σ_c p_c ln p_c with 0 ln 0 = 0.
fn plogp(p: &[f64]) -> f64 {
    p.iter().map(|&a| if a > 0.0 { a * a.ln() } else { 0.0 }).sum()
}

/// Scratch of one worker.
#[derive(Default)]
struct Work<T> {
    reference: Loaded,
    member: Loaded,
    row: Vec<T>,
    order: Vec<usize>,
    taken: Vec<bool>,
    matches: Vec<Option<(usize, f64)>>,
    iou_sum: Vec<f64>,
    matched: Vec<usize>,
    /// Per reference box: the sum of the matched members' distributions (k values) and
    /// of their Σ_c p ln p. The mean KL from the mean is then
    /// (1/K) Σ_k Σ_c p_kc ln p_kc − Σ_c p̄_c ln p̄_c (= H(p̄) − mean_k H(p_k)), so memory
    /// is r·k, not M·r·k.
    sums: Vec<f64>,
    plogp: Vec<f64>,
}

struct Ctx<'a, 'b, T> {
    reference: &'b BoxSet<'a, T>,
    members: &'b BoxSet<'a, T>,
    m: usize,
    k: usize,
    opts: LocOptions,
}

fn ref_names(logits: bool) -> Names {
    Names { bbox: "boxes", classes: if logits { "logits" } else { "confidences" }, offsets: "offsets", member: false }
}
fn mem_names(logits: bool) -> Names {
    Names {
        bbox: "member_boxes",
        classes: if logits { "member_logits" } else { "member_confidences" },
        offsets: "member_offsets",
        member: true,
    }
}

/// The per-box scores of image `i`'s reference boxes.
fn image_scores<T: Real>(ctx: &Ctx<'_, '_, T>, i: usize, w: &mut Work<T>) -> Result<Vec<f64>, Error> {
    let (rs, ms) = (ctx.reference, ctx.members);
    let (m, k) = (ctx.m, ctx.k);
    let lo = rs.offsets[i] as usize;
    let hi = rs.offsets[i + 1] as usize;
    let rn = ref_names(rs.logits);
    let mn = mem_names(ms.logits);
    let mut row = std::mem::take(&mut w.row);
    w.reference.load(rs, &rn, lo..hi, i, None, k, &mut row)?;
    let r = hi - lo;
    w.order.clear();
    w.order.extend(0..r);
    let conf = &w.reference.confidence;
    // stable: equal confidences keep index order
    w.order.sort_by(|&a, &b| conf[b].total_cmp(&conf[a]));
    w.iou_sum.clear();
    w.iou_sum.resize(r, 0.0);
    w.matched.clear();
    w.matched.resize(r, 0);
    w.sums.clear();
    w.sums.resize(r * k, 0.0);
    w.plogp.clear();
    w.plogp.resize(r, 0.0);
    w.matches.clear();
    w.matches.resize(r, None);
    for mm in 0..m {
        let slot = i * m + mm;
        let a = ms.offsets[slot] as usize;
        let b = ms.offsets[slot + 1] as usize;
        w.member.load(ms, &mn, a..b, i, Some(mm), k, &mut row)?;
        if r == 0 {
            continue;
        }
        greedy_match(
            &w.reference.bbox,
            &w.reference.argmax,
            &w.order,
            &w.member.bbox,
            &w.member.argmax,
            ctx.opts.iou_threshold,
            ctx.opts.per_class,
            &mut w.taken,
            &mut w.matches,
        );
        for (q, hit) in w.matches.iter().enumerate() {
            if let Some((j, v)) = *hit {
                w.iou_sum[q] += v;
                w.matched[q] += 1;
                let p = &w.member.probs[j * k..(j + 1) * k];
                w.plogp[q] += plogp(p);
                for (s, &v) in w.sums[q * k..(q + 1) * k].iter_mut().zip(p) {
                    *s += v;
                }
            }
        }
    }
    w.row = row;
    let mf = m as f64;
    let mut out = Vec::with_capacity(r);
    for q in 0..r {
        let kq = w.matched[q];
        let mut d = 0.0;
        if kq >= 2 {
            let kf = kq as f64;
            let mean_plogp: f64 = w.sums[q * k..(q + 1) * k]
                .iter()
                .map(|&s| {
                    let p = s / kf;
                    if p > 0.0 {
                        p * p.ln()
                    } else {
                        0.0
                    }
                })
                .sum();
            d = (w.plogp[q] / kf - mean_plogp).max(0.0);
        }
        out.push((1.0 - w.iou_sum[q] / mf) + (m - kq) as f64 / mf + d);
    }
    Ok(out)
}

/// Localisation disagreement of `members` (M per image) against `reference`, per image
/// (N,) or per reference box (B,) when `opts.reduce` is None. `objectness` (B,) in
/// [0, 1] weights the reference boxes in the reduction. See the module's documentation
/// for the definition; invalid input raises `Error` naming the array, the box, its
/// image (and member) and the fault: the first bad box of the first image holding one,
/// the image's reference boxes before its members'. `cancel` is read before each image
/// (`Error::Interrupted`).
pub fn localization_disagreement<'a, T: Real>(
    reference: BoxSet<'a, T>, members: BoxSet<'a, T>, m: usize, opts: LocOptions,
    objectness: Option<ArrayView1<'_, T>>, cancel: &Cancel,
) -> Result<Vec<T>, Error> {
    let rn = ref_names(reference.logits);
    let mn = mem_names(members.logits);
    let t = opts.iou_threshold;
    if !(t > 0.0 && t <= 1.0) {
        return Err(Error::argument("iou_threshold", format!("iou_threshold must be in (0, 1]; got {t}")));
    }
    if m == 0 {
        return Err(Error::argument("members", "members must be at least 1; got 0"));
    }
    for (set, names) in [(&reference, &rn), (&members, &mn)] {
        if set.bbox.len_of(Axis(1)) != 4 {
            return Err(Error::Shape(format!(
                "{} must be (B, 4) [x1, y1, x2, y2]; got shape {:?}",
                names.bbox,
                set.bbox.shape()
            )));
        }
        if set.classes.len_of(Axis(0)) != set.bbox.len_of(Axis(0)) {
            return Err(Error::Shape(format!(
                "{} has {} rows but {} has {}: one class row per box",
                names.classes,
                set.classes.len_of(Axis(0)),
                names.bbox,
                set.bbox.len_of(Axis(0))
            )));
        }
        if set.classes.len_of(Axis(1)) == 0 && set.bbox.len_of(Axis(0)) > 0 {
            return Err(Error::Shape(format!("{} has 0 classes; need at least 1", names.classes)));
        }
    }
    let k_of = |s: &BoxSet<'_, T>| {
        let c = s.classes.len_of(Axis(1));
        if s.logits && c == 1 {
            2
        } else {
            c
        }
    };
    // A set without boxes has no classes to agree on (an empty column may be (0, 0)).
    let (rb, mb) = (reference.bbox.len_of(Axis(0)), members.bbox.len_of(Axis(0)));
    let k = if rb > 0 || mb == 0 { k_of(&reference) } else { k_of(&members) };
    if rb > 0 && mb > 0 && k_of(&members) != k {
        return Err(Error::Shape(format!(
            "{} has {} classes but {} has {}: the members score the reference's classes",
            mn.classes,
            members.classes.len_of(Axis(1)),
            rn.classes,
            reference.classes.len_of(Axis(1))
        )));
    }
    let b = reference.bbox.len_of(Axis(0));
    let n = offsets::check(rn.offsets, &reference.offsets, b)?;
    let nm = n.checked_mul(m).ok_or_else(|| Error::argument("members", "N · members overflows"))?;
    check_slots(mn.offsets, &members.offsets, nm, &format!("N · members = {n} · {m}"), members.bbox.len_of(Axis(0)))?;
    let obj: Option<Vec<f64>> = match &objectness {
        None => None,
        Some(o) => {
            let v: Vec<f64> = o.iter().map(|x| x.to_f64()).collect();
            offsets::check_objectness(v.iter().copied(), b, "reference box")?;
            Some(v.into_iter().map(|x| x.clamp(0.0, 1.0)).collect())
        }
    };
    let ctx = Ctx { reference: &reference, members: &members, m, k, opts };
    let work = b + members.bbox.len_of(Axis(0));
    let per_image: Vec<Result<Vec<f64>, Error>> = match threads::pool().filter(|_| n > 1 && work >= 2048) {
        None => {
            let mut w = Work::default();
            let mut out = Vec::with_capacity(n);
            for i in 0..n {
                if cancel.is_cancelled() {
                    break;
                }
                let r = image_scores(&ctx, i, &mut w);
                let stop = r.is_err();
                out.push(r);
                if stop {
                    break;
                }
            }
            out
        }
        Some(p) => p.install(|| {
            (0..n)
                .into_par_iter()
                .map_init(Work::default, |w, i| {
                    if cancel.is_cancelled() {
                        return Err(Error::Interrupted);
                    }
                    image_scores(&ctx, i, w)
                })
                .collect()
        }),
    };
    cancel.check()?;
    let mut out = Vec::with_capacity(if opts.reduce.is_some() { n } else { b });
    for (i, r) in per_image.into_iter().enumerate() {
        let s = r?;
        match opts.reduce {
            None => out.extend(s.iter().map(|&v| T::from_f64(v))),
            Some(red) => {
                let lo = reference.offsets[i] as usize;
                let o = obj.as_ref().map(|o| &o[lo..lo + s.len()]);
                let boxes = s.iter().enumerate().map(|(j, &v)| (v, o.map_or(1.0, |o| o[j])));
                out.push(T::from_f64(red.image(boxes)));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{arr1, arr2};

    #[test]
    fn iou_values() {
        let a = [0.0, 0.0, 2.0, 2.0];
        assert_eq!(iou(&a, &a), 1.0);
        assert!((iou(&a, &[1.0, 0.0, 3.0, 2.0]) - 2.0 / 6.0).abs() < 1e-15);
        assert_eq!(iou(&a, &[2.0, 0.0, 4.0, 2.0]), 0.0); // touching
        assert_eq!(iou(&a, &[5.0, 5.0, 6.0, 6.0]), 0.0); // disjoint
        let z = [1.0, 1.0, 1.0, 1.0]; // zero area
        assert_eq!(iou(&z, &z), 0.0);
        assert_eq!(iou(&z, &a), 0.0);
        assert!((iou(&a, &[0.0, 0.0, 1.0, 1.0]) - 0.25).abs() < 1e-15); // inside
    }

    #[test]
    fn greedy_by_confidence_then_iou() {
        // Two reference boxes both overlap member box 0; the more confident one (1)
        // takes it, the other gets member box 1.
        let refs = [[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 2.0, 2.2]];
        let mem = [[0.0, 0.0, 2.0, 2.1], [0.0, 0.0, 2.0, 1.6]];
        let mut out = vec![None; 2];
        let mut taken = Vec::new();
        greedy_match(&refs, &[0, 0], &[1, 0], &mem, &[0, 0], 0.5, false, &mut taken, &mut out);
        assert_eq!(out[1].unwrap().0, 0);
        assert_eq!(out[0].unwrap().0, 1);
        assert!((out[0].unwrap().1 - 0.8).abs() < 1e-12);
        // threshold: IoU exactly 0.8 matches at 0.8, not above
        greedy_match(&refs, &[0, 0], &[1, 0], &mem, &[0, 0], 0.8, false, &mut taken, &mut out);
        assert_eq!(out[0].map(|x| x.0), Some(1));
        greedy_match(&refs, &[0, 0], &[1, 0], &mem, &[0, 0], 0.81, false, &mut taken, &mut out);
        assert_eq!(out[0], None);
        // per class: member box 0 is of another class
        greedy_match(&refs, &[0, 0], &[1, 0], &mem, &[1, 0], 0.5, true, &mut taken, &mut out);
        assert_eq!(out[1].map(|x| x.0), Some(1));
        assert_eq!(out[0], None);
        // equal IoU: the lower member index wins
        let twins = [[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 2.0, 2.0]];
        greedy_match(&refs[..1], &[0], &[0], &twins, &[0, 0], 0.5, false, &mut taken, &mut out);
        assert_eq!(out[0].map(|x| x.0), Some(0));
    }

    #[test]
    fn scores_and_errors() {
        // One image, one reference box, two members: one exact match with the same
        // class distribution, one without boxes.
        let bbox = arr2(&[[0.0, 0.0, 1.0, 1.0]]);
        let cls = arr2(&[[0.7, 0.3]]);
        let off = arr1(&[0i64, 1]);
        let mb = arr2(&[[0.0, 0.0, 1.0, 1.0]]);
        let mc = arr2(&[[0.6, 0.4]]);
        let moff = arr1(&[0i64, 1, 1]);
        fn set<'a>(
            b: &'a ndarray::Array2<f64>, c: &'a ndarray::Array2<f64>, o: &'a ndarray::Array1<i64>,
        ) -> BoxSet<'a, f64> {
            BoxSet { bbox: b.view(), classes: c.view(), logits: false, offsets: o.view() }
        }
        let opts = LocOptions { iou_threshold: 0.5, per_class: false, reduce: Some(BoxReduce::Max) };
        let out =
            localization_disagreement(set(&bbox, &cls, &off), set(&mb, &mc, &moff), 2, opts, None, &Cancel::new())
                .unwrap();
        // 1 − (1 + 0)/2 + 1/2 + 0 (one distribution)
        assert!((out[0] - 1.0f64).abs() < 1e-12);
        let bad = arr2(&[[0.0, 0.0, 1.0, f64::NAN]]);
        let e = localization_disagreement(set(&bbox, &cls, &off), set(&bad, &mc, &moff), 2, opts, None, &Cancel::new())
            .unwrap_err();
        assert_eq!(e.to_string(), "member_boxes[0] (image 0, member 0, box 0 of the member's): y2 is NaN");
        let flipped = arr2(&[[2.0, 0.0, 1.0, 1.0]]);
        let e =
            localization_disagreement(set(&flipped, &cls, &off), set(&mb, &mc, &moff), 2, opts, None, &Cancel::new())
                .unwrap_err();
        assert!(e.to_string().starts_with("boxes[0] (image 0, box 0 of the image): x2 = 1 < x1 = 2"));
        let e = localization_disagreement(set(&bbox, &cls, &off), set(&mb, &mc, &moff), 3, opts, None, &Cancel::new())
            .unwrap_err();
        assert!(e.to_string().contains("member_offsets must hold N · members = 1 · 3 + 1 = 4"));
    }
}

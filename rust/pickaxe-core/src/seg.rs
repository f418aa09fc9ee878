//! Segmentation: a score per pixel of (N, C, H, W) / (N, H, W, C) predictions (or
//! (N, T, C, H, W) / (N, T, H, W, C) stacks), reduced per image in the same pass. No
//! (N, H, W) map is ever held unless it is asked for (`Reduce::Map`); `Reduce::Top` keeps
//! the H·W pixel scores of one image per running task, nothing more.
//!
//! Two paths:
//! - logits entropy with the pixels of a class contiguous (class_axis = 1, the layout
//!   networks emit): a tile of up to `TILE` pixels of one image row at a time, read in
//!   place by `blocked::entropy_tile` (the kernel the row scores use for short rows):
//!   classes in the outer loop and pixels in the SIMD lanes, running max, then the exp
//!   sums over the classes for a register of pixels at a time.
//! - every other score and layout: each pixel's (M, C) block is read in place when it is
//!   contiguous (class_axis = -1) or gathered into a tile buffer, then scored by the row or
//!   stack kernel of `pickaxe.scores` (same validation, same numbers).
//!
//! Masked pixels are neither scored nor validated. An image with no unmasked pixel scores
//! NaN (never selected by `top_k`); under `NanPolicy::Omit` so does an image with an
//! invalid unmasked pixel (and, in maps, that pixel).

use std::sync::atomic::{AtomicUsize, Ordering};

use ndarray::{ArrayD, ArrayView3, ArrayView5, ArrayViewD, Axis, Ix5, IxDyn};
use rayon::prelude::*;

use crate::blocked::{entropy_tile, TILE};
use crate::cancel::Cancel;
use crate::driver::{Kernel, Scratch, ScratchLen};
use crate::error::{Error, Field, RowFault};
use crate::math::{Isa, Real};
use crate::passes::diagnose_logits;
use crate::rows::RowOptions;
use crate::simd::multiversion;
use crate::{threads, NanPolicy, RowScore, StackScore};

/// The score computed per pixel.
#[derive(Clone, Debug, PartialEq)]
pub enum PixelScore {
    /// A per-row score of `confidences` / `logits`.
    Row(RowScore),
    /// A committee or dropout score; `logits`: the class axis holds logits.
    Stack { score: StackScore, logits: bool },
}

/// How an image's pixel scores become one score.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Reduce {
    Mean,
    Max,
    /// Mean of the ⌈q · unmasked pixels⌉ highest, 0 < q ≤ 1.
    Top(f64),
    /// No reduction: the (N, H, W) maps, masked pixels NaN.
    Map,
}

impl PixelScore {
    /// The per-pixel (or per-box) score named as in `pickaxe.scores` for `field`: a stack
    /// score of `query_by_committee` / `mc_dropout` (`logits`: their class axis holds
    /// logits), a row score of the other fields.
    pub fn from_name(
        field: Field, name: &str, logits: bool, options: RowOptions, kl_reduce: &str,
    ) -> Result<PixelScore, Error> {
        Ok(match field {
            Field::QueryByCommittee | Field::McDropout => {
                PixelScore::Stack { score: StackScore::from_name(name, kl_reduce)?, logits }
            }
            _ => PixelScore::Row(RowScore::from_name(name, options)?),
        })
    }
}

impl Reduce {
    /// The reduction named as in `pickaxe.segmentation`: "mean", "max", "top" (the mean
    /// of the top `q` share of pixels) or "none" (the maps).
    pub fn from_name(name: &str, q: f64) -> Result<Reduce, Error> {
        match name {
            "mean" => Ok(Reduce::Mean),
            "max" => Ok(Reduce::Max),
            "top" => Ok(Reduce::Top(q)),
            "none" => Ok(Reduce::Map),
            other => Err(Error::argument(
                "reduce",
                format!("reduce must be \"mean\", \"max\", (\"top\", q) or None; got {other:?}"),
            )),
        }
    }
}

struct Ctx<'a, T> {
    field: Field,
    /// (N, M, C, H, W), any strides.
    x: ArrayView5<'a, T>,
    mask: Option<ArrayView3<'a, bool>>,
    reduce: Reduce,
    scratch_len: ScratchLen,
    raise: bool,
    /// Some(divisor of H) for the class-major logits-entropy path.
    fast_entropy: Option<f64>,
    /// Read before each image and each pixel row of an image.
    cancel: &'a Cancel,
}

/// (pixel row, pixel column, fault) of the first invalid pixel of an image.
type PixelFault = (usize, usize, RowFault);

/// Running reduction of one image.
struct Acc<'v> {
    reduce: Reduce,
    sum: f64,
    max: f64,
    count: usize,
    invalid: bool,
    vals: &'v mut Vec<f64>,
}

impl Acc<'_> {
    #[inline(always)]
    fn push(&mut self, v: f64) {
        self.count += 1;
        match self.reduce {
            Reduce::Mean => self.sum += v,
            Reduce::Max => self.max = if v > self.max { v } else { self.max },
            Reduce::Top(_) => self.vals.push(v),
            Reduce::Map => {}
        }
    }

    fn finish(self) -> f64 {
        if self.invalid || self.count == 0 {
            return f64::NAN;
        }
        match self.reduce {
            Reduce::Mean => self.sum / self.count as f64,
            Reduce::Max => self.max,
            Reduce::Top(q) => {
                let n = self.vals.len();
                let k = ((q * n as f64).ceil() as usize).clamp(1, n);
                let (hi, kth, _) = self.vals.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a));
                (hi.iter().sum::<f64>() + *kth) / k as f64
            }
            Reduce::Map => 0.0,
        }
    }
}

#[inline(always)]
fn image_generic<T: Real, K: Kernel<T>, I: Isa>(
    kernel: &K, ctx: &Ctx<'_, T>, n: usize, map: &mut [T], vals: &mut Vec<f64>,
) -> Result<f64, PixelFault> {
    let x = &ctx.x;
    let (m, c, h, w) = (x.len_of(Axis(1)), x.len_of(Axis(2)), x.len_of(Axis(3)), x.len_of(Axis(4)));
    let width = m * c;
    let st = x.strides();
    let base = x.as_ptr();
    let want_map = ctx.reduce == Reduce::Map;
    vals.clear();
    let mut acc = Acc { reduce: ctx.reduce, sum: 0.0, max: f64::NEG_INFINITY, count: 0, invalid: false, vals };
    let mut scratch =
        Scratch { f: vec![0.0; ctx.scratch_len.0], t: vec![T::ZERO; ctx.scratch_len.1], u: vec![0; ctx.scratch_len.2] };
    // A pixel's (M, C) block is contiguous: read it in place.
    let contiguous = st[2] == 1 && (m < 2 || st[1] == c as isize);
    let mut tile = if contiguous || ctx.fast_entropy.is_some() { Vec::new() } else { vec![T::ZERO; TILE * width] };
    let mut fast_h = [T::ZERO; TILE];
    let mut fast_out = [0.0f64; TILE];
    let mut fast_ok = [true; TILE];
    // A pixel the fast entropy refused, gathered to be diagnosed and scored.
    let mut one: Vec<T> = Vec::new();
    let pixel_ptr = |hh: usize, ww: usize| -> *const T {
        let off = n as isize * st[0] + hh as isize * st[3] + ww as isize * st[4];
        // SAFETY: (n, 0, 0, hh, ww) is inside the view (n < N, hh < H, ww < W).
        unsafe { base.offset(off) }
    };
    for hh in 0..h {
        if ctx.cancel.is_cancelled() {
            // The caller sees the flag too and drops every result.
            return Ok(f64::NAN);
        }
        let mrow = ctx.mask.as_ref().map(|mk| mk.index_axis(Axis(0), n).index_axis_move(Axis(0), hh));
        let mut w0 = 0;
        while w0 < w {
            let p = TILE.min(w - w0);
            if let Some(div) = ctx.fast_entropy {
                entropy_tile::<T, I>(pixel_ptr(hh, w0), st[2], c, p, &mut fast_h, &mut fast_ok);
                for l in 0..p {
                    fast_out[l] = if fast_ok[l] { fast_h[l].to_f64() / div } else { f64::NAN };
                }
            } else if !contiguous {
                for a in 0..m {
                    for b in 0..c {
                        let k = a * c + b;
                        let p0 = pixel_ptr(hh, w0);
                        for r in 0..p {
                            let off = a as isize * st[1] + b as isize * st[2] + r as isize * st[4];
                            // SAFETY: (n, a, b, hh, w0 + r) is inside the view.
                            tile[r * width + k] = unsafe { *p0.offset(off) };
                        }
                    }
                }
            }
            for r in 0..p {
                let ww = w0 + r;
                let masked = mrow.as_ref().is_some_and(|mr| mr[ww]);
                if masked {
                    if want_map {
                        map[hh * w + ww] = T::NAN;
                    }
                    continue;
                }
                // One call of `kernel.score` below, whatever the layout: the kernel is
                // inlined here, and each call site would be another copy of every score.
                let res: Result<f64, RowFault> = if ctx.fast_entropy.is_some() && fast_ok[r] {
                    Ok(fast_out[r])
                } else {
                    let px: Result<&[T], RowFault> = if ctx.fast_entropy.is_some() {
                        one.clear();
                        one.extend((0..c).map(|b| {
                            // SAFETY: (n, 0, b, hh, ww) is inside the view.
                            unsafe { *pixel_ptr(hh, ww).offset(b as isize * st[2]) }
                        }));
                        match diagnose_logits(&one) {
                            Some(fault) => Err(RowFault { member: None, fault }),
                            None => Ok(&one[..]),
                        }
                    } else if contiguous {
                        // SAFETY: the pixel's M·C values are contiguous (strides checked
                        // above) and inside the view.
                        Ok(unsafe { std::slice::from_raw_parts(pixel_ptr(hh, ww), width) })
                    } else {
                        Ok(&tile[r * width..(r + 1) * width])
                    };
                    px.and_then(|px| kernel.score::<I>(px, &mut scratch))
                };
                match res {
                    Ok(v) => {
                        if want_map {
                            map[hh * w + ww] = T::from_f64(v);
                        }
                        acc.push(v);
                    }
                    Err(f) => {
                        if ctx.raise {
                            return Err((hh, ww, f));
                        }
                        acc.invalid = true;
                        if want_map {
                            map[hh * w + ww] = T::NAN;
                        }
                    }
                }
            }
            w0 += p;
        }
    }
    Ok(acc.finish())
}

multiversion! {
    fn image_dispatch<T: Real, K: Kernel<T>>(
        kernel: &K, ctx: &Ctx<'_, T>, n: usize, map: &mut [T], vals: &mut Vec<f64>,
    ) -> Result<f64, PixelFault> => image_generic
}

fn run_images<T: Real, K: Kernel<T>>(kernel: &K, ctx: &Ctx<'_, T>) -> Result<Vec<T>, Error> {
    let x = &ctx.x;
    let n = x.len_of(Axis(0));
    let hw = x.len_of(Axis(3)) * x.len_of(Axis(4));
    let per = if ctx.reduce == Reduce::Map { hw } else { 1 };
    let mut out = crate::error::zeroed_real::<T>(n * per)?;
    let stop_at = AtomicUsize::new(n);
    let one = |i: usize, chunk: &mut [T]| -> Option<(usize, PixelFault)> {
        if ctx.cancel.is_cancelled() || (ctx.raise && i > stop_at.load(Ordering::Relaxed)) {
            return None;
        }
        let mut vals = Vec::new();
        let map: &mut [T] = if per == hw && ctx.reduce == Reduce::Map { chunk } else { &mut [] };
        match image_dispatch(kernel, ctx, i, map, &mut vals) {
            Ok(v) => {
                if ctx.reduce != Reduce::Map {
                    chunk[0] = T::from_f64(v);
                }
                None
            }
            Err(f) => {
                stop_at.fetch_min(i, Ordering::Relaxed);
                Some((i, f))
            }
        }
    };
    let first = if per == 0 || n == 0 {
        None
    } else {
        let work = n * hw * x.len_of(Axis(1)) * x.len_of(Axis(2));
        match threads::pool().filter(|_| n > 1 && work >= threads::PARALLEL_MIN_VALUES) {
            None => out.chunks_mut(per).enumerate().find_map(|(i, ch)| one(i, ch)),
            Some(pool) => pool.install(|| {
                out.par_chunks_mut(per).enumerate().map(|(i, ch)| one(i, ch)).reduce(
                    || None,
                    |a, b| match (a, b) {
                        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
                        (a, b) => a.or(b),
                    },
                )
            }),
        }
    };
    ctx.cancel.check()?;
    if let Some((image, (y, xx, f))) = first {
        return Err(Error::InvalidPixel { field: ctx.field, image, y, x: xx, member: f.member, fault: f.fault });
    }
    Ok(out)
}

/// Per-pixel `score` of a (N, C, H, W) / (N, H, W, C) field (`confidences`, `logits`) or a
/// (N, M, C, H, W) / (N, M, H, W, C) stack (`query_by_committee`, `mc_dropout`), reduced
/// per image: (N,) scores, or the (N, H, W) maps with `Reduce::Map`. `class_axis` counts
/// in `x` (negative from the end) and must be the axis after the image (and member) axes
/// or the last. `mask` (N, H, W): true where a pixel is ignored. `cancel` is read before
/// each image and each pixel row (`Error::Interrupted`).
#[allow(clippy::too_many_arguments)]
pub fn score_pixels<T: Real>(
    field: Field, score: &PixelScore, x: ArrayViewD<'_, T>, class_axis: isize, reduce: Reduce,
    mask: Option<ArrayView3<'_, bool>>, policy: NanPolicy, cancel: &Cancel,
) -> Result<ArrayD<T>, Error> {
    let ndim = field.check_ndim(
        x.shape(),
        (4, "(N, C, H, W) or (N, H, W, C)"),
        (5, "(N, T, C, H, W) or (N, T, H, W, C)"),
        "segmentation",
    )?;
    let ca = if class_axis < 0 { class_axis + ndim as isize } else { class_axis };
    let first = ndim as isize - 3;
    if ca != first && ca != ndim as isize - 1 {
        return Err(Error::argument(
            "class_axis",
            format!("class_axis must be {first} or -1 for {} of {ndim} dimensions; got {class_axis}", field.name()),
        ));
    }
    if let Reduce::Top(q) = reduce {
        if !(q > 0.0 && q <= 1.0) {
            return Err(Error::argument("reduce", format!("reduce=(\"top\", q) needs 0 < q <= 1; got q = {q}")));
        }
    }
    let mut v = x;
    if !field.is_stacked() {
        v.insert_axis_inplace(Axis(1));
    }
    let v = if ca == ndim as isize - 1 { v.permuted_axes(vec![0, 1, 4, 2, 3]) } else { v };
    let v: ArrayView5<'_, T> = v.into_dimensionality::<Ix5>().map_err(|e| Error::Shape(e.to_string()))?;
    let (n, m, c, h, w) = v.dim();
    if let Some(mk) = &mask {
        if mk.dim() != (n, h, w) {
            return Err(Error::Shape(format!(
                "mask must be boolean (N, H, W) = ({n}, {h}, {w}); got shape {:?}",
                mk.shape()
            )));
        }
    }
    let raise = policy == NanPolicy::Raise;
    let out = match score {
        PixelScore::Row(s) => {
            let kernel = crate::row_kernel::<T>(field, s, c)?;
            let fast = match s {
                RowScore::Entropy { normalize, class_weights: None }
                    if field == Field::Logits && c >= 2 && v.stride_of(Axis(4)) == 1 =>
                {
                    Some(if *normalize { (c as f64).ln() } else { 1.0 })
                }
                _ => None,
            };
            let ctx = Ctx { field, x: v, mask, reduce, scratch_len: (0, 0, 0), raise, fast_entropy: fast, cancel };
            run_images(&kernel, &ctx)
        }
        PixelScore::Stack { score, logits } => {
            let kernel = crate::stack_kernel(field, *score, m, c, *logits)?;
            let ctx =
                Ctx { field, x: v, mask, reduce, scratch_len: kernel.scratch_len(), raise, fast_entropy: None, cancel };
            run_images(&kernel, &ctx)
        }
    }?;
    let shape = if reduce == Reduce::Map { vec![n, h, w] } else { vec![n] };
    ArrayD::from_shape_vec(IxDyn(&shape), out).map_err(|e| Error::Shape(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array2, Array4};

    /// `s` of logits `x` (any float dtype and layout) with `class_axis` and `reduce`.
    fn logits_pixels<T: Real>(
        s: &PixelScore, x: ArrayViewD<'_, T>, class_axis: isize, reduce: Reduce,
    ) -> Result<ArrayD<T>, Error> {
        score_pixels(Field::Logits, s, x, class_axis, reduce, None, NanPolicy::Raise, &Cancel::new())
    }

    /// Per-pixel entropy of (N, C, H, W) logits equals the row kernel's entropy of the
    /// pixel's classes, on the class-major path and on the gathered path (class_axis = -1).
    #[test]
    fn pixels_match_rows() {
        let (n, c, h, w) = (2, 5, 3, 70);
        let x =
            Array4::from_shape_fn((n, c, h, w), |(i, b, y, z)| ((i * 31 + b * 7 + y * 3 + z) % 11) as f32 * 0.37 - 1.5);
        let rows = Array2::from_shape_fn((n * h * w, c), |(r, b)| {
            let (i, rest) = (r / (h * w), r % (h * w));
            x[[i, b, rest / w, rest % w]]
        });
        let ent = RowScore::Entropy { normalize: false, class_weights: None };
        let want = crate::score_rows(Field::Logits, &ent, rows.view(), NanPolicy::Raise, &Cancel::new()).unwrap();
        let s = PixelScore::Row(ent.clone());
        let maps = logits_pixels(&s, x.view().into_dyn(), 1, Reduce::Map).unwrap();
        assert_eq!(maps.shape(), &[n, h, w]);
        for (a, b) in maps.iter().zip(want.iter()) {
            assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "{a} vs {b}");
        }
        let nhwc = x.view().permuted_axes([0, 2, 3, 1]).to_owned();
        let means = logits_pixels(&s, nhwc.view().into_dyn(), -1, Reduce::Mean).unwrap();
        for i in 0..n {
            let m: f64 = want[i * h * w..(i + 1) * h * w].iter().map(|&v| v as f64).sum::<f64>() / (h * w) as f64;
            assert!((means[i] as f64 - m).abs() < 1e-5);
        }
    }

    #[test]
    fn errors_name_the_pixel() {
        let mut x = Array4::<f64>::zeros((2, 3, 4, 5));
        x[[1, 2, 3, 4]] = f64::NAN;
        let s = PixelScore::Row(RowScore::MaxLogit);
        let e = logits_pixels(&s, x.view().into_dyn(), 1, Reduce::Max).unwrap_err();
        assert_eq!(e.to_string(), "logits image 1, pixel (row 3, column 4): NaN at class 2");
        let e = logits_pixels(&s, x.view().into_dyn(), 2, Reduce::Max).unwrap_err();
        assert!(matches!(e, Error::Argument { name: "class_axis", .. }));
    }
}

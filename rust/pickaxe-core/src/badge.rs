//! BADGE seeding (Ash et al., ICLR 2020, "Deep Batch Active Learning by Diverse, Uncertain
//! Gradient Lower Bounds"): k-means++ seeding in the space of the last layer's gradient
//! embeddings g = a ⊗ h, a = p − e_ŷ (p: the class probabilities, ŷ = argmax p, ties the
//! lowest class), h: the penultimate layer's embedding.
//!
//! g (C·D values a row) is never formed. Its distances come from the factors:
//!
//!   ‖g_x − g_y‖² = ‖a_x‖²‖h_x‖² + ‖a_y‖²‖h_y‖² − 2 (a_x·a_y)(h_x·h_y),
//!
//! with a_x·a_y = p_x·a_y − a_y[ŷ_x] (a_x itself is not stored either). Memory: the inputs
//! and O(N) state; time O(N (C + D)) per pick. A pick's pass skips the rows whose D² the
//! new centre cannot lower, by the reverse triangle inequality (‖g_x‖ − ‖g_c‖)² ≤
//! ‖g_x − g_c‖²: those rows are not read.
//!
//! Picks, as in the authors' code (`init_centers`) and scikit-activeml's `Badge`: the first
//! is the row of largest ‖g‖ (ties: the lowest row), each next one is drawn with probability
//! ∝ D², the squared distance to the nearest pick so far; a picked row is never drawn again.
//! When every unpicked row has D² = 0 (fewer distinct embeddings than picks), the next pick
//! is uniform among the unpicked rows (scikit-activeml's rule).

use ndarray::ArrayView2;
use rayon::prelude::*;

use crate::cancel::Cancel;
use crate::error::{filled, Error, Field};
use crate::kmeans::{block_rows, checked_sq_norms, draw, run_in, workers, Scalar, SplitMix64};
use crate::knn::{dot_f64, row_slice};
use crate::math::{Isa, Real};
use crate::simd::multiversion;
use crate::{NanPolicy, RowScore};

/// One pick's centre, in the factors.
struct Centre<'a, T> {
    /// a_c = p_c − e_ŷc (C,).
    a: &'a [T],
    /// h_c (D,).
    h: &'a [T],
    g2: f64,
    gn: f64,
}

/// The per-row state.
struct Rows<'a, T> {
    p: &'a ArrayView2<'a, T>,
    h: &'a ArrayView2<'a, T>,
    yhat: &'a [u32],
    g2: &'a [f64],
    gn: &'a [f64],
    picked: &'a [bool],
}

/// Lowers the D² of rows lo.. (`md`) to the new centre's where nearer; returns their sum.
#[inline(always)]
fn pass<T: Real, I: Isa>(rows: &Rows<'_, T>, c: &Centre<'_, T>, lo: usize, md: &mut [f64]) -> f64 {
    let (mut pb, mut hb) = (Vec::new(), Vec::new());
    let mut sum = 0.0;
    for (r, m) in md.iter_mut().enumerate() {
        let i = lo + r;
        if rows.picked[i] {
            continue;
        }
        let lb = rows.gn[i] - c.gn;
        if lb * lb < *m {
            let p = row_slice(rows.p, i, &mut pb);
            let h = row_slice(rows.h, i, &mut hb);
            let aa = dot_f64::<I, T>(p, c.a) - c.a[rows.yhat[i] as usize].to_f64();
            let hh = dot_f64::<I, T>(h, c.h);
            let d = (rows.g2[i] + c.g2 - 2.0 * aa * hh).max(0.0);
            if d < *m {
                *m = d;
            }
        }
        sum += *m;
    }
    sum
}

multiversion! {
    fn pass_dispatch<T: Real>(rows: &Rows<'_, T>, c: &Centre<'_, T>, lo: usize, md: &mut [f64]) -> f64 => pass
}

/// ŷ and ‖a‖² of every row of `p` (argmax ties: the lowest class).
fn prediction_norms<T: Real>(p: &ArrayView2<'_, T>, par: bool) -> Result<(Vec<u32>, Vec<f64>), Error> {
    let n = p.nrows();
    let mut yhat = filled(n, 0u32)?;
    let mut an2 = filled(n, 0.0f64)?;
    let rows = block_rows(p.ncols(), 1);
    let one = |(t, (y, a)): (usize, (&mut [u32], &mut [f64]))| {
        let mut buf = Vec::new();
        for (r, (y, a)) in y.iter_mut().zip(a.iter_mut()).enumerate() {
            let row = row_slice(p, t * rows + r, &mut buf);
            let best = (0..row.len()).fold(0, |b, j| if row[j] > row[b] { j } else { b });
            *y = best as u32;
            *a = row
                .iter()
                .enumerate()
                .map(|(j, &v)| {
                    let e = v.to_f64() - if j == best { 1.0 } else { 0.0 };
                    e * e
                })
                .sum();
        }
    };
    if par {
        yhat.par_chunks_mut(rows).zip(an2.par_chunks_mut(rows)).enumerate().for_each(one);
    } else {
        yhat.chunks_mut(rows).zip(an2.chunks_mut(rows)).enumerate().for_each(one);
    }
    Ok((yhat, an2))
}

/// BADGE's k-means++ seeding of `k` rows from `probabilities` p (N, C) and `embeddings`
/// h (N, D) (see the module). `seed` drives the draws; the picks do not depend on the
/// number of threads (`threads`: None is the kernels' pool, see `kmeans::workers`).
///
/// Returns the picks in order and each pick's D² when it was picked: +inf for the first.
/// Errors: N differs between the two, C or D = 0, k > N; a probabilities row that is not a
/// distribution (NaN, negative, above 1, sum off by more than 1e-3) or an embeddings row
/// with NaN or ±inf (`Error::InvalidRow` naming the field and row); `Error::OutOfMemory`;
/// `Error::Interrupted` once `cancel` is set (read per pick and per block of rows).
pub fn badge_seeds<T: Scalar>(
    probabilities: ArrayView2<'_, T>, embeddings: ArrayView2<'_, T>, k: usize, seed: u64, threads: Option<usize>,
    cancel: &Cancel,
) -> Result<(Vec<usize>, Vec<f64>), Error> {
    let (n, c) = probabilities.dim();
    let (nh, d) = embeddings.dim();
    if nh != n {
        return Err(Error::Shape(format!(
            "probabilities has {n} rows but embeddings has {nh}; they must describe the same rows"
        )));
    }
    if c == 0 {
        return Err(Error::Shape("probabilities has 0 classes; need at least 1".into()));
    }
    if d == 0 {
        return Err(Error::Shape("embeddings has 0 dimensions; need at least 1".into()));
    }
    if k > n {
        return Err(Error::argument("k", format!("k must be at most the number of rows ({n}); got {k}")));
    }
    let pool = workers(threads, n.saturating_mul(c + d))?;
    let par = pool.is_some();
    run_in(&pool, || {
        // Validates every row as a distribution (the row kernels' checks and messages).
        crate::score_rows(Field::Confidences, &RowScore::LeastConfidence, probabilities, NanPolicy::Raise, cancel)?;
        let hn2 = checked_sq_norms(&embeddings, Field::Embeddings, par, cancel)?;
        let (yhat, an2) = prediction_norms(&probabilities, par)?;
        let mut g2 = an2;
        g2.iter_mut().zip(&hn2).for_each(|(g, h)| *g *= h);
        drop(hn2);
        let mut gn = filled(n, 0.0f64)?;
        gn.iter_mut().zip(&g2).for_each(|(o, &g)| *o = g.sqrt());
        let mut picked = filled(n, false)?;
        let mut md = filled(n, f64::INFINITY)?;
        let mut picks = Vec::with_capacity(k);
        let mut dists = Vec::with_capacity(k);
        if k == 0 {
            return Ok((picks, dists));
        }
        let rows = block_rows(c + d, 1);
        let mut rng = SplitMix64::new(seed);
        // The largest ‖g‖ first (ties: the lowest row).
        let mut next = (0..n).fold(0, |b, i| if g2[i] > g2[b] { i } else { b });
        let mut next_d = f64::INFINITY;
        let mut a = vec![T::ZERO; c];
        let (mut pb, mut hb) = (Vec::new(), Vec::new());
        loop {
            picks.push(next);
            dists.push(next_d);
            picked[next] = true;
            md[next] = 0.0;
            if picks.len() == k {
                break;
            }
            cancel.check()?;
            let pc = row_slice(&probabilities, next, &mut pb);
            for (j, (o, &v)) in a.iter_mut().zip(pc).enumerate() {
                *o = if j == yhat[next] as usize { v - T::ONE } else { v };
            }
            let centre = Centre { a: &a, h: row_slice(&embeddings, next, &mut hb), g2: g2[next], gn: gn[next] };
            let state = Rows { p: &probabilities, h: &embeddings, yhat: &yhat, g2: &g2, gn: &gn, picked: &picked };
            let one = |(t, m): (usize, &mut [f64])| {
                if cancel.is_cancelled() {
                    return 0.0;
                }
                pass_dispatch(&state, &centre, t * rows, m)
            };
            let sums: Vec<f64> = if par {
                md.par_chunks_mut(rows).enumerate().map(one).collect()
            } else {
                md.chunks_mut(rows).enumerate().map(one).collect()
            };
            cancel.check()?;
            let total: f64 = sums.iter().sum();
            next = if total > 0.0 {
                let p = draw(&md, &sums, rows, rng.uniform() * total);
                if picked[p] || md[p] == 0.0 {
                    // Rounding put the target past the last weight: the last drawable row.
                    (0..n).rev().find(|&i| !picked[i] && md[i] > 0.0).unwrap_or(p)
                } else {
                    p
                }
            } else {
                let j = rng.below(n - picks.len());
                (0..n).filter(|&i| !picked[i]).nth(j).expect("an unpicked row")
            };
            next_d = md[next];
        }
        Ok((picks, dists))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;

    fn softmax_rows(z: &Array2<f64>) -> Array2<f64> {
        let mut p = z.clone();
        for mut r in p.rows_mut() {
            let m = r.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            r.mapv_inplace(|v| (v - m).exp());
            let s = r.sum();
            r.mapv_inplace(|v| v / s);
        }
        p
    }

    fn inputs(n: usize, c: usize, d: usize, seed: u64) -> (Array2<f64>, Array2<f64>) {
        let mut rng = SplitMix64::new(seed);
        let z = Array2::from_shape_fn((n, c), |_| 3.0 * rng.uniform());
        let h = Array2::from_shape_fn((n, d), |_| rng.uniform() - 0.5);
        (softmax_rows(&z), h)
    }

    /// The plain algorithm over explicit gradient embeddings g = a ⊗ h.
    fn brute(p: &Array2<f64>, h: &Array2<f64>, k: usize, seed: u64) -> Vec<usize> {
        let (n, c) = p.dim();
        let d = h.ncols();
        let g = Array2::from_shape_fn((n, c * d), |(i, q)| {
            let (j, e) = (q / d, q % d);
            let y = (0..c).fold(0, |b, t| if p[[i, t]] > p[[i, b]] { t } else { b });
            (p[[i, j]] - if j == y { 1.0 } else { 0.0 }) * h[[i, e]]
        });
        let mut rng = SplitMix64::new(seed);
        let norms: Vec<f64> = g.rows().into_iter().map(|r| r.dot(&r)).collect();
        let mut next = (0..n).fold(0, |b, i| if norms[i] > norms[b] { i } else { b });
        let mut md = vec![f64::INFINITY; n];
        let mut out = vec![];
        loop {
            out.push(next);
            md[next] = 0.0;
            if out.len() == k {
                return out;
            }
            for i in 0..n {
                let diff = &g.row(i) - &g.row(next);
                md[i] = md[i].min(diff.dot(&diff));
            }
            for &o in &out {
                md[o] = 0.0;
            }
            let total: f64 = md.iter().sum();
            let target = rng.uniform() * total;
            let mut acc = 0.0;
            next = (0..n)
                .find(|&i| {
                    acc += md[i];
                    acc > target
                })
                .unwrap();
        }
    }

    #[test]
    fn matches_explicit_gradient_embeddings_whatever_the_threads() {
        let (p, h) = inputs(300, 4, 6, 11);
        for k in [1, 2, 10, 40] {
            let want = brute(&p, &h, k, 5);
            for threads in [1, 2] {
                let (got, dist) = badge_seeds(p.view(), h.view(), k, 5, Some(threads), &Cancel::new()).unwrap();
                assert_eq!(got, want, "k={k} threads={threads}");
                assert_eq!(dist[0], f64::INFINITY);
            }
        }
        // Large enough for the parallel path: one thread and two agree.
        let (p, h) = inputs(20_000, 5, 8, 12);
        let one = badge_seeds(p.view(), h.view(), 30, 1, Some(1), &Cancel::new()).unwrap();
        let two = badge_seeds(p.view(), h.view(), 30, 1, Some(2), &Cancel::new()).unwrap();
        assert_eq!(one, two);
    }

    #[test]
    fn duplicates_fall_back_to_uniform_and_never_repeat() {
        let p = Array2::from_shape_fn((12, 2), |(i, j)| if (i % 2 == 0) == (j == 0) { 0.8 } else { 0.2 });
        let h = Array2::from_shape_fn((12, 3), |(i, j)| ((i % 2) * 2 + j) as f64);
        let (picks, dist) = badge_seeds(p.view(), h.view(), 12, 3, None, &Cancel::new()).unwrap();
        let mut s = picks.clone();
        s.sort();
        assert_eq!(s, (0..12).collect::<Vec<_>>());
        assert!(dist[2..].iter().all(|&v| v == 0.0), "{dist:?}");
    }

    #[test]
    fn bad_input_is_an_error() {
        let (mut p, h) = inputs(10, 3, 4, 1);
        let e = badge_seeds(p.view(), h.slice(ndarray::s![..9, ..]), 2, 0, None, &Cancel::new()).unwrap_err();
        assert!(matches!(e, Error::Shape(_)));
        assert!(matches!(badge_seeds(p.view(), h.view(), 11, 0, None, &Cancel::new()), Err(Error::Argument { .. })));
        let mut h2 = h.clone();
        h2[[4, 1]] = f64::NAN;
        let e = badge_seeds(p.view(), h2.view(), 2, 0, None, &Cancel::new()).unwrap_err();
        assert_eq!(e.to_string(), "embeddings row 4: NaN at dimension 1");
        p[[3, 0]] = -0.5;
        let e = badge_seeds(p.view(), h.view(), 2, 0, None, &Cancel::new()).unwrap_err();
        assert!(e.to_string().starts_with("confidences row 3"), "{e}");
    }
}

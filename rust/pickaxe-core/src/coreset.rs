//! k-center greedy, the core-set selection of Sener & Savarese (2018, "Active Learning for
//! Convolutional Neural Networks: A Core-Set Approach"): pick, again and again, the point
//! farthest from every center chosen so far, so that the picks cover the pool.
//!
//! State: d_min[i], the distance of row i to its nearest center. Each step picks the row
//! with the largest d_min (ties: lowest index), then makes one pass over all rows that
//! lowers d_min[i] to d(x_i, x_pick) where that is nearer and finds the next pick in the
//! same pass: O(N·D) per pick, never a recomputation against all chosen centers. A picked
//! row's d_min becomes −inf, so it can never be picked again (not even when every
//! remaining distance is 0, as with duplicate rows).

use ndarray::{Array1, ArrayView2};
use rayon::prelude::*;

use crate::cancel::Cancel;
use crate::error::Error;
use crate::knn::{dot_f64, row_slice, Metric};
use crate::lanes;
use crate::math::{madd, Isa, Real, LANES};
use crate::simd::multiversion;
use crate::threads;

use crate::threads::{PARALLEL_MIN_VALUES, TASK_VALUES};

/// Groups of `U` lane arrays summed in `T` before a flush to f64: 1,024 values, so a
/// float32 lane sum carries at most 16 roundings.
const FLUSH: usize = 16;

/// Σ (aᵢ·sa − bᵢ)² (aᵢ − bᵢ without `SCALED`): the differences are taken before squaring,
/// so nothing cancels. Accumulated in `U` lane arrays of `T` (independent FMA chains),
/// flushed to f64. `a` and `b` have the same length.
#[inline(always)]
fn sq_diff<I: Isa, T: Real, const SCALED: bool>(a: &[T], sa: T, b: &[T]) -> f64 {
    const U: usize = 4;
    let mut acc = [[T::ZERO; LANES]; U];
    let mut wide = [0.0f64; LANES];
    // The U accumulators are added in `T` first (two more roundings per lane), so a flush
    // converts one lane array, not U.
    #[inline(always)]
    fn flush<T: Real>(acc: &mut [[T; LANES]; 4], wide: &mut [f64; LANES]) {
        for l in 0..LANES {
            let s = (acc[0][l] + acc[1][l]) + (acc[2][l] + acc[3][l]);
            wide[l] += s.to_f64();
        }
        *acc = [[T::ZERO; LANES]; 4];
    }
    // Whole lane arrays in, whole lane arrays out: written this way (no per-element
    // helper taking `&mut`), LLVM keeps the accumulators in vector registers.
    #[inline(always)]
    fn step<I: Isa, T: Real, const SCALED: bool>(x: &[T; LANES], sa: T, y: &[T; LANES], acc: &mut [T; LANES]) {
        for l in 0..LANES {
            let v = if SCALED { x[l] * sa - y[l] } else { x[l] - y[l] };
            acc[l] = madd::<I, T>(v, v, acc[l]);
        }
    }
    let (ac, at) = a.as_chunks::<LANES>();
    let (bc, bt) = b.as_chunks::<LANES>();
    let (aq, ar) = ac.as_chunks::<U>();
    let (bq, br) = bc.as_chunks::<U>();
    for (g, (x, y)) in aq.iter().zip(bq).enumerate() {
        for u in 0..U {
            step::<I, T, SCALED>(&x[u], sa, &y[u], &mut acc[u]);
        }
        if g % FLUSH == FLUSH - 1 {
            flush(&mut acc, &mut wide);
        }
    }
    for (x, y) in ar.iter().zip(br) {
        step::<I, T, SCALED>(x, sa, y, &mut acc[1]);
    }
    if !at.is_empty() {
        // The tail padded with zeros in both: (0·sa − 0)² adds nothing.
        let mut x = [T::ZERO; LANES];
        let mut y = [T::ZERO; LANES];
        x[..at.len()].copy_from_slice(at);
        y[..bt.len()].copy_from_slice(bt);
        step::<I, T, SCALED>(&x, sa, &y, &mut acc[2]);
    }
    flush(&mut acc, &mut wide);
    lanes::total(&wide)
}

/// The nearer-center update and the argmax of one block of rows (`lo..lo + md.len()`).
/// L2: `center` is the pick's row; cosine: the pick's unit vector, `inv` the rows'
/// inverse norms (0 for a zero vector) and `center_zero` whether the pick is zero.
/// Returns the block's (largest d_min, lowest row with it), skipping −inf.
#[inline(always)]
fn pass<T: Real, I: Isa>(
    points: &ArrayView2<'_, T>, lo: usize, md: &mut [T], center: &[T], inv: &[T], center_zero: bool,
) -> Option<(T, usize)> {
    let cosine = !inv.is_empty();
    let mut buf = Vec::new();
    let mut best: Option<(T, usize)> = None;
    let mut best_v = T::NEG_INF;
    for (r, m) in md.iter_mut().enumerate() {
        if *m == T::NEG_INF {
            continue; // a center already
        }
        let i = lo + r;
        let x = row_slice(points, i, &mut buf);
        let d = if !cosine {
            sq_diff::<I, T, false>(x, T::ONE, center).sqrt()
        } else if center_zero || inv[i] == T::ZERO {
            1.0
        } else {
            (0.5 * sq_diff::<I, T, true>(x, inv[i], center)).clamp(0.0, 2.0)
        };
        let d = T::from_f64(d);
        if d < *m {
            *m = d;
        }
        // Strictly greater: the lowest row of equal values stays.
        if *m > best_v {
            best_v = *m;
            best = Some((*m, i));
        }
    }
    best
}

multiversion! {
    fn pass_dispatch<T: Real>(
        points: &ArrayView2<'_, T>, lo: usize, md: &mut [T], center: &[T], inv: &[T], center_zero: bool,
    ) -> Option<(T, usize)> => pass
}

#[inline(always)]
fn inv_norms<T: Real, I: Isa>(points: &ArrayView2<'_, T>, lo: usize, out: &mut [T]) {
    let mut buf = Vec::new();
    for (r, o) in out.iter_mut().enumerate() {
        let x = row_slice(points, lo + r, &mut buf);
        let n = dot_f64::<I, T>(x, x).sqrt();
        *o = if n > 0.0 { T::from_f64(1.0 / n) } else { T::ZERO };
    }
}

multiversion! {
    fn inv_norms_dispatch<T: Real>(points: &ArrayView2<'_, T>, lo: usize, out: &mut [T]) -> () => inv_norms
}

/// The larger d_min wins; on equal values the lower row. Associative and commutative, so
/// the result does not depend on how rows were split between threads.
fn better<T: Real>(a: Option<(T, usize)>, b: Option<(T, usize)>) -> Option<(T, usize)> {
    match (a, b) {
        (Some(x), Some(y)) => Some(if y.0 > x.0 || (y.0 == x.0 && y.1 < x.1) { y } else { x }),
        (x, y) => x.or(y),
    }
}

/// k-center greedy picks of `points` (N, D).
///
/// `min_dist` (N,) is each row's distance to its nearest existing center: +inf when there
/// is none yet (then the first pick is row 0, the lowest of equal values), −inf for a row
/// that is already a center (never picked); NaN and other negative values are refused.
/// Each step picks argmax_i d_min[i] (ties: lowest i) and lowers d_min[i] to
/// d(x_i, x_pick) where nearer:
/// - L2: √Σ(x − c)²,
/// - Cosine: 1 − x·c/(‖x‖‖c‖), as ½‖x/‖x‖ − c/‖c‖‖² (exact for near-duplicates), 1 when
///   either vector is zero; norms are computed once up front (N values).
///
/// Returns the picks in order and each pick's d_min when it was picked: non-increasing,
/// +inf while no center covers the pick. `size` > N gives every pickable row.
/// `cancel` is read before each pick and each task of a pass (`Error::Interrupted`).
pub fn kcenter_greedy<T: Real>(
    points: ArrayView2<'_, T>, size: usize, min_dist: Array1<T>, metric: Metric, cancel: &Cancel,
) -> Result<(Vec<usize>, Vec<T>), Error> {
    if metric == Metric::Ip {
        return Err(Error::argument(
            "metric",
            "k-center greedy needs a distance: metric \"l2\" or \"cosine\", not \"ip\"",
        ));
    }
    let (n, dim) = points.dim();
    if min_dist.len() != n {
        return Err(Error::Shape(format!("min_dist has {} entries but points has {n} rows", min_dist.len())));
    }
    if let Some((i, v)) = min_dist.iter().enumerate().find(|(_, &v)| v.is_nan() || (v < T::ZERO && v != T::NEG_INF)) {
        return Err(Error::argument(
            "min_dist",
            format!(
                "min_dist[{i}] is {v:?}; distances must be >= 0 (+inf: no center yet, \
                 -inf: already a center)"
            ),
        ));
    }
    let mut md: Vec<T> = crate::error::filled(n, T::ZERO)?;
    md.iter_mut().zip(min_dist.iter()).for_each(|(d, &v)| *d = v);
    let mut picks = Vec::new();
    let mut dists = Vec::new();
    if n == 0 || size == 0 {
        return Ok((picks, dists));
    }
    let pool = if n.saturating_mul(dim.max(1)) >= PARALLEL_MIN_VALUES { threads::pool() } else { None };
    let rows = (TASK_VALUES / dim.max(1)).max(1);
    let cosine = metric == Metric::Cosine;
    // 1 / norm per row for cosine, allocated here so that a failure is an error
    let mut inv = if cosine { crate::error::zeroed_real::<T>(n)? } else { Vec::new() };
    let mut run = || {
        let inv = &mut inv;
        if cosine {
            let one = |(t, c): (usize, &mut [T])| {
                if !cancel.is_cancelled() {
                    inv_norms_dispatch(&points, t * rows, c)
                }
            };
            if pool.is_some() {
                inv.par_chunks_mut(rows).enumerate().for_each(one);
            } else {
                inv.chunks_mut(rows).enumerate().for_each(one);
            }
        }
        // The first pick: the argmax of the initial distances.
        let mut best =
            md.iter().enumerate().filter(|(_, &v)| v != T::NEG_INF).fold(None, |b, (i, &v)| better(b, Some((v, i))));
        let mut center = vec![T::ZERO; dim];
        let mut buf = Vec::new();
        while picks.len() < size && !cancel.is_cancelled() {
            let Some((v, p)) = best else { break };
            picks.push(p);
            dists.push(v);
            md[p] = T::NEG_INF;
            if picks.len() == size {
                break;
            }
            let x = row_slice(&points, p, &mut buf);
            let scale = if cosine { inv[p] } else { T::ONE };
            for (c, &xv) in center.iter_mut().zip(x) {
                *c = xv * scale;
            }
            let center_zero = cosine && scale == T::ZERO;
            // Task by task on one thread too (`better` is associative: the same pick), so
            // that `cancel` is seen within one task's time.
            let one = |(t, c): (usize, &mut [T])| {
                if cancel.is_cancelled() {
                    return None;
                }
                pass_dispatch(&points, t * rows, c, &center, inv, center_zero)
            };
            best = if pool.is_some() {
                md.par_chunks_mut(rows).enumerate().map(one).reduce(|| None, better)
            } else {
                md.chunks_mut(rows).enumerate().map(one).fold(None, better)
            };
        }
    };
    match &pool {
        Some(p) => p.install(run),
        None => run(),
    }
    cancel.check()?;
    Ok((picks, dists))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::knn::tests::{random, Rng};
    use ndarray::Array2;

    fn dist(metric: Metric, a: &[f64], b: &[f64]) -> f64 {
        match metric {
            Metric::L2 => a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum::<f64>().sqrt(),
            _ => {
                let na = a.iter().map(|x| x * x).sum::<f64>().sqrt();
                let nb = b.iter().map(|x| x * x).sum::<f64>().sqrt();
                if na == 0.0 || nb == 0.0 {
                    1.0
                } else {
                    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
                    (1.0 - dot / (na * nb)).clamp(0.0, 2.0)
                }
            }
        }
    }

    /// The plain algorithm: recomputes nothing clever, compares with a tolerance-free
    /// argmax (first of the largest).
    fn brute(x: &Array2<f64>, size: usize, init: &[f64], metric: Metric) -> Vec<usize> {
        let n = x.nrows();
        let mut md = init.to_vec();
        let mut picked = vec![false; n];
        let mut out = Vec::new();
        while out.len() < size.min(n) {
            let mut best: Option<usize> = None;
            for i in 0..n {
                if !picked[i] && md[i] != f64::NEG_INFINITY && best.is_none_or(|b| md[i] > md[b]) {
                    best = Some(i);
                }
            }
            let Some(p) = best else { break };
            out.push(p);
            picked[p] = true;
            let c = x.row(p).to_vec();
            for (m, row) in md.iter_mut().zip(x.rows()) {
                *m = m.min(dist(metric, &row.to_vec(), &c));
            }
        }
        out
    }

    #[test]
    fn matches_brute_force() {
        let mut rng = Rng(7);
        for &(n, d) in &[(1usize, 3usize), (5, 1), (40, 7), (300, 33), (3000, 40)] {
            let x = random(&mut rng, n, d);
            for metric in [Metric::L2, Metric::Cosine] {
                for &size in &[1usize, 2, 10, n + 3] {
                    let init = vec![f64::INFINITY; n];
                    let want = brute(&x, size, &init, metric);
                    let (got, gd) = kcenter_greedy(x.view(), size, Array1::from(init), metric, &Cancel::new()).unwrap();
                    assert_eq!(got, want, "n={n} d={d} {metric:?} size={size}");
                    assert_eq!(got.len(), size.min(n));
                    assert_eq!(gd[0], f64::INFINITY);
                    assert!(gd.windows(2).all(|w| w[1] <= w[0]), "{gd:?}");
                }
            }
        }
    }

    #[test]
    fn initial_distances_strides_and_f32() {
        let mut rng = Rng(8);
        let x = random(&mut rng, 500, 19);
        let init: Vec<f64> = (0..500).map(|i| (i % 17) as f64 * 0.5).collect();
        for metric in [Metric::L2, Metric::Cosine] {
            let want = brute(&x, 30, &init, metric);
            let (got, gd) = kcenter_greedy(x.view(), 30, Array1::from(init.clone()), metric, &Cancel::new()).unwrap();
            assert_eq!(got, want);
            assert_eq!(gd[0], 8.0);
            // Fortran order and a reversed view read in place give the same picks.
            let f = x.t().as_standard_layout().into_owned().reversed_axes();
            let got_f = kcenter_greedy(f.view(), 30, Array1::from(init.clone()), metric, &Cancel::new()).unwrap().0;
            assert_eq!(got_f, want);
            let xs = x.slice(ndarray::s![..;-1, ..]);
            let init_r: Vec<f64> = init.iter().rev().copied().collect();
            let want_r = brute(&xs.to_owned(), 30, &init_r, metric);
            let got_r = kcenter_greedy(xs, 30, Array1::from(init_r), metric, &Cancel::new()).unwrap().0;
            assert_eq!(got_r, want_r);
            // float32: the same picks on data with clear gaps.
            let x32 = x.mapv(|v| v as f32);
            let init32 = Array1::from(init.iter().map(|&v| v as f32).collect::<Vec<_>>());
            let got32 = kcenter_greedy(x32.view(), 30, init32, metric, &Cancel::new()).unwrap().0;
            assert_eq!(got32, want);
        }
    }

    #[test]
    fn duplicates_are_never_picked_twice() {
        // Three distinct rows, each five times: after 3 picks every distance is 0.
        let base = [[0.0, 1.0], [3.0, 0.5], [-2.0, 2.0]];
        let x = Array2::from_shape_fn((15, 2), |(i, j)| base[i % 3][j]);
        for metric in [Metric::L2, Metric::Cosine] {
            let (p, d) =
                kcenter_greedy(x.view(), 100, Array1::from_elem(15, f64::INFINITY), metric, &Cancel::new()).unwrap();
            let mut s = p.clone();
            s.sort();
            assert_eq!(s, (0..15).collect::<Vec<_>>(), "{metric:?}");
            assert!(d[3..].iter().all(|&v| v == 0.0), "{d:?}");
            // Past the cover, picks go in index order (ties: lowest row).
            let rest: Vec<usize> = p[3..].to_vec();
            let mut sorted = rest.clone();
            sorted.sort();
            assert_eq!(rest, sorted);
        }
        // Zero vectors under cosine are at distance 1 from everything.
        let z = Array2::<f64>::zeros((4, 3));
        let (p, d) =
            kcenter_greedy(z.view(), 4, Array1::from_elem(4, f64::INFINITY), Metric::Cosine, &Cancel::new()).unwrap();
        assert_eq!(p, vec![0, 1, 2, 3]);
        assert_eq!(d, vec![f64::INFINITY, 1.0, 1.0, 1.0]);
    }

    #[test]
    fn excluded_rows_and_threads_agree() {
        let mut rng = Rng(9);
        let x = random(&mut rng, 20_000, 16);
        let mut init = vec![f64::INFINITY; 20_000];
        init[0] = f64::NEG_INFINITY; // already a center: never picked
        let one = {
            crate::threads::set_num_threads(1).unwrap();
            kcenter_greedy(x.view(), 25, Array1::from(init.clone()), Metric::L2, &Cancel::new()).unwrap()
        };
        crate::threads::set_num_threads(2).unwrap();
        let two = kcenter_greedy(x.view(), 25, Array1::from(init.clone()), Metric::L2, &Cancel::new()).unwrap();
        assert_eq!(one, two);
        assert!(!one.0.contains(&0));
        assert_eq!(one.0[0], 1);
    }

    #[test]
    fn bad_arguments_are_errors() {
        let x = Array2::<f64>::zeros((3, 2));
        let inf = || Array1::from_elem(3, f64::INFINITY);
        assert!(matches!(kcenter_greedy(x.view(), 1, inf(), Metric::Ip, &Cancel::new()), Err(Error::Argument { .. })));
        assert!(matches!(
            kcenter_greedy(x.view(), 1, Array1::from_elem(2, 1.0), Metric::L2, &Cancel::new()),
            Err(Error::Shape(_))
        ));
        for bad in [f64::NAN, -1.0] {
            let mut m = inf();
            m[1] = bad;
            let e = kcenter_greedy(x.view(), 1, m, Metric::L2, &Cancel::new()).unwrap_err();
            assert!(e.to_string().contains("min_dist[1]"), "{e}");
        }
        let empty = Array2::<f64>::zeros((0, 2));
        assert_eq!(
            kcenter_greedy(empty.view(), 5, Array1::from(vec![]), Metric::L2, &Cancel::new()).unwrap(),
            (vec![], vec![])
        );
        assert_eq!(kcenter_greedy(x.view(), 0, inf(), Metric::L2, &Cancel::new()).unwrap(), (vec![], vec![]));
    }
}

//! `top_k`: positions of the k highest scores, highest first, ties by ascending position,
//! NaN never selected. Each block of the input keeps a buffer of at most 2k candidates
//! behind a rising threshold (an O(N) scan with rare pushes), the buffers are merged, and
//! only the k winners are sorted. Memory is O(k · tasks), never O(N).

use std::cmp::Ordering;

use ndarray::{ArrayView1, Axis};
use rayon::prelude::*;

use crate::cancel::Cancel;
use crate::error::Error;
use crate::math::Real;
use crate::threads;

/// Score first (descending), then position (ascending): a total order on (score, position)
/// pairs without NaN, so the result does not depend on how the work was split.
#[inline]
fn better<T: Real>(a: &(T, usize), b: &(T, usize)) -> Ordering {
    match b.0.partial_cmp(&a.0) {
        Some(Ordering::Equal) | None => a.1.cmp(&b.1),
        Some(o) => o,
    }
}

fn keep_best<T: Real>(buf: &mut Vec<(T, usize)>, k: usize) {
    if buf.len() > k {
        buf.select_nth_unstable_by(k - 1, better);
        buf.truncate(k);
    }
}

/// The best k of `x` (positions offset by `start`), unsorted.
fn block_top<T: Real>(x: ArrayView1<'_, T>, start: usize, k: usize) -> Vec<(T, usize)> {
    let cap = 2 * k;
    let mut buf: Vec<(T, usize)> = Vec::with_capacity(cap.min(x.len()));
    // Nothing below the k-th best seen so far can enter; scanning in ascending position,
    // an equal score loses to the earlier one, so strictly greater is the test.
    let mut threshold = T::NEG_INF;
    let mut full = false;
    let mut push = |i: usize, v: T, buf: &mut Vec<(T, usize)>| {
        if v.is_nan() || (full && !(v > threshold)) {
            return;
        }
        buf.push((v, start + i));
        if buf.len() == cap {
            keep_best(buf, k);
            full = true;
            threshold = buf
                .iter()
                .map(|p| p.0)
                .fold(T::INF, |a, b| if b < a { b } else { a });
        }
    };
    match x.as_slice() {
        Some(s) => {
            for (i, &v) in s.iter().enumerate() {
                push(i, v, &mut buf);
            }
        }
        None => {
            for (i, &v) in x.iter().enumerate() {
                push(i, v, &mut buf);
            }
        }
    }
    keep_best(&mut buf, k);
    buf
}

/// Values per parallel block.
const BLOCK: usize = 1 << 20;

/// Positions of the `k` highest `scores`, highest first (ties: ascending position; NaN
/// never). `cancel` is read before each block of `BLOCK` values (`Error::Interrupted`).
pub fn top_k<T: Real>(scores: ArrayView1<'_, T>, k: usize, cancel: &Cancel) -> Result<Vec<usize>, Error> {
    let n = scores.len();
    let k = k.min(n);
    if k == 0 {
        return Ok(Vec::new());
    }
    let blocks = n.div_ceil(BLOCK);
    let block = |b: usize| {
        if cancel.is_cancelled() {
            return Vec::new();
        }
        let lo = b * BLOCK;
        let hi = (lo + BLOCK).min(n);
        block_top(scores.slice_axis(Axis(0), (lo..hi).into()), lo, k)
    };
    let merge = |mut a: Vec<(T, usize)>, mut b: Vec<(T, usize)>| {
        a.append(&mut b);
        keep_best(&mut a, k);
        a
    };
    let mut all = match (n > BLOCK).then(threads::pool).flatten() {
        // Block by block on one thread too, so that `cancel` is seen in time.
        None => (0..blocks).map(block).fold(Vec::new(), merge),
        Some(pool) => pool.install(|| (0..blocks).into_par_iter().map(block).reduce(Vec::new, merge)),
    };
    cancel.check()?;
    keep_best(&mut all, k);
    all.sort_unstable_by(better);
    Ok(all.into_iter().map(|(_, i)| i).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array1;

    fn reference(x: &[f64], k: usize) -> Vec<usize> {
        let mut idx: Vec<usize> = (0..x.len()).filter(|&i| !x[i].is_nan()).collect();
        idx.sort_by(|&a, &b| x[b].partial_cmp(&x[a]).unwrap()); // stable: ties keep position order
        idx.truncate(k);
        idx
    }

    #[test]
    fn matches_stable_sort_with_ties_and_nan() {
        let mut state = 12345u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for &n in &[0usize, 1, 7, 100, 5000, 3 * BLOCK + 17] {
            let x: Vec<f64> = (0..n)
                .map(|_| match next() % 10 {
                    0 => f64::NAN,
                    1 => f64::INFINITY,
                    _ => (next() % 50) as f64,
                })
                .collect();
            let a = Array1::from(x.clone());
            for &k in &[0usize, 1, 3, 64, 1000, n + 5] {
                assert_eq!(top_k(a.view(), k, &Cancel::new()).unwrap(), reference(&x, k), "n={n} k={k}");
            }
            // A strided view reads in place.
            let s = a.slice(ndarray::s![..;-3]);
            let xs: Vec<f64> = s.iter().copied().collect();
            assert_eq!(top_k(s, 10, &Cancel::new()).unwrap(), reference(&xs, 10));
        }
    }
}

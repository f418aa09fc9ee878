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

/// Score first (descending), then tie key (ascending): a total order on kept items
/// without NaN, so the result does not depend on how the work was split.
#[inline]
fn better<T: Real>(a: &Item<T>, b: &Item<T>) -> Ordering {
    match b.0.partial_cmp(&a.0) {
        Some(Ordering::Equal) | None => a.1.cmp(&b.1),
        Some(o) => o,
    }
}

/// A kept row: (score, tie key, position). The tie key is the position itself, or the
/// caller's key (a row number) when positions do not follow the keys.
pub(crate) type Item<T> = (T, i64, usize);

pub(crate) fn keep_best<T: Real>(buf: &mut Vec<Item<T>>, k: usize) {
    if k == 0 {
        buf.clear();
    } else if buf.len() > k {
        buf.select_nth_unstable_by(k - 1, better);
        buf.truncate(k);
    }
}

/// The best `k` items pushed so far, in a buffer of at most 2k behind a rising threshold:
/// an O(N) scan with rare pushes.
pub(crate) struct Bounded<T> {
    buf: Vec<Item<T>>,
    k: usize,
    threshold: T,
    full: bool,
    /// Items come in ascending tie key (a scan by position): an equal score then loses to
    /// what is kept, so only a strictly greater one may enter.
    ascending: bool,
}

impl<T: Real> Bounded<T> {
    pub(crate) fn new(k: usize, ascending: bool) -> Self {
        Bounded { buf: Vec::new(), k, threshold: T::NEG_INF, full: false, ascending }
    }

    #[inline]
    pub(crate) fn push(&mut self, v: T, tie: i64, i: usize) {
        if v.is_nan() || self.k == 0 {
            return;
        }
        if self.full && (v < self.threshold || (self.ascending && !(v > self.threshold))) {
            return;
        }
        self.buf.push((v, tie, i));
        if self.buf.len() >= 2 * self.k {
            keep_best(&mut self.buf, self.k);
            self.full = true;
            self.threshold = self.buf.iter().map(|p| p.0).fold(T::INF, |a, b| if b < a { b } else { a });
        }
    }

    /// The score an item must exceed to enter, once the buffer has filled (it may enter
    /// at equality when tie keys do not ascend).
    #[inline]
    pub(crate) fn floor(&self) -> Option<T> {
        self.full.then_some(self.threshold)
    }

    /// The kept items, best first.
    pub(crate) fn into_sorted(self) -> Vec<Item<T>> {
        let mut buf = self.buf;
        keep_best(&mut buf, self.k);
        buf.sort_unstable_by(better);
        buf
    }

    /// Both sets' best `k` (the merge of two blocks' buffers).
    pub(crate) fn merge(mut self, other: Self) -> Self {
        self.buf.extend(other.buf);
        keep_best(&mut self.buf, self.k);
        self.full = false; // the threshold is recomputed at the next overflow
        self.threshold = T::NEG_INF;
        self
    }
}

/// The best k of `x` (positions offset by `start`).
fn block_top<T: Real>(x: ArrayView1<'_, T>, start: usize, k: usize) -> Bounded<T> {
    let mut best = Bounded::new(k, true);
    match x.as_slice() {
        Some(s) => {
            for (i, &v) in s.iter().enumerate() {
                best.push(v, (start + i) as i64, start + i);
            }
        }
        None => {
            for (i, &v) in x.iter().enumerate() {
                best.push(v, (start + i) as i64, start + i);
            }
        }
    }
    best
}

/// Blocks of `BLOCK` rows of an `n`-row input, each reduced by `block` and merged by
/// `merge`, in parallel on the kernels' pool when there is more than one block; `cancel`
/// is read before each block (block by block on one thread too, so that it is seen in
/// time).
pub(crate) fn over_blocks<R: Send>(
    n: usize,
    cancel: &Cancel,
    empty: impl Fn() -> R + Sync + Send,
    block: impl Fn(usize, usize) -> R + Sync + Send,
    merge: impl Fn(R, R) -> R + Sync + Send,
) -> Result<R, Error> {
    let blocks = n.div_ceil(BLOCK);
    let one = |b: usize| {
        if cancel.is_cancelled() {
            return empty();
        }
        let lo = b * BLOCK;
        block(lo, (lo + BLOCK).min(n))
    };
    let all = match (n > BLOCK).then(threads::pool).flatten() {
        None => (0..blocks).map(one).fold(empty(), &merge),
        Some(pool) => pool.install(|| (0..blocks).into_par_iter().map(one).reduce(&empty, &merge)),
    };
    cancel.check()?;
    Ok(all)
}

/// Values per parallel block.
pub(crate) const BLOCK: usize = 1 << 20;

/// Positions of the `k` highest `scores`, highest first (ties: ascending position; NaN
/// never). `cancel` is read before each block of `BLOCK` values (`Error::Interrupted`).
pub fn top_k<T: Real>(scores: ArrayView1<'_, T>, k: usize, cancel: &Cancel) -> Result<Vec<usize>, Error> {
    let n = scores.len();
    let k = k.min(n);
    if k == 0 {
        return Ok(Vec::new());
    }
    let best = over_blocks(
        n,
        cancel,
        || Bounded::new(k, true),
        |lo, hi| block_top(scores.slice_axis(Axis(0), (lo..hi).into()), lo, k),
        Bounded::merge,
    )?;
    Ok(best.into_sorted().into_iter().map(|p| p.2).collect())
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

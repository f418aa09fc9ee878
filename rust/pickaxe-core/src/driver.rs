//! Runs a row kernel over every row of a (N, M, C) view: in place when a row is contiguous,
//! through a row-sized buffer when it is not (Fortran order, steps, negative strides), in
//! parallel over blocks of rows above a size threshold, at the dispatched SIMD level.

use std::sync::atomic::{AtomicUsize, Ordering};

use ndarray::{ArrayView3, Axis};
use rayon::prelude::*;

use crate::error::RowFault;
use crate::math::Real;
use crate::pool;
use crate::simd::multiversion;

/// Per-task working memory of a kernel: a few rows' worth, never the input's size.
pub(crate) struct Scratch<T> {
    pub f: Vec<f64>,
    pub t: Vec<T>,
    pub u: Vec<u32>,
}

/// Lengths of a kernel's scratch vectors: (f64, input type, u32).
pub(crate) type ScratchLen = (usize, usize, usize);

pub(crate) trait Kernel<T: Real>: Sync {
    /// The score of one contiguous row, or the fault that makes it invalid.
    fn score(&self, row: &[T], scratch: &mut Scratch<T>) -> Result<f64, RowFault>;
}

/// Below this many values a call runs on the calling thread: waking the pool costs more.
const PARALLEL_MIN_VALUES: usize = 1 << 16;
/// Values per parallel task: big enough to amortise scheduling, small enough to balance.
const TASK_VALUES: usize = 1 << 16;

/// Scores of rows `start..start + out.len()`; returns the first invalid row of the range.
#[inline(always)]
fn rows_generic<T: Real, K: Kernel<T>>(
    kernel: &K,
    x: &ArrayView3<'_, T>,
    start: usize,
    out: &mut [T],
    scratch_len: ScratchLen,
    stop_at: &AtomicUsize,
) -> Option<(usize, RowFault)> {
    let mut scratch = Scratch {
        f: vec![0.0; scratch_len.0],
        t: vec![T::ZERO; scratch_len.1],
        u: vec![0; scratch_len.2],
    };
    let mut buf: Vec<T> = Vec::new();
    // usize::MAX marks nan_policy="omit": invalid rows become NaN and the work goes on.
    let raise = stop_at.load(Ordering::Relaxed) != usize::MAX;
    let mut first = None;
    for (j, o) in out.iter_mut().enumerate() {
        let i = start + j;
        let row = x.index_axis(Axis(0), i);
        let slice = match row.as_slice() {
            Some(s) => s,
            None => {
                buf.clear();
                buf.extend(row.iter().copied());
                &buf[..]
            }
        };
        match kernel.score(slice, &mut scratch) {
            Ok(v) => *o = T::from_f64(v),
            Err(f) => {
                *o = T::NAN;
                first = first.or(Some((i, f)));
                if raise {
                    // Later rows do not matter; an earlier row of another task may.
                    stop_at.fetch_min(i, Ordering::Relaxed);
                    return first;
                }
            }
        }
    }
    first
}

multiversion! {
    fn rows_dispatch<T: Real, K: Kernel<T>>(
        kernel: &K,
        x: &ArrayView3<'_, T>,
        start: usize,
        out: &mut [T],
        scratch_len: ScratchLen,
        stop_at: &AtomicUsize,
    ) -> Option<(usize, RowFault)> => rows_generic
}

/// Scores of every row. With `raise`, returns the lowest invalid row's fault (and stops
/// early); otherwise invalid rows are NaN.
pub(crate) fn run<T: Real, K: Kernel<T>>(
    kernel: &K,
    x: ArrayView3<'_, T>,
    scratch_len: ScratchLen,
    raise: bool,
) -> (Vec<T>, Option<(usize, RowFault)>) {
    let n = x.len_of(Axis(0));
    let width = (x.len_of(Axis(1)) * x.len_of(Axis(2))).max(1);
    let mut out = vec![T::ZERO; n];
    // usize::MAX marks "omit": never stop.
    let stop_at = AtomicUsize::new(if raise { n } else { usize::MAX });
    let pool = if n.saturating_mul(width) >= PARALLEL_MIN_VALUES { pool::pool() } else { None };
    let first = match pool {
        None => rows_dispatch(kernel, &x, 0, &mut out, scratch_len, &stop_at),
        Some(pool) => {
            let rows_per_task = (TASK_VALUES / width).max(1);
            pool.install(|| {
                out.par_chunks_mut(rows_per_task)
                    .enumerate()
                    .map(|(t, chunk)| {
                        let start = t * rows_per_task;
                        if raise && start > stop_at.load(Ordering::Relaxed) {
                            return None;
                        }
                        rows_dispatch(kernel, &x, start, chunk, scratch_len, &stop_at)
                    })
                    .reduce(
                        || None,
                        |a, b| match (a, b) {
                            (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
                            (a, b) => a.or(b),
                        },
                    )
            })
        }
    };
    (out, first)
}

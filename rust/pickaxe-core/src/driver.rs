//! Runs a row kernel over every row of a (N, M, C) view: in place when a row is contiguous,
//! through a row-sized buffer when it is not (Fortran order, steps, negative strides), in
//! parallel over blocks of rows above a size threshold, at the dispatched SIMD level.

use std::sync::atomic::{AtomicUsize, Ordering};

use ndarray::{ArrayView3, Axis};
use rayon::prelude::*;

use crate::cancel::Cancel;
use crate::error::{Error, RowFault};
use crate::math::{Isa, Real};
use crate::simd::multiversion;
use crate::threads;

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
    fn score<I: Isa>(&self, row: &[T], scratch: &mut Scratch<T>) -> Result<f64, RowFault>;

    /// `Some(divisor)` when rows of `width` values may be scored by the row-blocked
    /// entropy (`blocked::entropy_rows`): the kernel is the entropy of logits without
    /// class weights, divided by the divisor (ln C for `normalize`).
    fn blocked_entropy<I: Isa>(&self, width: usize) -> Option<f64> {
        let _ = width;
        None
    }
}

use crate::threads::{PARALLEL_MIN_VALUES, TASK_VALUES};

/// Scores of rows `start..start + out.len()`; returns the first invalid row of the range.
#[inline(always)]
fn rows_generic<T: Real, K: Kernel<T>, I: Isa>(
    kernel: &K, x: &ArrayView3<'_, T>, start: usize, out: &mut [T], scratch_len: ScratchLen, stop_at: &AtomicUsize,
) -> Option<(usize, RowFault)> {
    let mut scratch =
        Scratch { f: vec![0.0; scratch_len.0], t: vec![T::ZERO; scratch_len.1], u: vec![0; scratch_len.2] };
    // usize::MAX marks nan_policy="omit": invalid rows become NaN and the work goes on.
    let raise = stop_at.load(Ordering::Relaxed) != usize::MAX;
    let mut first = None;
    let mut record = |i: usize, res: Result<f64, RowFault>, o: &mut T| -> bool {
        match res {
            Ok(v) => {
                *o = T::from_f64(v);
                false
            }
            Err(f) => {
                *o = T::NAN;
                first = first.or(Some((i, f)));
                if raise {
                    // Later rows do not matter; an earlier row of another task may.
                    stop_at.fetch_min(i, Ordering::Relaxed);
                }
                raise
            }
        }
    };
    let width = x.len_of(Axis(1)) * x.len_of(Axis(2));
    if x.len_of(Axis(1)) == 1 {
        if let Some(div) = kernel.blocked_entropy::<I>(width) {
            crate::blocked::entropy_rows::<T, K, I>(kernel, x, start, out, div, &mut scratch, record);
            return first;
        }
    }
    if rows_are_columns(x) {
        // Fortran order: a row's values are far apart, but a few rows side by side are
        // contiguous. Copy a tile of rows at a time, walking memory in order.
        let mut tile = vec![T::ZERO; TILE_ROWS * width];
        for (t, outs) in out.chunks_mut(TILE_ROWS).enumerate() {
            let i0 = start + t * TILE_ROWS;
            let (m, c) = (x.len_of(Axis(1)), x.len_of(Axis(2)));
            let st = x.strides();
            let base = x.as_ptr();
            for a in 0..m {
                for b in 0..c {
                    let k = a * c + b;
                    for (r, _) in outs.iter().enumerate() {
                        let off = (i0 + r) as isize * st[0] + a as isize * st[1] + b as isize * st[2];
                        // SAFETY: (i0 + r, a, b) is inside the view's shape (i0 + r < N by
                        // the chunking of `out`, a < M, b < C), and a view's pointer plus
                        // index · strides is an element of it.
                        tile[r * width + k] = unsafe { *base.offset(off) };
                    }
                }
            }
            for (r, o) in outs.iter_mut().enumerate() {
                let res = kernel.score::<I>(&tile[r * width..(r + 1) * width], &mut scratch);
                if record(i0 + r, res, o) {
                    return first;
                }
            }
        }
        return first;
    }
    let mut buf: Vec<T> = Vec::new();
    for (j, o) in out.iter_mut().enumerate() {
        let i = start + j;
        let row = x.index_axis(Axis(0), i);
        let slice = match row.as_slice() {
            Some(s) => s,
            None => {
                // Strided rows (steps, negative strides): one row-sized copy at a time.
                buf.clear();
                buf.extend(row.iter().copied());
                &buf[..]
            }
        };
        let res = kernel.score::<I>(slice, &mut scratch);
        if record(i, res, o) {
            return first;
        }
    }
    first
}

/// Rows per tile when gathering Fortran-ordered rows.
const TILE_ROWS: usize = 16;

/// Whether the rows are not contiguous but the row axis has the smallest stride (Fortran
/// order, or a transposed view), so that neighbouring rows share cache lines.
fn rows_are_columns<T>(x: &ArrayView3<'_, T>) -> bool {
    if x.len_of(Axis(0)) < 2 || x.index_axis(Axis(0), 0).is_standard_layout() {
        return false;
    }
    let s = x.strides();
    let s0 = s[0].unsigned_abs();
    (1..3).all(|a| x.len_of(Axis(a)) < 2 || s[a].unsigned_abs() > s0)
}

multiversion! {
    fn rows_dispatch<T: Real, K: Kernel<T>>(
        kernel: &K, x: &ArrayView3<'_, T>, start: usize, out: &mut [T], scratch_len: ScratchLen, stop_at: &AtomicUsize,
    ) -> Option<(usize, RowFault)> => rows_generic
}

/// Every row's score and the first invalid row (by index) with its fault.
pub(crate) type Scored<T> = (Vec<T>, Option<(usize, RowFault)>);

/// Scores of every row. With `raise`, returns the lowest invalid row's fault (and stops
/// early); otherwise invalid rows are NaN. `Error::Interrupted` once `cancel` is set: it
/// is read before each task of `TASK_VALUES` values, on one thread as on many.
pub(crate) fn run<T: Real, K: Kernel<T>>(
    kernel: &K, x: ArrayView3<'_, T>, scratch_len: ScratchLen, raise: bool, cancel: &Cancel,
) -> Result<Scored<T>, Error> {
    let n = x.len_of(Axis(0));
    let width = (x.len_of(Axis(1)) * x.len_of(Axis(2))).max(1);
    let mut out = crate::error::zeroed_real::<T>(n)?;
    // usize::MAX marks "omit": never stop.
    let stop_at = AtomicUsize::new(if raise { n } else { usize::MAX });
    let pool = if n.saturating_mul(width) >= PARALLEL_MIN_VALUES { threads::pool() } else { None };
    let rows_per_task = (TASK_VALUES / width).max(1);
    let first = match pool {
        None => {
            // Task by task here too, so that one thread also sees `cancel` in time.
            let mut first = None;
            for (t, chunk) in out.chunks_mut(rows_per_task).enumerate() {
                if cancel.is_cancelled() {
                    break;
                }
                let f = rows_dispatch(kernel, &x, t * rows_per_task, chunk, scratch_len, &stop_at);
                first = first.or(f);
                if raise && first.is_some() {
                    break;
                }
            }
            first
        }
        Some(pool) => pool.install(|| {
            out.par_chunks_mut(rows_per_task)
                .enumerate()
                .map(|(t, chunk)| {
                    let start = t * rows_per_task;
                    if cancel.is_cancelled() || (raise && start > stop_at.load(Ordering::Relaxed)) {
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
        }),
    };
    cancel.check()?;
    Ok((out, first))
}

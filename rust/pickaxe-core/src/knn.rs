//! Exact k-nearest-neighbour search: the part that comes after the matrix product.
//!
//! The caller (`python/pickaxe/_exact.py`) computes each Gram block G = Q_b · R_cᵀ with
//! BLAS, the fastest matrix product there is; `knn_update` turns a block into distances
//! and merges them into every query's running k nearest. At the end `pair_distances`
//! recomputes the chosen pairs directly, because the expansion ‖q‖² + ‖r‖² − 2 q·r loses
//! every digit for near neighbours (it subtracts two nearly equal large numbers).
//!
//! A state row is k (distance, id) pairs sorted ascending by distance, then id: ties go to
//! the lower reference id, so the result does not depend on how the reference was chunked.
//! Empty slots are (+inf, −1). Ids compare as unsigned, so −1 is the largest id and an
//! empty slot loses to every real candidate, even one at +inf. NaN never enters.

use ndarray::{Array1, Array2, ArrayView1, ArrayView2, ArrayViewMut2, Axis};
use rayon::prelude::*;

use crate::cancel::Cancel;
use crate::error::Error;
use crate::lanes;
use crate::math::{madd, Isa, Real, LANES};
use crate::simd::multiversion;
use crate::threads;
use rayon::ThreadPool;
use std::sync::Arc;

crate::names::named_enum! {
    /// How far apart two vectors are (named as in `pickaxe.index`). Every metric is
    /// "smaller = nearer".
    pub enum Metric("metric") {
        /// Euclidean: ‖q − r‖₂ (squared inside `knn_update`, which only ranks).
        L2 = "l2",
        /// 1 − q·r / (‖q‖ ‖r‖), in [0, 2]; exactly 1 when either vector is zero (hnswlib's
        /// convention).
        Cosine = "cosine",
        /// 1 − q·r (hnswlib's "ip" space): the largest inner product is the nearest.
        Ip = "ip",
    }
}

use crate::threads::{PARALLEL_MIN_VALUES, TASK_VALUES};

// The metric as a const parameter, so the lane loop has no branch on it.
pub(crate) const M_L2: u8 = 0;
pub(crate) const M_COS: u8 = 1;
pub(crate) const M_IP: u8 = 2;

/// An id as the state orders it: −1 (and any negative id) after every real id.
#[inline(always)]
fn key(id: i64) -> u64 {
    id as u64
}

/// (d, id) strictly before (d2, id2): smaller distance, then smaller id. False with NaN.
#[inline(always)]
fn before<T: Real>(d: T, id: u64, d2: T, id2: u64) -> bool {
    d < d2 || (d == d2 && id < id2)
}

/// Puts (cd, cid) into the sorted row, dropping the last entry. The caller has checked
/// that it goes before the last entry.
#[inline(always)]
fn insert<T: Real>(d: &mut [T], id: &mut [u64], cd: T, cid: u64) {
    let mut j = d.len() - 1;
    while j > 0 && before(cd, cid, d[j - 1], id[j - 1]) {
        d[j] = d[j - 1];
        id[j] = id[j - 1];
        j -= 1;
    }
    d[j] = cd;
    id[j] = cid;
}

/// The distance of one Gram value g = q·r; `qn` = ‖q‖, `qn2` = ‖q‖², `rn` = ‖r‖.
/// L2 gives the squared distance max(‖q‖² + ‖r‖² − 2g, 0); NaN stays NaN.
#[inline(always)]
fn gram_distance<I: Isa, T: Real, const M: u8>(g: T, rn: T, qn: T, qn2: T) -> T {
    match M {
        M_L2 => {
            let v = madd::<I, T>(rn, rn, qn2) - (g + g);
            // `v < 0` is false for NaN, which must stay NaN to stay out.
            if v < T::ZERO {
                T::ZERO
            } else {
                v
            }
        }
        M_COS => {
            let den = qn * rn.abs();
            if den > T::ZERO {
                T::ONE - g / den
            } else {
                T::ONE
            }
        }
        _ => T::ONE - g,
    }
}

/// Scans one Gram row for the candidates before the running k-th: each (distance, id)
/// that goes before `thr` (distance, id) is handed to `take`, in id order, which keeps it
/// and returns the new k-th. The one loop of both merges (`merge_row`, `merge_row_select`).
#[inline(always)]
fn scan_row<I: Isa, T: Real, const M: u8>(
    g: &[T], rn: &[T], qn: T, offset: u64, thr: (T, u64), mut take: impl FnMut(T, u64) -> (T, u64),
) {
    let qn = qn.abs();
    let qn2 = qn * qn;
    let (mut thr, mut thr_id) = thr;
    let (gc, gt) = g.as_chunks::<LANES>();
    let (rc, rt) = rn.as_chunks::<LANES>();
    for (c, (gv, rv)) in gc.iter().zip(rc).enumerate() {
        // The distances of a lane array and one vector test against the k-th: most
        // chunks stop here once the row is full.
        let mut dl = [T::ZERO; LANES];
        let mut any = false;
        for l in 0..LANES {
            dl[l] = gram_distance::<I, T, M>(gv[l], rv[l], qn, qn2);
            any |= dl[l] <= thr;
        }
        if any {
            // Rare once the row is full: the lanes in id order, each checked against the
            // threshold as earlier lanes lower it. (Building a lane bitmask here instead
            // costs the vector loop above its clean compare-and-test.)
            let base = offset + (c * LANES) as u64;
            for (l, &v) in dl.iter().enumerate() {
                let cid = base + l as u64;
                if before(v, cid, thr, thr_id) {
                    (thr, thr_id) = take(v, cid);
                }
            }
        }
    }
    let base = offset + (gc.len() * LANES) as u64;
    for (l, (&gv, &rv)) in gt.iter().zip(rt).enumerate() {
        let v = gram_distance::<I, T, M>(gv, rv, qn, qn2);
        let cid = base + l as u64;
        if before(v, cid, thr, thr_id) {
            (thr, thr_id) = take(v, cid);
        }
    }
}

/// Merges one Gram row into one state row (`d`, `id`, k ≥ 1 entries, sorted): each
/// candidate is inserted in place.
#[inline(always)]
fn merge_row<I: Isa, T: Real, const M: u8>(g: &[T], rn: &[T], qn: T, offset: u64, d: &mut [T], id: &mut [u64]) {
    let k = d.len();
    scan_row::<I, T, M>(g, rn, qn, offset, (d[k - 1], id[k - 1]), |v, cid| {
        insert(d, id, v, cid);
        (d[k - 1], id[k - 1])
    });
}

/// Above this many entries per state row a Gram row's candidates are gathered and cut to
/// the k best in batches (`select_nth_unstable`) instead of inserted one at a time: an
/// insertion moves up to k entries, so with k near the reference's size the merge cost
/// O(m·k) per query (k = 4,999 of 5,000 rows took 20x the time of k = 10).
const INSERT_MAX_K: usize = 32;

/// The state's order as a total order (NaN never enters).
#[inline(always)]
fn order<T: Real>(a: &(T, u64), b: &(T, u64)) -> std::cmp::Ordering {
    if before(a.0, a.1, b.0, b.1) {
        std::cmp::Ordering::Less
    } else if before(b.0, b.1, a.0, a.1) {
        std::cmp::Ordering::Greater
    } else {
        std::cmp::Ordering::Equal
    }
}

/// `merge_row` for a large k: the state and every Gram value before the running k-th go
/// into `cand`; whenever it holds 2k entries it is cut to its k best (O(k)), which also
/// lowers the threshold; the k left at the end are sorted once. O(mc + k log k) per row.
#[inline(always)]
fn merge_row_select<I: Isa, T: Real, const M: u8>(
    g: &[T], rn: &[T], qn: T, offset: u64, d: &mut [T], id: &mut [u64], cand: &mut Vec<(T, u64)>,
) {
    let k = d.len();
    cand.clear();
    cand.extend(d.iter().copied().zip(id.iter().copied()));
    let mut thr = (d[k - 1], id[k - 1]);
    scan_row::<I, T, M>(g, rn, qn, offset, thr, |v, cid| {
        cand.push((v, cid));
        if cand.len() >= 2 * k {
            cand.select_nth_unstable_by(k - 1, order);
            cand.truncate(k);
            thr = cand[k - 1];
        }
        thr
    });
    if cand.len() > k {
        cand.select_nth_unstable_by(k - 1, order);
        cand.truncate(k);
    }
    cand.sort_unstable_by(order);
    for (j, &(v, i)) in cand.iter().enumerate() {
        d[j] = v;
        id[j] = i;
    }
}

/// Every row of a block of Gram rows, with one metric.
#[inline(always)]
fn merge_rows_metric<I: Isa, T: Real, const M: u8>(
    gram: &ArrayView2<'_, T>, q_norms: &ArrayView1<'_, T>, rn: &[T], offset: u64, ids: &mut ArrayViewMut2<'_, i64>,
    dists: &mut ArrayViewMut2<'_, T>,
) {
    let k = ids.len_of(Axis(1));
    let mut d = vec![T::INF; k];
    let mut id = vec![u64::MAX; k];
    let mut buf: Vec<T> = Vec::new();
    let mut cand: Vec<(T, u64)> = Vec::new();
    for r in 0..gram.len_of(Axis(0)) {
        // A strided Gram row (Fortran order, steps) is copied, one row at a time.
        let g = row_slice(gram, r, &mut buf);
        let mut irow = ids.index_axis_mut(Axis(0), r);
        let mut drow = dists.index_axis_mut(Axis(0), r);
        for (j, (&i, &v)) in irow.iter().zip(drow.iter()).enumerate() {
            id[j] = key(i);
            d[j] = v;
        }
        if k <= INSERT_MAX_K {
            merge_row::<I, T, M>(g, rn, q_norms[r], offset, &mut d, &mut id);
        } else {
            merge_row_select::<I, T, M>(g, rn, q_norms[r], offset, &mut d, &mut id, &mut cand);
        }
        for (j, (i, v)) in irow.iter_mut().zip(drow.iter_mut()).enumerate() {
            *i = id[j] as i64;
            *v = d[j];
        }
    }
}

#[inline(always)]
fn merge_rows<T: Real, I: Isa>(
    gram: &ArrayView2<'_, T>, q_norms: &ArrayView1<'_, T>, rn: &[T], offset: u64, metric: Metric,
    ids: &mut ArrayViewMut2<'_, i64>, dists: &mut ArrayViewMut2<'_, T>,
) {
    match metric {
        Metric::L2 => merge_rows_metric::<I, T, M_L2>(gram, q_norms, rn, offset, ids, dists),
        Metric::Cosine => merge_rows_metric::<I, T, M_COS>(gram, q_norms, rn, offset, ids, dists),
        Metric::Ip => merge_rows_metric::<I, T, M_IP>(gram, q_norms, rn, offset, ids, dists),
    }
}

multiversion! {
    fn merge_rows_dispatch<T: Real>(
        gram: &ArrayView2<'_, T>, q_norms: &ArrayView1<'_, T>, rn: &[T], offset: u64, metric: Metric, ids: &mut ArrayViewMut2<'_, i64>, dists: &mut ArrayViewMut2<'_, T>,
    ) -> () => merge_rows
}

/// Merges a Gram block into the running k nearest of each of its queries.
///
/// `gram` (b, mc) holds g[i, j] = q_i · r_j for the reference rows `id_offset + j`;
/// `q_norms` (b,) and `r_norms` (mc,) are ‖q_i‖₂ and ‖r_j‖₂ (their sign is ignored). The
/// distance of g is
/// - L2: the squared distance max(‖q‖² + ‖r‖² − 2g, 0),
/// - Cosine: 1 − g / (‖q‖ ‖r‖), exactly 1 when either norm is 0,
/// - Ip: 1 − g.
///
/// `ids` and `dists` (b, k) are the state, updated in place: each row sorted ascending by
/// (distance, id), empty slots (−1, +inf); a fresh state is all (−1, +inf). A NaN
/// distance never enters. Any strides for every view.
///
/// `cancel` is read before each task of about `TASK_VALUES` Gram values; once it is set
/// the call returns `Error::Interrupted` and the state is partly merged (rows keep their
/// order, but the block is not wholly in).
#[allow(clippy::too_many_arguments)]
pub fn knn_update<T: Real>(
    gram: ArrayView2<'_, T>, q_norms: ArrayView1<'_, T>, r_norms: ArrayView1<'_, T>, id_offset: usize, metric: Metric,
    ids: ArrayViewMut2<'_, i64>, dists: ArrayViewMut2<'_, T>, cancel: &Cancel,
) -> Result<(), Error> {
    let (b, mc) = gram.dim();
    if q_norms.len() != b {
        return Err(Error::Shape(format!("q_norms has {} entries but gram has {b} rows", q_norms.len())));
    }
    if r_norms.len() != mc {
        return Err(Error::Shape(format!("r_norms has {} entries but gram has {mc} columns", r_norms.len())));
    }
    if ids.dim() != dists.dim() || ids.len_of(Axis(0)) != b {
        return Err(Error::Shape(format!(
            "ids {:?} and dists {:?} must both be (b, k) with b = {b}, the rows of gram",
            ids.dim(),
            dists.dim()
        )));
    }
    let offset =
        id_offset.checked_add(mc).filter(|&end| end <= i64::MAX as usize).map(|_| id_offset as u64).ok_or_else(
            || Error::argument("id_offset", format!("id_offset {id_offset} + {mc} columns overflows an int64 id")),
        )?;
    let k = ids.len_of(Axis(1));
    if b == 0 || mc == 0 || k == 0 {
        return Ok(());
    }
    let rn_buf: Vec<T>;
    let rn: &[T] = match r_norms.as_slice() {
        Some(s) => s,
        None => {
            rn_buf = r_norms.to_vec();
            &rn_buf
        }
    };
    let pool = if b.saturating_mul(mc) >= PARALLEL_MIN_VALUES { threads::pool() } else { None };
    let rows = (TASK_VALUES / mc).max(1);
    by_row_tasks(ids, dists, rows, pool, cancel, |lo, i, d| {
        let hi = lo + i.len_of(Axis(0));
        let g = gram.slice_axis(Axis(0), (lo..hi).into());
        let qn = q_norms.slice_axis(Axis(0), (lo..hi).into());
        merge_rows_dispatch(&g, &qn, rn, offset, metric, i, d);
        Ok(())
    })
}

/// `fill(first_row, ids, dists)` over tasks of `rows` rows of the (n, k) outputs, on `pool`
/// when given, else task by task on this thread too, so that `cancel` is seen in time
/// (a task that starts after it is set does nothing; the caller gets `Error::Interrupted`).
/// The first error a task returns is the result (the graph search's damaged links).
pub(crate) fn by_row_tasks<T: Real>(
    mut ids: ArrayViewMut2<'_, i64>, mut dists: ArrayViewMut2<'_, T>, rows: usize, pool: Option<Arc<ThreadPool>>,
    cancel: &Cancel,
    fill: impl Fn(usize, &mut ArrayViewMut2<'_, i64>, &mut ArrayViewMut2<'_, T>) -> Result<(), Error> + Sync,
) -> Result<(), Error> {
    let one = |(t, (mut i, mut d)): (usize, (ArrayViewMut2<'_, i64>, ArrayViewMut2<'_, T>))| {
        if cancel.is_cancelled() {
            return Ok(());
        }
        fill(t * rows, &mut i, &mut d)
    };
    let i = ids.axis_chunks_iter_mut(Axis(0), rows);
    let d = dists.axis_chunks_iter_mut(Axis(0), rows);
    match pool {
        None => i.zip(d).enumerate().try_for_each(one)?,
        Some(pool) => pool.install(|| i.into_par_iter().zip(d.into_par_iter()).enumerate().try_for_each(one))?,
    }
    cancel.check()
}

/// Σ (aᵢ·sa − bᵢ·sb)² in f64 lanes: the differences are taken before squaring, so nothing
/// cancels. `a` and `b` have the same length.
#[inline(always)]
pub(crate) fn sq_diff_f64<I: Isa, T: Real>(a: &[T], sa: f64, b: &[T], sb: f64) -> f64 {
    let mut acc = [0.0f64; LANES];
    let (ac, at) = a.as_chunks::<LANES>();
    let (bc, bt) = b.as_chunks::<LANES>();
    for (x, y) in ac.iter().zip(bc) {
        for l in 0..LANES {
            let v = x[l].to_f64() * sa - y[l].to_f64() * sb;
            acc[l] = madd::<I, f64>(v, v, acc[l]);
        }
    }
    for (l, (x, y)) in at.iter().zip(bt).enumerate() {
        let v = x.to_f64() * sa - y.to_f64() * sb;
        acc[l] = madd::<I, f64>(v, v, acc[l]);
    }
    lanes::total(&acc)
}

/// Σ aᵢ·bᵢ in f64 lanes.
#[inline(always)]
pub(crate) fn dot_f64<I: Isa, T: Real>(a: &[T], b: &[T]) -> f64 {
    let mut acc = [0.0f64; LANES];
    let (ac, at) = a.as_chunks::<LANES>();
    let (bc, bt) = b.as_chunks::<LANES>();
    for (x, y) in ac.iter().zip(bc) {
        for l in 0..LANES {
            acc[l] = madd::<I, f64>(x[l].to_f64(), y[l].to_f64(), acc[l]);
        }
    }
    for (l, (x, y)) in at.iter().zip(bt).enumerate() {
        acc[l] = madd::<I, f64>(x.to_f64(), y.to_f64(), acc[l]);
    }
    lanes::total(&acc)
}

/// A view's row as a slice: in place when contiguous, else copied into `buf`.
#[inline(always)]
pub(crate) fn row_slice<'a, T: Real>(x: &'a ArrayView2<'_, T>, i: usize, buf: &'a mut Vec<T>) -> &'a [T] {
    let row = x.index_axis(Axis(0), i);
    match row.to_slice() {
        Some(s) => s,
        None => {
            buf.clear();
            buf.extend(row.iter().copied());
            &buf[..]
        }
    }
}

/// A query row prepared for direct distances: its values in f64 into `out` (≥ q.len()
/// values, the rest zeroed), times 1/‖q‖ for cosine. Returns ‖q‖ for cosine, 0 otherwise.
#[inline(always)]
fn prepare_query<I: Isa, T: Real>(q: &[T], metric: Metric, out: &mut [f64]) -> f64 {
    if metric == Metric::Cosine {
        let qn = dot_f64::<I, T>(q, q).sqrt();
        prepare_into(q, Some(1.0 / qn), out);
        qn
    } else {
        prepare_into(q, None, out);
        0.0
    }
}

/// The direct distances of `Q` prepared queries (`prepare_query`: values `qf`, norms `qn`)
/// to one reference row `r` of norm `rn` (read for cosine only), each summed in its own
/// f64 lanes in the same order whatever `Q`, so a pair's distance has the same bits
/// whether it is computed alone or in a tile (the reference row is read once per tile):
/// - L2: √Σ(q − r)², the differences taken before squaring (no cancellation),
/// - Cosine: ½‖q/‖q‖ − r/‖r‖‖² = 1 − cos, which keeps its digits for near neighbours
///   where 1 − q·r/(‖q‖‖r‖) keeps none; clamped to [0, 2], 1 when either vector is zero,
/// - Ip: 1 − q·r.
#[inline(always)]
fn tile_distances<I: Isa, T: Real, const M: u8, const Q: usize>(
    qf: [&[f64]; Q], qn: [f64; Q], r: &[T], rn: f64,
) -> [f64; Q] {
    let sb = if M == M_COS { 1.0 / rn } else { 1.0 };
    let rval = |x: T| if M == M_COS { x.to_f64() * sb } else { x.to_f64() };
    let add = |q: f64, r: f64, acc: f64| {
        if M == M_IP {
            madd::<I, f64>(q, r, acc)
        } else {
            let v = q - r;
            madd::<I, f64>(v, v, acc)
        }
    };
    let mut acc = [[0.0f64; LANES]; Q];
    let (rc, rt) = r.as_chunks::<LANES>();
    let n = rc.len();
    // Sliced to the reference row's chunks so that the loop has no bounds checks.
    let qc: [&[[f64; LANES]]; Q] = qf.map(|q| &q.as_chunks::<LANES>().0[..n]);
    let qt: [&[f64]; Q] = qf.map(|q| &q[n * LANES..n * LANES + rt.len()]);
    for c in 0..n {
        // Lane outside, query inside: LLVM then keeps the Q·LANES sums in vector
        // registers (query outside, it kept them on the stack and did not vectorize).
        for l in 0..LANES {
            let rv = rval(rc[c][l]);
            for j in 0..Q {
                acc[j][l] = add(qc[j][c][l], rv, acc[j][l]);
            }
        }
    }
    for (l, &x) in rt.iter().enumerate() {
        let rv = rval(x);
        for j in 0..Q {
            acc[j][l] = add(qt[j][l], rv, acc[j][l]);
        }
    }
    let mut out = [0.0; Q];
    for j in 0..Q {
        out[j] = finish::<M>(lanes::total(&acc[j]), qn[j], rn);
    }
    out
}

/// A pair's distance from the total of its lanes (`tile_distances`, `block_distances`).
#[inline(always)]
fn finish<const M: u8>(t: f64, qn: f64, rn: f64) -> f64 {
    match M {
        M_L2 => t.sqrt(),
        M_COS if !(qn > 0.0 && rn > 0.0) => 1.0,
        M_COS => (0.5 * t).clamp(0.0, 2.0),
        _ => 1.0 - t,
    }
}

/// One lane array of a pair into its sums, as `tile_distances` adds each element. Whole
/// lane arrays in and out (no per-element `&mut` helper): LLVM then keeps every
/// accumulator of a block in vector registers (`tile_distances`' loop kept them on the
/// stack, a load and a store per multiply-add, at 4x the arithmetic's time).
#[inline(always)]
fn lane_step<I: Isa, const M: u8>(q: &[f64; LANES], r: &[f64; LANES], mut acc: [f64; LANES]) -> [f64; LANES] {
    for l in 0..LANES {
        acc[l] = if M == M_IP {
            madd::<I, f64>(q[l], r[l], acc[l])
        } else {
            let v = q[l] - r[l];
            madd::<I, f64>(v, v, acc[l])
        };
    }
    acc
}

/// The lane totals of `Q` prepared queries against `R` prepared reference rows, all
/// padded with zeros to the same multiple of LANES (`prepare_query`, `prepare_rows`).
/// Each pair's lanes get the same additions in the same order as in `tile_distances`
/// (zeros add nothing: a sum that starts at +0 never becomes −0), so `finish` of a total
/// here has `pair_distances`' bits. Q·R lane arrays of sums stay in registers while
/// each query and reference value is loaded once per block.
#[inline(always)]
fn block_totals<I: Isa, const M: u8, const Q: usize, const R: usize>(q: [&[f64]; Q], r: [&[f64]; R]) -> [[f64; R]; Q] {
    // The generic loop below spilled its sums to the stack under fat LTO (see `knn_x86`).
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if I::WIDE && has!("avx512f") {
            // SAFETY: the CPU has AVX-512F (checked just above: a cached bit test).
            return unsafe { crate::knn_x86::block_totals_avx512::<M, Q, R>(q, r) };
        }
        if I::FMA && has!("avx2") && has!("fma") {
            // SAFETY: the CPU has AVX2 and FMA (checked just above).
            return unsafe { crate::knn_x86::block_totals_avx2::<M, Q, R>(q, r) };
        }
    }
    let n = r[0].len() / LANES;
    let qc: [&[[f64; LANES]]; Q] = q.map(|v| &v.as_chunks::<LANES>().0[..n]);
    let rc: [&[[f64; LANES]]; R] = r.map(|v| &v.as_chunks::<LANES>().0[..n]);
    let mut acc = [[[0.0f64; LANES]; R]; Q];
    for c in 0..n {
        for j in 0..Q {
            for i in 0..R {
                acc[j][i] = lane_step::<I, M>(&qc[j][c], &rc[i][c], acc[j][i]);
            }
        }
    }
    acc.map(|row| lanes::totals(&row))
}

/// A pair's direct distance as the results hold it: in `T`, +0 for −0 (which would sort
/// before +0 under total_cmp).
#[inline(always)]
fn stored<T: Real>(v: f64) -> T {
    T::from_f64(v + 0.0)
}

/// Exact distances and re-sorted ids of a block of query rows (`lo..` of `queries`).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn pairs_rows_metric<I: Isa, T: Real, const M: u8>(
    queries: &ArrayView2<'_, T>, reference: &ArrayView2<'_, T>, ids: &ArrayView2<'_, i64>, metric: Metric,
    rnorms: Option<&[f64]>, lo: usize, out_ids: &mut ArrayViewMut2<'_, i64>, out_d: &mut ArrayViewMut2<'_, T>,
) {
    let k = ids.len_of(Axis(1));
    let mut qbuf = Vec::new();
    let mut qf = Vec::new();
    let mut rbuf = Vec::new();
    let mut pairs: Vec<(T, u64)> = Vec::with_capacity(k);
    let mut order: Vec<u64> = Vec::new();
    for r in 0..out_ids.len_of(Axis(0)) {
        let qi = lo + r;
        let qv = row_slice(queries, qi, &mut qbuf);
        qf.resize(qv.len(), 0.0);
        let qn = prepare_query::<I, T>(qv, metric, &mut qf);
        pairs.clear();
        // Many pairs: visit the reference rows in id order, so that they are read as a
        // stream rather than at random (a k near the reference's size was bound by the
        // cache misses, not the arithmetic).
        order.clear();
        order.extend(ids.index_axis(Axis(0), qi).iter().map(|&i| key(i)));
        if k >= SORTED_PAIRS_MIN_K {
            order.sort_unstable();
        }
        for &id in &order {
            let id = id as i64;
            if id < 0 {
                pairs.push((T::INF, key(id)));
                continue;
            }
            // In range: checked by the caller before any work started.
            let rv = row_slice(reference, id as usize, &mut rbuf);
            let rn = match (M, rnorms) {
                (M_COS, Some(n)) => n[id as usize],
                (M_COS, None) => dot_f64::<I, T>(rv, rv).sqrt(),
                _ => 0.0,
            };
            let [v] = tile_distances::<I, T, M, 1>([&qf], [qn], rv, rn);
            pairs.push((stored(v), key(id)));
        }
        // total_cmp is a total order even with NaN, so the sort cannot panic.
        pairs.sort_unstable_by(|a, b| a.0.to_f64().total_cmp(&b.0.to_f64()).then(a.1.cmp(&b.1)));
        let mut irow = out_ids.index_axis_mut(Axis(0), r);
        let mut drow = out_d.index_axis_mut(Axis(0), r);
        for (j, (i, v)) in irow.iter_mut().zip(drow.iter_mut()).enumerate() {
            *i = pairs[j].1 as i64;
            *v = pairs[j].0;
        }
    }
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn pairs_rows<T: Real, I: Isa>(
    queries: &ArrayView2<'_, T>, reference: &ArrayView2<'_, T>, ids: &ArrayView2<'_, i64>, metric: Metric,
    rnorms: Option<&[f64]>, lo: usize, out_ids: &mut ArrayViewMut2<'_, i64>, out_d: &mut ArrayViewMut2<'_, T>,
) {
    // Direct calls, not a function pointer: each must inline into the caller compiled
    // for the SIMD level.
    let (q, r) = (queries, reference);
    match metric {
        Metric::L2 => pairs_rows_metric::<I, T, M_L2>(q, r, ids, metric, rnorms, lo, out_ids, out_d),
        Metric::Cosine => pairs_rows_metric::<I, T, M_COS>(q, r, ids, metric, rnorms, lo, out_ids, out_d),
        Metric::Ip => pairs_rows_metric::<I, T, M_IP>(q, r, ids, metric, rnorms, lo, out_ids, out_d),
    }
}

/// Pairs per query from which the reference rows are visited in id order.
const SORTED_PAIRS_MIN_K: usize = 64;

/// ‖r‖₂ of every reference row, as `pairs_rows` computes it per pair (same ISA, same sum).
#[inline(always)]
fn ref_norms<T: Real, I: Isa>(reference: &ArrayView2<'_, T>, out: &mut Vec<f64>) {
    let mut buf = Vec::new();
    out.clear();
    for i in 0..reference.len_of(Axis(0)) {
        let rv = row_slice(reference, i, &mut buf);
        out.push(dot_f64::<I, T>(rv, rv).sqrt());
    }
}

multiversion! {
    fn ref_norms_dispatch<T: Real>(reference: &ArrayView2<'_, T>, out: &mut Vec<f64>) -> () => ref_norms
}

multiversion! {
    fn pairs_rows_dispatch<T: Real>(
        queries: &ArrayView2<'_, T>, reference: &ArrayView2<'_, T>, ids: &ArrayView2<'_, i64>, metric: Metric, rnorms: Option<&[f64]>, lo: usize, out_ids: &mut ArrayViewMut2<'_, i64>, out_d: &mut ArrayViewMut2<'_, T>,
    ) -> () => pairs_rows
}

/// (n, m, D) of n queries and m reference rows of one dimension D, or `Error::Shape`.
fn query_sizes<T>(queries: &ArrayView2<'_, T>, reference: &ArrayView2<'_, T>) -> Result<(usize, usize, usize), Error> {
    let ((n, dim), (m, rdim)) = (queries.dim(), reference.dim());
    if dim != rdim {
        return Err(Error::Shape(format!(
            "queries {:?} and reference {:?} have different dimensions",
            queries.dim(),
            reference.dim()
        )));
    }
    Ok((n, m, dim))
}

/// The (n, k) neighbour ids and distances a search fills, zeroed (calloc: pages untouched
/// until a task writes its rows); `Error::OutOfMemory` when they cannot be had.
fn zeroed_neighbours<T: Real>(n: usize, k: usize) -> Result<(Array2<i64>, Array2<T>), Error> {
    let nk = n.checked_mul(k).ok_or(Error::OutOfMemory { bytes: usize::MAX })?;
    let ids = Array2::from_shape_vec((n, k), crate::error::zeroed_ids(nk)?).expect("n * k values make an (n, k) array");
    let d =
        Array2::from_shape_vec((n, k), crate::error::zeroed_real::<T>(nk)?).expect("n * k values make an (n, k) array");
    Ok((ids, d))
}

/// Exact distances of chosen (query, reference) pairs, computed directly, and each row
/// re-sorted by (distance, id).
///
/// `queries` (n, D), `reference` (m, D), `ids` (n, k) reference rows (−1: none). Returns
/// (ids, distances), both (n, k):
/// - L2: √Σ(q − r)², the differences taken before squaring (no cancellation),
/// - Cosine: 1 − q·r/(‖q‖‖r‖) computed as ½‖q/‖q‖ − r/‖r‖‖², clamped to [0, 2]; 1 when
///   either vector is zero,
/// - Ip: 1 − q·r,
///
/// summed in float64 whatever `T`; an id of −1 gets +inf and sorts last. `cancel` is read
/// before each task of about `TASK_VALUES` values (`Error::Interrupted`).
pub fn pair_distances<T: Real>(
    queries: ArrayView2<'_, T>, reference: ArrayView2<'_, T>, ids: ArrayView2<'_, i64>, metric: Metric, cancel: &Cancel,
) -> Result<(Array2<i64>, Array2<T>), Error> {
    let (n, m, dim) = query_sizes(&queries, &reference)?;
    let k = ids.len_of(Axis(1));
    if ids.len_of(Axis(0)) != n {
        return Err(Error::Shape(format!("ids has {} rows but queries has {n}", ids.len_of(Axis(0)))));
    }
    // Row by row, reading `cancel` every TASK_VALUES ids: n·k can be large on its own.
    let check_every = (TASK_VALUES / k.max(1)).max(1);
    for (i, row) in ids.outer_iter().enumerate() {
        if i % check_every == 0 {
            cancel.check()?;
        }
        if let Some((j, &v)) = row.iter().enumerate().find(|(_, &v)| v < -1 || (v >= 0 && v as u64 >= m as u64)) {
            return Err(Error::argument(
                "ids",
                format!("ids[{i}, {j}] = {v} is not a reference row (0 <= id < {m}) or -1"),
            ));
        }
    }
    // Zeros come from calloc, untouched until a task writes them; the tasks write every
    // entry of every row.
    let (mut out_ids, mut out_d) = zeroed_neighbours::<T>(n, k)?;
    if n == 0 || k == 0 {
        return Ok((out_ids, out_d));
    }
    let nk = n * k; // allocated above, so it did not overflow
    let work = n.saturating_mul(k).saturating_mul(dim.max(1));
    let pool = if work >= PARALLEL_MIN_VALUES { threads::pool() } else { None };
    // Cosine needs ‖r‖ of each pair's row: once per row when the pairs outnumber the rows.
    let mut norms = Vec::new();
    if metric == Metric::Cosine && nk >= m {
        ref_norms_dispatch(&reference, &mut norms);
    }
    let rnorms = if norms.is_empty() { None } else { Some(&norms[..]) };
    let rows = (TASK_VALUES / (k * dim.max(1))).max(1);
    by_row_tasks(out_ids.view_mut(), out_d.view_mut(), rows, pool, cancel, |lo, i, d| {
        pairs_rows_dispatch(&queries, &reference, &ids, metric, rnorms, lo, i, d);
        Ok(())
    })?;
    Ok((out_ids, out_d))
}

/// A float whose (distance, id) pairs pack into one integer that sorts as
/// (distance under `total_cmp`, id): selecting and sorting plain integers is several
/// times faster than comparing pairs.
pub trait Keyed: Real {
    type Key: Ord + Copy + Send + Sync + Default;
    /// Whether the direct search finds this type's distances from float64 dot products
    /// (`put_block_gram`): a distance rounded to a type narrower than f64 is nearly always
    /// certain from them; in f64 itself it never is.
    const GRAM: bool = false;
    /// Ids above this do not fit a key.
    const MAX_ID: u64;
    /// Bytes of a key's distance part (`order_bits`).
    const ORDER_BYTES: usize;
    fn pack(d: Self, id: u64) -> Self::Key;
    fn unpack(k: Self::Key) -> (Self, u64);
    /// The distance part of a key, which orders keys of distinct distances.
    fn order_bits(k: Self::Key) -> u64;
    /// The keys of four pairs from their lane totals, query and reference norms and ids:
    /// `pack(stored(finish(..)), id)` each. Called only where AVX2 is available, where a
    /// type may do the four in vector registers.
    #[inline(always)]
    fn finish_pack4<const M: u8>(tot: [f64; 4], qn: [f64; 4], rn: [f64; 4], ids: [u64; 4]) -> [Self::Key; 4] {
        std::array::from_fn(|l| Self::pack(stored(finish::<M>(tot[l], qn[l], rn[l])), ids[l]))
    }
}

/// The IEEE bits of a float made an unsigned integer in `total_cmp`'s order: negative
/// values have every bit flipped, the others only the sign bit (the keys here; the rank
/// draw's bins in `select`).
#[inline(always)]
pub(crate) fn total_order_bits(x: f64) -> u64 {
    let b = x.to_bits();
    b ^ ((((b as i64) >> 63) as u64) | (1 << 63))
}

impl Keyed for f32 {
    type Key = u64;
    const GRAM: bool = true;
    const MAX_ID: u64 = u32::MAX as u64;
    const ORDER_BYTES: usize = 4;
    #[inline(always)]
    fn order_bits(k: u64) -> u64 {
        k >> 32
    }
    #[inline(always)]
    fn pack(d: f32, id: u64) -> u64 {
        let b = d.to_bits();
        let o = b ^ ((((b as i32) >> 31) as u32) | (1 << 31));
        ((o as u64) << 32) | id
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    fn finish_pack4<const M: u8>(tot: [f64; 4], qn: [f64; 4], rn: [f64; 4], ids: [u64; 4]) -> [u64; 4] {
        // SAFETY: the caller runs on an AVX2 path (the trait's contract).
        unsafe { crate::knn_x86::finish_pack4_f32::<M>(tot, qn, rn, ids) }
    }
    #[inline(always)]
    fn unpack(k: u64) -> (f32, u64) {
        let o = (k >> 32) as u32;
        let b = if o >> 31 == 1 { o & !(1 << 31) } else { !o };
        (f32::from_bits(b), k & u32::MAX as u64)
    }
}

impl Keyed for f64 {
    type Key = u128;
    const MAX_ID: u64 = u64::MAX;
    const ORDER_BYTES: usize = 8;
    #[inline(always)]
    fn order_bits(k: u128) -> u64 {
        (k >> 64) as u64
    }
    #[inline(always)]
    fn pack(d: f64, id: u64) -> u128 {
        ((total_order_bits(d) as u128) << 64) | id as u128
    }
    #[inline(always)]
    fn unpack(k: u128) -> (f64, u64) {
        let o = (k >> 64) as u64;
        let b = if o >> 63 == 1 { o & !(1 << 63) } else { !o };
        (f64::from_bits(b), k as u64)
    }
}

/// A row of keys sorted whole (`radix_sort_keys`) rather than selected then sorted when
/// k is at least 1/RADIX_MIN_SHARE of the reference.
const RADIX_MIN_SHARE: usize = 4;

/// Sorts keys given in id order by their distance bits (`Keyed::order_bits`), stably, a
/// byte at a time from the lowest (LSD radix sort): equal distances stay in id order, so
/// the result is the keys' own order. One pass reads every byte's histogram; a byte that
/// is the same in every key (the sign and most of the exponent, usually) is skipped.
/// 4 passes for float32 against a comparison sort's log₂ m ≈ 12.
#[inline(always)]
fn radix_sort_keys<T: Keyed>(keys: &mut [T::Key], tmp: &mut Vec<T::Key>) {
    let n = keys.len();
    let nb = T::ORDER_BYTES;
    let mut hist = [[0u32; 256]; 8];
    for &key in keys.iter() {
        let b = T::order_bits(key);
        for (p, h) in hist.iter_mut().enumerate().take(nb) {
            h[((b >> (8 * p)) & 255) as usize] += 1;
        }
    }
    tmp.clear();
    tmp.extend_from_slice(keys);
    let mut in_tmp = false;
    for (p, h) in hist.iter().enumerate().take(nb) {
        if h.iter().any(|&c| c as usize == n) {
            continue;
        }
        let mut off = [0usize; 256];
        let mut sum = 0;
        for (o, &c) in off.iter_mut().zip(h.iter()) {
            *o = sum;
            sum += c as usize;
        }
        let (src, dst): (&[T::Key], &mut [T::Key]) =
            if in_tmp { (&tmp[..], &mut keys[..]) } else { (&keys[..], &mut tmp[..]) };
        for &key in src {
            let d = ((T::order_bits(key) >> (8 * p)) & 255) as usize;
            dst[off[d]] = key;
            off[d] += 1;
        }
        in_tmp = !in_tmp;
    }
    if in_tmp {
        keys.copy_from_slice(tmp);
    }
}

/// Reference rows per pass of `knn_direct`'s queries, prepared in f64: about 256 KiB, so
/// that the rows stay in the core's L2 cache while every query of a task reads them.
const DIRECT_CHUNK_BYTES: usize = 256 << 10;
/// Queries per `knn_direct` task at most, and keys (queries × reference rows) per task at
/// most: each task holds every distance of its queries before selecting.
const DIRECT_TASK_ROWS: usize = 128;
const DIRECT_TASK_KEYS: usize = 1 << 20;

/// f64 values from a 64-byte boundary: the direct search's prepared rows (each a multiple
/// of LANES values, so every row starts on a cache line and no vector load splits across
/// two lines).
#[derive(Default)]
struct Prepared {
    lines: Vec<Line>,
    len: usize,
}

/// A cache line of f64.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([f64; 8]);

impl Prepared {
    /// `len` values to be written (what they held before, or zeros).
    fn reset(&mut self, len: usize) -> &mut [f64] {
        if self.lines.len() * 8 < len {
            self.lines.resize(len.div_ceil(8), Line([0.0; 8]));
        }
        self.len = len;
        // SAFETY: `Line` is 8 f64 with no padding (repr(C)); `lines` holds at least `len`.
        unsafe { std::slice::from_raw_parts_mut(self.lines.as_mut_ptr().cast::<f64>(), len) }
    }
    fn values(&self) -> &[f64] {
        // SAFETY: as in `reset`; `len` ≤ 8 · lines.len().
        unsafe { std::slice::from_raw_parts(self.lines.as_ptr().cast::<f64>(), self.len) }
    }
}

/// `v` into `out` (`dp` ≥ v.len() values) as f64, times `scale`, then zeros.
#[inline(always)]
fn prepare_into<T: Real>(v: &[T], scale: Option<f64>, out: &mut [f64]) {
    let (head, pad) = out.split_at_mut(v.len());
    match scale {
        Some(sb) => head.iter_mut().zip(v).for_each(|(o, &x)| *o = x.to_f64() * sb),
        None => head.iter_mut().zip(v).for_each(|(o, &x)| *o = x.to_f64()),
    }
    pad.fill(0.0);
}

/// Reference rows `rows` prepared for `block_totals`: f64, times 1/‖r‖ for cosine (what
/// `tile_distances` computes per element), each padded with zeros to `dp` values.
#[inline(always)]
fn prepare_rows<T: Real, const M: u8>(
    reference: &ArrayView2<'_, T>, rows: std::ops::Range<usize>, rnorms: &[f64], dp: usize, buf: &mut Vec<T>,
    out: &mut Prepared,
) {
    let dst = out.reset(rows.len() * dp);
    for (j, d) in rows.zip(dst.chunks_exact_mut(dp)) {
        let scale = if M == M_COS { Some(1.0 / rnorms[j]) } else { None };
        prepare_into(row_slice(reference, j, buf), scale, d);
    }
}

/// Keys of the queries `r0..r0 + Q` (of a task) against every prepared reference row of
/// a chunk, `R` rows at a time: blocks of Q × R pairs.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn direct_tile<I: Isa, T: Keyed, const M: u8, const Q: usize, const R: usize>(
    qf: &[f64], qn: &[f64], qs: &[f64], r0: usize, rf: &[f64], rs: &[f64], rnorms: &[f64], c0: usize, dp: usize,
    m: usize, keys: &mut [T::Key],
) {
    let q: [&[f64]; Q] = std::array::from_fn(|t| &qf[(r0 + t) * dp..(r0 + t + 1) * dp]);
    let qb: [f64; Q] = std::array::from_fn(|t| qn[r0 + t]);
    let cm = rf.len() / dp;
    let mut i = 0;
    // Two copies of the block loop, not one loop choosing per block: with the choice inside
    // a shared block function the AVX-512 6 × 2 search ran 13 % slower (53 -> 60 ms).
    if gram::<T, M>() {
        let qsb: [f64; Q] = std::array::from_fn(|t| qs[r0 + t]);
        let eps = gram_eps(dp);
        let keys = &mut keys[r0 * m..];
        while i + R <= cm {
            let rr: [&[f64]; R] = std::array::from_fn(|u| &rf[(i + u) * dp..(i + u + 1) * dp]);
            let dot = block_totals::<I, M_IP, Q, R>(q, rr);
            let rsb: [f64; R] = rs[i..i + R].try_into().expect("R squared norms");
            put_block_gram::<I, T, M, Q, R>(&dot, (&qb, &qsb, q), (&rsb, rr), rnorms, eps, c0 + i, keys, m);
            i += R;
        }
        for i in i..cm {
            let rr = [&rf[i * dp..(i + 1) * dp]];
            let dot = block_totals::<I, M_IP, Q, 1>(q, rr);
            put_block_gram::<I, T, M, Q, 1>(&dot, (&qb, &qsb, q), (&[rs[i]], rr), rnorms, eps, c0 + i, keys, m);
        }
        return;
    }
    while i + R <= cm {
        let rr: [&[f64]; R] = std::array::from_fn(|u| &rf[(i + u) * dp..(i + u + 1) * dp]);
        let tot = block_totals::<I, M, Q, R>(q, rr);
        put_block::<I, T, M, Q, R>(&tot, &qb, rnorms, c0 + i, &mut keys[r0 * m..], m);
        i += R;
    }
    for i in i..cm {
        let tot = block_totals::<I, M, Q, 1>(q, [&rf[i * dp..(i + 1) * dp]]);
        put_block::<I, T, M, Q, 1>(&tot, &qb, rnorms, c0 + i, &mut keys[r0 * m..], m);
    }
}

/// Whether the direct search takes its distances from dot products (`put_block_gram`):
/// for L2 and cosine, in a type narrower than f64. (Ip's direct form is its dot product.)
#[inline(always)]
const fn gram<T: Keyed, const M: u8>() -> bool {
    T::GRAM && M != M_IP
}

/// (relative, absolute) bound of |G − S| for `put_block_gram`, where S is the direct
/// form's f64 total Σ(qᵢ − rᵢ)² (each difference rounded, then summed, every rounding
/// relative u = 2⁻⁵³ of a nonnegative sum: within (D + 4)·u·T of the exact T) and
/// G = (‖q‖² + ‖r‖²) − 2 q·r from f64 sums (each of the three within D·u of its terms'
/// magnitudes, ≤ D·u·(‖q‖² + ‖r‖²) for the dot product, plus two roundings): together
/// |G − S| ≤ (4D + 13)·u·(‖q‖² + ‖r‖²), since T ≤ 2(‖q‖² + ‖r‖²). Taken twice over
/// (2⁻⁵² for u) for the roundings of the bound itself; the absolute part covers
/// underflow (each operation's error then up to 2⁻¹⁰⁷⁵ rather than relative).
#[inline(always)]
fn gram_eps(dp: usize) -> (f64, f64) {
    let n = (4 * dp + 16) as f64;
    (n * f64::EPSILON, n * f64::MIN_POSITIVE)
}

/// The keys of a block's Q × R pairs from their dot products (`dot`, as `block_totals`
/// for `Ip`) and the prepared rows' squared norms: G = (‖q‖² + ‖r‖²) − 2 q·r is within ε
/// (`gram_eps`) of the direct form's total S, so when G − ε and G + ε round to the same
/// stored distance (finish and rounding are nondecreasing), so does S: that distance is
/// S's, bit for bit. G costs one multiply-add a pair and dimension against S's two; ε in
/// float32 units is ~1e-13 of a unit-norm pair, so only pairs within ~1e-6 relative of a
/// rounding boundary, or near-duplicates (where G cancels), take the direct form
/// (`block_totals`, the same lanes in the same order as the direct search's blocks).
/// `qv` = (norms, squared norms, prepared values) of the block's queries, `rv` = (squared
/// norms, prepared values) of its reference rows j0..j0 + R; `keys` is the task's, from
/// its first query's row.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn put_block_gram<I: Isa, T: Keyed, const M: u8, const Q: usize, const R: usize>(
    dot: &[[f64; R]; Q], qv: (&[f64; Q], &[f64; Q], [&[f64]; Q]), rv: (&[f64; R], [&[f64]; R]), rnorms: &[f64],
    eps: (f64, f64), j0: usize, keys: &mut [T::Key], m: usize,
) {
    let (qb, qs, q) = qv;
    let (rs, r) = rv;
    let rb: [f64; R] = if M == M_COS { rnorms[j0..j0 + R].try_into().expect("R norms") } else { [0.0; R] };
    let mut lo = [[T::ZERO; R]; Q];
    let mut hi = [[T::ZERO; R]; Q];
    for t in 0..Q {
        for u in 0..R {
            let s = qs[t] + rs[u];
            let g = s - 2.0 * dot[t][u];
            let e = madd::<I, f64>(s, eps.0, eps.1);
            // S ≥ 0: the low end clamped there (sqrt of a negative is NaN).
            lo[t][u] = stored::<T>(finish::<M>((g - e).max(0.0), qb[t], rb[u]));
            hi[t][u] = stored::<T>(finish::<M>(g + e, qb[t], rb[u]));
        }
    }
    for t in 0..Q {
        let row = &mut keys[t * m + j0..t * m + j0 + R];
        for u in 0..R {
            // NaN (a bound that overflowed) is unequal to itself: the direct form.
            let d = if lo[t][u] == hi[t][u] {
                lo[t][u]
            } else {
                stored::<T>(finish::<M>(block_totals::<I, M, 1, 1>([q[t]], [r[u]])[0][0], qb[t], rb[u]))
            };
            row[u] = T::pack(d, (j0 + u) as u64);
        }
    }
}

/// The keys of a block's Q × R pairs (queries of norms `qb`, reference rows j0..j0 + R):
/// each total finished and packed, row t's into `keys[t·m + j0..][..R]`. Written over whole
/// arrays without branches so that the pairs are finished side by side in vector
/// registers (one at a time, it was a fifth of the direct search's time).
#[inline(always)]
fn put_block<I: Isa, T: Keyed, const M: u8, const Q: usize, const R: usize>(
    tot: &[[f64; R]; Q], qb: &[f64; Q], rnorms: &[f64], j0: usize, keys: &mut [T::Key], m: usize,
) {
    let rb: [f64; R] = if M == M_COS { rnorms[j0..j0 + R].try_into().expect("R norms") } else { [0.0; R] };
    let mut k: [[T::Key; R]; Q] = [[T::Key::default(); R]; Q];
    if I::FMA && (Q * R) % 4 == 0 {
        // Four pairs at a time, in row-major order of the block.
        for f in (0..Q * R).step_by(4) {
            let at = |l: usize| ((f + l) / R, (f + l) % R);
            let four = T::finish_pack4::<M>(
                std::array::from_fn(|l| tot[at(l).0][at(l).1]),
                std::array::from_fn(|l| qb[at(l).0]),
                std::array::from_fn(|l| rb[at(l).1]),
                std::array::from_fn(|l| (j0 + at(l).1) as u64),
            );
            for (l, key) in four.into_iter().enumerate() {
                k[at(l).0][at(l).1] = key;
            }
        }
    } else {
        for t in 0..Q {
            for u in 0..R {
                k[t][u] = T::pack(stored(finish::<M>(tot[t][u], qb[t], rb[u])), (j0 + u) as u64);
            }
        }
    }
    for (t, kt) in k.iter().enumerate() {
        keys[t * m + j0..t * m + j0 + R].copy_from_slice(kt);
    }
}

/// Every query of a task against one prepared chunk, in Q × R blocks.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn direct_chunk<I: Isa, T: Keyed, const M: u8, const Q: usize, const R: usize>(
    qf: &[f64], qn: &[f64], qs: &[f64], rf: &[f64], rs: &[f64], rnorms: &[f64], c0: usize, dp: usize, m: usize,
    keys: &mut [T::Key],
) {
    let rows = qn.len();
    let mut r0 = 0;
    while r0 + Q <= rows {
        direct_tile::<I, T, M, Q, R>(qf, qn, qs, r0, rf, rs, rnorms, c0, dp, m, keys);
        r0 += Q;
    }
    for r0 in r0..rows {
        direct_tile::<I, T, M, 1, R>(qf, qn, qs, r0, rf, rs, rnorms, c0, dp, m, keys);
    }
}

/// The k nearest of the query rows `lo..lo + out_ids.nrows()`: every distance to the
/// reference (blocks of queries against chunks of reference rows prepared once), then per
/// query the k smallest keys selected and sorted.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn direct_rows_metric<I: Isa, T: Keyed, const M: u8>(
    queries: &ArrayView2<'_, T>, reference: &ArrayView2<'_, T>, metric: Metric, rnorms: &[f64], lo: usize, k: usize,
    agg: Option<Aggregate>, out_ids: &mut ArrayViewMut2<'_, i64>, out_d: &mut ArrayViewMut2<'_, T>,
) {
    let rows = out_d.nrows();
    let (m, dim) = reference.dim();
    let dp = dim.div_ceil(LANES).max(1) * LANES;
    let mut buf = Vec::new();
    let mut qf = Prepared::default();
    let mut qn = vec![0.0; rows];
    for (r, d) in qf.reset(rows * dp).chunks_exact_mut(dp).enumerate() {
        qn[r] = prepare_query::<I, T>(row_slice(queries, lo + r, &mut buf), metric, d);
    }
    // Every key is written below; zeros (the integer default) come from the allocator
    // already zeroed, without a pass of stores.
    let mut keys: Vec<T::Key> = vec![T::Key::default(); rows * m];
    let chunk = (DIRECT_CHUNK_BYTES / (dp * 8)).max(1);
    // Blocks of queries × reference rows whose sums fill the vector registers without
    // spilling: 32 zmm hold 4 × 2 pairs of 2 (AVX-512). Measured (500 × 5,000 × 384,
    // cosine, one thread, CPU time): AVX-512 4 × 2 0.115 s, 3 × 2 0.112 s, 4 × 1 0.136 s,
    // 8 × 1 0.161 s. AVX2 sums a quarter of the lanes at a time, one ymm a pair
    // (`knn_x86`): 4 × 2; 5 × 2, 6 × 2, 3 × 3 and a twice-unrolled loop were no faster
    // within the noise of a shared machine, 4 × 3 spilled (session 13). The dot products
    // of `gram` (one multiply-add a pair and dimension, not two) take 6 × 2: 500 × 5,000 ×
    // 384 float32 cosine k = 4,999, one thread, CPU: AVX-512 4 × 2 56.6 ms, 6 × 2 53.3;
    // AVX2 86.2 and 82.3 (session 15).
    let level = crate::simd::level();
    // The prepared rows' squared norms, for the distances from dot products (`gram`).
    let squares = |rows: &[f64], out: &mut Vec<f64>| {
        out.clear();
        if gram::<T, M>() {
            out.extend(rows.chunks_exact(dp).map(|v| block_totals::<I, M_IP, 1, 1>([v], [v])[0][0]));
        }
    };
    let mut qs = Vec::new();
    squares(qf.values(), &mut qs);
    let mut rf = Prepared::default();
    let mut rs = Vec::new();
    for c0 in (0..m).step_by(chunk) {
        let c1 = (c0 + chunk).min(m);
        prepare_rows::<T, M>(reference, c0..c1, rnorms, dp, &mut buf, &mut rf);
        squares(rf.values(), &mut rs);
        let (qf, qn, qs, rf, rs) = (qf.values(), &qn[..], &qs[..], rf.values(), &rs[..]);
        match level {
            crate::simd::SimdLevel::Avx512 | crate::simd::SimdLevel::Avx2 if gram::<T, M>() => {
                direct_chunk::<I, T, M, 6, 2>(qf, qn, qs, rf, rs, rnorms, c0, dp, m, &mut keys)
            }
            crate::simd::SimdLevel::Avx512 | crate::simd::SimdLevel::Avx2 => {
                direct_chunk::<I, T, M, 4, 2>(qf, qn, qs, rf, rs, rnorms, c0, dp, m, &mut keys)
            }
            crate::simd::SimdLevel::Portable => {
                direct_chunk::<I, T, M, 1, 1>(qf, qn, qs, rf, rs, rnorms, c0, dp, m, &mut keys)
            }
        }
    }
    if let Some(agg) = agg {
        // Scores: a selection per query, no sort (out_d is the (rows, 1) column of scores).
        for (r, row) in keys.chunks_exact_mut(m).enumerate() {
            out_d[[r, 0]] = aggregate_keys::<T>(row, k, agg);
        }
        return;
    }
    let mut tmp = Vec::new();
    for (r, row) in keys.chunks_exact_mut(m).enumerate() {
        let best = if k >= m / RADIX_MIN_SHARE {
            // The keys are in id order: a stable sort by the distance bits alone puts
            // equal distances in id order.
            radix_sort_keys::<T>(row, &mut tmp);
            &row[..k]
        } else {
            if k < m {
                row.select_nth_unstable(k);
            }
            let best = &mut row[..k];
            best.sort_unstable();
            best
        };
        let mut irow = out_ids.index_axis_mut(Axis(0), r);
        let mut drow = out_d.index_axis_mut(Axis(0), r);
        for ((i, d), &key) in irow.iter_mut().zip(drow.iter_mut()).zip(best.iter()) {
            let (v, id) = T::unpack(key);
            *i = id as i64;
            *d = v;
        }
    }
}

crate::names::named_enum! {
    /// How `knn_direct_scores` makes one score of a query's k nearest distances (named as
    /// `EmbeddingDistanceMiner`'s `aggregate`).
    pub enum Aggregate("aggregate") {
        /// Their mean, summed in f64.
        Mean = "mean",
        /// The k-th smallest.
        Kth = "kth",
    }
}

/// The score of one query's keys (every reference row's, in id order; reordered here):
/// the k smallest (distance, id) keys are selected (`select_nth_unstable`, O(m)), not
/// sorted. The mean adds their distances in f64 in the order the selection leaves them,
/// every fourth into one of four sums: a fixed order for given distances, whatever the
/// thread count or SIMD level (the distances have the same bits at every level).
#[inline(always)]
fn aggregate_keys<T: Keyed>(row: &mut [T::Key], k: usize, agg: Aggregate) -> T {
    let m = row.len();
    match agg {
        Aggregate::Kth => {
            let (_, kth, _) = row.select_nth_unstable(k - 1);
            T::unpack(*kth).0
        }
        Aggregate::Mean => {
            if k < m {
                row.select_nth_unstable(k);
            }
            // Four running sums (a chain of dependent adds waited on each add's latency),
            // added pairwise at the end.
            let mut acc = [0.0f64; 4];
            let (fours, rest) = row[..k].as_chunks::<4>();
            for four in fours {
                for (a, &key) in acc.iter_mut().zip(four) {
                    *a += T::unpack(key).0.to_f64();
                }
            }
            for (a, &key) in acc.iter_mut().zip(rest) {
                *a += T::unpack(key).0.to_f64();
            }
            T::from_f64(((acc[0] + acc[2]) + (acc[1] + acc[3])) / k as f64)
        }
    }
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn direct_rows<T: Keyed, I: Isa>(
    queries: &ArrayView2<'_, T>, reference: &ArrayView2<'_, T>, metric: Metric, rnorms: &[f64], lo: usize, k: usize,
    agg: Option<Aggregate>, out_ids: &mut ArrayViewMut2<'_, i64>, out_d: &mut ArrayViewMut2<'_, T>,
) {
    let (q, r) = (queries, reference);
    match metric {
        Metric::L2 => direct_rows_metric::<I, T, M_L2>(q, r, metric, rnorms, lo, k, agg, out_ids, out_d),
        Metric::Cosine => direct_rows_metric::<I, T, M_COS>(q, r, metric, rnorms, lo, k, agg, out_ids, out_d),
        Metric::Ip => direct_rows_metric::<I, T, M_IP>(q, r, metric, rnorms, lo, k, agg, out_ids, out_d),
    }
}

multiversion! {
    fn direct_rows_dispatch<T: Keyed>(
        queries: &ArrayView2<'_, T>, reference: &ArrayView2<'_, T>, metric: Metric, rnorms: &[f64], lo: usize, k: usize, agg: Option<Aggregate>, out_ids: &mut ArrayViewMut2<'_, i64>, out_d: &mut ArrayViewMut2<'_, T>,
    ) -> () => direct_rows
}

/// The k nearest reference rows of every query by the direct distance of every pair:
/// exact search for a k near the reference's size, where a Gram stage would select
/// almost nothing and `pair_distances` would recompute almost every pair anyway.
///
/// `queries` (n, D), `reference` (m, D), 0 ≤ k ≤ m. Every (query, reference row) pair's
/// distance is `pair_distances`' (the same bits), in register blocks of queries ×
/// reference rows against chunks of reference rows prepared in f64 once per task (on
/// cache-line boundaries), that stay in cache; float32 L2 and cosine distances come from
/// f64 dot products where those make the float32 result certain (`put_block_gram`), the
/// direct form elsewhere. Each query's k smallest (distance, id) are then
/// selected (`select_nth_unstable`) and sorted, or for k ≥ m/4 all m sorted by a radix
/// sort of the distance bits: O(m·D + m + k log k) per query. Returns (ids, distances), both (n, k), each row ascending by
/// (distance, id), so equal distances come in ascending id order.
///
/// `cancel` is read before each task (at most 128 queries, and at most 2²⁰ pairs).
pub fn knn_direct<T: Keyed>(
    queries: ArrayView2<'_, T>, reference: ArrayView2<'_, T>, k: usize, metric: Metric, cancel: &Cancel,
) -> Result<(Array2<i64>, Array2<T>), Error> {
    let (n, _, _) = direct_sizes(&queries, &reference, k)?;
    let (mut out_ids, mut out_d) = zeroed_neighbours::<T>(n, k)?;
    if n == 0 || k == 0 {
        return Ok((out_ids, out_d));
    }
    direct_tasks(&queries, &reference, k, metric, None, out_ids.view_mut(), out_d.view_mut(), cancel)?;
    Ok((out_ids, out_d))
}

/// One score per query from its k nearest reference rows by the direct distance of every
/// pair, as `knn_direct` finds them but without its sorted (n, k) outputs: `Mean`, the
/// mean of the k distances (summed in f64; `knn_direct`'s distances, in another order),
/// or `Kth`, the k-th smallest (`knn_direct`'s last column, exactly). Per query one
/// selection (O(m)) instead of a sort, and no n·k output: what a miner's score needs.
///
/// `queries` (n, D), `reference` (m, D), 1 ≤ k ≤ m. Returns (n,) scores in T.
pub fn knn_direct_scores<T: Keyed>(
    queries: ArrayView2<'_, T>, reference: ArrayView2<'_, T>, k: usize, metric: Metric, aggregate: Aggregate,
    cancel: &Cancel,
) -> Result<Array1<T>, Error> {
    let (n, _, _) = direct_sizes(&queries, &reference, k)?;
    if k == 0 {
        return Err(Error::argument("k", "k must be at least 1: a score needs a neighbour"));
    }
    let mut scores = Array2::from_shape_vec((n, 1), crate::error::zeroed_real::<T>(n)?).expect("n values make (n, 1)");
    if n == 0 {
        return Ok(scores.column(0).to_owned());
    }
    let mut none = Array2::<i64>::zeros((n, 0));
    direct_tasks(&queries, &reference, k, metric, Some(aggregate), none.view_mut(), scores.view_mut(), cancel)?;
    Ok(scores.column(0).to_owned())
}

/// (n, m, D) of a direct search, checked: k ≤ m, ids that fit a key.
fn direct_sizes<T: Keyed>(
    queries: &ArrayView2<'_, T>, reference: &ArrayView2<'_, T>, k: usize,
) -> Result<(usize, usize, usize), Error> {
    let (n, m, dim) = query_sizes(queries, reference)?;
    if k > m {
        return Err(Error::argument("k", format!("k = {k} but the reference has {m} rows")));
    }
    if m as u64 > T::MAX_ID {
        return Err(Error::argument(
            "reference",
            format!("reference has {m} rows; direct search takes at most {}", T::MAX_ID),
        ));
    }
    Ok((n, m, dim))
}

/// The direct search's tasks over the queries: (rows, k) neighbours into `out_ids` /
/// `out_d`, or with `agg` one score per query into the (n, 1) column `out_d`.
#[allow(clippy::too_many_arguments)]
fn direct_tasks<T: Keyed>(
    queries: &ArrayView2<'_, T>, reference: &ArrayView2<'_, T>, k: usize, metric: Metric, agg: Option<Aggregate>,
    out_ids: ArrayViewMut2<'_, i64>, out_d: ArrayViewMut2<'_, T>, cancel: &Cancel,
) -> Result<(), Error> {
    let (n, m, dim) = (queries.nrows(), reference.nrows(), reference.ncols());
    let work = n.saturating_mul(m).saturating_mul(dim.max(1));
    let pool = if work >= PARALLEL_MIN_VALUES { threads::pool() } else { None };
    let mut norms = Vec::new();
    if metric == Metric::Cosine {
        ref_norms_dispatch(reference, &mut norms);
    }
    // Tasks of up to DIRECT_TASK_ROWS queries, fewer when a task's keys would be many or
    // when the threads would otherwise have too few tasks to share.
    let threads = if pool.is_some() { threads::num_threads() } else { 1 };
    let rows = (DIRECT_TASK_KEYS / m).min(DIRECT_TASK_ROWS).min(n.div_ceil(2 * threads)).max(1);
    by_row_tasks(out_ids, out_d, rows, pool, cancel, |lo, i, d| {
        direct_rows_dispatch(queries, reference, metric, &norms, lo, k, agg, i, d);
        Ok(())
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use ndarray::{s, Array1};

    /// xorshift64: fixed data without a dependency.
    pub(crate) struct Rng(pub u64);

    impl Rng {
        pub fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        /// Uniform in [−1, 1).
        pub fn uniform(&mut self) -> f64 {
            (self.next() >> 11) as f64 / (1u64 << 52) as f64 - 1.0
        }
    }

    pub(crate) fn random(rng: &mut Rng, n: usize, d: usize) -> Array2<f64> {
        Array2::from_shape_fn((n, d), |_| rng.uniform())
    }

    fn direct(metric: Metric, q: &[f64], r: &[f64]) -> f64 {
        let dot: f64 = q.iter().zip(r).map(|(a, b)| a * b).sum();
        match metric {
            Metric::L2 => q.iter().zip(r).map(|(a, b)| (a - b) * (a - b)).sum::<f64>().sqrt(),
            Metric::Cosine => {
                let nq = q.iter().map(|a| a * a).sum::<f64>().sqrt();
                let nr = r.iter().map(|a| a * a).sum::<f64>().sqrt();
                if nq == 0.0 || nr == 0.0 {
                    1.0
                } else {
                    (1.0 - dot / (nq * nr)).clamp(0.0, 2.0)
                }
            }
            Metric::Ip => 1.0 - dot,
        }
    }

    /// Every pair's distance, a stable sort (ties keep ascending id), the first k, padded
    /// with (−1, +inf).
    fn brute(q: &Array2<f64>, r: &Array2<f64>, k: usize, metric: Metric) -> Array2<i64> {
        let mut out = Array2::from_elem((q.nrows(), k), -1i64);
        for i in 0..q.nrows() {
            let qv = q.row(i).to_vec();
            let d: Vec<f64> = (0..r.nrows()).map(|j| direct(metric, &qv, &r.row(j).to_vec())).collect();
            let mut idx: Vec<usize> = (0..r.nrows()).collect();
            idx.sort_by(|&a, &b| d[a].partial_cmp(&d[b]).unwrap());
            for (j, &id) in idx.iter().take(k).enumerate() {
                out[[i, j]] = id as i64;
            }
        }
        out
    }

    fn row_norms(x: &Array2<f64>) -> Array1<f64> {
        x.rows().into_iter().map(|r| r.dot(&r).sqrt()).collect()
    }

    /// Gram-block search of `q` against `r`, `chunk` reference rows at a time.
    fn search(q: &Array2<f64>, r: &Array2<f64>, k: usize, metric: Metric, chunk: usize) -> (Array2<i64>, Array2<f64>) {
        let (qn, rn) = (row_norms(q), row_norms(r));
        let mut ids = Array2::from_elem((q.nrows(), k), -1i64);
        let mut dists = Array2::from_elem((q.nrows(), k), f64::INFINITY);
        for lo in (0..r.nrows()).step_by(chunk) {
            let hi = (lo + chunk).min(r.nrows());
            let rc = r.slice(s![lo..hi, ..]);
            let g = q.dot(&rc.t());
            knn_update(
                g.view(),
                qn.view(),
                rn.slice(s![lo..hi]),
                lo,
                metric,
                ids.view_mut(),
                dists.view_mut(),
                &Cancel::new(),
            )
            .unwrap();
        }
        (ids, dists)
    }

    const METRICS: [Metric; 3] = [Metric::L2, Metric::Cosine, Metric::Ip];

    #[test]
    fn matches_brute_force_whatever_the_chunking() {
        let mut rng = Rng(1);
        for &(n, m, d) in &[(1usize, 1usize, 1usize), (7, 1, 5), (9, 40, 3), (30, 100, 17), (12, 300, 6)] {
            let q = random(&mut rng, n, d);
            let r = random(&mut rng, m, d);
            for metric in METRICS {
                // 40 and up: the batched selection (k > INSERT_MAX_K), cut more than once
                // per row when m > 2k.
                for k in [1, 3, 40, m, m + 2] {
                    let want = brute(&q, &r, k, metric);
                    for chunk in [1, 7, m] {
                        let (ids, _) = search(&q, &r, k, metric, chunk);
                        let (ids, dists) =
                            pair_distances(q.view(), r.view(), ids.view(), metric, &Cancel::new()).unwrap();
                        assert_eq!(ids, want, "{metric:?} n={n} m={m} k={k} chunk={chunk}");
                        for ((i, j), &v) in dists.indexed_iter() {
                            let id = ids[[i, j]];
                            if id < 0 {
                                assert_eq!(v, f64::INFINITY);
                            } else {
                                let w = direct(metric, &q.row(i).to_vec(), &r.row(id as usize).to_vec());
                                assert!((v - w).abs() <= 1e-12, "{v} vs {w}");
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn direct_search_is_every_pair_of_pair_distances() {
        // knn_direct's distances are pair_distances' bits; its ids the exact order.
        let mut rng = Rng(6);
        for &(n, m, d) in &[(1usize, 1usize, 1usize), (9, 40, 3), (13, 70, 35), (37, 300, 20)] {
            let q = random(&mut rng, n, d);
            let r = random(&mut rng, m, d);
            for metric in METRICS {
                let all = Array2::from_shape_fn((n, m), |(_, j)| j as i64);
                let (want_i, want_d) = pair_distances(q.view(), r.view(), all.view(), metric, &Cancel::new()).unwrap();
                for k in [0, 1, 5.min(m), m / 2, m] {
                    let (ids, dist) = knn_direct(q.view(), r.view(), k, metric, &Cancel::new()).unwrap();
                    assert_eq!(ids, want_i.slice(s![.., ..k]), "{metric:?} n={n} m={m} k={k}");
                    assert_eq!(dist, want_d.slice(s![.., ..k]));
                    assert_eq!(ids, brute(&q, &r, k, metric));
                }
                // float32 keys: the same order as pair_distances in float32.
                let (q32, r32) = (q.mapv(|v| v as f32), r.mapv(|v| v as f32));
                let (wi, wd) = pair_distances(q32.view(), r32.view(), all.view(), metric, &Cancel::new()).unwrap();
                let (ids, dist) = knn_direct(q32.view(), r32.view(), m, metric, &Cancel::new()).unwrap();
                assert_eq!((ids, dist), (wi, wd));
            }
        }
    }

    #[test]
    fn float32_distances_from_dot_products_keep_the_direct_bits() {
        // float32 L2 and cosine take G = ‖q‖² + ‖r‖² − 2q·r where G ± ε rounds to one
        // float32 (put_block_gram) and the direct form elsewhere: near-duplicates (G
        // cancels), exact duplicates, tiny and huge scales, long and short rows; every
        // distance must be pair_distances' bits, on every SIMD level.
        let mut rng = Rng(11);
        for &(n, m, d) in &[(7usize, 300usize, 384usize), (9, 200, 3), (5, 120, 33)] {
            let base = random(&mut rng, n, d);
            for scale in [1.0f64, 1e-30, 1e30] {
                let q = base.mapv(|v| ((v - 0.5) * scale) as f32);
                // Reference rows: each query perturbed at relative steps 1e-1 .. 1e-8 and 0
                // (duplicates), then unrelated rows.
                let mut r = Array2::<f32>::zeros((m, d));
                for j in 0..m {
                    let src = q.row(j % n);
                    let step =
                        if j < 9 * n { [1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8, 0.0][j / n] } else { -1.0 };
                    for (c, x) in r.row_mut(j).iter_mut().enumerate() {
                        let noise = (rng.uniform() - 0.5) as f32;
                        *x = if step < 0.0 { noise * scale as f32 } else { src[c] * (1.0 + step as f32 * noise) };
                    }
                }
                let all = Array2::from_shape_fn((n, m), |(_, j)| j as i64);
                for metric in [Metric::L2, Metric::Cosine] {
                    let (wi, wd) = pair_distances(q.view(), r.view(), all.view(), metric, &Cancel::new()).unwrap();
                    use crate::simd::{detected, set_level, SimdLevel};
                    for level in [SimdLevel::Portable, SimdLevel::Avx2, SimdLevel::Avx512] {
                        if level > detected() {
                            continue;
                        }
                        // Every level gives the same bits, so other tests running meanwhile
                        // at this level are unaffected.
                        set_level(level).unwrap();
                        let (ids, dist) = knn_direct(q.view(), r.view(), m, metric, &Cancel::new()).unwrap();
                        set_level(detected()).unwrap();
                        assert_eq!((&ids, &dist), (&wi, &wd), "{metric:?} {level:?} n={n} m={m} d={d} scale={scale}");
                    }
                }
            }
        }
    }

    #[test]
    fn direct_scores_are_the_direct_neighbours_aggregated() {
        // The k-th: knn_direct's last column, exactly; the mean: its k distances' mean
        // (summed in f64 in another order: equal to rounding).
        let mut rng = Rng(13);
        for &(n, m, d) in &[(1usize, 1usize, 1usize), (9, 40, 3), (37, 300, 20), (130, 257, 9)] {
            let q = random(&mut rng, n, d);
            let mut r = random(&mut rng, m, d);
            if m > 5 {
                let dup = r.row(1).to_owned();
                r.row_mut(4).assign(&dup); // a tie
            }
            let (q32, r32) = (q.mapv(|v| v as f32), r.mapv(|v| v as f32));
            for metric in METRICS {
                for k in [1, 2.min(m), m / 2, m - 1, m].into_iter().filter(|&k| k >= 1) {
                    let (_, want) = knn_direct(q.view(), r.view(), k, metric, &Cancel::new()).unwrap();
                    let kth = knn_direct_scores(q.view(), r.view(), k, metric, Aggregate::Kth, &Cancel::new()).unwrap();
                    assert_eq!(kth, want.column(k - 1), "{metric:?} n={n} m={m} k={k}");
                    let mean =
                        knn_direct_scores(q.view(), r.view(), k, metric, Aggregate::Mean, &Cancel::new()).unwrap();
                    for i in 0..n {
                        let w = want.row(i).sum() / k as f64;
                        assert!((mean[i] - w).abs() <= 1e-14 * w.abs().max(1.0), "{metric:?} {} {w}", mean[i]);
                    }
                    let (_, w32) = knn_direct(q32.view(), r32.view(), k, metric, &Cancel::new()).unwrap();
                    let m32 =
                        knn_direct_scores(q32.view(), r32.view(), k, metric, Aggregate::Mean, &Cancel::new()).unwrap();
                    for i in 0..n {
                        let w = w32.row(i).iter().map(|&v| v as f64).sum::<f64>() / k as f64;
                        assert_eq!(m32[i], w as f32, "{metric:?} f32 k={k}");
                    }
                }
            }
        }
        let (q, r) = (random(&mut rng, 3, 2), random(&mut rng, 5, 2));
        for bad in [0, 6] {
            let got = knn_direct_scores(q.view(), r.view(), bad, Metric::L2, Aggregate::Mean, &Cancel::new());
            assert!(matches!(got, Err(Error::Argument { .. })), "k = {bad}");
        }
        let none = knn_direct_scores(q.slice(s![..0, ..]), r.view(), 2, Metric::L2, Aggregate::Kth, &Cancel::new());
        assert_eq!(none.unwrap().len(), 0);
        let c = Cancel::new();
        c.cancel();
        let got = knn_direct_scores(q.view(), r.view(), 2, Metric::L2, Aggregate::Mean, &c);
        assert!(matches!(got, Err(Error::Interrupted)));
    }

    #[test]
    fn direct_search_ties_strides_zero_vectors_and_bad_k() {
        // Small integers: exact ties, to the lower id; duplicate rows interleaved.
        let mut rng = Rng(7);
        let base = Array2::from_shape_fn((10, 3), |_| (rng.next() % 3) as f64);
        let r = Array2::from_shape_fn((30, 3), |(i, j)| base[[i % 10, j]]);
        let q = Array2::from_shape_fn((11, 3), |_| (rng.next() % 3) as f64);
        for metric in METRICS {
            let (ids, d) = knn_direct(q.view(), r.view(), 30, metric, &Cancel::new()).unwrap();
            for i in 0..11 {
                for j in 1..30 {
                    let (a, b) = ((d[[i, j - 1]], ids[[i, j - 1]]), (d[[i, j]], ids[[i, j]]));
                    assert!(a.0 < b.0 || (a.0 == b.0 && a.1 < b.1), "{metric:?} {a:?} {b:?}");
                }
            }
            // Fortran-ordered queries, a reversed reference: the same pairs.
            let qf = q.t().as_standard_layout().into_owned().reversed_axes();
            let rr = r.slice(s![..;-1, ..]);
            let (fi, fd) = knn_direct(qf.view(), rr, 30, metric, &Cancel::new()).unwrap();
            let mut flipped: Vec<(u64, i64)> = Vec::new();
            for i in 0..11 {
                for j in 0..30 {
                    assert_eq!(fd[[i, j]], d[[i, j]]);
                    flipped.push(((fd[[i, j]]).to_bits(), 29 - fi[[i, j]]));
                }
            }
            let mut same: Vec<(u64, i64)> = (0..11)
                .flat_map(|i| (0..30).map(move |j| (i, j)))
                .map(|(i, j)| (d[[i, j]].to_bits(), ids[[i, j]]))
                .collect();
            flipped.sort_unstable();
            same.sort_unstable();
            assert_eq!(flipped, same);
        }
        // A zero query is at cosine distance 1 from everything: ids in order.
        let z = Array2::<f64>::zeros((1, 3));
        let (ids, d) = knn_direct(z.view(), r.view(), 4, Metric::Cosine, &Cancel::new()).unwrap();
        assert_eq!(ids.row(0).to_vec(), vec![0, 1, 2, 3]);
        assert_eq!(d.row(0).to_vec(), vec![1.0; 4]);
        // Negative distances (ip) sort before positive ones.
        let (_, d) = knn_direct(q.view(), r.view(), 30, Metric::Ip, &Cancel::new()).unwrap();
        assert!(d.iter().any(|&v| v < 0.0));
        assert!(matches!(knn_direct(q.view(), r.view(), 31, Metric::L2, &Cancel::new()), Err(Error::Argument { .. })));
        assert!(matches!(
            knn_direct(q.view(), z.slice(s![.., ..2]), 1, Metric::L2, &Cancel::new()),
            Err(Error::Shape(_))
        ));
        let c = Cancel::new();
        c.cancel();
        assert!(matches!(knn_direct(q.view(), r.view(), 3, Metric::L2, &c), Err(Error::Interrupted)));
    }

    #[test]
    fn keys_sort_as_total_cmp_then_id() {
        let vals = [f64::NEG_INFINITY, -2.5, -1e-300, 0.0, 1e-300, 1.0, 3.5, f64::INFINITY];
        for w in vals.windows(2) {
            assert!(f64::pack(w[0], 7) < f64::pack(w[1], 0));
            assert!(f32::pack(w[0] as f32, 7) <= f32::pack(w[1] as f32, 0) || w[0] as f32 == w[1] as f32);
            assert_eq!(f64::unpack(f64::pack(w[0], 9)), (w[0], 9));
            assert_eq!(f32::unpack(f32::pack(w[0] as f32, 9)), (w[0] as f32, 9));
        }
        assert!(f64::pack(1.0, 2) < f64::pack(1.0, 3));
        assert!(f32::pack(1.0, u32::MAX as u64 - 1) < f32::pack(1.0, u32::MAX as u64));
    }

    #[test]
    fn large_k_selection_breaks_ties_by_id() {
        // k > INSERT_MAX_K goes through the batched selection: exact ties (small integers,
        // inner products exact) must still come out in (distance, id) order, whatever the
        // chunking.
        let mut rng = Rng(5);
        let q = Array2::from_shape_fn((9, 3), |_| (rng.next() % 3) as f64);
        let r = Array2::from_shape_fn((200, 3), |_| (rng.next() % 3) as f64);
        for k in [33, 64, 199, 200] {
            let want = brute(&q, &r, k, Metric::Ip);
            for chunk in [1, 13, 64, 200] {
                let (ids, _) = search(&q, &r, k, Metric::Ip, chunk);
                assert_eq!(ids, want, "k={k} chunk={chunk}");
            }
        }
    }

    #[test]
    fn ties_go_to_the_lower_id_in_any_chunking() {
        // Small integers: every Gram value and distance is exact, so ties are exact.
        let mut rng = Rng(2);
        let q = Array2::from_shape_fn((13, 3), |_| (rng.next() % 3) as f64);
        let base = Array2::from_shape_fn((10, 3), |_| (rng.next() % 3) as f64);
        // Every reference row three times, interleaved.
        let r = Array2::from_shape_fn((30, 3), |(i, j)| base[[i % 10, j]]);
        for metric in METRICS {
            for k in [1, 4, 30] {
                let want = brute(&q, &r, k, metric);
                let (one, one_d) = search(&q, &r, k, metric, 30);
                for chunk in [1, 4, 11] {
                    let (ids, dists) = search(&q, &r, k, metric, chunk);
                    assert_eq!(ids, one, "{metric:?} k={k} chunk={chunk}");
                    assert_eq!(dists, one_d);
                }
                if metric == Metric::Ip {
                    // The others go through rounded norms (√5² ≠ 5): only the final,
                    // direct distances are exact for them.
                    assert_eq!(one, want, "{metric:?} k={k}");
                }
                // The Gram stage may order rows at an equal true distance either way
                // (rounded norms), so the exact re-sort gets every row as a candidate:
                // callers keep a margin of candidates beyond k for this reason.
                let (all, _) = search(&q, &r, 30, metric, 30);
                let (ids, d) = pair_distances(q.view(), r.view(), all.view(), metric, &Cancel::new()).unwrap();
                if metric == Metric::Cosine {
                    // Parallel rows that differ (1, 1, 0) and (2, 2, 0) are at the same
                    // cosine distance only up to rounding, in any formula: compare values.
                    for i in 0..q.nrows() {
                        for j in 0..k {
                            let w = direct(metric, &q.row(i).to_vec(), &r.row(want[[i, j]] as usize).to_vec());
                            assert!((d[[i, j]] - w).abs() < 1e-12);
                        }
                    }
                    // Identical rows tie exactly: the lower id first.
                    for i in 0..q.nrows() {
                        for j in 1..30 {
                            let (a, b) = (ids[[i, j - 1]], ids[[i, j]]);
                            if a % 10 == b % 10 {
                                assert!(a < b && d[[i, j - 1]] == d[[i, j]]);
                            }
                        }
                    }
                } else {
                    assert_eq!(ids.slice(s![.., ..k]), want, "{metric:?} k={k}");
                }
            }
        }
        // Reference chunks merged in reverse order: the same state.
        let (fwd, _) = search(&q, &r, 5, Metric::L2, 30);
        let (qn, rn) = (row_norms(&q), row_norms(&r));
        let mut ids = Array2::from_elem((13, 5), -1i64);
        let mut dists = Array2::from_elem((13, 5), f64::INFINITY);
        for lo in (0..30).step_by(7).rev() {
            let hi = (lo + 7).min(30);
            let g = q.dot(&r.slice(s![lo..hi, ..]).t());
            knn_update(
                g.view(),
                qn.view(),
                rn.slice(s![lo..hi]),
                lo,
                Metric::L2,
                ids.view_mut(),
                dists.view_mut(),
                &Cancel::new(),
            )
            .unwrap();
        }
        assert_eq!(ids, fwd);
    }

    #[test]
    fn zero_vectors_one_reference_row_nan_and_k_above_m() {
        let q = Array2::from_shape_vec((2, 2), vec![0.0, 0.0, 1.0, 0.0]).unwrap();
        let r = Array2::from_shape_vec((3, 2), vec![2.0, 0.0, 0.0, 0.0, 0.0, 5.0]).unwrap();
        let (ids, d) = search(&q, &r, 3, Metric::Cosine, 3);
        // The zero query is at 1 from everything; the zero reference row is at 1 from all.
        assert_eq!(ids.row(0).to_vec(), vec![0, 1, 2]);
        assert_eq!(d.row(0).to_vec(), vec![1.0, 1.0, 1.0]);
        assert_eq!(ids.row(1).to_vec(), vec![0, 1, 2]);
        assert_eq!(d.row(1).to_vec(), vec![0.0, 1.0, 1.0]);
        let (ids, d) = pair_distances(q.view(), r.view(), ids.view(), Metric::Cosine, &Cancel::new()).unwrap();
        assert_eq!(ids.row(1).to_vec(), vec![0, 1, 2]);
        assert_eq!(d.row(0).to_vec(), vec![1.0, 1.0, 1.0]);

        // One reference row, k = 3: one neighbour, then empty slots.
        let (ids, d) = search(&q, &r.slice(s![..1, ..]).to_owned(), 3, Metric::L2, 1);
        assert_eq!(ids.row(1).to_vec(), vec![0, -1, -1]);
        assert_eq!(d.row(1).to_vec(), vec![1.0, f64::INFINITY, f64::INFINITY]);
        let (ids, d) = pair_distances(q.view(), r.view(), ids.view(), Metric::L2, &Cancel::new()).unwrap();
        assert_eq!(ids.row(0).to_vec(), vec![0, -1, -1]);
        assert_eq!(d.row(0).to_vec(), vec![2.0, f64::INFINITY, f64::INFINITY]);

        // NaN Gram values never enter; +inf distances do (before empty slots).
        let g = Array2::from_shape_vec((1, 3), vec![f64::NAN, f64::NEG_INFINITY, 0.5]).unwrap();
        let mut ids = Array2::from_elem((1, 3), -1i64);
        let mut dists = Array2::from_elem((1, 3), f64::INFINITY);
        let ones = Array1::from_elem(3, 1.0);
        knn_update(
            g.view(),
            ones.slice(s![..1]),
            ones.view(),
            10,
            Metric::Ip,
            ids.view_mut(),
            dists.view_mut(),
            &Cancel::new(),
        )
        .unwrap();
        assert_eq!(ids.row(0).to_vec(), vec![12, 11, -1]);
        assert_eq!(dists.row(0).to_vec(), vec![0.5, f64::INFINITY, f64::INFINITY]);
    }

    #[test]
    fn any_strides_and_float32() {
        let mut rng = Rng(3);
        let q = random(&mut rng, 20, 6);
        let r = random(&mut rng, 50, 6);
        let (qn, rn) = (row_norms(&q), row_norms(&r));
        for metric in METRICS {
            let (want, want_d) = search(&q, &r, 4, metric, 50);
            // Fortran-ordered Gram, reversed norms read backwards, state columns of a
            // wider array.
            let g = q.dot(&r.t());
            let gf = g.t().as_standard_layout().into_owned().reversed_axes();
            assert!(!gf.is_standard_layout());
            let rn_rev: Array1<f64> = rn.iter().rev().copied().collect();
            let mut wide_i = Array2::from_elem((20, 8), -1i64);
            let mut wide_d = Array2::from_elem((20, 8), f64::INFINITY);
            knn_update(
                gf.view(),
                qn.view(),
                rn_rev.slice(s![..;-1]),
                0,
                metric,
                wide_i.slice_mut(s![.., ..;2]),
                wide_d.slice_mut(s![.., ..;2]),
                &Cancel::new(),
            )
            .unwrap();
            assert_eq!(wide_i.slice(s![.., ..;2]), want);
            assert_eq!(wide_d.slice(s![.., ..;2]), want_d);
            assert!(wide_i.slice(s![.., 1..;2]).iter().all(|&v| v == -1));
            // Fortran-ordered queries and a reversed reference in pair_distances.
            let qf = q.t().as_standard_layout().into_owned().reversed_axes();
            let rr = r.slice(s![..;-1, ..]);
            let flipped = want.mapv(|i| 49 - i);
            let (a, ad) = pair_distances(q.view(), r.view(), want.view(), metric, &Cancel::new()).unwrap();
            let (b, bd) = pair_distances(qf.view(), rr, flipped.view(), metric, &Cancel::new()).unwrap();
            assert_eq!(a, b.mapv(|i| 49 - i));
            assert_eq!(ad, bd);
            // float32 gives the same neighbours on data with clear gaps.
            let (q32, r32) = (q.mapv(|v| v as f32), r.mapv(|v| v as f32));
            let g32 = q32.dot(&r32.t());
            let mut i32s = Array2::from_elem((20, 4), -1i64);
            let mut d32 = Array2::from_elem((20, 4), f32::INFINITY);
            knn_update(
                g32.view(),
                qn.mapv(|v| v as f32).view(),
                rn.mapv(|v| v as f32).view(),
                0,
                metric,
                i32s.view_mut(),
                d32.view_mut(),
                &Cancel::new(),
            )
            .unwrap();
            let (i32s, d32) = pair_distances(q32.view(), r32.view(), i32s.view(), metric, &Cancel::new()).unwrap();
            assert_eq!(i32s, a);
            for (x, y) in d32.iter().zip(ad.iter()) {
                assert!((*x as f64 - y).abs() <= 1e-6 * (1.0 + y.abs()), "{x} vs {y}");
            }
        }
    }

    #[test]
    fn parallel_blocks_match_one_thread() {
        let mut rng = Rng(4);
        let q = random(&mut rng, 300, 8);
        let r = random(&mut rng, 700, 8);
        crate::threads::set_num_threads(1).unwrap();
        let one = search(&q, &r, 10, Metric::L2, 700);
        let p1 = pair_distances(q.view(), r.view(), one.0.view(), Metric::L2, &Cancel::new()).unwrap();
        crate::threads::set_num_threads(2).unwrap();
        let two = search(&q, &r, 10, Metric::L2, 700);
        let p2 = pair_distances(q.view(), r.view(), two.0.view(), Metric::L2, &Cancel::new()).unwrap();
        assert_eq!(one, two);
        assert_eq!(p1, p2);
        assert_eq!(p1.0, brute(&q, &r, 10, Metric::L2));
    }

    #[test]
    fn reference_norms_validate_like_embeddings() {
        use crate::{score_rows, Field, NanPolicy, RowScore};
        let x = Array2::from_shape_vec((2, 2), vec![3.0, 4.0, 1.0, f64::NAN]).unwrap();
        let norm = RowScore::Norm { ord: 2.0 };
        let e = score_rows(Field::Reference, &norm, x.view(), NanPolicy::Raise, &Cancel::new()).unwrap_err();
        assert_eq!(e.to_string(), "reference row 1: NaN at dimension 1");
        for field in [Field::Reference, Field::Embeddings] {
            let v = score_rows(field, &norm, x.slice(s![..1, ..]), NanPolicy::Raise, &Cancel::new()).unwrap();
            assert_eq!(v, vec![-5.0]);
        }
        let empty = Array2::<f64>::zeros((2, 0));
        let e = score_rows(Field::Reference, &norm, empty.view(), NanPolicy::Raise, &Cancel::new()).unwrap_err();
        assert_eq!(e.to_string(), "reference has 0 dimensions; need at least 1");
    }

    #[test]
    fn bad_shapes_are_errors_not_panics() {
        let g = Array2::<f64>::zeros((2, 3));
        let n2 = Array1::<f64>::ones(2);
        let n3 = Array1::<f64>::ones(3);
        let mut ids = Array2::from_elem((2, 4), -1i64);
        let mut d = Array2::from_elem((2, 4), f64::INFINITY);
        let mut d5 = Array2::from_elem((2, 5), f64::INFINITY);
        let call = |qn: &Array1<f64>, rn: &Array1<f64>, off, i: &mut Array2<i64>, d: &mut Array2<f64>| {
            knn_update(g.view(), qn.view(), rn.view(), off, Metric::L2, i.view_mut(), d.view_mut(), &Cancel::new())
        };
        assert!(matches!(call(&n3, &n3, 0, &mut ids, &mut d), Err(Error::Shape(_))));
        assert!(matches!(call(&n2, &n2, 0, &mut ids, &mut d), Err(Error::Shape(_))));
        assert!(matches!(call(&n2, &n3, 0, &mut ids, &mut d5), Err(Error::Shape(_))));
        assert!(matches!(call(&n2, &n3, usize::MAX - 1, &mut ids, &mut d), Err(Error::Argument { .. })));
        assert!(call(&n2, &n3, 5, &mut ids, &mut d).is_ok());
        assert_eq!(ids.row(0).to_vec(), vec![5, 6, 7, -1]);
        let q = Array2::<f64>::zeros((2, 3));
        let r = Array2::<f64>::zeros((4, 2));
        assert!(matches!(
            pair_distances(q.view(), r.view(), ids.view(), Metric::L2, &Cancel::new()),
            Err(Error::Shape(_))
        ));
        let r = Array2::<f64>::zeros((4, 3));
        let bad = Array2::from_elem((2, 1), 4i64);
        let e = pair_distances(q.view(), r.view(), bad.view(), Metric::L2, &Cancel::new()).unwrap_err();
        assert!(e.to_string().contains("ids[0, 0] = 4"), "{e}");
        let bad = Array2::from_elem((3, 1), 0i64);
        assert!(pair_distances(q.view(), r.view(), bad.view(), Metric::L2, &Cancel::new()).is_err());
        assert!("euclid".parse::<Metric>().is_err());
        assert_eq!("ip".parse::<Metric>().unwrap(), Metric::Ip);
    }
}

//! Typicality within clusters (Hacohen, Dekel & Weinshall, ICML 2022, "Active Learning on a
//! Budget", TypiClust): for a row x of a cluster of m rows,
//!
//!   typicality(x) = 1 / ( (1/k') Σ_{y ∈ kNN(x)} ‖x − y‖₂ ),   k' = min(k, m − 1),
//!
//! the k' nearest other rows of the same cluster, exactly. As in the paper and
//! scikit-activeml's `TypiClust` (the authors' code averages faiss's squared distances and
//! adds 10⁻⁵: here the distances are euclidean and nothing is added, so rows at distance 0
//! get +inf). A cluster of one row has no neighbour: its typicality is +inf.
//!
//! How: the cluster's rows are gathered (m × D), and less their mean (rounded) their Gram
//! matrix ranks every other row by the expansion ‖y‖² − 2 x·y: for clusters of up to
//! `SYMMETRIC_MAX` rows the whole m × m matrix, its upper triangle by matrix products (half
//! the multiply-adds) and the lower copied; larger clusters by blocks of rows against the
//! whole cluster. Per row the `keep` ≥ k' smallest expansions are found (a threshold from
//! the minima of 64 interleaved groups, then one selection), and every row whose
//! expansion is within twice the expansion's rounding bound (`expansion_error`) of the
//! k'-th smallest is recomputed directly (differences before squaring, f64 sums): a set
//! that holds the k' nearest for certain (when the kept rows may not hold it, every row is
//! recomputed). The k' nearest of those are averaged.
//! Cost: O(m² D / 2) per cluster, and in memory 2 m × D values plus the Gram values (m²
//! up to `SYMMETRIC_MAX` rows, 16 MiB in float32; 2²⁰ per block above): the kernel is
//! meant for the clusters of k-means over a pool (N / k rows each); a cluster of 10⁵ rows of
//! D = 256 costs 2.6·10¹² multiply-adds, minutes on two cores.

use std::cmp::Ordering;
use std::collections::HashSet;

use ndarray::linalg::general_mat_mul;
use ndarray::{s, ArrayView1, ArrayView2, ArrayViewMut2};
use rayon::prelude::*;

use crate::cancel::Cancel;
use crate::error::{filled, Error, Field};
use crate::kmeans::{checked_sq_norms, gram, map_tasks, run_in, unit_roundoff, workers, Scalar};
use crate::knn::{row_slice, sq_diff_f64, Keyed};
use crate::math::{Isa, Real};
use crate::simd::multiversion;

/// Candidates kept beyond k' by the expansion's ranking: enough that the rows within the
/// rounding bound of the k'-th are almost always among them (else the row is recomputed
/// directly against every other row).
const MIN_MARGIN: usize = 4;

/// A neighbour candidate: (expansion ‖y‖² − 2 x·y in the input's precision, its row in the
/// cluster), ordered by value then row.
#[derive(Clone, Copy, PartialEq)]
struct Cand(f64, u32);

impl Eq for Cand {}

impl Ord for Cand {
    fn cmp(&self, o: &Self) -> Ordering {
        self.0.total_cmp(&o.0).then(self.1.cmp(&o.1))
    }
}

impl PartialOrd for Cand {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

/// Lanes of the candidate scan.
const L: usize = 16;

/// Appends to `kept` every (cn_j − 2 g_j, j), j ≠ `q`, below `top`, scanning the row in
/// blocks of `L` (a block none of whose values is below `top` is turned away by one
/// vectorised comparison); when `kept` reaches `cut` entries they are cut back to the
/// `keep` smallest and `top` tightens to the largest of those. Returns the final `top`.
#[inline(always)]
fn scan_body<T: Real, I: Isa>(
    g: &[T], cn: &[T], q: usize, keep: usize, cut: usize, kept: &mut Vec<Cand>, mut top: T,
) -> T {
    let m = g.len();
    let mut j = 0;
    while j + L <= m {
        let (gs, cs) = (&g[j..j + L], &cn[j..j + L]);
        let mut v = [T::ZERO; L];
        let mut any = false;
        for l in 0..L {
            v[l] = cs[l] - (gs[l] + gs[l]);
            any |= v[l] < top;
        }
        if any {
            for (l, &vl) in v.iter().enumerate() {
                if vl < top && j + l != q {
                    kept.push(Cand(vl.to_f64(), (j + l) as u32));
                }
            }
            if kept.len() >= cut {
                top = cut_back(kept, keep);
            }
        }
        j += L;
    }
    for jj in j..m {
        let v = cn[jj] - (g[jj] + g[jj]);
        if v < top && jj != q {
            kept.push(Cand(v.to_f64(), jj as u32));
        }
    }
    top
}

multiversion! {
    fn scan<T: Real>(g: &[T], cn: &[T], q: usize, keep: usize, cut: usize, kept: &mut Vec<Cand>, top: T) -> T => scan_body
}

/// Groups of `group_scan` (interleaved: element j is in group j mod `GROUPS`).
const GROUPS: usize = 64;

/// `scan` for `keep` ≤ `GROUPS`, in two passes and one selection: every value
/// v_j = cn_j − 2 g_j into `vb` (+inf for `q`, nobody's neighbour of itself) and each
/// group's smallest (vectorised, one pass; q's group is then taken again without q); t0,
/// the keep-th smallest of the groups' minima, is at least the keep-th smallest value (the
/// keep minima up to it are distinct values), so the (value, row) keys of every value up
/// to t0 (a little over keep of them, found by a comparison mask per 16 values) hold the
/// keep smallest, which one selection and a sort of keep keys give, into `keys`.
#[inline(always)]
fn group_scan_body<T: Keyed, I: Isa>(g: &[T], cn: &[T], q: usize, keep: usize, vb: &mut [T], keys: &mut Vec<T::Key>) {
    let m = g.len();
    let mut mins = [T::INF; GROUPS];
    {
        let (gch, grest) = g.as_chunks::<GROUPS>();
        let (cch, crest) = cn.as_chunks::<GROUPS>();
        let (och, orest) = vb.as_chunks_mut::<GROUPS>();
        for ((o, gc), cc) in och.iter_mut().zip(gch).zip(cch) {
            for l in 0..GROUPS {
                let v = cc[l] - (gc[l] + gc[l]);
                o[l] = v;
                mins[l] = if v < mins[l] { v } else { mins[l] };
            }
        }
        for (l, ((o, &gv), &c)) in orest.iter_mut().zip(grest).zip(crest).enumerate() {
            let v = c - (gv + gv);
            *o = v;
            mins[l] = if v < mins[l] { v } else { mins[l] };
        }
    }
    vb[q] = T::INF;
    let gq = q % GROUPS;
    mins[gq] = vb[gq..].iter().step_by(GROUPS).fold(T::INF, |a, &v| if v < a { v } else { a });
    // NaN never became a minimum: the order is total here
    let (_, &mut t0, _) = mins.select_nth_unstable_by(keep - 1, |a, b| a.partial_cmp(b).unwrap_or(Ordering::Equal));
    // the rows up to t0 (q is +inf: above a finite t0; when t0 is +inf, fewer than keep
    // other values are finite and q is dropped here)
    keys.clear();
    let (chunks, rest) = vb.as_chunks::<16>();
    for (c, ch) in chunks.iter().enumerate() {
        let mut mask = 0u32;
        for l in 0..16 {
            mask |= u32::from(ch[l] <= t0) << l;
        }
        while mask != 0 {
            let j = c * 16 + mask.trailing_zeros() as usize;
            if j != q {
                keys.push(T::pack(vb[j], j as u64));
            }
            mask &= mask - 1;
        }
    }
    for (l, &v) in rest.iter().enumerate() {
        let j = m - rest.len() + l;
        if v <= t0 && j != q {
            keys.push(T::pack(v, j as u64));
        }
    }
    if keys.len() > keep {
        keys.select_nth_unstable(keep - 1);
        keys.truncate(keep);
    }
    keys.sort_unstable();
}

multiversion! {
    fn group_scan<T: Keyed>(g: &[T], cn: &[T], q: usize, keep: usize, vb: &mut [T], keys: &mut Vec<T::Key>) -> () => group_scan_body
}

/// Cuts `kept` back to its `keep` smallest; returns the largest of those as a threshold.
fn cut_back<T: Real>(kept: &mut Vec<Cand>, keep: usize) -> T {
    if kept.len() > keep {
        kept.select_nth_unstable(keep - 1);
        kept.truncate(keep);
    }
    T::from_f64(kept.iter().map(|c| c.0).fold(f64::NEG_INFINITY, f64::max))
}

/// The largest error of an expansion value cn_j − 2 g_j (T arithmetic, the Gram value from
/// the matrix product) for a query row of squared norm `n2` against rows of norm at most
/// `ymax`: |g's error| ≤ γ_D ‖x‖‖y‖ in any summation order, ‖y‖² rounded once and the
/// subtraction once (u each); doubled for safety, plus a relative 10⁻¹² for the f64 sums.
///
/// The rows were centred (x − μ rounded to T: each coordinate off by at most u |x − μ|), so
/// the distance between the rounded rows is within u (‖x'‖ + ‖y'‖) of the true one, and
/// its square within 2 u (‖x'‖ + ‖y'‖)² (the distance being at most ‖x'‖ + ‖y'‖): added.
fn expansion_error(unit: f64, d: usize, n2: f64, ymax: f64) -> f64 {
    let gamma = d as f64 * unit / (1.0 - d as f64 * unit);
    let xn = n2.sqrt();
    let centring = 2.0 * unit * (xn + ymax) * (xn + ymax);
    2.0 * ((2.0 * gamma + 4.0 * unit) * xn * ymax + 2.0 * unit * ymax * ymax + centring) + 1e-12 * (n2 + ymax * ymax)
}

/// The typicality of every row of the cluster `rows` (ascending row indices of `x`).
///
/// Per row: the Gram row ranks the others by the expansion; the `keep` smallest are found
/// by a threshold scan; then every row whose expansion is within twice the expansion's
/// rounding bound of the k'-th smallest (a set that holds the k' nearest for certain) is
/// recomputed directly (differences before squaring, f64 sums), and the k' nearest of
/// those averaged. When the `keep` kept do not reach past that bound, the row is scanned
/// again for every row within it.
fn cluster_typicality<T: Scalar>(
    x: &ArrayView2<'_, T>, rows: &[usize], k: usize, par: bool, cancel: &Cancel, gram_buf: &mut Vec<T>,
) -> Vec<f64> {
    let m = rows.len();
    if m == 1 {
        return vec![f64::INFINITY];
    }
    let c = Gathered::new(x, rows);
    let rows = c.rows(k);
    if m <= SYMMETRIC_MAX {
        let g = full_gram(&c.centred_view(), par, cancel, gram_buf);
        let tasks = m.div_ceil(SYMMETRIC_BLOCK);
        let per = map_tasks(par && tasks > 1, tasks, |t| {
            let (lo, hi) = (t * SYMMETRIC_BLOCK, ((t + 1) * SYMMETRIC_BLOCK).min(m));
            let mut row = RowState::new(rows.keep);
            if cancel.is_cancelled() {
                return Vec::new();
            }
            (lo..hi).map(|q| rows.typicality(q, &g[q * m..(q + 1) * m], &mut row)).collect::<Vec<f64>>()
        });
        return per.concat();
    }
    let xg = c.centred_view();
    let b = large_block(m);
    let blocks = m.div_ceil(b);
    let per = map_tasks(par && blocks > 1, blocks, |t| {
        let (lo, hi) = (t * b, ((t + 1) * b).min(m));
        if cancel.is_cancelled() {
            return Vec::new();
        }
        let mut gb = Vec::new();
        let g = gram(&xg.slice(s![lo..hi, ..]), &xg, &mut gb);
        let mut row = RowState::new(rows.keep);
        g.rows()
            .into_iter()
            .enumerate()
            .map(|(r, grow)| rows.typicality(lo + r, grow.as_slice().expect("gram rows are contiguous"), &mut row))
            .collect::<Vec<f64>>()
    });
    per.concat()
}

/// Query rows per Gram block of a cluster above `SYMMETRIC_MAX` rows: blocks of about
/// 2^20 values, 1 to 1,024 rows.
fn large_block(m: usize) -> usize {
    ((1usize << 20) / m).clamp(1, 1024)
}

/// A cluster's rows gathered (m × D, as given: the exact distances) and less their mean
/// (rounded to T: the Gram products, small norms so a small rounding bound), with the
/// centred rows' squared norms.
struct Gathered<T> {
    data: Vec<T>,
    centred: Vec<T>,
    /// ‖x − μ‖² of the centred rows, in f64 (the bound) and T (the expansion).
    n2: Vec<f64>,
    cn: Vec<T>,
    /// The largest ‖x − μ‖ (rounded up).
    ymax: f64,
    m: usize,
    d: usize,
}

impl<T: Scalar> Gathered<T> {
    fn new(x: &ArrayView2<'_, T>, rows: &[usize]) -> Self {
        let (m, d) = (rows.len(), x.ncols());
        let mut data = Vec::with_capacity(m * d);
        let mut buf = Vec::new();
        for &i in rows {
            data.extend_from_slice(row_slice(x, i, &mut buf));
        }
        let mut mean = vec![0.0f64; d];
        column_sums(&data, &mut mean);
        let mean: Vec<T> = mean.iter().map(|&v| T::from_f64(v / m as f64)).collect();
        let mut centred: Vec<T> = vec![T::ZERO; m * d];
        let mut n2 = vec![0.0f64; m];
        centre_rows(&data, &mean, &mut centred, &mut n2);
        let cn: Vec<T> = n2.iter().map(|&v| T::from_f64(v)).collect();
        let ymax = n2.iter().fold(0.0f64, |a, &b| a.max(b)).sqrt() * (1.0 + 1e-12);
        Gathered { data, centred, n2, cn, ymax, m, d }
    }

    fn centred_view(&self) -> ArrayView2<'_, T> {
        ArrayView2::from_shape((self.m, self.d), &self.centred[..]).expect("cluster shape")
    }

    /// The typicality's view of the cluster for k neighbours (m ≥ 2).
    fn rows(&self, k: usize) -> Rows<'_, T> {
        let kk = k.min(self.m - 1);
        let keep = (kk + MIN_MARGIN.max(kk / 8)).min(self.m - 1);
        Rows {
            xc: ArrayView2::from_shape((self.m, self.d), &self.data[..]).expect("cluster shape"),
            cn: &self.cn,
            n2: &self.n2,
            ymax: self.ymax,
            unit: unit_roundoff::<T>(),
            kk,
            keep,
        }
    }
}

/// Column sums of the rows (`sums.len()` values each) of `data`, in f64, row after row.
#[inline(always)]
fn column_sums_body<T: Real, I: Isa>(data: &[T], sums: &mut [f64]) {
    for row in data.chunks_exact(sums.len()) {
        for (a, &v) in sums.iter_mut().zip(row) {
            *a += v.to_f64();
        }
    }
}

multiversion! {
    fn column_sums<T: Real>(data: &[T], sums: &mut [f64]) -> () => column_sums_body
}

/// Each row of `data` less `mean` into `centred`, and its squared norm (f64, 8 partial
/// sums: any order serves, the norms only rank and bound) into `n2`.
#[inline(always)]
fn centre_rows_body<T: Real, I: Isa>(data: &[T], mean: &[T], centred: &mut [T], n2: &mut [f64]) {
    const CL: usize = 8;
    let d = mean.len();
    let (mc, mr) = mean.as_chunks::<CL>();
    for ((row, out), n) in data.chunks_exact(d).zip(centred.chunks_exact_mut(d)).zip(n2.iter_mut()) {
        let mut acc = [0.0f64; CL];
        let (rc, rr) = row.as_chunks::<CL>();
        let (oc, or) = out.as_chunks_mut::<CL>();
        for ((o, r), mu) in oc.iter_mut().zip(rc).zip(mc) {
            for l in 0..CL {
                let c = r[l] - mu[l];
                o[l] = c;
                acc[l] += c.to_f64() * c.to_f64();
            }
        }
        for (l, ((o, &r), &mu)) in or.iter_mut().zip(rr).zip(mr).enumerate() {
            let c = r - mu;
            *o = c;
            acc[l] += c.to_f64() * c.to_f64();
        }
        *n = acc.iter().sum();
    }
}

multiversion! {
    fn centre_rows<T: Real>(data: &[T], mean: &[T], centred: &mut [T], n2: &mut [f64]) -> () => centre_rows_body
}

/// The whole m × m Gram matrix of the rows `xg` (m ≤ `SYMMETRIC_MAX`) in `buf`: its upper
/// triangle by matrix products of row blocks against the rows from the block's first on
/// (half the multiply-adds), the lower triangle copied from it.
fn full_gram<'a, T: Scalar>(xg: &ArrayView2<'_, T>, par: bool, cancel: &Cancel, buf: &'a mut Vec<T>) -> &'a [T] {
    let m = xg.nrows();
    // (a worker's buffer, kept from cluster to cluster: every value is written below, the
    // upper triangle by the products (β = 0: C is not read), the lower by the copy)
    if buf.len() < m * m {
        buf.resize(m * m, T::ZERO);
    }
    let full = &mut buf[..m * m];
    let tasks = m.div_ceil(SYMMETRIC_BLOCK);
    let upper = |(t, chunk): (usize, &mut [T])| {
        if cancel.is_cancelled() {
            return;
        }
        let (lo, hi) = (t * SYMMETRIC_BLOCK, ((t + 1) * SYMMETRIC_BLOCK).min(m));
        let mut out = ArrayViewMut2::from_shape((hi - lo, m), chunk).expect("gram shape");
        let mut out = out.slice_mut(s![.., lo..]);
        general_mat_mul(T::ONE, &xg.slice(s![lo..hi, ..]), &xg.slice(s![lo.., ..]).t(), T::ZERO, &mut out);
    };
    if par && tasks > 1 {
        full.par_chunks_mut(SYMMETRIC_BLOCK * m).enumerate().for_each(upper);
        mirror(full, m, 0, m);
    } else {
        // each block mirrored at once, while its rows are still in cache (it writes only
        // columns left of the later blocks' products)
        for t in 0..tasks {
            let (lo, hi) = (t * SYMMETRIC_BLOCK, ((t + 1) * SYMMETRIC_BLOCK).min(m));
            upper((t, &mut full[lo * m..hi * m]));
            mirror(full, m, lo, hi);
        }
    }
    full
}

/// full[j][i] = full[i][j] for i < j, lo ≤ i < hi (an m × m matrix whose upper triangle is
/// set in those rows; lo a multiple of 16), by tiles of 16 × 16: 16 segments of rows i
/// copied out, then written as 16 segments of rows j (whole cache lines written, none read
/// back from far away).
fn mirror<T: Real>(full: &mut [T], m: usize, lo: usize, hi: usize) {
    const TL: usize = 16;
    let mut tile = [[T::ZERO; TL]; TL];
    for i0 in (lo..hi).step_by(TL) {
        let i1 = (i0 + TL).min(hi);
        for j0 in (i0..m).step_by(TL) {
            let j1 = (j0 + TL).min(m);
            for (t, i) in (i0..i1).enumerate() {
                tile[t][..j1 - j0].copy_from_slice(&full[i * m + j0..i * m + j1]);
            }
            for (u, j) in (j0..j1).enumerate() {
                let dst = &mut full[j * m + i0..j * m + i1.min(j)];
                for (t, d) in dst.iter_mut().enumerate() {
                    *d = tile[t][u];
                }
            }
        }
    }
}

/// Clusters of at most this many rows get their whole Gram matrix at once (m² values: 16
/// MiB in float32), computed as its upper triangle; larger ones by blocks of rows.
const SYMMETRIC_MAX: usize = 2048;
/// Rows per block of the whole-matrix path.
const SYMMETRIC_BLOCK: usize = 128;

/// A cluster's rows, for the typicality of one of them from its Gram row.
struct Rows<'a, T> {
    /// The rows as given (m × D), for the exact distances.
    xc: ArrayView2<'a, T>,
    /// Squared norms of the centred rows, in T (the expansion) and f64 (its bound).
    cn: &'a [T],
    n2: &'a [f64],
    ymax: f64,
    unit: f64,
    kk: usize,
    keep: usize,
}

/// One task's buffers.
struct RowState<T: Keyed> {
    kept: Vec<Cand>,
    ids: Vec<u32>,
    exact: Vec<f64>,
    vb: Vec<T>,
    keys: Vec<T::Key>,
}

impl<T: Keyed> RowState<T> {
    fn new(keep: usize) -> Self {
        RowState {
            kept: Vec::with_capacity(2 * keep + 2 * L),
            ids: Vec::with_capacity(keep),
            exact: Vec::with_capacity(keep),
            vb: Vec::new(),
            keys: Vec::with_capacity(8 * keep),
        }
    }
}

impl<T: Scalar> Rows<'_, T> {
    /// The typicality of row `q` from its Gram row `grow` (against the centred rows).
    fn typicality(&self, q: usize, grow: &[T], st: &mut RowState<T>) -> f64 {
        let (m, d) = self.xc.dim();
        let (kk, keep) = (self.kk, self.keep);
        let kept = &mut st.kept;
        kept.clear();
        if keep <= GROUPS {
            st.vb.resize(grow.len(), T::ZERO);
            group_scan(grow, self.cn, q, keep, &mut st.vb, &mut st.keys);
            kept.extend(st.keys.iter().map(|&k| {
                let (v, i) = T::unpack(k);
                Cand(v.to_f64(), i as u32)
            }));
        } else {
            scan(grow, self.cn, q, keep, 2 * keep, kept, T::INF);
            cut_back::<T>(kept, keep);
            kept.sort_unstable();
        }
        let xq = self.xc.row(q);
        let xq = xq.as_slice().expect("gathered rows are contiguous");
        let exact = &mut st.exact;
        exact.clear();
        // every row within 2 E of the k'-th smallest expansion (the k' nearest are); when
        // the kept rows may not hold them all (they do not reach past the bound), or the
        // expansion was not finite, every row directly
        let thr =
            kept.get(kk - 1).map_or(f64::NAN, |c| c.0 + 2.0 * expansion_error(self.unit, d, self.n2[q], self.ymax));
        let short = kept.len() < kk || thr.is_nan() || kept.len() < m - 1 && kept.last().is_none_or(|c| c.0 <= thr);
        let ids = &mut st.ids;
        ids.clear();
        if short {
            ids.extend((0..m as u32).filter(|&j| j as usize != q));
        } else {
            ids.extend(kept.iter().take_while(|c| c.0 <= thr).map(|c| c.1));
        }
        exact_rows(xq, self.xc.as_slice().expect("gathered rows are contiguous"), ids, exact);
        exact.sort_unstable_by(f64::total_cmp);
        1.0 / (exact[..kk].iter().sum::<f64>() / kk as f64)
    }
}

/// Thresholds of `Rows::beaten`, as multiples of the best mean distance so far.
const STEPS: [f64; 8] = [0.9, 0.94, 0.97, 1.0, 1.03, 1.06, 1.09, 1.12];

/// Rows of a cluster whose exact typicality seeds `cluster_best` (those nearest the mean).
const SEEDS: usize = 8;

/// vb_j = cn_j − 2 g_j, the expansions of a Gram row (as `group_scan` computes them).
#[inline(always)]
fn expansions_body<T: Real, I: Isa>(g: &[T], cn: &[T], vb: &mut [T]) {
    for ((o, &gv), &c) in vb.iter_mut().zip(g).zip(cn) {
        *o = c - (gv + gv);
    }
}

multiversion! {
    fn expansions<T: Real>(g: &[T], cn: &[T], vb: &mut [T]) -> () => expansions_body
}

/// How many values of `v` are at most `t` (NaN: not counted).
#[inline(always)]
fn count_le_body<T: Real, I: Isa>(v: &[T], t: T) -> usize {
    // one flat reduction: vectorised as compares and integer subtractions
    v.iter().map(|&x| u32::from(x <= t)).sum::<u32>() as usize
}

multiversion! {
    fn count_le<T: Real>(v: &[T], t: T) -> usize => count_le_body
}

/// A value of T at least `v` (f64 → T rounds to nearest: nudged up first).
fn at_least<T: Real>(v: f64) -> T {
    T::from_f64(v + v.abs() * 1e-6 + f64::MIN_POSITIVE)
}

impl<T: Scalar> Rows<'_, T> {
    /// Whether row q's mean distance to its k' nearest is proven above `s_best` by more
    /// than 2·10⁻⁹ of it (so its typicality, computed, is below the best's: q cannot be
    /// picked), from its Gram row alone.
    ///
    /// For thresholds t_1 < … < t_H (`STEPS` × s_best), c_h counts the rows j ≠ q whose
    /// lower bound on ‖x_q − x_j‖², n2_q + (cn_j − 2 g_j) − E (E the expansion's rounding
    /// bound, as in `typicality`), is at most t_h²: at most c_h rows lie within t_h, so the
    /// i-th nearest is farther than t_h for every i > c_h, and the sum of the k' nearest
    /// distances is above Σ_h (t_h − t_{h−1}) · max(0, k' − c_h) (t_0 = 0).
    ///
    /// The thresholds are taken from the largest down, each a pass over the row's
    /// expansions (`vb`), until the bound is decided: the counts c_h' of the thresholds not
    /// yet taken (h' < h) lie between 0 and c_h.
    fn beaten(&self, q: usize, grow: &[T], s_best: f64, vb: &mut Vec<T>) -> bool {
        if !(s_best > 0.0 && s_best.is_finite()) {
            return false;
        }
        let d = self.xc.ncols();
        let n2 = self.n2[q];
        let e = expansion_error(self.unit, d, n2, self.ymax);
        vb.resize(grow.len(), T::ZERO);
        expansions(grow, self.cn, vb);
        vb[q] = T::INF; // not its own neighbour
        let kk = self.kk as f64;
        let target = kk * s_best * (1.0 + 2e-9) * (1.0 + 1e-12);
        let mut known = 0.0;
        for h in (0..STEPS.len()).rev() {
            let th = s_best * STEPS[h];
            let below = if h == 0 { 0.0 } else { s_best * STEPS[h - 1] };
            let t2 = th * th;
            let c = count_le(vb, at_least::<T>(t2 - n2 + e + 1e-12 * (t2 + n2))) as f64;
            known += (th - below) * (kk - c).max(0.0);
            if known + below * (kk - c).max(0.0) > target {
                return true;
            }
            if known + below * kk <= target {
                return false;
            }
        }
        false
    }
}

/// The best typicality found so far in a cluster and its row (in the cluster's order):
/// higher typicality, then the lower row.
#[derive(Clone, Copy)]
struct Best(f64, usize);

impl Best {
    fn offer(&mut self, t: f64, q: usize) {
        if t > self.0 || (t == self.0 && q < self.1) {
            *self = Best(t, q);
        }
    }

    /// The best mean distance (1 / typicality; 0 for +inf, +inf before any row).
    fn mean_distance(&self) -> f64 {
        1.0 / self.0
    }
}

/// The row of highest typicality of the cluster `rows` (its position in `rows`; ties: the
/// lowest) and its typicality, the same as `cluster_typicality`'s values give.
///
/// The `SEEDS` rows nearest the cluster's mean are computed first (in a blob the most
/// typical row is near its mean); then each other row is turned away by `Rows::beaten`
/// from its Gram row when it provably cannot beat the best so far, and computed exactly
/// (as `cluster_typicality` does) otherwise. The result does not depend on the order or on
/// how the rows are split between threads (only which rows are turned away does).
fn cluster_best<T: Scalar>(
    x: &ArrayView2<'_, T>, rows: &[usize], k: usize, par: bool, cancel: &Cancel, bufs: &mut BestBufs<T>,
) -> (usize, f64) {
    let m = rows.len();
    if m == 1 {
        return (0, f64::INFINITY);
    }
    let c = Gathered::new(x, rows);
    let rows = c.rows(k);
    let xg = c.centred_view();
    let mut seeds: Vec<usize> = (0..m).collect();
    let ns = SEEDS.min(m);
    let by_norm = |&a: &usize, &b: &usize| c.n2[a].total_cmp(&c.n2[b]).then(a.cmp(&b));
    if ns < m {
        seeds.select_nth_unstable_by(ns - 1, by_norm);
        seeds.truncate(ns);
    }
    seeds.sort_unstable();
    let mut best = Best(f64::NEG_INFINITY, usize::MAX);
    let mut st = RowState::new(rows.keep);
    // row q (Gram row `grow`) computed unless it provably cannot beat `b`
    let try_row = |b: &mut Best, q: usize, grow: &[T], st: &mut RowState<T>, vb: &mut Vec<T>| {
        if !rows.beaten(q, grow, b.mean_distance(), vb) {
            b.offer(rows.typicality(q, grow, st), q);
        }
    };
    // rows lo..hi, row q's Gram values at g[(q − off) m..]
    let scan = |lo: usize, hi: usize, g: &[T], off: usize, start: Best| {
        let mut b = start;
        let mut st = RowState::new(rows.keep);
        let mut vb = Vec::new();
        for q in lo..hi {
            if seeds.binary_search(&q).is_ok() {
                continue;
            }
            try_row(&mut b, q, &g[(q - off) * m..(q - off + 1) * m], &mut st, &mut vb);
        }
        b
    };
    // the Gram rows of `ids` (against every row) into `gb`, ids.len() × m
    let some_gram = |ids: &[usize], gb: &mut Vec<T>| {
        let sx = xg.select(ndarray::Axis(0), ids);
        gram(&sx.view(), &xg, gb);
    };
    // the seeds from their own Gram rows
    let offer_seeds = |best: &mut Best, st: &mut RowState<T>| {
        let mut gb = Vec::new();
        some_gram(&seeds, &mut gb);
        for (r, &q) in seeds.iter().enumerate() {
            best.offer(rows.typicality(q, &gb[r * m..(r + 1) * m], st), q);
        }
    };
    let merge = |a: Best, b: Best| {
        let mut a = a;
        a.offer(b.0, b.1);
        a
    };
    if m >= SCREEN_MIN && xg.ncols() <= SCREEN_MAX_D && screen_available() {
        // the seeds, then the integer screen; the rows it leaves are taken as above, from
        // their Gram rows by blocks
        offer_seeds(&mut best, &mut st);
        if let Some(left) =
            screen_cluster(&c, rows.kk, &seeds, best.mean_distance(), par, true, &mut bufs.vals, &mut bufs.lens)
        {
            const LEFT_BLOCK: usize = 64;
            let tasks = left.len().div_ceil(LEFT_BLOCK);
            let per = map_tasks(par && tasks > 1, tasks, |t| {
                let ids = &left[t * LEFT_BLOCK..((t + 1) * LEFT_BLOCK).min(left.len())];
                if cancel.is_cancelled() {
                    return best;
                }
                let mut g = Vec::new();
                some_gram(ids, &mut g);
                let mut b = best;
                let mut st = RowState::new(rows.keep);
                let mut vb = Vec::new();
                for (r, &q) in ids.iter().enumerate() {
                    try_row(&mut b, q, &g[r * m..(r + 1) * m], &mut st, &mut vb);
                }
                b
            });
            let b = per.into_iter().fold(best, merge);
            return (b.1, b.0);
        }
    }
    if m <= SYMMETRIC_MAX {
        let g = full_gram(&xg, par, cancel, &mut bufs.gram);
        for &q in &seeds {
            best.offer(rows.typicality(q, &g[q * m..(q + 1) * m], &mut st), q);
        }
        let tasks = m.div_ceil(SYMMETRIC_BLOCK);
        let per = map_tasks(par && tasks > 1, tasks, |t| {
            if cancel.is_cancelled() {
                return best;
            }
            scan(t * SYMMETRIC_BLOCK, ((t + 1) * SYMMETRIC_BLOCK).min(m), g, 0, best)
        });
        let b = per.into_iter().fold(best, merge);
        return (b.1, b.0);
    }
    offer_seeds(&mut best, &mut st);
    let b = large_block(m);
    let blocks = m.div_ceil(b);
    let per = map_tasks(par && blocks > 1, blocks, |t| {
        let (lo, hi) = (t * b, ((t + 1) * b).min(m));
        if cancel.is_cancelled() {
            return best;
        }
        let mut gb = Vec::new();
        let g = gram(&xg.slice(s![lo..hi, ..]), &xg, &mut gb);
        scan(lo, hi, g.as_slice().expect("gram blocks are contiguous"), lo, best)
    });
    let b = per.into_iter().fold(best, merge);
    (b.1, b.0)
}

// -- the integer screen of `cluster_best` ---------------------------------------------------

/// Clusters of fewer rows are screened from their Gram matrix (cheap at that size).
const SCREEN_MIN: usize = 64;
/// At most this many dimensions: the screen's integer sums fit in i32 (4 D 127² < 2³¹).
const SCREEN_MAX_D: usize = 16_384;
/// Rows per lane block of the screen (16 i32 lanes).
const SB: usize = 16;
/// Query rows per tile of the screen (divides `SB`).
const SMR: usize = 4;
/// Clusters of more rows are screened by blocks of rows in parallel (each row against
/// every other: twice the work of the triangle, split between threads).
const SCREEN_PAR_MIN: usize = 4096;

/// A cluster's centred rows rounded to integers q ∈ [−127, 127] of a scale s (x' ≈ s q):
/// the squared distance of two rounded rows, W = ‖q_a − q_b‖², is an exact integer, and
/// the distance of the rows as given is at least s √W − σ_a − σ_b, σ_j bounding
/// ‖x_j − μ − s q_j‖ (the rounding to integers, measured, and the centring's, u ‖x'_j‖).
struct Quantized {
    m: usize,
    /// D rounded up to a multiple of 4 (the padding is 0 in `a`).
    d4: usize,
    s: f64,
    /// q as i8, rows padded to a multiple of `SB` (zeros), row-major `d4` apart: the query
    /// side, read 4 bytes at a time.
    a: Vec<i8>,
    /// q + 128 as u8 by blocks of `SB` rows: block b, dimensions 4k..4k+4 of its rows at
    /// `(b d4/4 + k) 64` (row r of the block at 4r): one 64-byte load per block and k.
    b: Vec<u8>,
    /// ‖q_j‖² (0 on padding rows), and R_j = ‖q_j‖² + 256 Σ_k q_jk: with the VNNI sums
    /// acc = Σ_k q_ak (q_bk + 128), W = R_a + N_b − 2 acc.
    n: Vec<i32>,
    r: Vec<i32>,
    sigma: Vec<f64>,
    sigma_max: f64,
}

/// 1.5 · 2⁵²: (v + it) − it rounds v (|v| < 2⁵¹) to the nearest integer, ties to even.
const ROUND: f64 = 6_755_399_441_055_744.0;

/// A row's integers q_k = round(x_k · inv) ∈ [−127, 127] into `qa`; returns ‖q‖², Σ q and
/// ‖x − s q‖² (f64).
#[inline(always)]
fn quantize_body<T: Real, I: Isa>(row: &[T], inv: f64, s: f64, qa: &mut [i8]) -> (i64, i64, f64) {
    const QL: usize = 8;
    let (mut nq, mut sq, mut e2) = ([0.0f64; QL], [0.0f64; QL], [0.0f64; QL]);
    let one = |v: T, o: &mut i8, l: usize, nq: &mut [f64; QL], sq: &mut [f64; QL], e2: &mut [f64; QL]| {
        let v = v.to_f64();
        // |v| ≤ max |x'| = 127 / inv: q ∈ [−127, 127], the integer in t's low bits
        let t = v * inv + ROUND;
        let q = t - ROUND;
        let res = v - s * q;
        e2[l] += res * res;
        nq[l] += q * q;
        sq[l] += q;
        *o = (t.to_bits() as i64).wrapping_sub(ROUND.to_bits() as i64) as i8;
    };
    let (rc, rr) = row.as_chunks::<QL>();
    let (qc, qr) = qa.as_chunks_mut::<QL>();
    for (o, v) in qc.iter_mut().zip(rc) {
        for l in 0..QL {
            one(v[l], &mut o[l], l, &mut nq, &mut sq, &mut e2);
        }
    }
    for (l, (o, &v)) in qr.iter_mut().zip(rr).enumerate() {
        one(v, o, l, &mut nq, &mut sq, &mut e2);
    }
    // (sums of at most 2¹⁴ integers below 2¹⁴ each: exact in f64)
    (nq.iter().sum::<f64>() as i64, sq.iter().sum::<f64>() as i64, e2.iter().sum())
}

/// max |v| (f64); NaN never wins a comparison, so a NaN is skipped.
#[inline(always)]
fn max_abs_body<T: Real, I: Isa>(v: &[T]) -> f64 {
    let mut lanes = [T::ZERO; 16];
    let (ch, rest) = v.as_chunks::<16>();
    for c in ch {
        for l in 0..16 {
            let a = if c[l] < T::ZERO { -c[l] } else { c[l] };
            lanes[l] = if a > lanes[l] { a } else { lanes[l] };
        }
    }
    for (l, &x) in rest.iter().enumerate() {
        let a = if x < T::ZERO { -x } else { x };
        lanes[l] = if a > lanes[l] { a } else { lanes[l] };
    }
    lanes.iter().fold(0.0f64, |a, &b| if b.to_f64() > a { b.to_f64() } else { a })
}

multiversion! {
    fn max_abs<T: Real>(v: &[T]) -> f64 => max_abs_body
}

multiversion! {
    fn quantize<T: Real>(row: &[T], inv: f64, s: f64, qa: &mut [i8]) -> (i64, i64, f64) => quantize_body
}

impl Quantized {
    /// None when every centred value is 0 (or not finite).
    fn new<T: Scalar>(c: &Gathered<T>) -> Option<Quantized> {
        let (m, d) = (c.m, c.d);
        let maxabs = max_abs(&c.centred);
        if !(maxabs > 0.0 && maxabs.is_finite()) {
            return None;
        }
        let s = maxabs / 127.0;
        let d4 = d.div_ceil(4) * 4;
        let mp = m.div_ceil(SB) * SB;
        let k4 = d4 / 4;
        let mut a = vec![0i8; mp * d4];
        let mut b = vec![128u8; mp * d4];
        let mut n = vec![0i32; mp];
        let mut r = vec![0i32; mp];
        let mut sigma = vec![0.0f64; m];
        let unit = unit_roundoff::<T>();
        // rounding error of the f64 residuals (|x'|, |s q| ≤ maxabs): far below this
        let tiny = 1e-12 * maxabs * (d as f64).sqrt();
        let inv = 127.0 / maxabs;
        for (j, row) in c.centred.chunks_exact(d).enumerate() {
            let qa = &mut a[j * d4..j * d4 + d];
            let (nq, sq, e2) = quantize(row, inv, s, qa);
            n[j] = nq as i32;
            r[j] = (nq + 256 * sq) as i32;
            let centring = unit * (1.0 + 1e-6) * c.n2[j].sqrt();
            sigma[j] = (e2.sqrt() + centring) * (1.0 + 1e-9) + tiny;
        }
        // the u8 side, q + 128 (the sign bit flipped), 4 bytes of 16 rows per 64
        for (blk, out) in b.chunks_exact_mut(k4 * 64).enumerate() {
            for (k, o) in out.chunks_exact_mut(64).enumerate() {
                for (r, o4) in o.chunks_exact_mut(4).enumerate() {
                    let at = (blk * SB + r) * d4 + 4 * k;
                    for (ob, &q) in o4.iter_mut().zip(&a[at..at + 4]) {
                        *ob = (q as u8) ^ 0x80;
                    }
                }
            }
        }
        let sigma_max = sigma.iter().fold(0.0f64, |a, &v| a.max(v));
        Some(Quantized { m, d4, s, a, b, n, r, sigma, sigma_max })
    }

    /// Rows padded to `SB`.
    fn padded(&self) -> usize {
        self.m.div_ceil(SB) * SB
    }

    /// An integer T with W ≤ T for every row b whose distance to row `a` can be at most
    /// `t`: s √W − σ_a − σ_b ≤ t, σ_b ≤ σ_max (rounded up; i32::MAX when above).
    fn threshold(&self, a: usize, t: f64) -> i32 {
        let v = (t + self.sigma[a] + self.sigma_max) / self.s;
        let v = v * v * (1.0 + 1e-9) + 1.0;
        if v >= i32::MAX as f64 {
            i32::MAX
        } else {
            v.floor() as i32
        }
    }
}

/// Per row, the W of the rows within the screen's widest threshold (the first `cap` of
/// them, `stride` apart in `vals`) and how many there are (`lens`, which may pass the cap),
/// in a worker's buffers kept from cluster to cluster (only the listed values are read).
struct Nearby<'a> {
    vals: &'a mut Vec<i32>,
    lens: &'a mut Vec<u32>,
    stride: usize,
    cap: usize,
}

impl<'a> Nearby<'a> {
    fn new(rows: usize, cap: usize, vals: &'a mut Vec<i32>, lens: &'a mut Vec<u32>) -> Nearby<'a> {
        // 16 values past the cap: a compressed store of 16 lanes at a length ≤ cap
        let stride = cap + SB;
        if vals.len() < rows * stride {
            vals.resize(rows * stride, 0);
        }
        lens.clear();
        lens.resize(rows, 0);
        Nearby { vals, lens, stride, cap }
    }
}

/// `cluster_best`'s buffers, one set per worker.
struct BestBufs<T> {
    gram: Vec<T>,
    vals: Vec<i32>,
    lens: Vec<u32>,
}

impl<T> BestBufs<T> {
    fn new() -> Self {
        BestBufs { gram: Vec::new(), vals: Vec::new(), lens: Vec::new() }
    }
}

/// Appends W_ab to row a's list (kept while the list is below the cap).
#[inline(always)]
fn push(vals: &mut [i32], lens: &mut [u32], stride: usize, cap: usize, a: usize, w: i32) {
    let len = lens[a] as usize;
    if len < cap {
        vals[a * stride + len] = w;
    }
    lens[a] += 1;
}

/// The screen's pairs, without SIMD (the reference of the VNNI kernel, and its fallback):
/// rows lo..hi (of the lists' rows from `base`) against the rows after them (`sym`, each
/// pair once, pushed to both rows' lists) or against every other row.
#[allow(clippy::too_many_arguments)]
fn screen_rows_portable(
    qz: &Quantized, t7: &[i32], lo: usize, hi: usize, sym: bool, vals: &mut [i32], lens: &mut [u32], base: usize,
    stride: usize, cap: usize,
) {
    let (m, d4) = (qz.m, qz.d4);
    for i in lo..hi.min(m) {
        let qi = &qz.a[i * d4..(i + 1) * d4];
        let from = if sym { i + 1 } else { 0 };
        for j in from..m {
            if j == i {
                continue;
            }
            let qj = &qz.a[j * d4..(j + 1) * d4];
            let w: i32 = qi.iter().zip(qj).map(|(&p, &q)| (i32::from(p) - i32::from(q)).pow(2)).sum();
            if w <= t7[i] {
                push(vals, lens, stride, cap, i - base, w);
            }
            if sym && w <= t7[j] {
                push(vals, lens, stride, cap, j - base, w);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod vnni {
    use super::{push, Quantized, SB, SMR};
    use std::arch::x86_64::*;

    /// Lane blocks per tile.
    const NB: usize = 4;

    /// 0, 1, …, 15 (as a constant vector; lane order of `_mm512_set_epi32`: the last first).
    // SAFETY: 16 i32 are the 64 bytes of an __m512i, any bits valid.
    const LANES: __m512i =
        unsafe { std::mem::transmute::<[i32; 16], __m512i>([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]) };

    /// Whether the CPU has AVX-512 VNNI and the kernels may use AVX-512.
    pub(super) fn available() -> bool {
        crate::simd::level() == crate::simd::SimdLevel::Avx512 && std::arch::is_x86_feature_detected!("avx512vnni")
    }

    /// `screen_rows_portable` by tiles of `SMR` rows × `NB` blocks of 16, the integer sums
    /// by `vpdpbusd` (the same W, exactly; the lists' order may differ). `lo` a multiple
    /// of `SMR`.
    ///
    /// # Safety
    /// The CPU has AVX-512 F, BW and VNNI (`available`).
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,popcnt,bmi1")]
    pub(super) unsafe fn screen_rows(
        qz: &Quantized, t7: &[i32], lo: usize, hi: usize, sym: bool, vals: &mut [i32], lens: &mut [u32], base: usize,
        stride: usize, cap: usize,
    ) {
        let blocks = qz.padded() / SB;
        let hi = hi.min(qz.m);
        // the pushes to the column rows (sym), gathered by compressed stores and handed
        // out to their lists now and then: (W, row) pairs
        let mut pend = Pending { w: vec![0; PENDING + SB], j: vec![0; PENDING + SB], len: 0 };
        let mut i0 = lo;
        while i0 < hi {
            let mut jb = if sym { i0 / SB } else { 0 };
            while jb < blocks {
                if blocks - jb >= NB {
                    tile::<NB>(qz, t7, i0, hi, jb, sym, vals, lens, base, stride, cap, &mut pend);
                    jb += NB;
                } else {
                    tile::<1>(qz, t7, i0, hi, jb, sym, vals, lens, base, stride, cap, &mut pend);
                    jb += 1;
                }
                if pend.len > PENDING - SMR * NB * SB {
                    pend.hand_out(vals, lens, base, stride, cap);
                }
            }
            i0 += SMR;
        }
        pend.hand_out(vals, lens, base, stride, cap);
    }

    /// Pushes waiting for their rows' lists.
    struct Pending {
        w: Vec<i32>,
        j: Vec<i32>,
        len: usize,
    }

    /// Room of `Pending` (a compressed store of 16 lanes past its length).
    const PENDING: usize = 4096;

    impl Pending {
        fn hand_out(&mut self, vals: &mut [i32], lens: &mut [u32], base: usize, stride: usize, cap: usize) {
            for (&w, &j) in self.w[..self.len].iter().zip(&self.j[..self.len]) {
                push(vals, lens, stride, cap, j as usize - base, w);
            }
            self.len = 0;
        }
    }

    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    unsafe fn tile<const N: usize>(
        qz: &Quantized, t7: &[i32], i0: usize, hi: usize, jb: usize, sym: bool, vals: &mut [i32], lens: &mut [u32],
        base: usize, stride: usize, cap: usize, pend: &mut Pending,
    ) {
        let (m, d4) = (qz.m, qz.d4);
        let k4 = d4 / 4;
        let mut acc = [[_mm512_setzero_si512(); N]; SMR];
        let bp = qz.b.as_ptr().add(jb * k4 * 64);
        let ap = qz.a.as_ptr().add(i0 * d4);
        // (index loops of constant bounds: unrolled, the sums held in registers)
        for k in 0..k4 {
            let mut bv = [_mm512_setzero_si512(); N];
            #[allow(clippy::needless_range_loop)]
            for nb in 0..N {
                bv[nb] = _mm512_loadu_si512(bp.add((nb * k4 + k) * 64) as *const _);
            }
            for r in 0..SMR {
                let av = _mm512_set1_epi32((ap.add(r * d4 + 4 * k) as *const i32).read_unaligned());
                for nb in 0..N {
                    acc[r][nb] = _mm512_dpbusd_epi32(acc[r][nb], bv[nb], av);
                }
            }
        }
        for nb in 0..N {
            let j0 = (jb + nb) * SB;
            let nv = _mm512_loadu_si512(qz.n.as_ptr().add(j0) as *const _);
            let tj = _mm512_loadu_si512(t7.as_ptr().add(j0) as *const _);
            let jv = _mm512_add_epi32(_mm512_set1_epi32(j0 as i32), LANES);
            let inb: u16 = if j0 + SB <= m { u16::MAX } else { ((1u32 << (m - j0)) - 1) as u16 };
            for r in 0..SMR {
                let i = i0 + r;
                if i >= hi {
                    break;
                }
                let mut valid = inb;
                if i >= j0 && i < j0 + SB {
                    let l = i - j0;
                    valid &= if sym { !((1u32 << (l + 1)) - 1) as u16 } else { !(1u16 << l) };
                }
                if valid == 0 {
                    continue;
                }
                let w = _mm512_sub_epi32(
                    _mm512_add_epi32(_mm512_set1_epi32(qz.r[i]), nv),
                    _mm512_slli_epi32::<1>(acc[r][nb]),
                );
                // this row's: compressed into its list (no branch on the mask)
                let mr = _mm512_mask_cmple_epi32_mask(valid, w, _mm512_set1_epi32(t7[i]));
                let li = i - base;
                let len = *lens.get_unchecked(li) as usize;
                if len <= cap {
                    let at = vals.as_mut_ptr().add(li * stride + len);
                    _mm512_storeu_si512(at as *mut _, _mm512_maskz_compress_epi32(mr, w));
                }
                *lens.get_unchecked_mut(li) += mr.count_ones();
                if sym {
                    // the column rows': (W, row) compressed into the pending pushes
                    let mc = _mm512_mask_cmple_epi32_mask(valid, w, tj);
                    let at = pend.len;
                    _mm512_storeu_si512(pend.w.as_mut_ptr().add(at) as *mut _, _mm512_maskz_compress_epi32(mc, w));
                    _mm512_storeu_si512(pend.j.as_mut_ptr().add(at) as *mut _, _mm512_maskz_compress_epi32(mc, jv));
                    pend.len += mc.count_ones() as usize;
                }
            }
        }
    }
}

/// Whether `cluster_best` screens its rows with integers (AVX-512 VNNI; elsewhere the f32
/// Gram matrix is the faster screen).
fn screen_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        vnni::available()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Every row's list of `Nearby` rows: the pairs by tiles of the upper triangle, each pushed
/// to both rows (one thread), or, for a large cluster with `par`, each row's whole row by
/// blocks of rows in parallel. `vnni`: the SIMD kernel, else the portable one.
fn screen_lists<'a>(
    qz: &Quantized, t7: &[i32], cap: usize, par: bool, vnni: bool, vals: &'a mut Vec<i32>, lens: &'a mut Vec<u32>,
) -> Nearby<'a> {
    let m = qz.m;
    let near = Nearby::new(m, cap, vals, lens);
    let stride = near.stride;
    let run = |lo: usize, hi: usize, sym: bool, vals: &mut [i32], lens: &mut [u32], base: usize| {
        #[cfg(target_arch = "x86_64")]
        if vnni {
            // SAFETY: `vnni` only when `vnni::available()` said the CPU has the features.
            unsafe { vnni::screen_rows(qz, t7, lo, hi, sym, vals, lens, base, stride, cap) };
            return;
        }
        let _ = vnni;
        screen_rows_portable(qz, t7, lo, hi, sym, vals, lens, base, stride, cap);
    };
    if par && m >= SCREEN_PAR_MIN {
        let rows = 256;
        near.vals[..m * stride].par_chunks_mut(rows * stride).zip(near.lens.par_chunks_mut(rows)).enumerate().for_each(
            |(t, (vals, lens))| {
                let lo = t * rows;
                run(lo, lo + lens.len(), false, vals, lens, lo);
            },
        );
    } else {
        run(0, m, true, &mut near.vals[..], &mut near.lens[..], 0);
    }
    near
}

/// The rows of a cluster `Rows::beaten` might not turn away against the best mean
/// distance `s_best` (seeds excluded), from the integer screen: each row's count of rows
/// that may lie within each threshold of `STEPS` gives the same bound as `beaten` with
/// the wider rounding bound of the integers (σ). None when there is nothing to screen
/// with (s_best not positive and finite, all rows equal).
#[allow(clippy::too_many_arguments)]
fn screen_cluster<T: Scalar>(
    c: &Gathered<T>, kk: usize, seeds: &[usize], s_best: f64, par: bool, vnni: bool, vals: &mut Vec<i32>,
    lens: &mut Vec<u32>,
) -> Option<Vec<usize>> {
    if !(s_best > 0.0 && s_best.is_finite()) {
        return None;
    }
    let qz = Quantized::new(c)?;
    let m = qz.m;
    let mut t7 = vec![-1i32; qz.padded()];
    for (q, t) in t7.iter_mut().enumerate().take(m) {
        *t = qz.threshold(q, s_best * STEPS[STEPS.len() - 1]);
    }
    // (most rows have a few dozen rows within the widest threshold; a row past the cap is
    // left to its Gram row)
    let cap = (4 * kk).max(240);
    let near = screen_lists(&qz, &t7, cap, par, vnni, vals, lens);
    let kkf = kk as f64;
    let target = kkf * s_best * (1.0 + 2e-9) * (1.0 + 1e-12);
    let mut left = Vec::new();
    for q in 0..m {
        if seeds.binary_search(&q).is_ok() {
            continue;
        }
        let len = near.lens[q] as usize;
        if len > near.cap {
            left.push(q);
            continue;
        }
        let list = &near.vals[q * near.stride..q * near.stride + len];
        // c_h, the rows that may lie within t_h: every listed row for the widest, and a
        // count of the listed rows at or below each other threshold
        let mut ts = [i32::MIN; 8];
        for (t, &step) in ts.iter_mut().zip(&STEPS[..STEPS.len() - 1]) {
            *t = qz.threshold(q, s_best * step);
        }
        let mut counts = [0u32; 8];
        for &w in list {
            for h in 0..8 {
                counts[h] += u32::from(w <= ts[h]);
            }
        }
        counts[STEPS.len() - 1] = len as u32;
        // Σ_h (t_h − t_{h−1}) max(0, k' − c_h)
        let mut bound = 0.0;
        let mut below = 0.0;
        for (&step, &c_h) in STEPS.iter().zip(&counts) {
            let th = s_best * step;
            bound += (th - below) * (kkf - c_h as f64).max(0.0);
            below = th;
        }
        if bound <= target {
            left.push(q);
        }
    }
    Some(left)
}

/// ‖xq − row j‖ of the rows `ids` of `data` (rows of xq's length), appended to `out`:
/// differences before squaring, f64 sums (`kmeans::exact_sq`), one dispatch per query.
#[inline(always)]
fn exact_rows_body<T: Real, I: Isa>(xq: &[T], data: &[T], ids: &[u32], out: &mut Vec<f64>) {
    // a plain loop: a closure would not inherit the caller's target features (FMA)
    let d = xq.len();
    for &j in ids {
        let j = j as usize;
        out.push(sq_diff_f64::<I, T>(xq, 1.0, &data[j * d..(j + 1) * d], 1.0).sqrt());
    }
}

multiversion! {
    fn exact_rows<T: Real>(xq: &[T], data: &[T], ids: &[u32], out: &mut Vec<f64>) -> () => exact_rows_body
}

/// The rows of each cluster (ascending), clusters by ascending label: every label ≥ 0, or
/// those in `clusters`.
fn groups_of(labels: ArrayView1<'_, i64>, clusters: Option<&[i64]>) -> Vec<(i64, Vec<usize>)> {
    let wanted: Option<HashSet<i64>> = clusters.map(|c| c.iter().copied().collect());
    let mut members: Vec<(i64, usize)> = labels
        .iter()
        .enumerate()
        .filter(|&(_, &l)| l >= 0 && wanted.as_ref().is_none_or(|w| w.contains(&l)))
        .map(|(i, &l)| (l, i))
        .collect();
    members.sort_unstable();
    let mut groups: Vec<(i64, Vec<usize>)> = Vec::new();
    for (pos, &(l, i)) in members.iter().enumerate() {
        if pos == 0 || members[pos - 1].0 != l {
            groups.push((l, Vec::new()));
        }
        groups.last_mut().expect("a group").1.push(i);
    }
    groups
}

/// (N, D) of `typicality`'s and `most_typical`'s inputs, checked: a label per row, k ≥ 1,
/// D ≥ 1.
fn check_inputs((n, d): (usize, usize), labels: usize, k: usize) -> Result<(usize, usize), Error> {
    if labels != n {
        return Err(Error::Shape(format!("labels has {labels} entries but embeddings has {n} rows")));
    }
    if k == 0 {
        return Err(Error::argument("k", "k must be at least 1; got 0"));
    }
    if d == 0 {
        return Err(Error::Shape("embeddings has 0 dimensions; need at least 1".into()));
    }
    Ok((n, d))
}

/// Typicality (see the module) of the rows of `x` (N, D) within their clusters: `labels`
/// (N,) gives each row's cluster, a negative label none (such a row is nobody's neighbour).
/// `clusters`: compute only the rows of these clusters (None: every cluster). Rows not
/// computed get NaN. The result does not depend on the number of threads (`threads`: see
/// `kmeans::workers`); clusters run in parallel, and the blocks of a large one too.
///
/// Errors: k = 0, labels of another length than N, a row of `x` with NaN or ±inf
/// (`Error::InvalidRow`, field `embeddings`), `Error::OutOfMemory`, `Error::Interrupted`.
pub fn typicality<T: Scalar>(
    x: ArrayView2<'_, T>, labels: ArrayView1<'_, i64>, k: usize, clusters: Option<&[i64]>, threads: Option<usize>,
    cancel: &Cancel,
) -> Result<Vec<f64>, Error> {
    let (n, d) = check_inputs(x.dim(), labels.len(), k)?;
    let groups = groups_of(labels, clusters);
    let work: usize = groups.iter().map(|(_, g)| g.len().saturating_mul(g.len())).sum::<usize>().saturating_mul(d);
    let pool = workers(threads, work.max(n.saturating_mul(d)))?;
    let par = pool.is_some();
    run_in(&pool, || {
        checked_sq_norms(&x, Field::Embeddings, par, cancel)?;
        let mut out = filled(n, f64::NAN)?;
        let one = |buf: &mut Vec<T>, g: usize| {
            if cancel.is_cancelled() {
                return Vec::new();
            }
            cluster_typicality(&x, &groups[g].1, k, par, cancel, buf)
        };
        let per: Vec<Vec<f64>> = if par {
            (0..groups.len()).into_par_iter().map_init(Vec::new, one).collect()
        } else {
            let mut buf = Vec::new();
            (0..groups.len()).map(|g| one(&mut buf, g)).collect()
        };
        cancel.check()?;
        for ((_, rows), vals) in groups.iter().zip(per) {
            for (&i, v) in rows.iter().zip(vals) {
                out[i] = v;
            }
        }
        Ok(out)
    })
}

/// The most typical row of each cluster of `clusters` (TypiClust's pick): per entry, the
/// row of `x` (N, D) of highest `typicality` among the rows labelled with it (ties: the
/// lowest row) and that typicality, bit for bit the value `typicality` gives it; (−1, NaN)
/// for a cluster with no row. Most rows are never computed exactly: see `cluster_best`.
/// The same errors as `typicality`.
pub fn most_typical<T: Scalar>(
    x: ArrayView2<'_, T>, labels: ArrayView1<'_, i64>, k: usize, clusters: &[i64], threads: Option<usize>,
    cancel: &Cancel,
) -> Result<Vec<(i64, f64)>, Error> {
    let (n, d) = check_inputs(x.dim(), labels.len(), k)?;
    let groups = groups_of(labels, Some(clusters));
    let work: usize = groups.iter().map(|(_, g)| g.len().saturating_mul(g.len())).sum::<usize>().saturating_mul(d);
    let pool = workers(threads, work.max(n.saturating_mul(d)))?;
    let par = pool.is_some();
    run_in(&pool, || {
        checked_sq_norms(&x, Field::Embeddings, par, cancel)?;
        let one = |buf: &mut BestBufs<T>, g: usize| {
            if cancel.is_cancelled() {
                return (0, f64::NAN);
            }
            cluster_best(&x, &groups[g].1, k, par, cancel, buf)
        };
        let per: Vec<(usize, f64)> = if par {
            (0..groups.len()).into_par_iter().map_init(BestBufs::new, one).collect()
        } else {
            let mut buf = BestBufs::new();
            (0..groups.len()).map(|g| one(&mut buf, g)).collect()
        };
        cancel.check()?;
        let found: std::collections::HashMap<i64, (i64, f64)> =
            groups.iter().zip(per).map(|((l, rows), (at, t))| (*l, (rows[at] as i64, t))).collect();
        Ok(clusters.iter().map(|c| found.get(c).copied().unwrap_or((-1, f64::NAN))).collect())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kmeans::SplitMix64;
    use ndarray::{Array1, Array2};

    fn brute(x: &Array2<f64>, labels: &[i64], k: usize) -> Vec<f64> {
        let n = x.nrows();
        (0..n)
            .map(|i| {
                if labels[i] < 0 {
                    return f64::NAN;
                }
                let mut ds: Vec<f64> = (0..n)
                    .filter(|&j| j != i && labels[j] == labels[i])
                    .map(|j| {
                        let v = &x.row(i) - &x.row(j);
                        v.dot(&v).sqrt()
                    })
                    .collect();
                if ds.is_empty() {
                    return f64::INFINITY;
                }
                ds.sort_by(f64::total_cmp);
                let kk = k.min(ds.len());
                1.0 / (ds[..kk].iter().sum::<f64>() / kk as f64)
            })
            .collect()
    }

    #[test]
    fn matches_brute_force_whatever_the_threads() {
        let mut rng = SplitMix64::new(4);
        let x = Array2::from_shape_fn((700, 9), |_| rng.uniform());
        let labels: Vec<i64> = (0..700).map(|i| [0, 1, 1, 2, 5, -1, 1][i % 7] + if i == 3 { 100 } else { 0 }).collect();
        let lab = Array1::from(labels.clone());
        for k in [1, 3, 20, 500] {
            let want = brute(&x, &labels, k);
            for threads in [1, 2] {
                let got = typicality(x.view(), lab.view(), k, None, Some(threads), &Cancel::new()).unwrap();
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        (g.is_nan() && w.is_nan()) || g == w || (g - w).abs() <= 1e-12 * w.abs(),
                        "k={k} row {i}: {g} vs {w}"
                    );
                }
            }
        }
        // Only the clusters asked for.
        let got = typicality(x.view(), lab.view(), 5, Some(&[2, 102]), None, &Cancel::new()).unwrap();
        assert_eq!(got[3], f64::INFINITY); // alone in cluster 102
        assert!(got.iter().enumerate().all(|(i, v)| v.is_nan() == !(labels[i] == 2 || i == 3)));
    }

    #[test]
    fn exact_with_an_offset_ties_and_float32() {
        // A large common offset (the expansion's rounding bound grows with the norms until
        // the rows are centred), rows repeated (ties at the k-th distance) and float32:
        // the k' nearest are still found exactly.
        let mut rng = SplitMix64::new(9);
        let base = Array2::from_shape_fn((300, 40), |_| rng.uniform());
        let x = Array2::from_shape_fn((900, 40), |(i, j)| {
            1000.0 + base[[i % 300, j]] + if i < 300 { 0.0 } else { 1e-3 * ((i / 300) as f64) }
        });
        let labels: Vec<i64> = (0..900).map(|i| (i % 3) as i64).collect();
        let lab = Array1::from(labels.clone());
        let x32 = x.mapv(|v| v as f32);
        let x32_64 = x32.mapv(|v| v as f64);
        for k in [1, 2, 7, 20] {
            let want = brute(&x, &labels, k);
            let got = typicality(x.view(), lab.view(), k, None, Some(2), &Cancel::new()).unwrap();
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!(g == w || (g - w).abs() <= 1e-12 * w.abs(), "f64 k={k} row {i}: {g} vs {w}");
            }
            let want = brute(&x32_64, &labels, k);
            let got = typicality(x32.view(), lab.view(), k, None, Some(1), &Cancel::new()).unwrap();
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!(g == w || (g - w).abs() <= 1e-12 * w.abs(), "f32 k={k} row {i}: {g} vs {w}");
            }
        }
    }

    #[test]
    fn a_cluster_too_large_for_the_whole_matrix() {
        // one cluster above SYMMETRIC_MAX rows (Gram by blocks of rows), one below
        let mut rng = SplitMix64::new(5);
        let n = SYMMETRIC_MAX + 300;
        let x = Array2::from_shape_fn((n, 3), |_| rng.uniform());
        let labels: Vec<i64> = (0..n).map(|i| i64::from(i >= SYMMETRIC_MAX + 100)).collect();
        let lab = Array1::from(labels.clone());
        let want = brute(&x, &labels, 20);
        for threads in [1, 2] {
            let got = typicality(x.view(), lab.view(), 20, None, Some(threads), &Cancel::new()).unwrap();
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!(g == w || (g - w).abs() <= 1e-12 * w.abs(), "row {i}: {g} vs {w}");
            }
        }
    }

    /// `most_typical` against the argmax of `typicality` (higher value, then the lower row):
    /// the same rows and the same values bit for bit.
    fn check_most_typical<T: Scalar>(x: ArrayView2<'_, T>, labels: &[i64], k: usize, threads: usize) {
        let lab = Array1::from(labels.to_vec());
        let all = typicality(x, lab.view(), k, None, Some(threads), &Cancel::new()).unwrap();
        let mut ids: Vec<i64> = labels.iter().copied().filter(|&l| l >= 0).collect();
        ids.sort_unstable();
        ids.dedup();
        ids.push(1_000); // no row
        let got = most_typical(x, lab.view(), k, &ids, Some(threads), &Cancel::new()).unwrap();
        for (&c, &(row, t)) in ids.iter().zip(&got) {
            let want = (0..labels.len()).filter(|&i| labels[i] == c).fold(None, |b: Option<usize>, i| match b {
                Some(j) if all[j] >= all[i] => Some(j),
                _ => Some(i),
            });
            match want {
                None => assert!(row == -1 && t.is_nan(), "cluster {c}"),
                Some(j) => {
                    assert_eq!(row, j as i64, "cluster {c} k={k}");
                    assert_eq!(t.to_bits(), all[j].to_bits(), "cluster {c} k={k}");
                }
            }
        }
    }

    #[test]
    fn most_typical_is_the_argmax_of_typicality() {
        let mut rng = SplitMix64::new(11);
        // blobs (the bound turns most rows away), uniform rows, a large offset in float32,
        // repeated rows (ties, distance 0), a cluster above SYMMETRIC_MAX rows
        let centres = Array2::from_shape_fn((4, 16), |_| 6.0 * rng.uniform());
        let blobs = Array2::from_shape_fn((1500, 16), |(i, j)| centres[[i % 4, j]] + rng.uniform() - 0.5);
        let labels: Vec<i64> = (0..1500).map(|i| (i % 4) as i64 + if i % 97 == 0 { 10 } else { 0 }).collect();
        for k in [1, 5, 20] {
            for threads in [1, 2] {
                check_most_typical(blobs.view(), &labels, k, threads);
                check_most_typical(blobs.mapv(|v| v as f32).view(), &labels, k, threads);
            }
        }
        let off = Array2::from_shape_fn((600, 8), |(i, j)| 1000.0 + ((i % 200) * 7 + j) as f64 * 1e-3);
        let lab3: Vec<i64> = (0..600).map(|i| (i % 3) as i64 - i64::from(i % 50 == 0)).collect();
        for k in [1, 2, 20] {
            check_most_typical(off.view(), &lab3, k, 1);
            check_most_typical(off.mapv(|v| v as f32).view(), &lab3, k, 2);
        }
        let n = SYMMETRIC_MAX + 200;
        let big = Array2::from_shape_fn((n, 3), |_| rng.uniform());
        let lab2: Vec<i64> = (0..n).map(|i| i64::from(i >= SYMMETRIC_MAX + 100)).collect();
        for threads in [1, 2] {
            check_most_typical(big.view(), &lab2, 20, threads);
        }
        let dup = Array2::<f64>::zeros((5, 2));
        check_most_typical(dup.view(), &[0, 0, 0, 1, 2], 2, 1);
    }

    /// The screen's lists, sorted per row (their order depends on the kernel), and counts.
    fn screened(qz: &Quantized, t7: &[i32], par: bool, vnni: bool) -> (Vec<u32>, Vec<Vec<i32>>) {
        let (mut vals, mut lens) = (vec![7; 3], Vec::new());
        let near = screen_lists(qz, t7, 40, par, vnni, &mut vals, &mut lens);
        let lists = (0..qz.m)
            .map(|q| {
                // (past the cap, which values were kept depends on the order: not compared)
                let n = near.lens[q] as usize;
                let n = if n > near.cap { 0 } else { n };
                let mut l = near.vals[q * near.stride..q * near.stride + n].to_vec();
                l.sort_unstable();
                l
            })
            .collect();
        (near.lens.clone(), lists)
    }

    #[test]
    fn the_integer_screen_lists_the_same_rows_every_way() {
        // the VNNI kernel (triangle, or whole rows in parallel for a large cluster) and the
        // portable one: the same counts and values; and every pair within its threshold
        // listed (W exact: the distance of the integer rows)
        let mut rng = SplitMix64::new(21);
        let mut past = false;
        for &(m, d) in &[(70, 5), (300, 37), (SCREEN_PAR_MIN + 70, 9)] {
            let x = Array2::from_shape_fn((m, d), |(i, j)| (i % 3 * 4 + j % 2) as f64 + rng.uniform());
            let rows: Vec<usize> = (0..m).collect();
            let c = Gathered::new(&x.mapv(|v| v as f32).view(), &rows);
            let qz = Quantized::new(&c).unwrap();
            let mut t7 = vec![-1i32; qz.padded()];
            for (q, t) in t7.iter_mut().enumerate().take(m) {
                *t = qz.threshold(q, 0.3 + 0.6 * (q % 5) as f64);
            }
            let want = screened(&qz, &t7, false, false);
            let w = |a: usize, b: usize| -> i32 {
                (0..qz.d4).map(|k| (i32::from(qz.a[a * qz.d4 + k]) - i32::from(qz.a[b * qz.d4 + k])).pow(2)).sum()
            };
            for q in (0..m).step_by(7) {
                let n = (0..m).filter(|&j| j != q && w(q, j) <= t7[q]).count();
                assert_eq!(want.0[q] as usize, n, "m={m} row {q}");
            }
            past |= want.0.iter().any(|&n| n > 40);
            if screen_available() {
                for par in [false, true] {
                    assert!(screened(&qz, &t7, par, true) == want, "m={m} par={par}");
                }
            }
        }
        assert!(past, "some list past the cap");
    }

    #[test]
    fn bad_input_is_an_error() {
        let mut x = Array2::<f64>::zeros((5, 2));
        let lab = Array1::from(vec![0i64; 5]);
        assert!(typicality(x.view(), lab.view(), 0, None, None, &Cancel::new()).is_err());
        assert!(typicality(x.view(), lab.slice(ndarray::s![..4]), 3, None, None, &Cancel::new()).is_err());
        // Duplicates: distance 0, typicality +inf.
        let t = typicality(x.view(), lab.view(), 2, None, None, &Cancel::new()).unwrap();
        assert!(t.iter().all(|&v| v == f64::INFINITY));
        x[[2, 1]] = f64::NEG_INFINITY;
        let e = typicality(x.view(), lab.view(), 2, None, None, &Cancel::new()).unwrap_err();
        assert_eq!(e.to_string(), "embeddings row 2: -inf at dimension 1 (-inf is allowed only in logits)");
    }
}

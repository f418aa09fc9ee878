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
        for row in data.chunks_exact(d) {
            for (a, &v) in mean.iter_mut().zip(row) {
                *a += v.to_f64();
            }
        }
        let mean: Vec<T> = mean.iter().map(|&v| T::from_f64(v / m as f64)).collect();
        let mut centred: Vec<T> = Vec::with_capacity(m * d);
        for row in data.chunks_exact(d) {
            centred.extend(row.iter().zip(&mean).map(|(&v, &mu)| v - mu));
        }
        let n2: Vec<f64> =
            centred.chunks_exact(d).map(|row| row.iter().map(|&v| v.to_f64() * v.to_f64()).sum::<f64>()).collect();
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
    x: &ArrayView2<'_, T>, rows: &[usize], k: usize, par: bool, cancel: &Cancel, gram_buf: &mut Vec<T>,
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
    // rows lo..hi, row q's Gram values at g[(q − off) m..]
    let scan = |lo: usize, hi: usize, g: &[T], off: usize, start: Best| {
        let mut b = start;
        let mut st = RowState::new(rows.keep);
        let mut vb = Vec::new();
        for q in lo..hi {
            if seeds.binary_search(&q).is_ok() {
                continue;
            }
            let grow = &g[(q - off) * m..(q - off + 1) * m];
            if !rows.beaten(q, grow, b.mean_distance(), &mut vb) {
                b.offer(rows.typicality(q, grow, &mut st), q);
            }
        }
        b
    };
    let merge = |a: Best, b: Best| {
        let mut a = a;
        a.offer(b.0, b.1);
        a
    };
    if m <= SYMMETRIC_MAX {
        let g = full_gram(&xg, par, cancel, gram_buf);
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
    {
        let sx = xg.select(ndarray::Axis(0), &seeds);
        let mut gb = Vec::new();
        let g = gram(&sx.view(), &xg, &mut gb);
        for (r, &q) in seeds.iter().enumerate() {
            best.offer(rows.typicality(q, g.row(r).as_slice().expect("gram rows are contiguous"), &mut st), q);
        }
    }
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
        let one = |buf: &mut Vec<T>, g: usize| {
            if cancel.is_cancelled() {
                return (0, f64::NAN);
            }
            cluster_best(&x, &groups[g].1, k, par, cancel, buf)
        };
        let per: Vec<(usize, f64)> = if par {
            (0..groups.len()).into_par_iter().map_init(Vec::new, one).collect()
        } else {
            let mut buf = Vec::new();
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

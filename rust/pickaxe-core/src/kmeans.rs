//! k-means: k-means++ seeding with greedy local trials (Arthur & Vassilvitskii 2007, as
//! scikit-learn's `_kmeans_plusplus` runs it), then Lloyd iterations (scikit-learn's
//! `_kmeans_single_lloyd`: tolerance on the centres' shift, strict convergence when no label
//! changes, empty clusters re-seeded from the rows farthest from their centres).
//!
//! Cost. One Lloyd iteration is O(N·k·D): at N = 10⁶, k = 10³, D = 256, 2.6·10¹¹
//! multiply-adds. The distances come from the expansion ‖x‖² + ‖c‖² − 2 x·c, the x·c of a
//! block of rows by all centres as one matrix product (`ndarray::linalg::general_mat_mul`,
//! i.e. the `matrixmultiply` crate's packed SIMD GEMM, AVX-512/AVX2 where the CPU has them,
//! one product per block of rows, blocks in parallel). Two samples keep big pools in
//! minutes, both drawn once from one seeded permutation (`init_rows` ⊆ `fit_rows`):
//! - k-means++ seeding runs on `init_rows` rows: each of its k picks reads every seeding
//!   row for 2 + ⌊ln k⌋ candidates, a memory-bound pass that would cost k passes over the
//!   whole pool;
//! - Lloyd iterations run on `fit_rows` rows (faiss's rule is at most 256 rows per centre),
//!   and one last assignment labels every row of the pool against the final centres.
//!
//! Determinism: the rows are cut into blocks whose size depends on k and D only; every sum
//! is taken block by block in block order (a centre's sum over its rows in row order), so
//! the result for a seed does not depend on the number of threads.

use std::sync::Arc;

use ndarray::{s, Array2, ArrayView1, ArrayView2, ArrayViewMut2, Axis, LinalgScalar};
use rayon::prelude::*;
use rayon::ThreadPool;

use crate::cancel::Cancel;
use crate::error::{filled, Error, Fault, Field};
use crate::knn::{dot_f64, row_slice, sq_diff_f64};
use crate::math::{Isa, Real};
use crate::simd::multiversion;
use crate::threads::{self, PARALLEL_MIN_VALUES};

/// The float types the clustering kernels run on (f32, f64): `Real` with a matrix product.
pub trait Scalar: Real + LinalgScalar {}
impl Scalar for f32 {}
impl Scalar for f64 {}

/// SplitMix64 (Steele, Lea & Flood 2014): the clustering kernels' random numbers. Simple
/// enough to be re-implemented in a few lines by a test's reference (tests/test_cluster.py).
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1): the top 53 bits.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in 0..n (n ≥ 1) by a 128-bit multiply (Lemire; bias below n / 2⁶⁴).
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }
}

/// The pool a clustering call runs on: `None` runs on the calling thread. `threads`:
/// `None` is the kernels' pool (`threads::set_num_threads`), `Some(n)` a pool of n threads
/// for this call. Work below `PARALLEL_MIN_VALUES` values runs on the calling thread.
pub(crate) fn workers(threads: Option<usize>, work: usize) -> Result<Option<Arc<ThreadPool>>, Error> {
    if threads == Some(0) {
        return Err(Error::argument("threads", "threads must be at least 1; got 0"));
    }
    if work < PARALLEL_MIN_VALUES {
        return Ok(None);
    }
    Ok(match threads {
        None => threads::pool(),
        Some(1) => None,
        Some(n) if n == threads::num_threads() => threads::pool(),
        // A pool of its own for this call; it cannot be made: run on this thread.
        Some(n) => rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .thread_name(|i| format!("pickaxe-cluster-{i}"))
            .build()
            .ok()
            .map(Arc::new),
    })
}

/// Runs `f` on `pool` (parallel iterators inside use it) or here.
pub(crate) fn run_in<R: Send>(pool: &Option<Arc<ThreadPool>>, f: impl FnOnce() -> R + Send) -> R {
    match pool {
        Some(p) => p.install(f),
        None => f(),
    }
}

/// `f(i)` for i in 0..n, in parallel when `par`, results in index order.
pub(crate) fn map_tasks<R: Send>(par: bool, n: usize, f: impl Fn(usize) -> R + Sync + Send) -> Vec<R> {
    if par {
        (0..n).into_par_iter().map(f).collect()
    } else {
        (0..n).map(f).collect()
    }
}

/// The first non-finite value of a row, as a fault.
fn row_fault<T: Real>(x: &[T]) -> Option<Fault> {
    x.iter().enumerate().find_map(|(index, &v)| {
        if v.is_nan() {
            Some(Fault::Nan { index })
        } else if v == T::INF {
            Some(Fault::PosInf { index })
        } else if v == T::NEG_INF {
            Some(Fault::NegInf { index })
        } else {
            None
        }
    })
}

#[inline(always)]
fn sq_norms_body<T: Real, I: Isa>(x: &ArrayView2<'_, T>, lo: usize, out: &mut [f64]) -> Option<(usize, Fault)> {
    let mut buf = Vec::new();
    let mut first = None;
    for (r, o) in out.iter_mut().enumerate() {
        let row = row_slice(x, lo + r, &mut buf);
        *o = dot_f64::<I, T>(row, row);
        // NaN and ±inf make the sum non-finite; a finite row whose squares overflow f64
        // is not an input fault, so the row is scanned to tell.
        if !o.is_finite() && first.is_none() {
            first = row_fault(row).map(|f| (lo + r, f));
        }
    }
    first
}

multiversion! {
    fn sq_norms_dispatch<T: Real>(x: &ArrayView2<'_, T>, lo: usize, out: &mut [f64]) -> Option<(usize, Fault)> => sq_norms_body
}

/// ‖x_i‖² of every row (f64 sums), refusing the first row (lowest index) holding NaN or
/// ±inf as `Error::InvalidRow` of `field`.
pub(crate) fn checked_sq_norms<T: Real>(
    x: &ArrayView2<'_, T>,
    field: Field,
    par: bool,
    cancel: &Cancel,
) -> Result<Vec<f64>, Error> {
    let n = x.nrows();
    let rows = block_rows(x.ncols(), 1);
    let mut out = filled(n, 0.0f64)?;
    let one = |(t, c): (usize, &mut [f64])| {
        if cancel.is_cancelled() {
            return None;
        }
        sq_norms_dispatch(x, t * rows, c)
    };
    let faults: Vec<Option<(usize, Fault)>> = if par {
        out.par_chunks_mut(rows).enumerate().map(one).collect()
    } else {
        out.chunks_mut(rows).enumerate().map(one).collect()
    };
    cancel.check()?;
    if let Some((row, fault)) = faults.into_iter().flatten().next() {
        return Err(Error::InvalidRow { field, row, member: None, fault });
    }
    Ok(out)
}

/// Rows per block: about 2¹⁸ values of a (rows × cols) product or of the rows' data,
/// between 16 and 4,096 rows. Depends on the shapes only (see the module on determinism).
pub(crate) fn block_rows(d: usize, cols: usize) -> usize {
    ((1usize << 18) / d.max(cols).max(1)).clamp(16, 4096)
}

/// Which rows of `x` a step works on: all, or the listed ones (ascending).
#[derive(Clone, Copy)]
enum RowSet<'a> {
    All(usize),
    Listed(&'a [u32]),
}

impl RowSet<'_> {
    fn len(&self) -> usize {
        match self {
            RowSet::All(n) => *n,
            RowSet::Listed(v) => v.len(),
        }
    }

    #[inline]
    fn row(&self, i: usize) -> usize {
        match self {
            RowSet::All(_) => i,
            RowSet::Listed(v) => v[i] as usize,
        }
    }
}

/// The rows lo..hi of `set` as a matrix: a view of `x` when the set is all rows, else the
/// rows gathered into `buf`.
fn set_block<'a, T: Scalar>(
    x: &'a ArrayView2<'_, T>,
    set: RowSet<'_>,
    lo: usize,
    hi: usize,
    buf: &'a mut Vec<T>,
) -> ArrayView2<'a, T> {
    match set {
        RowSet::All(_) => x.slice(s![lo..hi, ..]),
        RowSet::Listed(v) => {
            buf.clear();
            for &i in &v[lo..hi] {
                buf.extend(x.row(i as usize).iter().copied());
            }
            ArrayView2::from_shape((hi - lo, x.ncols()), &buf[..]).expect("gathered block shape")
        }
    }
}

/// g = a · bᵀ into `buf` (resized), as an (a rows × b rows) matrix.
pub(crate) fn gram<'a, T: Scalar>(a: &ArrayView2<'_, T>, b: &ArrayView2<'_, T>, buf: &'a mut Vec<T>) -> ArrayViewMut2<'a, T> {
    let (r, c) = (a.nrows(), b.nrows());
    buf.clear();
    buf.resize(r * c, T::ZERO);
    let mut g = ArrayViewMut2::from_shape((r, c), &mut buf[..]).expect("gram shape");
    ndarray::linalg::general_mat_mul(T::ONE, a, &b.t(), T::ZERO, &mut g);
    g
}

/// Options of `kmeans`.
#[derive(Clone, Debug)]
pub struct KMeansOptions {
    /// k ≥ 1, at most the number of rows.
    pub clusters: usize,
    /// Lloyd iterations at most (0: the seeding's centres, rows assigned to them).
    pub max_iter: usize,
    /// Convergence when Σ_j ‖c_j − c_j'‖² ≤ tol · mean per-dimension variance of the fit
    /// rows (scikit-learn's relative tolerance).
    pub tol: f64,
    pub seed: u64,
    /// Rows k-means++ seeds from (a random sample of the fit rows); None: all fit rows.
    pub init_rows: Option<usize>,
    /// Rows Lloyd iterates on (a random sample); None: every row.
    pub fit_rows: Option<usize>,
    /// Candidates per k-means++ pick; None: 2 + ⌊ln k⌋ (scikit-learn).
    pub local_trials: Option<usize>,
    /// Threads for this call (see `workers`); None: the kernels' pool.
    pub threads: Option<usize>,
}

impl KMeansOptions {
    pub fn new(clusters: usize, seed: u64) -> Self {
        KMeansOptions {
            clusters,
            max_iter: 100,
            tol: 1e-4,
            seed,
            init_rows: None,
            fit_rows: None,
            local_trials: None,
            threads: None,
        }
    }
}

/// What `kmeans` returns.
#[derive(Clone, Debug, PartialEq)]
pub struct KMeansResult<T> {
    /// Each row's cluster (N,), in 0..k: its nearest final centre (ties: the lowest).
    pub labels: Vec<i64>,
    /// (k, D) centres.
    pub centers: Array2<T>,
    /// Σ_i ‖x_i − c_{label_i}‖² over every row (f64).
    pub inertia: f64,
    /// Lloyd iterations run.
    pub iterations: usize,
    /// Whether the centres stopped moving (tolerance or no label changed) before max_iter.
    pub converged: bool,
}

/// The first `size` < n entries of a seeded random permutation of 0..n (partial
/// Fisher–Yates): the first m of them are a uniform sample of m rows for any m ≤ size, so
/// the seeding rows are a subset of the fit rows.
fn samples(n: usize, size: usize, rng: &mut SplitMix64) -> Result<Vec<u32>, Error> {
    let mut perm: Vec<u32> = crate::error::with_room(n)?;
    perm.extend(0..n as u32);
    for i in 0..size {
        let j = i + rng.below(n - i);
        perm.swap(i, j);
    }
    perm.truncate(size);
    Ok(perm)
}

/// k-means of the rows of `x` (N, D): k-means++ seeding, then Lloyd (see the module).
///
/// Errors: a row holding NaN or ±inf (`Error::InvalidRow`, field `embeddings`), k = 0 or
/// k > N, D = 0, `Error::OutOfMemory`, `Error::Interrupted` once `cancel` is set (read per
/// block of rows, per pick and per iteration).
pub fn kmeans<T: Scalar>(x: ArrayView2<'_, T>, opts: &KMeansOptions, cancel: &Cancel) -> Result<KMeansResult<T>, Error> {
    let (n, d) = x.dim();
    let k = opts.clusters;
    if d == 0 {
        return Err(Error::Shape("embeddings has 0 dimensions; need at least 1".into()));
    }
    if k == 0 || k > n {
        return Err(Error::argument(
            "n_clusters",
            format!("n_clusters must be between 1 and the number of rows ({n}); got {k}"),
        ));
    }
    if n > u32::MAX as usize {
        return Err(Error::Shape(format!("embeddings has {n} rows; at most {} are supported", u32::MAX)));
    }
    if !(opts.tol >= 0.0 && opts.tol.is_finite()) {
        return Err(Error::argument("tol", format!("tol must be finite and >= 0; got {}", opts.tol)));
    }
    if opts.local_trials == Some(0) {
        return Err(Error::argument("local_trials", "local_trials must be at least 1; got 0"));
    }
    for (name, v) in [("init_rows", opts.init_rows), ("fit_rows", opts.fit_rows)] {
        if let Some(v) = v.filter(|&v| v < k) {
            return Err(Error::argument(name, format!("{name} must be at least n_clusters ({k}); got {v}")));
        }
    }
    let pool = workers(opts.threads, n.saturating_mul(d))?;
    let par = pool.is_some();
    run_in(&pool, || kmeans_on(x, opts, par, cancel))
}

fn kmeans_on<T: Scalar>(x: ArrayView2<'_, T>, opts: &KMeansOptions, par: bool, cancel: &Cancel) -> Result<KMeansResult<T>, Error> {
    let (n, d) = x.dim();
    let k = opts.clusters;
    // Validation only: the distances are taken from differences.
    checked_sq_norms(&x, Field::Embeddings, par, cancel)?;
    let mut rng = SplitMix64::new(opts.seed);
    let fit_n = opts.fit_rows.unwrap_or(n).min(n);
    let init_n = opts.init_rows.unwrap_or(fit_n).min(fit_n);
    let draws = if fit_n < n { fit_n } else { init_n };
    let drawn = if draws < n { samples(n, draws, &mut rng)? } else { Vec::new() };
    let sorted = |m: usize| {
        let mut v = drawn[..m.min(drawn.len())].to_vec();
        v.sort_unstable();
        v
    };
    let (fit_list, init_list) = (sorted(fit_n), sorted(init_n));
    let fit = if fit_n < n { RowSet::Listed(&fit_list) } else { RowSet::All(n) };
    let init = if init_n < n { RowSet::Listed(&init_list) } else { RowSet::All(n) };
    let trials = opts.local_trials.unwrap_or(2 + (k as f64).ln() as usize);
    let mut centers = plusplus(&x, init, k, trials, &mut rng, par, cancel)?;
    let tol = opts.tol * mean_variance(&x, fit, par);
    let mut labels = filled(fit.len(), 0i64)?;
    let mut prev = filled(fit.len(), -1i64)?;
    let mut mind = filled(fit.len(), 0.0f64)?;
    let mut iterations = 0;
    let mut strict = false;
    let mut converged = false;
    while iterations < opts.max_iter {
        cancel.check()?;
        iterations += 1;
        assign(&x, fit, &centers.view(), &mut labels, &mut mind, par, cancel)?;
        let new = update(&x, fit, &labels, &mind, &centers.view(), par, cancel)?;
        let shift: f64 = new
            .rows()
            .into_iter()
            .zip(centers.rows())
            .map(|(a, b)| a.iter().zip(b).map(|(&p, &q)| (p.to_f64() - q.to_f64()).powi(2)).sum::<f64>())
            .sum();
        centers = new;
        if labels == prev {
            // The update left every centre where it was: the labels fit the centres.
            strict = true;
            converged = true;
            break;
        }
        if shift <= tol {
            converged = true;
            break;
        }
        prev.copy_from_slice(&labels);
    }
    drop(prev);
    let (labels, mind) = if fit_n < n {
        // Every row of the pool against the final centres.
        let mut labels = filled(n, 0i64)?;
        let mut mind = filled(n, 0.0f64)?;
        assign(&x, RowSet::All(n), &centers.view(), &mut labels, &mut mind, par, cancel)?;
        (labels, mind)
    } else {
        if !strict {
            // The last labels were given against the centres before their update.
            assign(&x, fit, &centers.view(), &mut labels, &mut mind, par, cancel)?;
        }
        (labels, mind)
    };
    let inertia = block_sum(&mind, block_rows(d, k));
    cancel.check()?;
    Ok(KMeansResult { labels, centers, inertia, iterations, converged })
}

/// Σ of `v` block by block in block order (the sum does not depend on threads).
fn block_sum(v: &[f64], rows: usize) -> f64 {
    v.chunks(rows).map(|c| c.iter().sum::<f64>()).sum()
}

/// Mean over dimensions of the variance of the rows in `set` (two passes, f64).
fn mean_variance<T: Scalar>(x: &ArrayView2<'_, T>, set: RowSet<'_>, par: bool) -> f64 {
    let (m, d) = (set.len(), x.ncols());
    let rows = block_rows(d, 1);
    let tasks = m.div_ceil(rows);
    let add = |acc: Vec<f64>, b: Vec<f64>| acc.iter().zip(&b).map(|(p, q)| p + q).collect::<Vec<f64>>();
    let column_sums = |f: &(dyn Fn(usize, f64) -> f64 + Sync)| -> Vec<f64> {
        map_tasks(par, tasks, |t| {
            let mut s = vec![0.0f64; d];
            for i in t * rows..((t + 1) * rows).min(m) {
                for (j, (o, &v)) in s.iter_mut().zip(x.row(set.row(i))).enumerate() {
                    *o += f(j, v.to_f64());
                }
            }
            s
        })
        .into_iter()
        .fold(vec![0.0f64; d], add)
    };
    let mean: Vec<f64> = column_sums(&|_, v| v).into_iter().map(|s| s / m as f64).collect();
    let var = column_sums(&|j, v| (v - mean[j]) * (v - mean[j]));
    var.iter().sum::<f64>() / (m as f64 * d as f64)
}

/// The first position p of `set` (as an index into `w`) whose running sum of `w` exceeds
/// `target`, summing block by block (`sums` are the blocks' sums); the last position when
/// rounding leaves none (scikit-learn clips the same way).
pub(crate) fn draw(w: &[f64], sums: &[f64], rows: usize, target: f64) -> usize {
    let mut acc = 0.0;
    for (b, &s) in sums.iter().enumerate() {
        if acc + s > target {
            let lo = b * rows;
            for (i, &v) in w[lo..(lo + rows).min(w.len())].iter().enumerate() {
                acc += v;
                if acc > target {
                    return lo + i;
                }
            }
            return (lo + rows).min(w.len()) - 1;
        }
        acc += s;
    }
    w.len() - 1
}

/// k-means++ with greedy local trials over the rows of `set` (scikit-learn's
/// `_kmeans_plusplus`): the first centre uniformly at random; then per centre, `trials`
/// candidates drawn with probability ∝ D² (the squared distance to the nearest centre so
/// far) and the one that lowers Σ D² most kept (ties: the first drawn).
#[allow(clippy::too_many_arguments)]
fn plusplus<T: Scalar>(
    x: &ArrayView2<'_, T>,
    set: RowSet<'_>,
    k: usize,
    trials: usize,
    rng: &mut SplitMix64,
    par: bool,
    cancel: &Cancel,
) -> Result<Array2<T>, Error> {
    let (m, d) = (set.len(), x.ncols());
    let mut centers = Array2::<T>::zeros((k, d));
    let first = set.row(rng.below(m));
    centers.row_mut(0).assign(&x.row(first));
    let rows = block_rows(d, trials);
    let tasks = m.div_ceil(rows);
    // closest[i]: D² of the set's row i; dist: each row's D² after each candidate (m × t).
    let mut closest = filled(m, 0.0f64)?;
    let mut dist = filled(m * trials, 0.0f64)?;
    // D² to the first centre: one candidate, with no centre before it.
    let first_c = centers.slice(s![0..1, ..]);
    let mut sums = candidate_pass(x, set, &first_c, None, &mut closest, rows, par, cancel);
    let mut cand = Array2::<T>::zeros((trials, d));
    for c in 1..k {
        cancel.check()?;
        let pot: f64 = sums.iter().sum();
        let mut ids = Vec::with_capacity(trials);
        for t in 0..trials {
            let target = rng.uniform() * pot;
            let p = draw(&closest, &sums, rows, target);
            ids.push(p);
            cand.row_mut(t).assign(&x.row(set.row(p)));
        }
        let per = candidate_pass(x, set, &cand.view(), Some(&closest), &mut dist, rows, par, cancel);
        // per[block * trials + t]: block sums of each candidate's D².
        let pots: Vec<f64> = (0..trials).map(|t| (0..tasks).map(|b| per[b * trials + t]).sum()).collect();
        let best = (0..trials).fold(0, |b, t| if pots[t] < pots[b] { t } else { b });
        for (c, row) in closest.iter_mut().zip(dist.chunks(trials)) {
            *c = row[best];
        }
        sums = (0..tasks).map(|b| per[b * trials + best]).collect();
        centers.row_mut(c).assign(&x.row(set.row(ids[best])));
    }
    cancel.check()?;
    Ok(centers)
}

#[inline(always)]
fn candidate_rows<T: Real, I: Isa>(
    x: &ArrayView2<'_, T>,
    set: RowSet<'_>,
    cand: &ArrayView2<'_, T>,
    closest: Option<&[f64]>,
    lo: usize,
    o: &mut [f64],
) -> Vec<f64> {
    let t = cand.nrows();
    let mut sums = vec![0.0f64; t];
    let (mut buf, mut cbuf) = (Vec::new(), Vec::new());
    for (r, orow) in o.chunks_mut(t).enumerate() {
        let i = lo + r;
        let xr = row_slice(x, set.row(i), &mut buf);
        for (j, ov) in orow.iter_mut().enumerate() {
            let c = row_slice(cand, j, &mut cbuf);
            let mut v = sq_diff_f64::<I, T>(xr, 1.0, c, 1.0);
            if let Some(c) = closest {
                v = v.min(c[i]);
            }
            *ov = v;
            sums[j] += v;
        }
    }
    sums
}

multiversion! {
    fn candidate_rows_dispatch<T: Real>(
        x: &ArrayView2<'_, T>,
        set: RowSet<'_>,
        cand: &ArrayView2<'_, T>,
        closest: Option<&[f64]>,
        lo: usize,
        o: &mut [f64],
    ) -> Vec<f64> => candidate_rows
}

/// For every row i of `set` and candidate t: min(closest_i, ‖x_i − cand_t‖²) (with no
/// `closest`, the distance itself) into `out[i * t + t]`; returns each block's sums, block
/// by block, candidate by candidate. Distances from the differences (f64 sums), row by row:
/// a matrix product would pack (copy) every row for a few candidates' columns.
#[allow(clippy::too_many_arguments)]
fn candidate_pass<T: Scalar>(
    x: &ArrayView2<'_, T>,
    set: RowSet<'_>,
    cand: &ArrayView2<'_, T>,
    closest: Option<&[f64]>,
    out: &mut [f64],
    rows: usize,
    par: bool,
    cancel: &Cancel,
) -> Vec<f64> {
    let t = cand.nrows();
    let one = |(b, o): (usize, &mut [f64])| -> Vec<f64> {
        if cancel.is_cancelled() {
            return vec![0.0f64; t];
        }
        candidate_rows_dispatch(x, set, cand, closest, b * rows, o)
    };
    let out = &mut out[..set.len() * t];
    let per: Vec<Vec<f64>> = if par {
        out.par_chunks_mut(rows * t).enumerate().map(one).collect()
    } else {
        out.chunks_mut(rows * t).enumerate().map(one).collect()
    };
    per.concat()
}

/// Labels every row of `set` with its nearest centre (ties: the lowest) by the expansion
/// ‖c‖² − 2 x·c, and `mind` with the exact ‖x − c_label‖² (differences, f64 sums).
#[allow(clippy::too_many_arguments)]
fn assign<T: Scalar>(
    x: &ArrayView2<'_, T>,
    set: RowSet<'_>,
    centers: &ArrayView2<'_, T>,
    labels: &mut [i64],
    mind: &mut [f64],
    par: bool,
    cancel: &Cancel,
) -> Result<(), Error> {
    let (k, d) = centers.dim();
    let cn: Vec<T> = centers.rows().into_iter().map(|r| T::from_f64(r.iter().map(|v| v.to_f64() * v.to_f64()).sum())).collect();
    let rows = block_rows(d, k);
    let one = |(b, (lab, md)): (usize, (&mut [i64], &mut [f64]))| {
        if cancel.is_cancelled() {
            return;
        }
        let lo = b * rows;
        let hi = lo + lab.len();
        let (mut xb, mut gb) = (Vec::new(), Vec::new());
        let block = set_block(x, set, lo, hi, &mut xb);
        let g = gram(&block, centers, &mut gb);
        let mut cbuf = Vec::new();
        for (r, grow) in g.rows().into_iter().enumerate() {
            let mut best = 0usize;
            let mut best_v = T::INF;
            for (j, (&gv, &c)) in grow.iter().zip(&cn).enumerate() {
                let v = c - (gv + gv);
                if v < best_v {
                    best_v = v;
                    best = j;
                }
            }
            lab[r] = best as i64;
            let row = block.row(r);
            let xr = match row.as_slice() {
                Some(s) => s,
                None => {
                    cbuf.clear();
                    cbuf.extend(row.iter().copied());
                    &cbuf[..]
                }
            };
            md[r] = exact_sq(xr, centers.row(best));
        }
    };
    if par {
        labels.par_chunks_mut(rows).zip(mind.par_chunks_mut(rows)).enumerate().for_each(one);
    } else {
        labels.chunks_mut(rows).zip(mind.chunks_mut(rows)).enumerate().for_each(one);
    }
    cancel.check()
}

#[inline(always)]
fn exact_sq_body<T: Real, I: Isa>(a: &[T], b: &[T]) -> f64 {
    sq_diff_f64::<I, T>(a, 1.0, b, 1.0)
}

multiversion! {
    fn exact_sq_dispatch<T: Real>(a: &[T], b: &[T]) -> f64 => exact_sq_body
}

/// ‖a − b‖² with the differences taken first (f64 sums).
pub(crate) fn exact_sq<T: Real>(a: &[T], b: ArrayView1<'_, T>) -> f64 {
    match b.as_slice() {
        Some(s) => exact_sq_dispatch(a, s),
        None => exact_sq_dispatch(a, &b.to_vec()),
    }
}

/// New centres: each the mean of its rows (f64 sums over its rows in row order, clusters
/// in parallel). An empty cluster takes the row farthest from its centre (largest `mind`,
/// ties: the lowest row), which leaves its old cluster, as scikit-learn re-seeds; rows whose
/// cluster would be left empty are passed over.
fn update<T: Scalar>(
    x: &ArrayView2<'_, T>,
    set: RowSet<'_>,
    labels: &[i64],
    mind: &[f64],
    old: &ArrayView2<'_, T>,
    par: bool,
    cancel: &Cancel,
) -> Result<Array2<T>, Error> {
    let (k, d) = old.dim();
    let m = set.len();
    // Counting sort of the rows by label: `order` lists cluster 0's rows, then 1's, ...
    let mut counts = vec![0usize; k];
    for &l in labels {
        counts[l as usize] += 1;
    }
    let mut start = vec![0usize; k + 1];
    for j in 0..k {
        start[j + 1] = start[j] + counts[j];
    }
    let mut order: Vec<u32> = filled(m, 0u32)?;
    let mut fill = start.clone();
    for (i, &l) in labels.iter().enumerate() {
        order[fill[l as usize]] = i as u32;
        fill[l as usize] += 1;
    }
    let mut sums = filled(k * d, 0.0f64)?;
    let one = |(j, s): (usize, &mut [f64])| {
        if cancel.is_cancelled() {
            return;
        }
        for &i in &order[start[j]..start[j + 1]] {
            for (o, &v) in s.iter_mut().zip(x.row(set.row(i as usize))) {
                *o += v.to_f64();
            }
        }
    };
    if par {
        sums.par_chunks_mut(d).enumerate().for_each(one);
    } else {
        sums.chunks_mut(d).enumerate().for_each(one);
    }
    cancel.check()?;
    let empty: Vec<usize> = (0..k).filter(|&j| counts[j] == 0).collect();
    if !empty.is_empty() {
        let mut far: Vec<usize> = (0..m).collect();
        far.sort_unstable_by(|&a, &b| mind[b].total_cmp(&mind[a]).then(a.cmp(&b)));
        let mut next = far.into_iter();
        for &e in &empty {
            let Some(i) = next.by_ref().find(|&i| counts[labels[i] as usize] > 1) else { break };
            let from = labels[i] as usize;
            let row = x.row(set.row(i));
            for (q, &v) in row.iter().enumerate() {
                sums[from * d + q] -= v.to_f64();
                sums[e * d + q] = v.to_f64();
            }
            counts[from] -= 1;
            counts[e] = 1;
        }
    }
    let mut centers = old.to_owned();
    for (j, mut c) in centers.axis_iter_mut(Axis(0)).enumerate() {
        if counts[j] > 0 {
            let inv = 1.0 / counts[j] as f64;
            for (o, &s) in c.iter_mut().zip(&sums[j * d..(j + 1) * d]) {
                *o = T::from_f64(s * inv);
            }
        }
    }
    Ok(centers)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three well-separated blobs in 5 dimensions, `per` rows each, interleaved.
    pub(crate) fn blobs(per: usize, seed: u64) -> Array2<f64> {
        let mut rng = SplitMix64::new(seed);
        let centres = [[0.0; 5], [10.0, 0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 10.0, 10.0, 0.0]];
        Array2::from_shape_fn((3 * per, 5), |(i, j)| centres[i % 3][j] + rng.uniform() - 0.5)
    }

    #[test]
    fn rng_is_splitmix64() {
        // Reference values of SplitMix64 from seed 0.
        let mut r = SplitMix64::new(0);
        assert_eq!(r.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(r.next_u64(), 0x6E78_9E6A_A1B9_65F4);
        assert!(r.uniform() < 1.0);
        assert!(r.below(7) < 7);
    }

    #[test]
    fn finds_separated_blobs_whatever_the_threads() {
        let x = blobs(400, 3);
        let mut want = None;
        for threads in [1, 2, 3] {
            let mut o = KMeansOptions::new(3, 7);
            o.threads = Some(threads);
            let r = kmeans(x.view(), &o, &Cancel::new()).unwrap();
            // Rows i and i + 3 share a blob.
            for i in 0..x.nrows() - 3 {
                assert_eq!(r.labels[i], r.labels[i + 3]);
            }
            let distinct: std::collections::BTreeSet<i64> = r.labels[..3].iter().copied().collect();
            assert_eq!(distinct.len(), 3);
            assert!(r.converged);
            match &want {
                None => want = Some(r),
                Some(w) => assert_eq!(&r, w, "threads={threads}"),
            }
        }
    }

    #[test]
    fn samples_and_f32() {
        let x = blobs(3000, 5);
        let mut o = KMeansOptions::new(3, 1);
        o.fit_rows = Some(600);
        o.init_rows = Some(60);
        let r = kmeans(x.view(), &o, &Cancel::new()).unwrap();
        for i in 0..x.nrows() - 3 {
            assert_eq!(r.labels[i], r.labels[i + 3]);
        }
        let r32 = kmeans(x.mapv(|v| v as f32).view(), &o, &Cancel::new()).unwrap();
        assert_eq!(r32.labels, r.labels);
        assert!((r32.inertia - r.inertia).abs() <= 1e-4 * r.inertia);
    }

    #[test]
    fn empty_clusters_and_duplicates() {
        // Four distinct points, each many times, and k = 4: every centre is a point.
        let base = [[0.0, 0.0], [5.0, 0.0], [0.0, 5.0], [5.0, 5.0]];
        let x = Array2::from_shape_fn((40, 2), |(i, j)| base[i % 4][j]);
        let r = kmeans(x.view(), &KMeansOptions::new(4, 0), &Cancel::new()).unwrap();
        assert_eq!(r.inertia, 0.0);
        let distinct: std::collections::BTreeSet<i64> = r.labels.iter().copied().collect();
        assert_eq!(distinct.len(), 4);
        // k = N with duplicates: some clusters must stay empty; no panic, labels in range.
        let r = kmeans(x.view(), &KMeansOptions::new(40, 0), &Cancel::new()).unwrap();
        assert!(r.labels.iter().all(|&l| (0..40).contains(&l)));
        assert_eq!(r.inertia, 0.0);
    }

    #[test]
    fn bad_input_is_an_error() {
        let mut x = blobs(10, 1);
        assert!(matches!(kmeans(x.view(), &KMeansOptions::new(0, 0), &Cancel::new()), Err(Error::Argument { .. })));
        assert!(matches!(kmeans(x.view(), &KMeansOptions::new(31, 0), &Cancel::new()), Err(Error::Argument { .. })));
        x[[7, 2]] = f64::NAN;
        x[[9, 0]] = f64::INFINITY;
        let e = kmeans(x.view(), &KMeansOptions::new(2, 0), &Cancel::new()).unwrap_err();
        assert_eq!(e.to_string(), "embeddings row 7: NaN at dimension 2");
        let c = Cancel::new();
        c.cancel();
        let big = Array2::from_shape_fn((20_000, 8), |(i, j)| ((i * 7 + j) % 13) as f32);
        assert!(matches!(kmeans(big.view(), &KMeansOptions::new(5, 0), &c), Err(Error::Interrupted)));
    }
}

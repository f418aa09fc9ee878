//! k-means: k-means++ seeding with greedy local trials (Arthur & Vassilvitskii 2007, as
//! scikit-learn's `_kmeans_plusplus` runs it), then Lloyd iterations (scikit-learn's
//! `_kmeans_single_lloyd`: tolerance on the centres' shift, strict convergence when no label
//! changes, empty clusters re-seeded from the rows farthest from their centres).
//!
//! Cost. One Lloyd iteration is O(N·k·D): at N = 10⁶, k = 10³, D = 256, 2.6·10¹¹
//! multiply-adds. The distances come from the expansion ‖x‖² + ‖c‖² − 2 x·c, the x·c of a
//! block of rows by all centres as one matrix product (`ndarray::linalg::general_mat_mul`,
//! i.e. the `matrixmultiply` crate's packed GEMM, AVX2/FMA where the CPU has them, one
//! product per block of rows, blocks in parallel). Two samples keep big pools in minutes,
//! both drawn once from one seeded permutation (`init_rows` ⊆ `fit_rows`):
//! - k-means++ seeding runs on `init_rows` rows, gathered once: each of its k picks reads
//!   every seeding row for 2 + ⌊ln k⌋ candidates, a memory-bound pass that would cost k
//!   passes over the whole pool. A row is skipped when the triangle inequality says the
//!   candidate cannot come nearer than its nearest centre, and its candidate distance is
//!   taken from a dot product in the input's precision when that, with its rounding bound,
//!   is above the row's D²; only the rest are computed from the differences (f64), so the
//!   D² are those of the direct computation everywhere;
//! - Lloyd iterations run on `fit_rows` rows (faiss's rule is at most 256 rows per centre),
//!   gathered once into one block, and one last assignment labels every row of the pool
//!   against the final centres. The iterations keep Hamerly's bounds per row (`Bounded`):
//!   a row whose bounds, less the assignment's rounding bound, prove its label unchanged
//!   is not read; the centres' integer sums are updated by the rows that moved. Labels,
//!   centres and iterations are those of plain Lloyd iterations bit for bit (`step`, which
//!   `pickaxe.ray` runs).
//!
//! Determinism, and the pieces. Every sum over rows is exact, so it does not depend on the
//! order the rows are added in, hence on the threads or on how the rows are split between
//! machines: the fit rows' column sums and squared deviations (the tolerance) and the
//! inertia are `ExactSum`s (integer buckets by binary exponent); a centre's coordinate sum
//! is a fixed-point integer, each value rounded to a multiple of 2^−s_j with s_j = 50 − e_j
//! where every |x_ij| of the fit rows is below 2^e_j (at most 2^−50 of the column's largest
//! value, well under a float32's rounding), summed in i128. A row's label depends on that
//! row and the centres alone. So the steps can run where the rows are (`pickaxe.ray` runs
//! them on the workers that hold the blocks) and combine to the in-process result bit for
//! bit: `sample_rows` and `seed_centers` on the driver, `moments`, `step`, `farthest` and
//! `label_all` per block of rows, `fit_stats` and `new_centers` on the combined parts.

use std::sync::Arc;

use ndarray::{s, Array2, ArrayView1, ArrayView2, ArrayViewMut2, Axis, LinalgScalar};
use rayon::prelude::*;
use rayon::ThreadPool;

use crate::cancel::Cancel;
use crate::error::{filled, Error, Fault, Field};
use crate::knn::{dot_f64, row_slice, sq_diff_f64, Keyed};
use crate::math::{madd, Isa, Real};
use crate::simd::multiversion;
use crate::threads::{self, PARALLEL_MIN_VALUES};

/// The float types the clustering kernels run on (f32, f64): `Real` with a matrix product
/// and (value, id) keys.
pub trait Scalar: Real + LinalgScalar + Keyed {
    /// A view's rows as f32 (columns contiguous), when Self is f32: `chain_gram`'s input.
    fn f32_rows<'a>(_v: &ArrayView2<'a, Self>) -> Option<RowsF32<'a>> {
        None
    }
    fn as_f32_mut(_v: &mut [Self]) -> Option<&mut [f32]> {
        None
    }
}
impl Scalar for f32 {
    fn f32_rows<'a>(v: &ArrayView2<'a, f32>) -> Option<RowsF32<'a>> {
        RowsF32::of(v)
    }
    fn as_f32_mut(v: &mut [f32]) -> Option<&mut [f32]> {
        Some(v)
    }
}
impl Scalar for f64 {}

/// SplitMix64 (Steele, Lea & Flood 2014): the clustering kernels' random numbers. Simple
/// enough to be re-implemented in a few lines by a test's reference (tests/test_cluster.py).
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    /// The state: `SplitMix64::new(state)` continues the stream from here.
    pub fn state(&self) -> u64 {
        self.0
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

/// `f(par)` on the pool `workers(threads, work)` gives (`par`: whether there is one): the
/// pieces of `kmeans` called one by one (pickaxe.ray's workers and driver).
pub fn on_threads<R: Send>(
    threads: Option<usize>, work: usize, f: impl FnOnce(bool) -> Result<R, Error> + Send,
) -> Result<R, Error> {
    let pool = workers(threads, work)?;
    let par = pool.is_some();
    run_in(&pool, || f(par))
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
    x: &ArrayView2<'_, T>, field: Field, par: bool, cancel: &Cancel,
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

/// g = a · bᵀ into `buf` (resized, reused: the product overwrites every value), as an
/// (a rows × b rows) matrix.
pub(crate) fn gram<'a, T: Scalar>(
    a: &ArrayView2<'_, T>, b: &ArrayView2<'_, T>, buf: &'a mut Vec<T>,
) -> ArrayViewMut2<'a, T> {
    let (r, c) = (a.nrows(), b.nrows());
    // general_mat_mul with beta = 0 writes every entry without reading it: no zeroing
    buf.resize(r * c, T::ZERO);
    if !chain_gram(a, b, &mut buf[..r * c]) {
        let mut g = ArrayViewMut2::from_shape((r, c), &mut buf[..r * c]).expect("gram shape");
        ndarray::linalg::general_mat_mul(T::ONE, a, &b.t(), T::ZERO, &mut g);
    }
    ArrayViewMut2::from_shape((r, c), &mut buf[..r * c]).expect("gram shape")
}

// -- the f32 Gram kernel ------------------------------------------------------------------

/// matrixmultiply's depth block for f32 (its `S_KC`): a product over more dimensions is
/// summed block by block, each block's sum added to the total.
const CHAIN_KC: usize = 256;

/// g = a · bᵀ (f32) into `out` (a rows × b rows) the way matrixmultiply's FMA kernels sum
/// it, when the CPU runs pickaxe's AVX-512 kernels (which implies the FMA that makes
/// matrixmultiply use those): per value, the chain acc ← fma(a_k, b_k, acc) from 0 over
/// each `CHAIN_KC` dimensions, the blocks' chains added in order, so the same values bit
/// for bit (the labels and bounds computed from them do not change). Rows of `a` and `b`
/// must be contiguous (unit column stride). Returns false (nothing written) otherwise.
fn chain_gram<T: Scalar>(a: &ArrayView2<'_, T>, b: &ArrayView2<'_, T>, out: &mut [T]) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        if crate::simd::level() != crate::simd::SimdLevel::Avx512 || a.ncols() == 0 {
            return false;
        }
        let (Some(ad), Some(bd), Some(o)) = (T::f32_rows(a), T::f32_rows(b), T::as_f32_mut(out)) else {
            return false;
        };
        // SAFETY: the AVX-512 level is only set on a CPU that has AVX-512 F (simd::level).
        unsafe { chain_x86::gram(ad, b.nrows(), bd, o) };
        true
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (a, b, out);
        false
    }
}

/// A 2-d f32 view's rows (pointer to row 0, rows, columns, row stride), when its columns
/// are contiguous.
#[derive(Clone, Copy)]
pub struct RowsF32<'a> {
    ptr: *const f32,
    rows: usize,
    cols: usize,
    stride: usize,
    _life: std::marker::PhantomData<&'a f32>,
}

impl<'a> RowsF32<'a> {
    fn of(v: &ArrayView2<'a, f32>) -> Option<Self> {
        let (rows, cols) = v.dim();
        let st = v.strides();
        if (cols > 1 && st[1] != 1) || (rows > 1 && st[0] < cols as isize) {
            return None;
        }
        Some(RowsF32 {
            ptr: v.as_ptr(),
            rows,
            cols,
            stride: if rows > 1 { st[0] as usize } else { cols },
            _life: std::marker::PhantomData,
        })
    }
}

#[cfg(target_arch = "x86_64")]
mod chain_x86 {
    use super::{RowsF32, CHAIN_KC};
    use std::arch::x86_64::*;

    /// Rows per tile and blocks of 16 b rows per tile (8 × 3 sums in registers).
    const R: usize = 8;
    const N: usize = 3;

    /// See `chain_gram`. `c` rows of `b`; `out` is a.rows × c, row-major.
    ///
    /// # Safety
    /// The CPU has AVX-512 F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn gram(a: RowsF32<'_>, c: usize, b: RowsF32<'_>, out: &mut [f32]) {
        let d = a.cols;
        let blocks = c.div_ceil(16);
        // b by blocks of 16 rows, dimension-major: block j, dimension k at (j d + k) 16
        let mut bp = vec![0.0f32; blocks * d * 16];
        for j in 0..c {
            let row = std::slice::from_raw_parts(b.ptr.add(j * b.stride), d);
            let (blk, l) = (j / 16, j % 16);
            for (k, &v) in row.iter().enumerate() {
                bp[(blk * d + k) * 16 + l] = v;
            }
        }
        let mut i = 0;
        while i < a.rows {
            if a.rows - i >= R {
                row_tiles::<R>(a, i, &bp, blocks, c, out);
                i += R;
            } else {
                row_tiles::<1>(a, i, &bp, blocks, c, out);
                i += 1;
            }
        }
    }

    #[inline(always)]
    unsafe fn row_tiles<const RR: usize>(
        a: RowsF32<'_>, i0: usize, bp: &[f32], blocks: usize, c: usize, out: &mut [f32],
    ) {
        let mut jb = 0;
        while jb < blocks {
            if blocks - jb >= N {
                tile::<RR, N>(a, i0, bp, jb, c, out);
                jb += N;
            } else {
                tile::<RR, 1>(a, i0, bp, jb, c, out);
                jb += 1;
            }
        }
    }

    #[inline(always)]
    unsafe fn tile<const RR: usize, const NN: usize>(
        a: RowsF32<'_>, i0: usize, bp: &[f32], jb: usize, c: usize, out: &mut [f32],
    ) {
        let d = a.cols;
        let ap = a.ptr.add(i0 * a.stride);
        let mut k0 = 0;
        while k0 < d {
            let k1 = (k0 + CHAIN_KC).min(d);
            let mut acc = [[_mm512_setzero_ps(); NN]; RR];
            for k in k0..k1 {
                let mut bv = [_mm512_setzero_ps(); NN];
                #[allow(clippy::needless_range_loop)]
                for nb in 0..NN {
                    bv[nb] = _mm512_loadu_ps(bp.as_ptr().add(((jb + nb) * d + k) * 16));
                }
                for r in 0..RR {
                    let av = _mm512_set1_ps(*ap.add(r * a.stride + k));
                    for nb in 0..NN {
                        acc[r][nb] = _mm512_fmadd_ps(av, bv[nb], acc[r][nb]);
                    }
                }
            }
            for r in 0..RR {
                for nb in 0..NN {
                    let j0 = (jb + nb) * 16;
                    let lanes = (c - j0).min(16);
                    let mask: __mmask16 = if lanes == 16 { u16::MAX } else { ((1u32 << lanes) - 1) as u16 };
                    let at = out.as_mut_ptr().add((i0 + r) * c + j0);
                    // later depth blocks: C ← (this block's chain) + C, as matrixmultiply's β = 1
                    let v =
                        if k0 == 0 { acc[r][nb] } else { _mm512_add_ps(acc[r][nb], _mm512_maskz_loadu_ps(mask, at)) };
                    _mm512_mask_storeu_ps(at, mask, v);
                }
            }
            k0 = k1;
        }
    }
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
pub fn kmeans<T: Scalar>(
    x: ArrayView2<'_, T>, opts: &KMeansOptions, cancel: &Cancel,
) -> Result<KMeansResult<T>, Error> {
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

fn kmeans_on<T: Scalar>(
    x: ArrayView2<'_, T>, opts: &KMeansOptions, par: bool, cancel: &Cancel,
) -> Result<KMeansResult<T>, Error> {
    let (n, k) = (x.nrows(), opts.clusters);
    // Validation, and the rows' squared norms (the bounds of the Lloyd iterations).
    let all_norms = checked_sq_norms(&x, Field::Embeddings, par, cancel)?;
    let fit_n = opts.fit_rows.unwrap_or(n).min(n);
    let init_n = opts.init_rows.unwrap_or(fit_n).min(fit_n);
    let plan = sample_rows(n, fit_n, init_n, opts.seed)?;
    let mut rng = SplitMix64::new(plan.state);
    // The seeding rows gathered in order (each pick reads them all: contiguous rows stream
    // from memory; the same centres as seeding on them in place, as `seed_centers` does).
    let mut centers = match &plan.init {
        Some(rows) => {
            let xi = gather_rows(&x, rows)?;
            let ni: Vec<f64> = rows.iter().map(|&i| all_norms[i as usize]).collect();
            plusplus(&xi.view(), &ni, k, local_trials(k, opts.local_trials), &mut rng, par, cancel)?
        }
        None => plusplus(&x, &all_norms, k, local_trials(k, opts.local_trials), &mut rng, par, cancel)?,
    };
    // The fit rows, gathered once: Lloyd reads them at every iteration.
    let gathered = match &plan.fit {
        Some(rows) => Some(gather_rows(&x, rows)?),
        None => None,
    };
    let fit = gathered.as_ref().map_or(x.view(), |g| g.view());
    let m = fit.nrows();
    let norms = match &plan.fit {
        Some(rows) => rows.iter().map(|&i| all_norms[i as usize]).collect(),
        None => all_norms,
    };
    let (max_abs, sums) = moments(&fit, None, par, cancel)?;
    let mean = means(&sums, m);
    let (_, dev) = moments(&fit, Some(&mean), par, cancel)?;
    let (scales, tol) = fit_stats(&max_abs, &dev, m, opts.tol);
    let position = |i: usize| plan.fit.as_ref().map_or(i as u64, |f| f[i] as u64);
    let mut lloyd = Bounded::new(norms, k, fit.ncols())?;
    let mut iterations = 0;
    let mut converged = false;
    while iterations < opts.max_iter {
        cancel.check()?;
        iterations += 1;
        let changed = lloyd.step(&fit, &centers.view(), &scales, par, cancel)?;
        let far = if lloyd.counts.contains(&0) {
            farthest(&fit, &centers.view(), &lloyd.labels, &position, k, par, cancel)?
        } else {
            Vec::new()
        };
        // new_centers moves a re-seeding row between the sums it is given: copies, so the
        // kept sums stay those of the labels (as the next step's full sums would be)
        let (mut counts, mut sums) = (lloyd.counts.clone(), lloyd.sums.clone());
        let (new, shift) = new_centers(&mut counts, &mut sums, &scales, &centers.view(), &far);
        lloyd.moved(&centers.view(), &new.view());
        centers = new;
        // No label changed: the update left every centre where it was.
        if changed == 0 || shift <= tol {
            converged = true;
            break;
        }
    }
    drop(gathered);
    // Every row of the pool against the final centres (after a strict convergence these
    // are the last labels again).
    let (labels, inertia) = label_all(&x, &centers.view(), par, cancel)?;
    Ok(KMeansResult { labels, centers, inertia: inertia.value(), iterations, converged })
}

/// Lloyd's iterations with Hamerly's bounds (Hamerly 2010, "Making k-means even faster"):
/// per fit row an upper bound on its distance to its centre and a lower bound on its
/// distance to every other centre. After the centres move by δ_j, the upper bound grows by
/// δ of its centre and the lower bound shrinks by the largest δ of the others; a row whose
/// bounds stay apart by more than the rounding of the expansion cannot change label and is
/// not read. The others are assigned as `assign` does (the same Gram values and `nearest`),
/// so the labels are those of plain Lloyd iterations bit for bit (the margin `slack`
/// covers every rounding of the expansion ‖c‖² − 2 x·c the assignment compares), and the
/// centres' fixed-point sums are kept and updated by the rows that changed cluster (integer
/// sums: the same values as summing every row again).
struct Bounded {
    /// ‖x_i‖² of the fit rows (f64).
    norms: Vec<f64>,
    labels: Vec<i64>,
    /// Bounds on the exact distances ‖x_i − c_label‖ and min over other centres.
    upper: Vec<f64>,
    lower: Vec<f64>,
    counts: Vec<i64>,
    sums: Vec<i128>,
    /// Whether the next step reads every row (the first).
    fresh: bool,
}

/// A block of rows of `Bounded`: its index, labels, upper and lower bounds.
type BoundsPart<'a> = (usize, (&'a mut [i64], (&'a mut [f64], &'a mut [f64])));

/// Relative slack on the f64 arithmetic of the bounds (their rounding is below 1e-15).
const BOUND_SLACK: f64 = 1e-12;

impl Bounded {
    fn new(norms: Vec<f64>, k: usize, d: usize) -> Result<Self, Error> {
        let m = norms.len();
        Ok(Bounded {
            labels: filled(m, -1i64)?,
            upper: filled(m, f64::INFINITY)?,
            lower: filled(m, 0.0f64)?,
            counts: vec![0; k],
            sums: filled(k * d, 0i128)?,
            norms,
            fresh: true,
        })
    }

    /// The largest error of an assignment's expansion value cn_j − 2 g_j (T arithmetic,
    /// `assign`) for a row of squared norm `n2` against centres of norm at most `cmax`:
    /// the Gram value's |error| ≤ γ_D ‖x‖‖c‖ (any summation order), the rounded ‖c‖² and
    /// the subtraction u each; doubled for safety, plus f64 slack.
    fn slack(unit: f64, d: usize, n2: f64, cmax: f64) -> f64 {
        let gamma = d as f64 * unit / (1.0 - d as f64 * unit);
        let xn = n2.sqrt();
        2.0 * ((2.0 * gamma + 2.0 * unit) * xn * cmax + 2.0 * unit * cmax * cmax) + BOUND_SLACK * (n2 + cmax * cmax)
    }

    /// One assignment: the rows whose bounds do not settle their label are assigned
    /// (Gram blocks against every centre), the sums updated. Returns the labels changed.
    fn step<T: Scalar>(
        &mut self, x: &ArrayView2<'_, T>, centers: &ArrayView2<'_, T>, scales: &[f64], par: bool, cancel: &Cancel,
    ) -> Result<usize, Error> {
        let (k, d) = centers.dim();
        let unit = unit_roundoff::<T>();
        let cn: Vec<T> =
            centers.rows().into_iter().map(|r| T::from_f64(r.iter().map(|v| v.to_f64() * v.to_f64()).sum())).collect();
        let cmax = cn.iter().map(|v| v.to_f64()).fold(0.0f64, f64::max).sqrt() * (1.0 + BOUND_SLACK);
        let rows = block_rows(d, k);
        let fresh = self.fresh;
        let norms = &self.norms;
        let one = |(b, (lab, (up, lo))): BoundsPart<'_>| -> Vec<(u32, i64, i64)> {
            let mut moves = Vec::new();
            if cancel.is_cancelled() {
                return moves;
            }
            let base = b * rows;
            let todo: Vec<usize> = (0..lab.len())
                .filter(|&r| {
                    if fresh {
                        return true;
                    }
                    let e = Self::slack(unit, d, norms[base + r], cmax);
                    (up[r] * up[r] + 2.0 * e).partial_cmp(&(lo[r] * lo[r])) != Some(std::cmp::Ordering::Less)
                })
                .collect();
            if todo.is_empty() {
                return moves;
            }
            let mut data: Vec<T> = Vec::with_capacity(todo.len() * d);
            let mut buf = Vec::new();
            for &r in &todo {
                data.extend_from_slice(row_slice(x, base + r, &mut buf));
            }
            let block = ArrayView2::from_shape((todo.len(), d), &data[..]).expect("block shape");
            let mut gb = Vec::new();
            let g = gram(&block, centers, &mut gb);
            for (&r, grow) in todo.iter().zip(g.rows()) {
                let grow = grow.as_slice().expect("gram rows are contiguous");
                let (best, v1, v2) = nearest2(grow, &cn);
                let (v1, v2) = (v1.to_f64(), v2.to_f64());
                let n2 = norms[base + r];
                let e = Self::slack(unit, d, n2, cmax);
                up[r] = (n2 + v1 + e).max(0.0).sqrt() * (1.0 + BOUND_SLACK);
                lo[r] = if v2.is_finite() { (n2 + v2 - e).max(0.0).sqrt() * (1.0 - BOUND_SLACK) } else { 0.0 };
                let best = best as i64;
                if lab[r] != best {
                    moves.push(((base + r) as u32, lab[r], best));
                    lab[r] = best;
                }
            }
            moves
        };
        let parts = self.labels.chunks_mut(rows).zip(self.upper.chunks_mut(rows).zip(self.lower.chunks_mut(rows)));
        let per: Vec<Vec<(u32, i64, i64)>> = if par {
            self.labels
                .par_chunks_mut(rows)
                .zip(self.upper.par_chunks_mut(rows).zip(self.lower.par_chunks_mut(rows)))
                .enumerate()
                .map(one)
                .collect()
        } else {
            parts.enumerate().map(one).collect()
        };
        cancel.check()?;
        let changed = per.iter().map(Vec::len).sum();
        if fresh {
            let (counts, sums) = cluster_sums(x, &self.labels, k, scales, par, cancel)?;
            self.counts = counts;
            self.sums = sums;
            self.fresh = false;
        } else {
            let mut buf = Vec::new();
            let mut acc = vec![0i64; d];
            for &(i, from, to) in per.iter().flatten() {
                acc.iter_mut().for_each(|a| *a = 0);
                add_fixed(&mut acc, row_slice(x, i as usize, &mut buf), scales);
                for (q, &a) in acc.iter().enumerate() {
                    self.sums[from as usize * d + q] -= a as i128;
                    self.sums[to as usize * d + q] += a as i128;
                }
                self.counts[from as usize] -= 1;
                self.counts[to as usize] += 1;
            }
        }
        Ok(changed)
    }

    /// The bounds after the centres moved from `old` to `new`.
    fn moved<T: Scalar>(&mut self, old: &ArrayView2<'_, T>, new: &ArrayView2<'_, T>) {
        let delta: Vec<f64> = old
            .rows()
            .into_iter()
            .zip(new.rows())
            .map(|(a, b)| {
                let s: f64 = a.iter().zip(b.iter()).map(|(&p, &q)| (p.to_f64() - q.to_f64()).powi(2)).sum();
                s.sqrt() * (1.0 + BOUND_SLACK)
            })
            .collect();
        // the largest δ, and the largest of the others for the cluster that has it
        let top = (0..delta.len()).fold(0, |b, j| if delta[j] > delta[b] { j } else { b });
        let second = (0..delta.len()).filter(|&j| j != top).map(|j| delta[j]).fold(0.0f64, f64::max);
        for ((u, l), &lab) in self.upper.iter_mut().zip(self.lower.iter_mut()).zip(&self.labels) {
            let a = lab as usize;
            *u = (*u + delta[a]) * (1.0 + BOUND_SLACK);
            let other = if a == top { second } else { delta[top] };
            *l = ((*l - other) * (1.0 - BOUND_SLACK)).max(0.0);
        }
    }
}

/// Candidates per k-means++ pick: `given`, or 2 + ⌊ln k⌋ (scikit-learn).
pub fn local_trials(k: usize, given: Option<usize>) -> usize {
    given.unwrap_or(2 + (k as f64).ln() as usize)
}

/// Which rows k-means works on, drawn from `seed`: `fit` the Lloyd rows and `init` the
/// seeding rows (ascending positions in 0..n; None: every row), and the random state
/// the seeding continues from (`seed_centers`).
#[derive(Clone, Debug)]
pub struct RowPlan {
    pub fit: Option<Vec<u32>>,
    pub init: Option<Vec<u32>>,
    pub state: u64,
}

/// The fit and seeding rows of `kmeans` for `fit_n` and `init_n` ≤ `fit_n` ≤ n rows.
pub fn sample_rows(n: usize, fit_n: usize, init_n: usize, seed: u64) -> Result<RowPlan, Error> {
    let mut rng = SplitMix64::new(seed);
    let draws = if fit_n < n { fit_n } else { init_n };
    let drawn = if draws < n { samples(n, draws, &mut rng)? } else { Vec::new() };
    let sorted = |m: usize| {
        (m < n).then(|| {
            let mut v = drawn[..m.min(drawn.len())].to_vec();
            v.sort_unstable();
            v
        })
    };
    Ok(RowPlan { fit: sorted(fit_n), init: sorted(init_n), state: rng.0 })
}

/// k-means++ seeding (`plusplus`) over every row of `x`, continuing the random state
/// `state` (`RowPlan::state`): `kmeans`' seeding on its seeding rows gathered in order.
pub fn seed_centers<T: Scalar>(
    x: ArrayView2<'_, T>, k: usize, trials: usize, state: u64, threads: Option<usize>, cancel: &Cancel,
) -> Result<Array2<T>, Error> {
    let (m, d) = x.dim();
    if k == 0 || k > m || d == 0 || trials == 0 {
        return Err(Error::argument("n_clusters", format!("cannot seed {k} centres from {m} rows of {d} dimensions")));
    }
    let pool = workers(threads, m.saturating_mul(d))?;
    let par = pool.is_some();
    run_in(&pool, || {
        let norms = checked_sq_norms(&x, Field::Embeddings, par, cancel)?;
        plusplus(&x, &norms, k, trials, &mut SplitMix64::new(state), par, cancel)
    })
}

/// The rows `rows` of `x`, in that order, as one C-ordered block.
fn gather_rows<T: Scalar>(x: &ArrayView2<'_, T>, rows: &[u32]) -> Result<Array2<T>, Error> {
    let d = x.ncols();
    let mut data: Vec<T> = crate::error::with_room(rows.len().saturating_mul(d))?;
    let mut buf = Vec::new();
    for &i in rows {
        data.extend_from_slice(row_slice(x, i as usize, &mut buf));
    }
    Ok(Array2::from_shape_vec((rows.len(), d), data).expect("gathered shape"))
}

// -- exact sums ---------------------------------------------------------------------------

/// Integer buckets of an `ExactSum`: 64 windows of 32 binary exponents, then the counts of
/// +inf, −inf and NaN added.
pub const EXACT_WORDS: usize = 67;

/// The exact sum of f64 values, whatever order they come in: each finite value, an
/// integer mantissa m times 2^(e − 1075) (e its biased exponent), is added as m·2^(e mod 32)
/// to the i128 bucket e / 32 (2⁴² values at least before one could overflow). Parts merge
/// by adding buckets. `value` is the sum rounded to f64 by one fixed procedure.
#[derive(Clone, Debug, PartialEq)]
pub struct ExactSum(pub [i128; EXACT_WORDS]);

impl Default for ExactSum {
    fn default() -> Self {
        ExactSum([0; EXACT_WORDS])
    }
}

/// 2^p as f64 (0 below the subnormals; p ≤ 1023).
fn pow2(p: i32) -> f64 {
    if p >= -1022 {
        f64::from_bits(((p + 1023) as u64) << 52)
    } else if p >= -1074 {
        f64::from_bits(1u64 << (p + 1074))
    } else {
        0.0
    }
}

impl ExactSum {
    #[inline]
    pub fn add(&mut self, v: f64) {
        let bits = v.to_bits();
        let exp = ((bits >> 52) & 0x7ff) as usize;
        if exp == 0x7ff {
            let slot = if v.is_nan() {
                66
            } else if v > 0.0 {
                64
            } else {
                65
            };
            self.0[slot] += 1;
            return;
        }
        let frac = (bits & ((1u64 << 52) - 1)) as i128;
        let (mant, e) = if exp == 0 { (frac, 1) } else { (frac | (1i128 << 52), exp) };
        // ±m without a branch (signs of column values are a coin toss): (m ^ s) − s is −m
        // for s = −1
        let s = -((bits >> 63) as i128);
        self.0[e / 32] += ((mant << (e % 32)) ^ s) - s;
    }

    pub fn merge(&mut self, other: &ExactSum) {
        for (a, b) in self.0.iter_mut().zip(&other.0) {
            *a += b;
        }
    }

    /// The sum as f64: ±inf or NaN as IEEE adds them; else the sign taken out and the
    /// buckets of |sum| carried into [0, 2³²) each, then added from the lowest up.
    pub fn value(&self) -> f64 {
        let (pinf, ninf, nan) = (self.0[64], self.0[65], self.0[66]);
        if nan > 0 || (pinf > 0 && ninf > 0) {
            return f64::NAN;
        }
        if pinf > 0 {
            return f64::INFINITY;
        }
        if ninf > 0 {
            return f64::NEG_INFINITY;
        }
        let carried = |mut b: [i128; EXACT_WORDS]| {
            for i in 0..63 {
                let carry = b[i] >> 32;
                b[i] -= carry << 32;
                b[i + 1] += carry;
            }
            b
        };
        let mut b = carried(self.0);
        // all but the top bucket are now ≥ 0: the top one holds the sign
        let negative = b[63] < 0;
        if negative {
            b = carried(self.0.map(|v| -v));
        }
        let v = (0..64).filter(|&i| b[i] != 0).fold(0.0, |s, i| s + b[i] as f64 * pow2(32 * i as i32 - 1075));
        if negative {
            -v
        } else {
            v
        }
    }
}

// -- the fit rows' statistics -------------------------------------------------------------

/// Per column of `x`: the largest |value| and the exact sum of the values, or with `mean`
/// the exact sum of (value − mean_j)².
pub fn moments<T: Scalar>(
    x: &ArrayView2<'_, T>, mean: Option<&[f64]>, par: bool, cancel: &Cancel,
) -> Result<(Vec<f64>, Vec<ExactSum>), Error> {
    let (m, d) = x.dim();
    let rows = block_rows(d, 1);
    let one = |t: usize| {
        let mut top = vec![0.0f64; d];
        let mut sums = vec![ExactSum::default(); d];
        if cancel.is_cancelled() {
            return (top, sums);
        }
        for i in t * rows..((t + 1) * rows).min(m) {
            for (j, &v) in x.row(i).iter().enumerate() {
                let v = v.to_f64();
                top[j] = top[j].max(v.abs());
                match mean {
                    None => sums[j].add(v),
                    Some(mu) => sums[j].add((v - mu[j]) * (v - mu[j])),
                }
            }
        }
        (top, sums)
    };
    let merge = |(mut ta, mut sa): (Vec<f64>, Vec<ExactSum>), (tb, sb): (Vec<f64>, Vec<ExactSum>)| {
        for (a, b) in ta.iter_mut().zip(&tb) {
            *a = a.max(*b);
        }
        for (a, b) in sa.iter_mut().zip(&sb) {
            a.merge(b);
        }
        (ta, sa)
    };
    let tasks = m.div_ceil(rows);
    let empty = || (vec![0.0f64; d], vec![ExactSum::default(); d]);
    let out = if par {
        (0..tasks).into_par_iter().map(one).reduce(empty, merge)
    } else {
        (0..tasks).map(one).fold(empty(), merge)
    };
    cancel.check()?;
    Ok(out)
}

/// Column means of m rows from their exact sums.
pub fn means(sums: &[ExactSum], m: usize) -> Vec<f64> {
    sums.iter().map(|s| s.value() / m as f64).collect()
}

/// From the fit rows' column maxima and squared deviations: the fixed-point scales of the
/// centres' sums (2^s_j, see the module) and the absolute tolerance, `tol` × the mean
/// over columns of their variance (scikit-learn's rule).
pub fn fit_stats(max_abs: &[f64], dev: &[ExactSum], m: usize, tol: f64) -> (Vec<f64>, f64) {
    let scales = max_abs
        .iter()
        .map(|&v| {
            // |x| < 2^e: the biased exponent of v, plus one
            let e = if v > 0.0 { ((v.to_bits() >> 52) & 0x7ff) as i32 - 1022 } else { 0 };
            pow2((50 - e).clamp(-1000, 1000))
        })
        .collect();
    let var: f64 = dev.iter().map(|s| s.value() / m as f64).sum();
    (scales, tol * (var / max_abs.len() as f64))
}

// -- Lloyd --------------------------------------------------------------------------------

/// 1.5 · 2⁵²: y + MAGIC rounds y (|y| < 2⁵¹) to an integer held in the low mantissa bits.
const MAGIC: f64 = 6_755_399_441_055_744.0;

/// y rounded to the nearest integer (ties to even), for |y| < 2⁵¹.
#[inline(always)]
fn fixed(y: f64) -> i64 {
    ((y + MAGIC).to_bits() as i64).wrapping_sub(MAGIC.to_bits() as i64)
}

/// One Lloyd step's counts and fixed-point coordinate sums per cluster over some rows.
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    /// Rows per cluster (k,).
    pub counts: Vec<i64>,
    /// (k × D) row-major: Σ over the cluster's rows of round(x_ij · scale_j).
    pub sums: Vec<i128>,
    /// Rows whose label changed.
    pub changed: usize,
}

/// Labels the rows of `x` with their nearest centre (`labels` holds the previous labels,
/// −1 for none) and sums them per cluster: the assignment and the sums of one Lloyd
/// iteration over these rows.
pub fn step<T: Scalar>(
    x: &ArrayView2<'_, T>, centers: &ArrayView2<'_, T>, scales: &[f64], labels: &mut [i64], par: bool, cancel: &Cancel,
) -> Result<Step, Error> {
    let changed = assign(x, centers, labels, None, par, cancel)?;
    let (counts, sums) = cluster_sums(x, labels, centers.nrows(), scales, par, cancel)?;
    Ok(Step { counts, sums, changed })
}

#[inline(always)]
fn add_fixed_body<T: Real, I: Isa>(acc: &mut [i64], row: &[T], scales: &[f64]) {
    for ((a, &v), &s) in acc.iter_mut().zip(row).zip(scales) {
        *a += fixed(v.to_f64() * s);
    }
}

multiversion! {
    fn add_fixed<T: Real>(acc: &mut [i64], row: &[T], scales: &[f64]) -> () => add_fixed_body
}

/// Rows per cluster and their fixed-point sums (clusters in parallel, each over its rows:
/// 4,096 values below 2⁵⁰ in an i64, then into the i128 total).
fn cluster_sums<T: Scalar>(
    x: &ArrayView2<'_, T>, labels: &[i64], k: usize, scales: &[f64], par: bool, cancel: &Cancel,
) -> Result<(Vec<i64>, Vec<i128>), Error> {
    let (m, d) = x.dim();
    // Counting sort of the rows by label: `order` lists cluster 0's rows, then 1's, ...
    let mut counts = vec![0i64; k];
    for &l in labels {
        counts[l as usize] += 1;
    }
    let mut start = vec![0usize; k + 1];
    for j in 0..k {
        start[j + 1] = start[j] + counts[j] as usize;
    }
    let mut order: Vec<u32> = filled(m, 0u32)?;
    let mut fill = start.clone();
    for (i, &l) in labels.iter().enumerate() {
        order[fill[l as usize]] = i as u32;
        fill[l as usize] += 1;
    }
    let mut sums = filled(k * d, 0i128)?;
    let one = |(j, s): (usize, &mut [i128])| {
        if cancel.is_cancelled() {
            return;
        }
        let mut acc = vec![0i64; d];
        let mut buf = Vec::new();
        for chunk in order[start[j]..start[j + 1]].chunks(4096) {
            for &i in chunk {
                add_fixed(&mut acc, row_slice(x, i as usize, &mut buf), scales);
            }
            for (t, a) in s.iter_mut().zip(acc.iter_mut()) {
                *t += *a as i128;
                *a = 0;
            }
        }
    };
    if par {
        sums.par_chunks_mut(d).enumerate().for_each(one);
    } else {
        sums.chunks_mut(d).enumerate().for_each(one);
    }
    cancel.check()?;
    Ok((counts, sums))
}

/// A row far from its centre, a candidate to re-seed an empty cluster.
#[derive(Clone, Debug, PartialEq)]
pub struct Far<T> {
    /// ‖x − c_label‖² (differences, f64 sums).
    pub mind: f64,
    /// The row's position among all the fit rows (the tie rule: lower first).
    pub position: u64,
    pub label: i64,
    pub row: Vec<T>,
}

/// The `top` rows of `x` farthest from their centres (`labels` against `centers`),
/// farthest first, ties by lower `position(i)`.
pub fn farthest<T: Scalar>(
    x: &ArrayView2<'_, T>, centers: &ArrayView2<'_, T>, labels: &[i64], position: &(dyn Fn(usize) -> u64 + Sync),
    top: usize, par: bool, cancel: &Cancel,
) -> Result<Vec<Far<T>>, Error> {
    let m = x.nrows();
    let mut mind = filled(m, 0.0f64)?;
    let rows = block_rows(x.ncols(), 1);
    let one = |(b, md): (usize, &mut [f64])| {
        let mut buf = Vec::new();
        for (r, o) in md.iter_mut().enumerate() {
            let i = b * rows + r;
            *o = exact_sq(row_slice(x, i, &mut buf), centers.row(labels[i] as usize));
        }
    };
    if par {
        mind.par_chunks_mut(rows).enumerate().for_each(one);
    } else {
        mind.chunks_mut(rows).enumerate().for_each(one);
    }
    cancel.check()?;
    let mut idx: Vec<(f64, u64, usize)> = (0..m).map(|i| (mind[i], position(i), i)).collect();
    let cmp = |a: &(f64, u64, usize), b: &(f64, u64, usize)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
    if top < idx.len() && top > 0 {
        idx.select_nth_unstable_by(top - 1, cmp);
    }
    idx.truncate(top);
    idx.sort_unstable_by(cmp);
    Ok(idx
        .into_iter()
        .map(|(mind, position, i)| Far { mind, position, label: labels[i], row: x.row(i).to_vec() })
        .collect())
}

/// The centres after a Lloyd step from its combined `counts` and `sums`: each the mean of
/// its rows; an empty cluster takes the farthest row (of `far`, farthest first) whose
/// cluster keeps a row, which leaves that cluster (scikit-learn's re-seeding); a cluster
/// left empty keeps its old centre. Returns them and Σ_j ‖c_j − c_j'‖².
pub fn new_centers<T: Scalar>(
    counts: &mut [i64], sums: &mut [i128], scales: &[f64], old: &ArrayView2<'_, T>, far: &[Far<T>],
) -> (Array2<T>, f64) {
    let (k, d) = old.dim();
    let empty: Vec<usize> = (0..k).filter(|&j| counts[j] == 0).collect();
    let mut next = far.iter();
    for &e in &empty {
        let Some(f) = next.by_ref().find(|f| counts[f.label as usize] > 1) else { break };
        let from = f.label as usize;
        for (q, (&v, &s)) in f.row.iter().zip(scales).enumerate() {
            let v = fixed(v.to_f64() * s) as i128;
            sums[from * d + q] -= v;
            sums[e * d + q] = v;
        }
        counts[from] -= 1;
        counts[e] = 1;
    }
    let mut centers = old.to_owned();
    let mut shift = 0.0f64;
    for (j, mut c) in centers.axis_iter_mut(Axis(0)).enumerate() {
        if counts[j] > 0 {
            let n = counts[j] as f64;
            for (q, o) in c.iter_mut().enumerate() {
                *o = T::from_f64(sums[j * d + q] as f64 / scales[q] / n);
            }
        }
        shift += c.iter().zip(old.row(j)).map(|(&p, &q)| (p.to_f64() - q.to_f64()).powi(2)).sum::<f64>();
    }
    (centers, shift)
}

/// Every row's nearest centre and the exact sum of their squared distances (the inertia).
pub fn label_all<T: Scalar>(
    x: &ArrayView2<'_, T>, centers: &ArrayView2<'_, T>, par: bool, cancel: &Cancel,
) -> Result<(Vec<i64>, ExactSum), Error> {
    let mut labels = filled(x.nrows(), -1i64)?;
    let mut inertia = ExactSum::default();
    assign(x, centers, &mut labels, Some(&mut inertia), par, cancel)?;
    Ok((labels, inertia))
}

#[inline(always)]
fn nearest_body<T: Real, I: Isa>(g: &[T], cn: &[T]) -> usize {
    // the smallest ‖c‖² − 2 x·c, lane-wise minima first (vectorised), then its first index:
    // the first minimum, as a scan with `<` finds it
    const L: usize = 16;
    let mut lanes = [T::INF; L];
    let (gc, cc) = (g.chunks_exact(L), cn.chunks_exact(L));
    let (gr, cr) = (gc.remainder(), cc.remainder());
    for (gs, cs) in gc.zip(cc) {
        for l in 0..L {
            let v = cs[l] - (gs[l] + gs[l]);
            lanes[l] = if v < lanes[l] { v } else { lanes[l] };
        }
    }
    let mut best = lanes.iter().fold(T::INF, |a, &b| if b < a { b } else { a });
    for (&gv, &c) in gr.iter().zip(cr) {
        let v = c - (gv + gv);
        best = if v < best { v } else { best };
    }
    if best == T::INF {
        return 0;
    }
    g.iter().zip(cn).position(|(&gv, &c)| c - (gv + gv) == best).unwrap_or(0)
}

multiversion! {
    fn nearest<T: Real>(g: &[T], cn: &[T]) -> usize => nearest_body
}

#[inline(always)]
fn nearest2_body<T: Real, I: Isa>(g: &[T], cn: &[T]) -> (usize, T, T) {
    // `nearest`'s label (the same minimum of the same values, its first index), and the
    // smallest value at any other index: lane-wise smallest two first (vectorised)
    const L: usize = 16;
    let mut one = [T::INF; L];
    let mut two = [T::INF; L];
    let (gc, cc) = (g.chunks_exact(L), cn.chunks_exact(L));
    let (gr, cr) = (gc.remainder(), cc.remainder());
    for (gs, cs) in gc.zip(cc) {
        for l in 0..L {
            let v = cs[l] - (gs[l] + gs[l]);
            let lo = if v < one[l] { v } else { one[l] };
            let hi = if v < one[l] { one[l] } else { v };
            one[l] = lo;
            two[l] = if hi < two[l] { hi } else { two[l] };
        }
    }
    for (l, (&gv, &c)) in gr.iter().zip(cr).enumerate() {
        let v = c - (gv + gv);
        let lo = if v < one[l] { v } else { one[l] };
        let hi = if v < one[l] { one[l] } else { v };
        one[l] = lo;
        two[l] = if hi < two[l] { hi } else { two[l] };
    }
    let best = one.iter().fold(T::INF, |a, &b| if b < a { b } else { a });
    // the second smallest of all: the lanes' second smallest, and the smallest of every
    // lane but one that holds `best`
    let holder = one.iter().position(|&v| v == best).unwrap_or(0);
    let mut second = T::INF;
    for l in 0..L {
        second = if two[l] < second { two[l] } else { second };
        if l != holder {
            second = if one[l] < second { one[l] } else { second };
        }
    }
    if best == T::INF {
        return (0, best, second);
    }
    let at = g.iter().zip(cn).position(|(&gv, &c)| c - (gv + gv) == best).unwrap_or(0);
    (at, best, second)
}

multiversion! {
    fn nearest2<T: Real>(g: &[T], cn: &[T]) -> (usize, T, T) => nearest2_body
}

/// Labels every row of `x` with its nearest centre (ties: the lowest) by the expansion
/// ‖c‖² − 2 x·c; returns how many labels changed. With `inertia`, adds each row's exact
/// ‖x − c_label‖² (differences, f64 sums) to it.
fn assign<T: Scalar>(
    x: &ArrayView2<'_, T>, centers: &ArrayView2<'_, T>, labels: &mut [i64], inertia: Option<&mut ExactSum>, par: bool,
    cancel: &Cancel,
) -> Result<usize, Error> {
    let (k, d) = centers.dim();
    let cn: Vec<T> =
        centers.rows().into_iter().map(|r| T::from_f64(r.iter().map(|v| v.to_f64() * v.to_f64()).sum())).collect();
    let rows = block_rows(d, k);
    let want = inertia.is_some();
    let one = |gb: &mut Vec<T>, (b, lab): (usize, &mut [i64])| -> (usize, Option<ExactSum>) {
        let mut sum = want.then(ExactSum::default);
        if cancel.is_cancelled() {
            return (0, sum);
        }
        let lo = b * rows;
        let block = x.slice(s![lo..lo + lab.len(), ..]);
        let g = gram(&block, centers, gb);
        let mut changed = 0;
        let mut buf = Vec::new();
        for (r, grow) in g.rows().into_iter().enumerate() {
            let best = nearest(grow.as_slice().expect("gram rows are contiguous"), &cn) as i64;
            changed += usize::from(lab[r] != best);
            lab[r] = best;
            if let Some(s) = sum.as_mut() {
                s.add(exact_sq(row_slice(&block, r, &mut buf), centers.row(best as usize)));
            }
        }
        (changed, sum)
    };
    let per: Vec<(usize, Option<ExactSum>)> = if par {
        labels.par_chunks_mut(rows).enumerate().map_init(Vec::new, one).collect()
    } else {
        let mut gb = Vec::new();
        labels.chunks_mut(rows).enumerate().map(|t| one(&mut gb, t)).collect()
    };
    cancel.check()?;
    let mut changed = 0;
    if let Some(total) = inertia {
        for (c, s) in per {
            changed += c;
            total.merge(&s.expect("a sum per block"));
        }
    } else {
        changed = per.iter().map(|p| p.0).sum();
    }
    Ok(changed)
}

/// The first position p of `w` whose running sum of `w` exceeds
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

/// k-means++ with greedy local trials over the rows of `x` (scikit-learn's
/// `_kmeans_plusplus`): the first centre uniformly at random; then per centre, `trials`
/// candidates drawn with probability ∝ D² (the squared distance to the nearest centre so
/// far) and the one that lowers Σ D² most kept (ties: the first drawn).
///
/// A row whose nearest centre a is at least twice as far from a candidate as from the
/// row (‖c_t − c_a‖ ≥ 2 ‖x − c_a‖, with a relative margin far above the rounding) cannot
/// come nearer to that candidate (triangle inequality): its D² is kept without reading
/// the row, the value the distance would have given.
#[allow(clippy::too_many_arguments)]
fn plusplus<T: Scalar>(
    x: &ArrayView2<'_, T>, norms: &[f64], k: usize, trials: usize, rng: &mut SplitMix64, par: bool, cancel: &Cancel,
) -> Result<Array2<T>, Error> {
    let (m, d) = x.dim();
    let mut centers = Array2::<T>::zeros((k, d));
    let first = rng.below(m);
    centers.row_mut(0).assign(&x.row(first));
    let rows = block_rows(d, trials);
    let tasks = m.div_ceil(rows);
    // closest[i]: D² of the set's row i, nearest[i] the centre it is from; dist: each
    // row's D² after each candidate (m × t).
    let mut closest = filled(m, 0.0f64)?;
    let mut nearest = filled(m, 0u32)?;
    let mut dist = filled(m * trials, 0.0f64)?;
    // D² to the first centre: one candidate, with no centre before it.
    let first_c = centers.slice(s![0..1, ..]);
    let mut sums = candidate_pass(x, &first_c, None, &mut closest, rows, par, cancel);
    let mut cand = Array2::<T>::zeros((trials, d));
    // far[t * k + j]: ‖cand_t − c_j‖² for the centres so far
    let mut far = vec![0.0f64; trials * k];
    for c in 1..k {
        cancel.check()?;
        let pot: f64 = sums.iter().sum();
        let mut ids = Vec::with_capacity(trials);
        for t in 0..trials {
            let target = rng.uniform() * pot;
            let p = draw(&closest, &sums, rows, target);
            ids.push(p);
            cand.row_mut(t).assign(&x.row(p));
            let ct = cand.row(t);
            let ct = ct.as_slice().expect("candidate rows are contiguous");
            for j in 0..c {
                far[t * k + j] = exact_sq(ct, centers.row(j));
            }
        }
        let cnorms: Vec<f64> = ids.iter().map(|&p| norms[p]).collect();
        let near = Near { nearest: &nearest, far: &far, k, norms, cnorms: &cnorms, unit: unit_roundoff::<T>() };
        let per = candidate_pass(x, &cand.view(), Some((&closest, near)), &mut dist, rows, par, cancel);
        // per[block * trials + t]: block sums of each candidate's D².
        let pots: Vec<f64> = (0..trials).map(|t| (0..tasks).map(|b| per[b * trials + t]).sum()).collect();
        let best = (0..trials).fold(0, |b, t| if pots[t] < pots[b] { t } else { b });
        for ((c_i, n_i), row) in closest.iter_mut().zip(nearest.iter_mut()).zip(dist.chunks(trials)) {
            if row[best] < *c_i {
                *n_i = c as u32;
            }
            *c_i = row[best];
        }
        sums = (0..tasks).map(|b| per[b * trials + best]).collect();
        centers.row_mut(c).assign(&x.row(ids[best]));
    }
    cancel.check()?;
    Ok(centers)
}

/// What lets `candidate_rows` skip a row: its nearest centre and the candidates' squared
/// distances to the centres (`far[t * k + j]`).
#[derive(Clone, Copy)]
struct Near<'a> {
    nearest: &'a [u32],
    far: &'a [f64],
    k: usize,
    /// ‖x‖² of the rows of `x` and of the candidates (f64), and T's unit roundoff: the
    /// expansion's bound (see `candidate_rows`).
    norms: &'a [f64],
    cnorms: &'a [f64],
    unit: f64,
}

/// T's unit roundoff (2⁻²⁴ for f32, 2⁻⁵³ for f64).
pub(crate) fn unit_roundoff<T: Real>() -> f64 {
    if T::DTYPE == "float32" {
        (2.0f64).powi(-24)
    } else {
        (2.0f64).powi(-53)
    }
}

/// ‖c_t − c_a‖² ≥ SKIP · ‖x − c_a‖²: 4 (twice the distance), and a relative margin of
/// 10⁻⁸ over the rounding of the f64 sums (below 10⁻¹³ here).
const SKIP: f64 = 4.0 * (1.0 + 1e-8);

#[inline(always)]
fn candidate_rows<T: Real, I: Isa>(
    x: &ArrayView2<'_, T>, cand: &ArrayView2<'_, T>, closest: Option<(&[f64], Near<'_>)>, lo: usize, o: &mut [f64],
) -> Vec<f64> {
    let t = cand.nrows();
    let mut sums = vec![0.0f64; t];
    let (mut buf, mut cbuf) = (Vec::new(), Vec::new());
    for (r, orow) in o.chunks_mut(t).enumerate() {
        let i = lo + r;
        let xr = row_slice(x, i, &mut buf);
        for (j, ov) in orow.iter_mut().enumerate() {
            let v = match closest {
                Some((c, near)) => {
                    let bound = SKIP * c[i];
                    if near.far[j * near.k + near.nearest[i] as usize] >= bound {
                        c[i]
                    } else {
                        // the expansion ‖x‖² + ‖c‖² − 2 x·c from a dot product in T, within
                        // `e` of the distance: when it is above c_i by more than that, the
                        // direct distance would be too, and min(c_i, it) is c_i
                        let cr = row_slice(cand, j, &mut cbuf);
                        let (xn, cn) = (near.norms[i], near.cnorms[j]);
                        let dot = dot_lanes::<I, T>(xr, cr).to_f64();
                        let e = dot_error(near.unit, xr.len(), xn, cn);
                        if xn + cn - 2.0 * dot - e >= c[i] * (1.0 + 1e-12) {
                            c[i]
                        } else {
                            sq_diff_f64::<I, T>(xr, 1.0, cr, 1.0).min(c[i])
                        }
                    }
                }
                None => sq_diff_f64::<I, T>(xr, 1.0, row_slice(cand, j, &mut cbuf), 1.0),
            };
            *ov = v;
            sums[j] += v;
        }
    }
    sums
}

/// Σ aᵢ·bᵢ in T lanes (the expansion's dot product of the seeding's filter).
#[inline(always)]
fn dot_lanes<I: Isa, T: Real>(a: &[T], b: &[T]) -> T {
    const W: usize = 16;
    let mut acc = [T::ZERO; W];
    let (ac, at) = a.as_chunks::<W>();
    let (bc, bt) = b.as_chunks::<W>();
    for (x, y) in ac.iter().zip(bc) {
        for l in 0..W {
            acc[l] = madd::<I, T>(x[l], y[l], acc[l]);
        }
    }
    for (l, (x, y)) in at.iter().zip(bt).enumerate() {
        acc[l] = madd::<I, T>(*x, *y, acc[l]);
    }
    acc.iter().fold(T::ZERO, |s, &v| s + v)
}

/// A bound on |(‖x‖² + ‖c‖² − 2 fl(x·c)) − ‖x − c‖²| for `dot_lanes` in T (unit roundoff
/// `unit`) over `d` values and f64 squared norms `xn`, `cn`: γ_D ‖x‖‖c‖ for the dot
/// product in any summation order, doubled (the factor 2 of the expansion) and doubled
/// again for safety, plus 10⁻¹² of the norms for the f64 arithmetic.
#[inline(always)]
fn dot_error(unit: f64, d: usize, xn: f64, cn: f64) -> f64 {
    let gamma = (d + 1) as f64 * unit / (1.0 - (d + 1) as f64 * unit);
    4.0 * gamma * (xn * cn).sqrt() + 1e-12 * (xn + cn)
}

multiversion! {
    fn candidate_rows_dispatch<T: Real>(
        x: &ArrayView2<'_, T>, cand: &ArrayView2<'_, T>, closest: Option<(&[f64], Near<'_>)>, lo: usize, o: &mut [f64],
    ) -> Vec<f64> => candidate_rows
}

/// For every row i of `x` and candidate t: min(closest_i, ‖x_i − cand_t‖²) (with no
/// `closest`, the distance itself) into `out[i * t + t]`; returns each block's sums, block
/// by block, candidate by candidate. Distances from the differences (f64 sums), row by row:
/// a matrix product would pack (copy) every row for a few candidates' columns.
#[allow(clippy::too_many_arguments)]
fn candidate_pass<T: Scalar>(
    x: &ArrayView2<'_, T>, cand: &ArrayView2<'_, T>, closest: Option<(&[f64], Near<'_>)>, out: &mut [f64], rows: usize,
    par: bool, cancel: &Cancel,
) -> Vec<f64> {
    let t = cand.nrows();
    let one = |(b, o): (usize, &mut [f64])| -> Vec<f64> {
        if cancel.is_cancelled() {
            return vec![0.0f64; t];
        }
        candidate_rows_dispatch(x, cand, closest, b * rows, o)
    };
    let out = &mut out[..x.nrows() * t];
    let per: Vec<Vec<f64>> = if par {
        out.par_chunks_mut(rows * t).enumerate().map(one).collect()
    } else {
        out.chunks_mut(rows * t).enumerate().map(one).collect()
    };
    per.concat()
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

    #[test]
    fn exact_sums_do_not_depend_on_the_order() {
        let mut rng = SplitMix64::new(11);
        let v: Vec<f64> = (0..5000)
            .map(|i| (rng.uniform() - 0.5) * pow2((i % 90) as i32 - 45) * if i % 7 == 0 { 1e12 } else { 1.0 })
            .collect();
        let mut a = ExactSum::default();
        v.iter().for_each(|&x| a.add(x));
        let mut b = ExactSum::default();
        v.iter().rev().for_each(|&x| b.add(x));
        let (mut c, mut c2) = (ExactSum::default(), ExactSum::default());
        v[..1234].iter().for_each(|&x| c.add(x));
        v[1234..].iter().for_each(|&x| c2.add(x));
        c.merge(&c2);
        assert_eq!(a, b);
        assert_eq!(a, c);
        // against a compensated sum of the same values
        let (mut s, mut comp) = (0.0f64, 0.0f64);
        for &x in &v {
            let t = s + x;
            comp += if s.abs() >= x.abs() { (s - t) + x } else { (x - t) + s };
            s = t;
        }
        assert!((a.value() - (s + comp)).abs() <= 1e-15 * v.iter().map(|x| x.abs()).sum::<f64>());
        let mut e = ExactSum::default();
        [1.5, -0.25, 1e300, -1e300, 3.0].iter().for_each(|&x| e.add(x));
        assert_eq!(e.value(), 4.25);
        e.add(f64::INFINITY);
        assert_eq!(e.value(), f64::INFINITY);
        e.add(f64::NEG_INFINITY);
        assert!(e.value().is_nan());
    }

    #[test]
    fn the_steps_on_split_rows_give_the_whole_result() {
        // k-means run piece by piece, the fit rows split in three uneven parts summed in
        // another order: the same labels, centres and inertia as `kmeans`.
        let x = blobs(700, 4).mapv(|v| v as f32);
        let (n, k) = (x.nrows(), 7);
        let mut o = KMeansOptions::new(k, 3);
        o.fit_rows = Some(900);
        o.init_rows = Some(300);
        let want = kmeans(x.view(), &o, &Cancel::new()).unwrap();
        let c = Cancel::new();
        let plan = sample_rows(n, 900, 300, 3).unwrap();
        let init = gather_rows(&x.view(), plan.init.as_ref().unwrap()).unwrap();
        let mut centers = seed_centers(init.view(), k, local_trials(k, None), plan.state, Some(1), &c).unwrap();
        let fit_rows = plan.fit.unwrap();
        let cuts = [0, 100, 611, 900];
        let parts: Vec<Array2<f32>> =
            (0..3).map(|p| gather_rows(&x.view(), &fit_rows[cuts[p]..cuts[p + 1]]).unwrap()).collect();
        let mut max_abs = vec![0.0f64; 5];
        let mut sums = vec![ExactSum::default(); 5];
        for part in parts.iter().rev() {
            let (m, s) = moments(&part.view(), None, false, &c).unwrap();
            max_abs.iter_mut().zip(&m).for_each(|(a, b)| *a = a.max(*b));
            sums.iter_mut().zip(&s).for_each(|(a, b)| a.merge(b));
        }
        let mean = means(&sums, 900);
        let mut dev = vec![ExactSum::default(); 5];
        for part in &parts {
            let (_, s) = moments(&part.view(), Some(&mean), false, &c).unwrap();
            dev.iter_mut().zip(&s).for_each(|(a, b)| a.merge(b));
        }
        let (scales, tol) = fit_stats(&max_abs, &dev, 900, o.tol);
        let mut labels: Vec<Vec<i64>> = parts.iter().map(|p| vec![-1; p.nrows()]).collect();
        let mut iterations = 0;
        loop {
            iterations += 1;
            let mut counts = vec![0i64; k];
            let mut total = vec![0i128; k * 5];
            let mut changed = 0;
            let mut far = Vec::new();
            for (p, part) in parts.iter().enumerate() {
                let st = step(&part.view(), &centers.view(), &scales, &mut labels[p], p == 1, &c).unwrap();
                counts.iter_mut().zip(&st.counts).for_each(|(a, b)| *a += b);
                total.iter_mut().zip(&st.sums).for_each(|(a, b)| *a += b);
                changed += st.changed;
                let pos = |i: usize| fit_rows[cuts[p] + i] as u64;
                far.extend(farthest(&part.view(), &centers.view(), &labels[p], &pos, k, false, &c).unwrap());
            }
            far.sort_by(|a, b| b.mind.total_cmp(&a.mind).then(a.position.cmp(&b.position)));
            far.truncate(k);
            let (new, shift) = new_centers(&mut counts, &mut total, &scales, &centers.view(), &far);
            centers = new;
            if changed == 0 || shift <= tol || iterations == o.max_iter {
                break;
            }
        }
        assert_eq!(iterations, want.iterations);
        assert_eq!(centers, want.centers);
        let (a, ia) = label_all(&x.slice(s![..1500, ..]), &centers.view(), false, &c).unwrap();
        let (b, mut ib) = label_all(&x.slice(s![1500.., ..]), &centers.view(), true, &c).unwrap();
        ib.merge(&ia);
        assert_eq!([a, b].concat(), want.labels);
        assert_eq!(ib.value(), want.inertia);
    }

    #[test]
    fn chain_gram_is_matrixmultiply_bit_for_bit() {
        // every shape class: tiles of 8 rows and 3 blocks and their remainders, one depth
        // block and several (D > 256), rows of a wider array (a row stride)
        let mut rng = SplitMix64::new(3);
        let mut ran = false;
        for &(r, c, d) in
            &[(1, 1, 1), (7, 5, 3), (8, 16, 128), (33, 100, 128), (9, 49, 300), (20, 17, 513), (100, 3, 64)]
        {
            let wide = Array2::from_shape_fn((r, d + 5), |_| ((rng.uniform() * 2.0 - 1.0) * 3.0) as f32);
            let a = wide.slice(s![.., ..d]);
            let b = Array2::from_shape_fn((c, d), |_| (rng.uniform() * 2.0 - 1.0) as f32 + 10.0);
            let mut want = Array2::<f32>::zeros((r, c));
            ndarray::linalg::general_mat_mul(1.0, &a, &b.t(), 0.0, &mut want);
            let mut got = vec![f32::NAN; r * c];
            if chain_gram(&a, &b.view(), &mut got) {
                ran = true;
                for (i, (g, w)) in got.iter().zip(want.iter()).enumerate() {
                    assert_eq!(g.to_bits(), w.to_bits(), "({r}, {c}, {d}) value {i}: {g} vs {w}");
                }
            }
            // a transposed view has no contiguous rows: not taken
            let t = Array2::from_shape_fn((d, c), |(k, j)| b[[j, k]]);
            assert!(c == 1 || d == 1 || !chain_gram(&t.t(), &b.view(), &mut got));
        }
        assert!(ran || crate::simd::level() != crate::simd::SimdLevel::Avx512);
    }

    #[test]
    fn empty_clusters_are_reseeded_from_the_farthest_rows() {
        // one far outlier row and k = 3 over two tight groups: the outlier seeds a cluster
        let mut x = Array2::<f64>::zeros((41, 2));
        for i in 0..20 {
            x[[i, 0]] = 0.01 * i as f64;
            x[[20 + i, 0]] = 5.0 + 0.01 * i as f64;
        }
        x[[40, 1]] = 100.0;
        let r = kmeans(x.view(), &KMeansOptions::new(3, 1), &Cancel::new()).unwrap();
        let distinct: std::collections::BTreeSet<i64> = r.labels.iter().copied().collect();
        assert_eq!(distinct.len(), 3);
        assert_eq!(r.labels.iter().filter(|&&l| l == r.labels[40]).count(), 1);
    }
}

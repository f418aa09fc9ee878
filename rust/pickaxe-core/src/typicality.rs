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
//! How: the cluster's rows are gathered (m × D), and per block of its rows the Gram block
//! against the whole cluster (one matrix product) ranks every other row by the expansion
//! ‖x‖² + ‖y‖² − 2 x·y; the k' + margin nearest (margin = max(8, k'/4)) are then recomputed
//! directly (differences before squaring, f64 sums) and the k' nearest of those averaged.
//! Cost: O(m² D) per cluster and m × D + a block of Gram values in memory: the kernel is
//! meant for the clusters of k-means over a pool (N / k rows each); a cluster of 10⁵ rows of
//! D = 256 costs 2.6·10¹² multiply-adds, minutes on two cores.

use std::cmp::Ordering;
use std::collections::HashSet;

use ndarray::{ArrayView1, ArrayView2};

use crate::cancel::Cancel;
use crate::error::{filled, Error, Field};
use crate::kmeans::{checked_sq_norms, exact_sq, gram, map_tasks, run_in, workers, Scalar};
use crate::math::{Isa, Real};
use crate::simd::multiversion;

/// Candidates kept beyond k' before the exact recomputation (see `_exact.py`).
const MIN_MARGIN: usize = 8;

/// A neighbour candidate: (expansion of its squared distance, its row in the cluster),
/// ordered by distance then row.
#[derive(Clone, Copy, PartialEq)]
struct Cand(f64, usize);

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

/// `out[j]` = max(0, ‖x_q‖² + ‖x_j‖² − 2 x_q·x_j) from the row's Gram values `g` and the
/// squared norms `cn` (f64 arithmetic on the Gram's values).
#[inline(always)]
fn expansions_body<T: Real, I: Isa>(out: &mut [f64], g: &[T], cn: &[f64], cq: f64) {
    for ((o, &v), &c) in out.iter_mut().zip(g).zip(cn) {
        *o = (cq + c - 2.0 * v.to_f64()).max(0.0);
    }
}

multiversion! {
    fn expansions<T: Real>(out: &mut [f64], g: &[T], cn: &[f64], cq: f64) -> () => expansions_body
}

/// The typicality of every row of the cluster `rows` (ascending row indices of `x`).
fn cluster_typicality<T: Scalar>(
    x: &ArrayView2<'_, T>, norms: &[f64], rows: &[usize], k: usize, par: bool, cancel: &Cancel,
) -> Vec<f64> {
    let (m, d) = (rows.len(), x.ncols());
    if m == 1 {
        return vec![f64::INFINITY];
    }
    let kk = k.min(m - 1);
    let keep = (kk + MIN_MARGIN.max(kk / 4)).min(m - 1);
    let mut data = Vec::with_capacity(m * d);
    for &i in rows {
        data.extend(x.row(i).iter().copied());
    }
    let xc = ArrayView2::from_shape((m, d), &data[..]).expect("cluster shape");
    let cn: Vec<f64> = rows.iter().map(|&i| norms[i]).collect();
    // Gram blocks of about 2^20 values, 1 to 1,024 query rows.
    let b = ((1usize << 20) / m).clamp(1, 1024);
    let blocks = m.div_ceil(b);
    let per = map_tasks(par && blocks > 1, blocks, |t| {
        let (lo, hi) = (t * b, ((t + 1) * b).min(m));
        let mut out = Vec::with_capacity(hi - lo);
        if cancel.is_cancelled() {
            return out;
        }
        let mut gb = Vec::new();
        let g = gram(&xc.slice(ndarray::s![lo..hi, ..]), &xc, &mut gb);
        let mut kept: Vec<Cand> = Vec::with_capacity(2 * keep + 8);
        let mut exact: Vec<f64> = Vec::with_capacity(keep);
        let mut dist: Vec<f64> = vec![0.0; m];
        for (r, grow) in g.rows().into_iter().enumerate() {
            let q = lo + r;
            let grow = grow.as_slice().expect("gram rows are contiguous");
            // every row's expansion, in one vectorised pass; the row itself is nobody's
            // neighbour (+inf, never below a finite threshold)
            expansions(&mut dist, grow, &cn, cn[q]);
            dist[q] = f64::INFINITY;
            // the `keep` smallest (expansion, row) pairs. Rows are scanned in ascending
            // order and a row is kept while its expansion is below `top`, the keep-th
            // smallest of those kept so far (on a tie its row is the larger: it cannot be
            // among the keep smallest); when 2 keep are kept they are cut back to the keep
            // smallest (one selection) and `top` tightens. Blocks of 8 rows none of which
            // is below `top` are turned away by one vectorised comparison.
            kept.clear();
            let mut top = f64::INFINITY;
            let mut j = 0;
            while j < m {
                let hi = (j + 8).min(m);
                if dist[j..hi].iter().fold(false, |a, &v| a | (v < top)) {
                    for (jj, &v) in dist[j..hi].iter().enumerate() {
                        if v < top {
                            kept.push(Cand(v, j + jj));
                        }
                    }
                    if kept.len() >= 2 * keep {
                        kept.select_nth_unstable(keep - 1);
                        kept.truncate(keep);
                        top = kept.iter().map(|c| c.0).fold(f64::NEG_INFINITY, f64::max);
                    }
                }
                j = hi;
            }
            if kept.len() > keep {
                kept.select_nth_unstable(keep - 1);
                kept.truncate(keep);
            }
            let xq = xc.row(q);
            let xq = xq.as_slice().expect("gathered rows are contiguous");
            exact.clear();
            exact.extend(kept.iter().map(|c| exact_sq(xq, xc.row(c.1)).sqrt()));
            exact.sort_unstable_by(f64::total_cmp);
            let mean = exact[..kk].iter().sum::<f64>() / kk as f64;
            out.push(1.0 / mean);
        }
        out
    });
    per.concat()
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
    let (n, d) = x.dim();
    if labels.len() != n {
        return Err(Error::Shape(format!("labels has {} entries but embeddings has {n} rows", labels.len())));
    }
    if k == 0 {
        return Err(Error::argument("k", "k must be at least 1; got 0"));
    }
    if d == 0 {
        return Err(Error::Shape("embeddings has 0 dimensions; need at least 1".into()));
    }
    let wanted: Option<HashSet<i64>> = clusters.map(|c| c.iter().copied().collect());
    let mut members: Vec<(i64, usize)> = labels
        .iter()
        .enumerate()
        .filter(|&(_, &l)| l >= 0 && wanted.as_ref().is_none_or(|w| w.contains(&l)))
        .map(|(i, &l)| (l, i))
        .collect();
    members.sort_unstable();
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for (pos, &(l, i)) in members.iter().enumerate() {
        if pos == 0 || members[pos - 1].0 != l {
            groups.push(Vec::new());
        }
        groups.last_mut().expect("a group").push(i);
    }
    drop(members);
    let work: usize = groups.iter().map(|g| g.len().saturating_mul(g.len())).sum::<usize>().saturating_mul(d);
    let pool = workers(threads, work.max(n.saturating_mul(d)))?;
    let par = pool.is_some();
    run_in(&pool, || {
        let norms = checked_sq_norms(&x, Field::Embeddings, par, cancel)?;
        let mut out = filled(n, f64::NAN)?;
        let per = map_tasks(par, groups.len(), |g| {
            if cancel.is_cancelled() {
                return Vec::new();
            }
            cluster_typicality(&x, &norms, &groups[g], k, par, cancel)
        });
        cancel.check()?;
        for (rows, vals) in groups.iter().zip(per) {
            for (&i, v) in rows.iter().zip(vals) {
                out[i] = v;
            }
        }
        Ok(out)
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

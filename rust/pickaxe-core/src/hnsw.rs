//! Search of an hnswlib 0.8 graph, in the graph's own memory layout, with pickaxe's
//! run-time-dispatched SIMD distances.
//!
//! hnswlib builds the graph (`ReferenceIndex`); its level 0 is one block of `n` elements of
//! `W` 32-bit words each: a link count word (low 16 bits), `maxM0` neighbour ids, the
//! float32 vector at word `offset_data`, the 64-bit label at word `label_offset`. The upper
//! levels are hnswlib's saved "tail": per element a size word, then `level` lists of
//! `maxM + 1` words (count word, `maxM` ids); `upper_start[e]` is the word of element e's
//! level-1 list and `levels[e]` its level. The search is hnswlib's `searchKnn` (greedy
//! descent through the upper levels, then the ef-bounded best-first search of level 0,
//! stopping when the nearest candidate is farther than the farthest of the ef found), so it
//! visits the same elements and returns the same neighbours as hnswlib's `knn_query` up to
//! float rounding. What differs is how the distances are computed: the unvisited
//! neighbours of an element are gathered first (their vectors prefetched), then their
//! distances computed four at a time at the CPU's SIMD level (AVX-512, AVX2 or the
//! baseline), which hides memory latency that hnswlib's one-by-one loop waits on.
//!
//! Every id read from the graph is checked against `n` and every upper-level list against
//! its element's level, so a malformed graph is an error, never an out-of-bounds read.

use std::collections::BinaryHeap;

use ndarray::{ArrayView1, ArrayView2, ArrayViewMut2, Axis};

use crate::cancel::Cancel;
use crate::error::Error;
use crate::knn::{Keyed, Metric};
use crate::lanes;
use crate::math::{madd, Isa, LANES};
use crate::simd::multiversion;
use crate::threads;

/// An hnswlib graph, borrowed: see the module for the layout.
#[derive(Clone, Copy)]
pub struct Graph<'a> {
    /// (n, W) words: level 0, standard layout.
    pub level0: ArrayView2<'a, u32>,
    /// Word of the first neighbour count in an element (0 in hnswlib 0.8).
    pub offset_data: usize,
    pub label_offset: usize,
    pub dim: usize,
    pub max_m0: usize,
    pub max_m: usize,
    /// hnswlib's saved tail: size words and upper-level lists.
    pub upper: ArrayView1<'a, u32>,
    pub upper_start: ArrayView1<'a, u64>,
    pub levels: ArrayView1<'a, u32>,
    pub entry: usize,
    pub max_level: usize,
    pub metric: Metric,
}

/// Graph fields checked once per call, as plain slices.
struct Checked<'a> {
    level0: &'a [u32],
    words: usize,
    n: usize,
    offset_data: usize,
    label_offset: usize,
    dim: usize,
    max_m0: usize,
    max_m: usize,
    upper: &'a [u32],
    upper_start: &'a [u64],
    levels: &'a [u32],
    entry: usize,
    max_level: usize,
}

fn bad(what: impl Into<String>) -> Error {
    Error::argument("graph", what.into())
}

impl<'a> Graph<'a> {
    fn check(&self) -> Result<Checked<'a>, Error> {
        let (n, words) = self.level0.dim();
        let level0 = self.level0.to_slice().ok_or_else(|| bad("level0 must be C-contiguous"))?;
        let upper = self.upper.to_slice().ok_or_else(|| bad("upper must be contiguous"))?;
        let upper_start = self.upper_start.to_slice().ok_or_else(|| bad("upper_start must be contiguous"))?;
        let levels = self.levels.to_slice().ok_or_else(|| bad("levels must be contiguous"))?;
        if n == 0 {
            return Err(bad("the graph has no elements"));
        }
        if n > u32::MAX as usize {
            return Err(bad(format!("{n} elements: hnswlib's ids are 32-bit")));
        }
        if self.dim == 0 || self.max_m0 == 0 {
            return Err(bad("dim and max_m0 must be positive"));
        }
        if self.max_m0 + 1 > self.offset_data
            || self.offset_data + self.dim > self.label_offset
            || self.label_offset + 2 > words
        {
            return Err(bad(format!(
                "an element of {words} words cannot hold {} links at word 0, {} values at word {} and a label at \
                 word {}",
                self.max_m0, self.dim, self.offset_data, self.label_offset
            )));
        }
        if upper_start.len() != n || levels.len() != n {
            return Err(bad(format!(
                "upper_start ({}) and levels ({}) must have one entry per element ({n})",
                upper_start.len(),
                levels.len()
            )));
        }
        if self.entry >= n {
            return Err(bad(format!("entry point {} is not one of the {n} elements", self.entry)));
        }
        if levels[self.entry] as usize != self.max_level {
            return Err(bad(format!(
                "the entry point's level {} is not the top level {}",
                levels[self.entry], self.max_level
            )));
        }
        Ok(Checked {
            level0,
            words,
            n,
            offset_data: self.offset_data,
            label_offset: self.label_offset,
            dim: self.dim,
            max_m0: self.max_m0,
            max_m: self.max_m,
            upper,
            upper_start,
            levels,
            entry: self.entry,
            max_level: self.max_level,
        })
    }
}

impl Checked<'_> {
    #[inline(always)]
    fn element(&self, id: usize) -> &[u32] {
        &self.level0[id * self.words..(id + 1) * self.words]
    }

    #[inline(always)]
    fn vector(&self, id: usize) -> &[f32] {
        let w = &self.element(id)[self.offset_data..self.offset_data + self.dim];
        // SAFETY: u32 and f32 have the same size and alignment; any bits are an f32.
        unsafe { std::slice::from_raw_parts(w.as_ptr() as *const f32, w.len()) }
    }

    #[inline(always)]
    fn label(&self, id: usize) -> u64 {
        let e = self.element(id);
        e[self.label_offset] as u64 | (e[self.label_offset + 1] as u64) << 32
    }

    /// Level-0 neighbours of `id`.
    #[inline(always)]
    fn links0(&self, id: usize) -> Result<&[u32], Error> {
        let e = self.element(id);
        let count = (e[0] & 0xFFFF) as usize;
        if count > self.max_m0 {
            return Err(bad(format!("element {id} has {count} level-0 links, more than {}", self.max_m0)));
        }
        Ok(&e[1..1 + count])
    }

    /// Neighbours of `id` at `level` >= 1.
    fn links(&self, id: usize, level: usize) -> Result<&[u32], Error> {
        if (self.levels[id] as usize) < level {
            return Err(bad(format!("element {id} (level {}) is linked at level {level}", self.levels[id])));
        }
        let start = usize::try_from(self.upper_start[id]).unwrap_or(usize::MAX);
        let list = start
            .checked_add((level - 1) * (self.max_m + 1))
            .and_then(|s| self.upper.get(s..s.checked_add(self.max_m + 1)?))
            .ok_or_else(|| bad(format!("element {id}'s level-{level} links lie outside the upper lists")))?;
        let count = (list[0] & 0xFFFF) as usize;
        if count > self.max_m {
            return Err(bad(format!("element {id} has {count} level-{level} links, more than {}", self.max_m)));
        }
        Ok(&list[1..1 + count])
    }

    #[inline(always)]
    fn id(&self, raw: u32) -> Result<usize, Error> {
        let id = raw as usize;
        if id >= self.n {
            return Err(bad(format!("link to element {id} of a {}-element graph", self.n)));
        }
        Ok(id)
    }

    #[inline(always)]
    fn prefetch(&self, id: usize) {
        // Two cache lines at most: the hardware prefetcher follows the rest of the row.
        let v = self.vector(id);
        crate::simd::prefetch_lines(v.as_ptr().cast(), std::mem::size_of_val(v).min(128));
    }
}

const M_L2: u8 = 0;
const M_IP: u8 = 1;

/// Distances of the query to four rows: squared L2 (`M_L2`) or 1 − q·r (`M_IP`, the
/// cosine metric on normalised vectors), in float32 lanes, as hnswlib computes them.
#[inline(always)]
fn dist4<I: Isa, const M: u8>(q: &[f32], r: [&[f32]; 4]) -> [f32; 4] {
    let mut acc = [[0.0f32; LANES]; 4];
    let (qc, qt) = q.as_chunks::<LANES>();
    let rc = r.map(|x| x.as_chunks::<LANES>().0);
    for (c, x) in qc.iter().enumerate() {
        for j in 0..4 {
            let y = &rc[j][c];
            for l in 0..LANES {
                acc[j][l] = if M == M_L2 {
                    let v = x[l] - y[l];
                    madd::<I, f32>(v, v, acc[j][l])
                } else {
                    madd::<I, f32>(x[l], y[l], acc[j][l])
                };
            }
        }
    }
    let base = qc.len() * LANES;
    for (l, &x) in qt.iter().enumerate() {
        for j in 0..4 {
            let y = r[j][base + l];
            acc[j][l] = if M == M_L2 {
                let v = x - y;
                madd::<I, f32>(v, v, acc[j][l])
            } else {
                madd::<I, f32>(x, y, acc[j][l])
            };
        }
    }
    acc.map(|a| finish::<M>(lanes::sum(a)))
}

#[inline(always)]
fn dist1<I: Isa, const M: u8>(q: &[f32], r: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    let (qc, qt) = q.as_chunks::<LANES>();
    let (rc, rt) = r.as_chunks::<LANES>();
    for (x, y) in qc.iter().zip(rc) {
        for l in 0..LANES {
            acc[l] = if M == M_L2 {
                let v = x[l] - y[l];
                madd::<I, f32>(v, v, acc[l])
            } else {
                madd::<I, f32>(x[l], y[l], acc[l])
            };
        }
    }
    for (l, (&x, &y)) in qt.iter().zip(rt).enumerate() {
        acc[l] = if M == M_L2 {
            let v = x - y;
            madd::<I, f32>(v, v, acc[l])
        } else {
            madd::<I, f32>(x, y, acc[l])
        };
    }
    finish::<M>(lanes::sum(acc))
}

#[inline(always)]
fn finish<const M: u8>(s: f32) -> f32 {
    if M == M_L2 {
        s
    } else {
        1.0 - s
    }
}

/// Distances of the query to the rows of `ids`, four at a time.
#[inline(always)]
fn distances<I: Isa, const M: u8>(g: &Checked<'_>, q: &[f32], ids: &[u32], out: &mut Vec<f32>) {
    out.clear();
    let (quads, rest) = ids.as_chunks::<4>();
    for c in quads {
        let d = dist4::<I, M>(q, c.map(|id| g.vector(id as usize)));
        out.extend_from_slice(&d);
    }
    for &id in rest {
        out.push(dist1::<I, M>(q, g.vector(id as usize)));
    }
}

/// A distance and an id as one u64 that sorts as (distance, id): the exact search's
/// keys (`Keyed` for f32).
#[inline(always)]
fn key(d: f32, id: usize) -> u64 {
    <f32 as Keyed>::pack(d, id as u64)
}

#[inline(always)]
fn unkey(k: u64) -> (f32, usize) {
    let (d, id) = <f32 as Keyed>::unpack(k);
    (d, id as usize)
}

/// One thread's working memory, reused from query to query.
struct Work {
    visited: Vec<u16>,
    tag: u16,
    top: BinaryHeap<u64>,
    /// Candidates as `!key`: the max-heap pops the nearest.
    cand: BinaryHeap<u64>,
    batch: Vec<u32>,
    dist: Vec<f32>,
    query: Vec<f32>,
    found: Vec<u64>,
}

impl Work {
    fn new(n: usize) -> Work {
        Work {
            visited: vec![0; n],
            tag: 0,
            top: BinaryHeap::new(),
            cand: BinaryHeap::new(),
            batch: Vec::new(),
            dist: Vec::new(),
            query: Vec::new(),
            found: Vec::new(),
        }
    }

    fn next_tag(&mut self) -> u16 {
        self.tag = self.tag.wrapping_add(1);
        if self.tag == 0 {
            self.visited.fill(0);
            self.tag = 1;
        }
        self.tag
    }
}

/// hnswlib's `searchKnn` of one prepared query: leaves the ef nearest found in `w.found`,
/// sorted by (distance, internal id).
#[inline(always)]
fn search_one<I: Isa, const M: u8>(g: &Checked<'_>, q: &[f32], ef: usize, w: &mut Work) -> Result<(), Error> {
    let mut cur = g.entry;
    let mut cur_d = dist1::<I, M>(q, g.vector(cur));
    for level in (1..=g.max_level).rev() {
        let mut changed = true;
        while changed {
            changed = false;
            w.batch.clear();
            for &raw in g.links(cur, level)? {
                g.id(raw)?;
                w.batch.push(raw);
            }
            distances::<I, M>(g, q, &w.batch, &mut w.dist);
            for (&id, &d) in w.batch.iter().zip(&w.dist) {
                if d < cur_d {
                    cur_d = d;
                    cur = id as usize;
                    changed = true;
                }
            }
        }
    }
    let tag = w.next_tag();
    w.top.clear();
    w.cand.clear();
    w.top.push(key(cur_d, cur));
    w.cand.push(!key(cur_d, cur));
    w.visited[cur] = tag;
    let mut bound = cur_d;
    while let Some(&c) = w.cand.peek() {
        let (cd, id) = unkey(!c);
        if cd > bound {
            break;
        }
        w.cand.pop();
        w.batch.clear();
        for &raw in g.links0(id)? {
            let n = g.id(raw)?;
            if w.visited[n] != tag {
                w.visited[n] = tag;
                g.prefetch(n);
                w.batch.push(raw);
            }
        }
        distances::<I, M>(g, q, &w.batch, &mut w.dist);
        for (&n, &d) in w.batch.iter().zip(&w.dist) {
            if w.top.len() < ef || bound > d {
                let k = key(d, n as usize);
                w.cand.push(!k);
                w.top.push(k);
                if w.top.len() > ef {
                    w.top.pop();
                }
                bound = unkey(*w.top.peek().expect("top holds the element just pushed")).0;
            }
        }
    }
    w.found.clear();
    w.found.extend(w.top.drain());
    w.found.sort_unstable();
    Ok(())
}

/// Searches the rows `lo..` of `queries` that fit the output views into `ids` / `dists`.
#[inline(always)]
fn search_rows_metric<I: Isa, const M: u8>(
    g: &Checked<'_>, queries: &ArrayView2<'_, f32>, lo: usize, k: usize, ef: usize, cosine: bool,
    ids: &mut ArrayViewMut2<'_, i64>, dists: &mut ArrayViewMut2<'_, f32>, cancel: &Cancel,
) -> Result<(), Error> {
    let mut w = Work::new(g.n);
    for r in 0..ids.nrows() {
        if cancel.is_cancelled() {
            return Ok(());
        }
        let row = queries.index_axis(Axis(0), lo + r);
        w.query.clear();
        w.query.extend(row.iter().copied());
        if cosine {
            // hnswlib's normalize_vector: x / (‖x‖ + 1e-30), in float32.
            let norm = (w.query.iter().map(|&v| v as f64 * v as f64).sum::<f64>().sqrt() as f32) + 1e-30;
            for v in w.query.iter_mut() {
                *v /= norm;
            }
        }
        let q = std::mem::take(&mut w.query);
        let res = search_one::<I, M>(g, &q, ef, &mut w);
        w.query = q;
        res?;
        let mut irow = ids.index_axis_mut(Axis(0), r);
        let mut drow = dists.index_axis_mut(Axis(0), r);
        for j in 0..k {
            match w.found.get(j) {
                Some(&key) => {
                    let (d, id) = unkey(key);
                    irow[j] = g.label(id) as i64;
                    drow[j] = d;
                }
                None => {
                    irow[j] = -1;
                    drow[j] = f32::INFINITY;
                }
            }
        }
    }
    Ok(())
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn search_rows<I: Isa>(
    g: &Checked<'_>, queries: &ArrayView2<'_, f32>, lo: usize, k: usize, ef: usize, metric: Metric,
    ids: &mut ArrayViewMut2<'_, i64>, dists: &mut ArrayViewMut2<'_, f32>, cancel: &Cancel,
) -> Result<(), Error> {
    match metric {
        Metric::L2 => search_rows_metric::<I, M_L2>(g, queries, lo, k, ef, false, ids, dists, cancel),
        Metric::Cosine => search_rows_metric::<I, M_IP>(g, queries, lo, k, ef, true, ids, dists, cancel),
        Metric::Ip => search_rows_metric::<I, M_IP>(g, queries, lo, k, ef, false, ids, dists, cancel),
    }
}

multiversion! {
    #[allow(clippy::too_many_arguments)]
    fn search_rows_dispatch<>(
        g: &Checked<'_>, queries: &ArrayView2<'_, f32>, lo: usize, k: usize, ef: usize, metric: Metric,
        ids: &mut ArrayViewMut2<'_, i64>, dists: &mut ArrayViewMut2<'_, f32>, cancel: &Cancel,
    ) -> Result<(), Error> => search_rows
}

/// Queries per task when the search runs on several threads.
const TASK_QUERIES: usize = 64;

/// The k nearest elements of each query row in the graph, as hnswlib's `knn_query` with
/// search ef `max(ef, k)` finds them: `ids` (labels) and `dists` (n, k), nearest first,
/// ties by internal id. Distances are hnswlib's: squared L2, 1 − cos (the query is
/// normalised as hnswlib does; the graph holds normalised vectors) or 1 − q·r. A row for
/// which fewer than k elements were found ends in (−1, +inf).
///
/// `threads` = 1 searches on the calling thread; more runs tasks of `TASK_QUERIES`
/// queries on the kernels' pool. `cancel` is read before each query.
pub fn search(
    graph: &Graph<'_>, queries: ArrayView2<'_, f32>, k: usize, ef: usize, threads: usize, cancel: &Cancel,
) -> Result<(ndarray::Array2<i64>, ndarray::Array2<f32>), Error> {
    let g = graph.check()?;
    let (n, d) = queries.dim();
    if d != g.dim {
        return Err(Error::Shape(format!("the queries have {d} dimensions, the graph {}", g.dim)));
    }
    if k == 0 {
        return Err(Error::argument("k", "k must be at least 1"));
    }
    let ef = ef.max(k);
    let mut ids = ndarray::Array2::<i64>::zeros((n, k));
    let mut dists = ndarray::Array2::<f32>::zeros((n, k));
    let pool = if threads > 1 && n > TASK_QUERIES { threads::pool() } else { None };
    let metric = graph.metric;
    crate::knn::by_row_tasks(ids.view_mut(), dists.view_mut(), TASK_QUERIES, pool, cancel, |lo, i, dv| {
        search_rows_dispatch(&g, &queries, lo, k, ef, metric, i, dv, cancel)
    })?;
    Ok((ids, dists))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array1, Array2};

    /// A one-level graph in hnswlib's layout where every element links to all others (so
    /// the search with ef >= n is exact), labels the reverse of the element order.
    fn complete(x: &Array2<f32>) -> (Array2<u32>, usize, usize) {
        let (n, d) = x.dim();
        let (max_m0, offset, label) = (n - 1, n, n + d);
        let mut l0 = Array2::<u32>::zeros((n, label + 2));
        for i in 0..n {
            l0[[i, 0]] = (n - 1) as u32;
            for (slot, j) in (0..n).filter(|&j| j != i).enumerate() {
                l0[[i, 1 + slot]] = j as u32;
            }
            for c in 0..d {
                l0[[i, offset + c]] = x[[i, c]].to_bits();
            }
            l0[[i, label]] = (n - 1 - i) as u32;
        }
        (l0, max_m0, offset)
    }

    fn brute(x: &Array2<f32>, q: &[f32], metric: Metric) -> Vec<(f32, usize)> {
        let mut all: Vec<(f32, usize)> = (0..x.nrows())
            .map(|i| {
                let r = x.row(i);
                let d = match metric {
                    Metric::L2 => r.iter().zip(q).map(|(a, b)| (a - b) * (a - b)).sum(),
                    _ => 1.0 - r.iter().zip(q).map(|(a, b)| a * b).sum::<f32>(),
                };
                (d, x.nrows() - 1 - i)
            })
            .collect();
        all.sort_by(|a, b| a.0.total_cmp(&b.0));
        all
    }

    #[test]
    fn a_complete_graph_searched_with_a_large_ef_is_exact() {
        let (n, d, k) = (40, 21, 5);
        let x = Array2::from_shape_fn((n, d), |(i, j)| ((i * 31 + j * 17) % 23) as f32 / 7.0 - 1.5);
        let q = Array2::from_shape_fn((7, d), |(i, j)| ((i * 13 + j * 5) % 19) as f32 / 5.0 - 1.8);
        let (l0, max_m0, offset) = complete(&x);
        let levels = Array1::<u32>::zeros(n);
        let start = Array1::<u64>::zeros(n);
        let upper = Array1::<u32>::zeros(n);
        for metric in [Metric::L2, Metric::Ip] {
            let g = Graph {
                level0: l0.view(),
                offset_data: offset,
                label_offset: offset + d,
                dim: d,
                max_m0,
                max_m: max_m0 / 2,
                upper: upper.view(),
                upper_start: start.view(),
                levels: levels.view(),
                entry: 3,
                max_level: 0,
                metric,
            };
            // At the dispatched level only: switching levels here would race the other
            // tests (tests/test_graph_search.py covers every level, in one thread).
            for threads in [1, 2] {
                let (ids, dist) = search(&g, q.view(), k, n, threads, &Cancel::new()).unwrap();
                for r in 0..q.nrows() {
                    let want = brute(&x, q.row(r).as_slice().unwrap(), metric);
                    for j in 0..k {
                        assert_eq!(ids[[r, j]] as usize, want[j].1, "{metric:?} row {r} rank {j}");
                        assert!((dist[[r, j]] - want[j].0).abs() <= 1e-4 * (1.0 + want[j].0.abs()));
                    }
                }
            }
            // More neighbours than elements: the rows end in (-1, inf).
            let (ids, dist) = search(&g, q.view(), n + 2, 1, 1, &Cancel::new()).unwrap();
            assert!(ids.column(n).iter().all(|&i| i == -1) && dist.column(n + 1).iter().all(|d| d.is_infinite()));
        }
    }

    #[test]
    fn a_link_out_of_range_is_an_error_not_a_read() {
        let x = Array2::from_shape_fn((10, 4), |(i, j)| (i + j) as f32);
        let (mut l0, max_m0, offset) = complete(&x);
        l0[[2, 3]] = 10;
        let (levels, start, upper) = (Array1::<u32>::zeros(10), Array1::<u64>::zeros(10), Array1::<u32>::zeros(0));
        let g = Graph {
            level0: l0.view(),
            offset_data: offset,
            label_offset: offset + 4,
            dim: 4,
            max_m0,
            max_m: 4,
            upper: upper.view(),
            upper_start: start.view(),
            levels: levels.view(),
            entry: 0,
            max_level: 0,
            metric: Metric::L2,
        };
        let q = Array2::<f32>::zeros((1, 4));
        let e = search(&g, q.view(), 3, 20, 1, &Cancel::new()).unwrap_err();
        assert!(format!("{e}").contains("link to element 10"), "{e}");
        let cancel = Cancel::new();
        cancel.cancel();
        assert!(matches!(search(&g, q.view(), 3, 20, 1, &cancel), Err(Error::Interrupted)));
        let g2 = Graph { entry: 10, ..g };
        assert!(search(&g2, q.view(), 3, 20, 1, &Cancel::new()).is_err());
    }
}

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
    n: usize, cancel: &Cancel, empty: impl Fn() -> R + Sync + Send, block: impl Fn(usize, usize) -> R + Sync + Send,
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

// -- sampling="rank": the candidates of a draw whose weights are rank^-β -----------------

/// A `sampling="rank"` draw over `values` (`pickaxe.per_row.rank_candidates`): weight of a
/// row rank^-β, rank = 1 + the rows scoring higher (NaN never ranked nor drawn), key
/// ln w − ln(−ln u) with u hashed from the row's number (`groups::uniform`).
#[derive(Clone, Copy, Debug)]
pub struct RankDraw<'a> {
    pub values: &'a [f64],
    /// Row i's number is `numbers[i]`, or `offset + i` when None.
    pub numbers: Option<&'a [i64]>,
    pub offset: i64,
    /// The draw stream's seed mod 2^64.
    pub seed: u64,
    pub beta: f64,
    /// Rows drawn (per group).
    pub k: usize,
    /// Score cuts, strictly descending, no NaN (at most `MAX_EDGES`): they split the rows
    /// into classes whose ranks are bounded by counting (see `rank_draw_candidates`).
    pub edges: &'a [f64],
    /// Each row's group, 0..groups (None: one group).
    pub codes: Option<&'a [i64]>,
    pub groups: usize,
    /// Most candidates kept before giving up (None returned: the caller sorts instead).
    pub limit: usize,
}

/// Most score cuts of a rank draw (2 · cuts + 1 classes fit a byte, 255 marks NaN).
pub const MAX_EDGES: usize = 120;

/// A rank draw's candidates: positions (ascending) and their exact competition ranks.
pub type RankCandidates = (Vec<usize>, Vec<i64>);

impl RankDraw<'_> {
    #[inline(always)]
    fn uniform(&self, i: usize) -> f64 {
        let number = match self.numbers {
            Some(n) => n[i],
            None => self.offset.wrapping_add(i as i64),
        };
        crate::groups::uniform(number, self.seed)
    }

    #[inline(always)]
    fn group(&self, i: usize) -> usize {
        self.codes.map_or(0, |c| c[i] as usize)
    }
}

const NAN_CLASS: u8 = u8::MAX;

/// The u below which a row of log weight at most `log_w` has a key below `t`
/// (key = ln w − ln(−ln(u + 2^-54)) < t  ⇔  u + 2^-54 < exp(−exp(ln w − t))), made low by
/// a margin so that no rounding (here or in numpy's logarithms) drops a row that could
/// reach `t`: 0 while `t` is −∞.
#[inline]
fn rank_cut(log_w: f64, t: f64) -> f64 {
    if t == f64::NEG_INFINITY {
        return 0.0;
    }
    let margin = 1e-9 * (1.0 + log_w.abs() + t.abs());
    (-(log_w - t + margin).exp()).exp() * (1.0 - 1e-9) - 1e-15
}

/// How many of the first entries of `p` (length a power of two) satisfy `pred`, for a
/// predicate true on a prefix and false on the last entry: a binary search of fixed
/// depth without branches on the data (a conditional move per step).
#[inline(always)]
fn prefix(p: &[f64], pred: impl Fn(f64) -> bool) -> usize {
    let mut base = 0usize;
    let mut half = p.len() / 2;
    while half > 0 {
        base += half * usize::from(pred(p[base + half - 1])); // no branch to mispredict
        half /= 2;
    }
    base
}

/// The rows of a `sampling="rank"` draw that may be among the `k` highest keys (per
/// group), with their exact ranks, without sorting the pool: the top `k` of the exact keys
/// over the candidates is the top `k` over every row, ties included (every row left out
/// has a key strictly below `k` candidates' keys, by a margin far above rounding).
///
/// 1. Classes: the `edges` e_0 > e_1 > … split the rows into classes, in descending
///    order, {v > e_0}, {v = e_0}, {e_0 > v > e_1}, {v = e_1}, …, {v < e_last}, counted
///    (one pass, a binary search of fixed depth a row). A row's rank is then exact in a
///    class {v = e_j} (1 + the rows of the classes above) and bounded in an open class,
///    between 1 + the rows above and the rows above plus the class's own: its key lies
///    between the keys its lowest and its highest possible rank give.
/// 2. Draw (one pass): each group keeps the `k` best lower bounds of its rows' keys
///    (`Bounded`); its k-th, t, rises as rows come, and a row whose upper bound is below
///    t cannot be drawn. The test is made on the row's hashed uniform alone, against a
///    cut per (group, class) recomputed when t rises, so most rows cost a hash and a
///    compare; the rows that pass are the candidates, filtered again by the final t.
/// 3. Exact ranks of the candidates of open classes (one pass): each row of such a class
///    is located among its class's candidate scores (a binary search of fixed depth)
///    and counted once; a suffix sum gives each candidate the rows above it in its class.
///
/// Cost: three passes over the N rows, O(N log(edges · candidates per class)) and N
/// bytes of classes, plus O(candidates · log) work; no N log N sort. `Ok(None)` when the
/// candidates outnumber `limit` (weights so flat, e.g. β near 0 with groups of fewer
/// than k rows, that most rows could be drawn).
pub fn rank_draw_candidates(spec: &RankDraw<'_>, cancel: &Cancel) -> Result<Option<RankCandidates>, Error> {
    let v = spec.values;
    let n = v.len();
    let edges = spec.edges;
    let l = edges.len();
    if l > MAX_EDGES {
        return Err(Error::argument("edges", format!("at most {MAX_EDGES} score cuts; got {l}")));
    }
    if edges.iter().any(|e| e.is_nan()) || edges.windows(2).any(|w| !(w[0] > w[1])) {
        return Err(Error::argument("edges", "score cuts must be strictly descending and not NaN"));
    }
    if let Some(nums) = spec.numbers {
        if nums.len() != n {
            return Err(Error::Shape(format!("row numbers: {} for {n} scores; one per score", nums.len())));
        }
    }
    let groups = spec.groups.max(1);
    if let Some(codes) = spec.codes {
        if codes.len() != n {
            return Err(Error::Shape(format!("group codes: {} for {n} scores; one per score", codes.len())));
        }
        if let Some(bad) = codes.iter().position(|&c| c < 0 || c as usize >= groups) {
            return Err(Error::argument(
                "codes",
                format!("row {bad}'s group code {} is outside 0..{groups}", codes[bad]),
            ));
        }
    }
    let classes = 2 * l + 1;
    let k = spec.k;
    const CHUNK: usize = 1 << 20;

    // 1. classes and their counts; the cuts padded with −∞ to a power of two (> l)
    let mut padded = edges.to_vec();
    padded.resize((l + 1).next_power_of_two(), f64::NEG_INFINITY);
    // up to 15 cuts: 16 compares without a dependency chain (vectorised), not a search
    let few: Option<[f64; 16]> = (padded.len() <= 16).then(|| {
        let mut a = [f64::NEG_INFINITY; 16];
        a[..padded.len()].copy_from_slice(&padded);
        a
    });
    let mut cls = crate::error::filled(n, 0u8)?;
    let mut count = vec![[0i64; 4]; classes]; // four counters a class: no chain of adds
    for lo in (0..n).step_by(CHUNK) {
        cancel.check()?;
        let hi = (lo + CHUNK).min(n);
        for (i, (&x, out)) in v[lo..hi].iter().zip(&mut cls[lo..hi]).enumerate() {
            let j = if let Some(few) = &few {
                few.iter().map(|&e| usize::from(e > x)).sum()
            } else {
                prefix(&padded, |e| e > x)
            };
            let c = 2 * j + usize::from(j < l && x == padded[j]);
            let c = if x.is_nan() { NAN_CLASS } else { c as u8 };
            *out = c;
            if c != NAN_CLASS {
                count[c as usize][i & 3] += 1;
            }
        }
    }
    let count: Vec<i64> = count.iter().map(|c| c.iter().sum()).collect();
    let mut above = vec![0i64; classes]; // rows in the classes before
    for c in 1..classes {
        above[c] = above[c - 1] + count[c - 1];
    }
    let ln_rank = |r: i64| -spec.beta * (r.max(1) as f64).ln();
    let log_w_hi: Vec<f64> = (0..classes).map(|c| ln_rank(1 + above[c])).collect();
    let log_w_lo: Vec<f64> =
        (0..classes).map(|c| if c % 2 == 1 { ln_rank(1 + above[c]) } else { ln_rank(above[c] + count[c]) }).collect();

    // 2. the draw: per group the k best lower bounds, a cut per (group, class) (NaN's
    //    class: a cut of 2, above every u)
    let stride = classes + 1;
    let mut cut = vec![0.0f64; groups * stride];
    for g in 0..groups {
        cut[g * stride + classes] = 2.0;
    }
    let slot = |c: u8| if c == NAN_CLASS { classes } else { c as usize };
    let mut best: Vec<Bounded<f64>> = (0..groups).map(|_| Bounded::new(k, true)).collect();
    let mut floor = vec![f64::NEG_INFINITY; groups];
    let recut = |cut: &mut [f64], g: usize, t: f64| {
        for c in 0..classes {
            cut[g * stride + c] = rank_cut(log_w_hi[c], t);
        }
    };
    let mut kept: Vec<usize> = Vec::new();
    let refilter = |kept: &mut Vec<usize>, cut: &[f64]| {
        kept.retain(|&i| spec.uniform(i) >= cut[spec.group(i) * stride + slot(cls[i])]);
    };
    if k == 0 {
        cut.fill(2.0);
    }
    for lo in (0..n).step_by(CHUNK) {
        cancel.check()?;
        let hi = (lo + CHUNK).min(n);
        for i in lo..hi {
            let c = cls[i];
            let g = spec.group(i);
            let u = spec.uniform(i);
            if u < cut[g * stride + slot(c)] {
                continue;
            }
            kept.push(i);
            let key_lo = log_w_lo[c as usize] - (-(u + HALF_CELL).ln()).ln();
            best[g].push(key_lo, i as i64, i);
            if let Some(t) = best[g].floor() {
                if t != floor[g] {
                    floor[g] = t;
                    recut(&mut cut, g, t);
                }
            }
        }
        if kept.len() > 2 * spec.limit {
            refilter(&mut kept, &cut);
            if kept.len() > spec.limit {
                return Ok(None);
            }
        }
    }
    // the final floors: each full group's k-th best lower bound
    for (g, b) in best.into_iter().enumerate() {
        let mut buf = b.buf;
        if k > 0 && buf.len() >= k {
            keep_best(&mut buf, k);
            let t = buf.iter().map(|p| p.0).fold(f64::INFINITY, f64::min);
            recut(&mut cut, g, t);
        }
    }
    refilter(&mut kept, &cut);
    if kept.len() > spec.limit {
        return Ok(None);
    }

    // 3. exact ranks: each open class's rows located among its candidates' scores, kept
    //    ascending in a run of its own padded with +∞ to a power of two
    let mut by_class: Vec<(u8, f64, usize)> = kept.iter().map(|&i| (cls[i], v[i], i)).collect();
    by_class.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
    let mut start = vec![0usize; classes + 1]; // class c's candidates: start[c]..start[c+1]
    for &(c, _, _) in &by_class {
        start[c as usize + 1] += 1;
    }
    for c in 0..classes {
        start[c + 1] += start[c];
    }
    let open: Vec<bool> = (0..classes).map(|c| c % 2 == 0 && start[c + 1] > start[c]).collect();
    // class c's run: its candidates ascending, padded with +∞ to a power of two, at
    // runs[c]..runs[c + 1]; its counts at runs[c] + c + q
    let mut runs = vec![0usize; classes + 1];
    for c in 0..classes {
        let m = if open[c] { start[c + 1] - start[c] } else { 0 };
        runs[c + 1] = runs[c] + if open[c] { (m + 1).next_power_of_two() } else { 0 };
    }
    let mut ranks = vec![0i64; by_class.len()];
    if open.iter().any(|&o| o) {
        let mut pivots = crate::error::filled(runs[classes], f64::INFINITY)?;
        for c in (0..classes).filter(|&c| open[c]) {
            for (j, p) in by_class[start[c]..start[c + 1]].iter().enumerate() {
                pivots[runs[c] + j] = p.1;
            }
        }
        // bump[runs[c] + c + q]: rows of class c above exactly q of its candidates
        let mut bump = vec![0i64; runs[classes] + classes];
        for lo in (0..n).step_by(CHUNK) {
            cancel.check()?;
            let hi = (lo + CHUNK).min(n);
            for (&x, &c) in v[lo..hi].iter().zip(&cls[lo..hi]) {
                let c = c as usize;
                if c == NAN_CLASS as usize || !open[c] {
                    continue;
                }
                let q = prefix(&pivots[runs[c]..runs[c + 1]], |p| p < x);
                bump[runs[c] + c + q] += 1;
            }
        }
        for c in (0..classes).filter(|&c| open[c]) {
            // candidate j (ascending) has above it the rows above j + 1 or more
            let mut higher = 0i64;
            for j in (0..start[c + 1] - start[c]).rev() {
                higher += bump[runs[c] + c + j + 1];
                ranks[start[c] + j] = 1 + above[c] + higher;
            }
        }
    }
    for c in (0..classes).filter(|c| c % 2 == 1) {
        ranks[start[c]..start[c + 1]].fill(1 + above[c]);
    }
    let mut out: Vec<(usize, i64)> = by_class.iter().map(|p| p.2).zip(ranks).collect();
    out.sort_unstable_by_key(|p| p.0);
    Ok(Some(out.into_iter().unzip()))
}

/// u's offset to the middle of its 2^-53 cell (`groups::draw_key`).
const HALF_CELL: f64 = 1.0 / (1u64 << 54) as f64;

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

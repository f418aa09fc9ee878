//! `top_k`: positions of the k highest scores, highest first, ties by ascending position,
//! NaN never selected. Each block of the input keeps a buffer of at most 2k candidates
//! behind a rising threshold (an O(N) scan with rare pushes), the buffers are merged, and
//! only the k winners are sorted. Memory is O(k · tasks), never O(N).

use std::cmp::Ordering;

use ndarray::{ArrayView1, Axis};
use rayon::prelude::*;

use crate::cancel::Cancel;
use crate::error::Error;
use crate::groups::Code;
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
pub struct RankDraw<'a, C: Code = i64> {
    pub values: &'a [f64],
    /// Row i's number is `numbers[i]`, or `offset + i` when None.
    pub numbers: Option<&'a [i64]>,
    pub offset: i64,
    /// The draw stream's seed mod 2^64.
    pub seed: u64,
    pub beta: f64,
    /// Rows drawn (per group).
    pub k: usize,
    /// Each row's group, 0..groups (None: one group).
    pub codes: Option<&'a [C]>,
    pub groups: usize,
    /// Most candidates kept before giving up (None returned: the caller sorts instead).
    pub limit: usize,
}

/// A rank draw's candidates: positions (ascending), their exact competition ranks, and
/// each group's rows scoring a number.
pub type RankCandidates = (Vec<usize>, Vec<i64>, Vec<u64>);

impl<C: Code> RankDraw<'_, C> {
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
        self.codes.map_or(0, |c| c[i].as_i64() as usize)
    }
}

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

/// A score as an unsigned integer of the same order (−0 as +0, so that equal scores
/// have equal keys); not for NaN.
#[inline(always)]
fn order_key(x: f64) -> u64 {
    crate::knn::total_order_bits(x + 0.0)
}

/// Scores below (above) a bucket's sampled range fall in its first (last) bin.
#[derive(Clone, Copy, Debug)]
struct Bucket {
    lo: u64,
    shift: u32,
    base: u32,
    last: u64,
}

/// Bins of a rank draw's scores: a non-decreasing map of scores to 0..n found in O(1) (no
/// search). The order keys' top 12 bits (sign and exponent) pick a bucket; a bucket the
/// sample reaches splits the range of its sampled keys into equal parts, as many as
/// its share of the sample asks (a power of two of key units each), a run of buckets it
/// does not reach is one bin. NaN's bin is n (< 2^16). The bins only shape the work:
/// ranks come from counts.
struct Bins {
    table: Box<[Bucket; 4096]>,
    n: usize,
}

/// Scores read (strided) to lay out the bins, and about how many bins they make.
const BIN_SAMPLE: usize = 1 << 16;
const BINS: usize = 1 << 15;

impl Bins {
    fn new(v: &[f64]) -> Bins {
        let step = (v.len() / BIN_SAMPLE).max(1);
        let (mut seen, mut lo, mut hi) = (vec![0usize; 4096], vec![u64::MAX; 4096], vec![0u64; 4096]);
        let mut total = 0usize;
        for &x in v.iter().step_by(step).filter(|x| !x.is_nan()) {
            let key = order_key(x);
            let b = (key >> 52) as usize;
            seen[b] += 1;
            lo[b] = lo[b].min(key);
            hi[b] = hi[b].max(key);
            total += 1;
        }
        let mut table = Box::new([Bucket { lo: 0, shift: 63, base: 0, last: 0 }; 4096]);
        let (mut base, mut empty) = (0usize, false); // empty: the bin `base` is a run's
        for (b, bucket) in table.iter_mut().enumerate() {
            if seen[b] == 0 {
                *bucket = Bucket { lo: 0, shift: 63, base: base as u32, last: 0 };
                empty = true;
                continue;
            }
            base += usize::from(empty);
            empty = false;
            let want = (BINS * seen[b]).div_ceil(total) as u64;
            let range = hi[b] - lo[b];
            let mut shift = 0;
            while shift < 63 && (range >> shift) >= want {
                shift += 1;
            }
            *bucket = Bucket { lo: lo[b], shift, base: base as u32, last: range >> shift };
            base += bucket.last as usize + 1;
        }
        Bins { table, n: base + usize::from(empty) }
    }

    /// The bin of a score and its order key (NaN: bin n).
    #[inline(always)]
    fn of(&self, x: f64) -> (usize, u64) {
        let key = order_key(x);
        let b = &self.table[(key >> 52) as usize];
        let j = b.base as usize + (key.saturating_sub(b.lo) >> b.shift).min(b.last) as usize;
        (if x.is_nan() { self.n } else { j }, key)
    }
}

/// The first row of `rows` whose uniform (hashed from `number(i)`) reaches its cut
/// (`cut[at(i)]`), or the end of `rows`: the draw pass's inner loop, without a branch on
/// how rows are numbered or grouped.
#[inline(always)]
fn reaching(
    rows: std::ops::Range<usize>, seed: u64, cut: &[f64], number: impl Fn(usize) -> i64, at: impl Fn(usize) -> usize,
) -> usize {
    let end = rows.end;
    rows.into_iter().find(|&i| crate::groups::uniform(number(i), seed) >= cut[at(i)]).unwrap_or(end)
}

/// Most classes of bins whose rows share a cut in the draw pass.
const MAX_CLASSES: usize = 1024;

/// The rows of a `sampling="rank"` draw that may be among the `k` highest keys (per
/// group), with their exact ranks, without sorting the pool: the top `k` of the exact keys
/// over the candidates is the top `k` over every row, ties included (every row left out
/// has a key strictly below `k` candidates' keys, by a margin far above rounding).
///
/// 1. Bins (`Bins`, laid out from a strided sample, found in O(1) a row): one pass keeps
///    each row's bin (2 bytes) and counts each bin's rows (and each group's rows scoring
///    a number); a bin of many more rows than the sample foretold (ties) is then checked
///    for holding one score, in a pass over its rows alone. A row's rank lies between 1
///    + the rows of the bins above and those plus its bin's own, exactly 1 + the rows
///    above when its bin holds one row or one score; its key lies between the keys these
///    give. Consecutive bins whose bounds span at most a factor 2 of weight form a class.
/// 2. Draw (one pass): each group keeps the `k` best lower bounds of its rows' keys
///    (`Bounded`); its k-th, t, rises as rows come, and a row whose upper bound is below
///    t cannot be drawn. The test is made on the row's hashed uniform alone, against a
///    cut per (group, class) recomputed when t rises, so most rows cost a hash and a
///    compare (a tight scan); the rows that pass are the candidates, filtered again by
///    the final t and their own bin's bound.
/// 3. Exact ranks (one pass): the rows in bins holding candidates (but more than one
///    score) are listed with their scores, block by block, then each is located among
///    its bin's candidate scores and counted once; a suffix sum gives each candidate the
///    rows above it in its bin.
///
/// Cost: three passes over the N rows, O(1) each a row but for the few in the
/// candidates' bins, and 2N bytes; no N log N sort. Also returns each group's rows
/// scoring a number. `Ok(None)` when the candidates outnumber `limit` (weights so flat,
/// e.g. β near 0 with groups of fewer than k rows, that most rows could be drawn).
pub fn rank_draw_candidates<C: Code>(spec: &RankDraw<'_, C>, cancel: &Cancel) -> Result<Option<RankCandidates>, Error> {
    let v = spec.values;
    let n = v.len();
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
    }
    let k = spec.k;
    const CHUNK: usize = 1 << 20;

    // 1. each row's bin (kept: 2 bytes a row) and each bin's rows (slot nb: NaN), in
    //    u32 counters (a small table) added up every 2^31 rows
    let bins = Bins::new(v);
    let nb = bins.n;
    debug_assert!(nb < u16::MAX as usize);
    let mut binned: Vec<u16> = Vec::new();
    binned.try_reserve_exact(n).map_err(|_| Error::OutOfMemory { bytes: 2 * n })?;
    let mut count = vec![0u64; nb + 1];
    let mut part = vec![0u32; nb + 1];
    let mut since = 0usize;
    // each group's rows scoring a number (slot `groups`: codes out of range, an error)
    let mut scored = vec![0u64; groups + 1];
    for lo in (0..n).step_by(CHUNK) {
        cancel.check()?;
        let hi = (lo + CHUNK).min(n);
        match spec.codes {
            None => binned.extend(v[lo..hi].iter().map(|&x| {
                let j = bins.of(x).0;
                part[j] += 1;
                j as u16
            })),
            Some(codes) => binned.extend(v[lo..hi].iter().zip(&codes[lo..hi]).map(|(&x, &g)| {
                let j = bins.of(x).0;
                part[j] += 1;
                let at = (g.as_i64() as u64).min(groups as u64) as usize;
                scored[at] += u64::from(j != nb || at == groups);
                j as u16
            })),
        }
        since += hi - lo;
        if since >= 1 << 31 || hi == n {
            for (c, p) in count.iter_mut().zip(&mut part) {
                *c += u64::from(std::mem::take(p));
            }
            since = 0;
        }
    }
    if let Some(codes) = spec.codes.filter(|_| scored[groups] > 0) {
        if let Some(bad) = codes.iter().position(|&c| c.as_i64() < 0 || c.as_i64() as usize >= groups) {
            return Err(Error::argument(
                "codes",
                format!("row {bad}'s group code {} is outside 0..{groups}", codes[bad].as_i64()),
            ));
        }
    }
    if spec.codes.is_none() {
        scored[0] = n as u64 - count[nb];
    }
    scored.truncate(groups);
    let bin = |i: usize| binned[i] as usize;
    // a bin of many more rows than the sample foretold (ties: one score, or a few) is
    // checked for holding one score (one more pass, over its rows alone)
    let heavy = 4 * (n / BINS) as u64 + 4;
    let mut checked = vec![0u64; (nb + 1).div_ceil(64)];
    for j in (0..nb).filter(|&j| count[j] > heavy) {
        checked[j >> 6] |= 1 << (j & 63);
    }
    let mut span = vec![(u64::MAX, 0u64); nb + 1]; // checked bins' lowest and highest key
    if checked.iter().any(|&w| w != 0) {
        for lo in (0..n).step_by(CHUNK) {
            cancel.check()?;
            let hi = (lo + CHUNK).min(n);
            for (&j, &x) in binned[lo..hi].iter().zip(&v[lo..hi]) {
                let j = j as usize;
                if checked[j >> 6] >> (j & 63) & 1 != 0 {
                    let key = order_key(x);
                    span[j] = (span[j].0.min(key), span[j].1.max(key));
                }
            }
        }
    }
    // rank bounds of each bin's rows: 1 + the rows above, and the rows above and its own
    // (exact in a bin of one row or one score)
    let mut rank_lo = vec![1i64; nb + 1];
    let mut rank_hi = vec![1i64; nb + 1];
    let mut above = 0i64;
    for j in (0..nb).rev() {
        let c = count[j] as i64;
        rank_lo[j] = 1 + above;
        rank_hi[j] = if c <= 1 || span[j].0 == span[j].1 { 1 + above } else { above + c };
        above += c;
    }
    let ln_rank = |r: i64| -spec.beta * (r.max(1) as f64).ln();
    // classes of bins, from the top: a class's weights span at most a factor 2
    let ratio = 2f64.powf(1.0 / spec.beta.max(1.0));
    let mut class_of = vec![0u16; nb + 1];
    let mut class_top: Vec<i64> = Vec::new(); // each class's lowest rank
    for j in (0..nb).rev() {
        let fits = class_top.last().is_some_and(|&top| rank_hi[j] as f64 <= ratio * top as f64);
        if count[j] > 0 && !fits && class_top.len() < MAX_CLASSES {
            class_top.push(rank_lo[j]);
        }
        class_of[j] = class_top.len().saturating_sub(1) as u16;
    }
    let classes = class_top.len().max(1);
    class_of[nb] = classes as u16; // NaN: a cut of 2, above every u
    let log_w_top: Vec<f64> = (0..classes).map(|c| class_top.get(c).map_or(0.0, |&r| ln_rank(r))).collect();

    // 2. the draw: per group the k best lower bounds, a cut per (group, class)
    let stride = classes + 1;
    let mut cut = vec![0.0f64; groups * stride];
    for g in 0..groups {
        cut[g * stride + classes] = 2.0;
    }
    let mut best: Vec<Bounded<f64>> = (0..groups).map(|_| Bounded::new(k, true)).collect();
    let mut floor = vec![f64::NEG_INFINITY; groups];
    let recut = |cut: &mut [f64], g: usize, t: f64| {
        for c in 0..classes {
            cut[g * stride + c] = rank_cut(log_w_top[c], t);
        }
    };
    let mut kept: Vec<usize> = Vec::new();
    if k == 0 {
        cut.fill(2.0);
    }
    // the next row from `from` whose uniform reaches its cut (or `to`): a tight loop, one
    // instance for each way rows are numbered and grouped
    let (seed, offset) = (spec.seed, spec.offset);
    let next = |from: usize, to: usize, cut: &[f64]| -> usize {
        let cell = |i: usize| class_of[binned[i] as usize] as usize;
        match (spec.numbers, spec.codes) {
            (None, None) => reaching(from..to, seed, cut, |i| offset.wrapping_add(i as i64), cell),
            (Some(nums), None) => reaching(from..to, seed, cut, |i| nums[i], cell),
            (None, Some(codes)) => reaching(
                from..to,
                seed,
                cut,
                |i| offset.wrapping_add(i as i64),
                |i| codes[i].as_i64() as usize * stride + cell(i),
            ),
            (Some(nums), Some(codes)) => {
                reaching(from..to, seed, cut, |i| nums[i], |i| codes[i].as_i64() as usize * stride + cell(i))
            }
        }
    };
    for lo in (0..n).step_by(CHUNK) {
        cancel.check()?;
        let hi = (lo + CHUNK).min(n);
        let mut i = lo;
        loop {
            i = next(i, hi, &cut);
            if i >= hi {
                break;
            }
            let (j, g, u) = (bin(i), spec.group(i), spec.uniform(i));
            i += 1;
            kept.push(i - 1);
            let key_lo = ln_rank(rank_hi[j]) - (-(u + HALF_CELL).ln()).ln();
            best[g].push(key_lo, i as i64 - 1, i - 1);
            if let Some(t) = best[g].floor() {
                if t != floor[g] {
                    floor[g] = t;
                    recut(&mut cut, g, t);
                }
            }
        }
        if kept.len() > 2 * spec.limit {
            kept.retain(|&i| spec.uniform(i) >= cut[spec.group(i) * stride + class_of[bin(i)] as usize]);
            if kept.len() > spec.limit {
                return Ok(None);
            }
        }
    }
    // the final floors (each full group's k-th best lower bound), against each row's
    // own bin's bound
    for (g, b) in best.into_iter().enumerate() {
        let mut buf = b.buf;
        floor[g] = f64::NEG_INFINITY;
        if k > 0 && buf.len() >= k {
            keep_best(&mut buf, k);
            floor[g] = buf.iter().map(|p| p.0).fold(f64::INFINITY, f64::min);
        }
    }
    kept.retain(|&i| k > 0 && spec.uniform(i) >= rank_cut(ln_rank(rank_lo[bin(i)]), floor[spec.group(i)]));
    if kept.len() > spec.limit {
        return Ok(None);
    }

    // 3. exact ranks: in a bin of more than one score, each row located among the
    //    bin's candidates' scores (ascending, in a run of the bin's own)
    let mut cands: Vec<(usize, f64, usize)> = kept.iter().map(|&i| (bin(i), v[i], i)).collect();
    cands.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
    let mut ranks: Vec<i64> = cands.iter().map(|p| rank_lo[p.0]).collect();
    let mut run_of = vec![0u32; nb + 1]; // a bin's run of candidates, if marked
    let mut marked = vec![0u64; (nb + 1).div_ceil(64)]; // a bit a bin: L1-resident
    let mut runs: Vec<(usize, usize)> = Vec::new(); // candidates start..end
    let mut a = 0;
    while a < cands.len() {
        let j = cands[a].0;
        let b = a + cands[a..].iter().take_while(|p| p.0 == j).count();
        if rank_hi[j] != rank_lo[j] {
            run_of[j] = runs.len() as u32;
            marked[j >> 6] |= 1 << (j & 63);
            runs.push((a, b));
        }
        a = b;
    }
    if !runs.is_empty() {
        let pivots: Vec<f64> = cands.iter().map(|p| p.1).collect();
        // bump[start + r + q]: rows of run r's bin above exactly q of its candidates
        let mut bump = vec![0i64; cands.len() + runs.len()];
        // a block's rows in marked bins listed first, with their scores (a stream of
        // the scores, no branch: reading them scattered would miss the cache), then
        // located; blocks of 2^16 rows keep the list in cache
        const BLOCK: usize = 1 << 16;
        let mut hit = vec![(0u16, 0f64); BLOCK];
        for lo in (0..n).step_by(BLOCK) {
            if lo % CHUNK == 0 {
                cancel.check()?;
            }
            let hi = (lo + BLOCK).min(n);
            let mut m = 0;
            for (&j, &x) in binned[lo..hi].iter().zip(&v[lo..hi]) {
                hit[m] = (j, x);
                m += (marked[j as usize >> 6] >> (j & 63) & 1) as usize;
            }
            for &(j, x) in &hit[..m] {
                let r = run_of[j as usize] as usize;
                let (s, e) = runs[r];
                let q = pivots[s..e].partition_point(|&p| p < x);
                bump[s + r + q] += 1;
            }
        }
        for (r, &(s, e)) in runs.iter().enumerate() {
            // candidate j (ascending) has above it the rows above j + 1 or more
            let mut higher = 0i64;
            for j in (s..e).rev() {
                higher += bump[j + r + 1];
                ranks[j] += higher;
            }
        }
    }
    let mut out: Vec<(usize, i64)> = cands.iter().map(|p| p.2).zip(ranks).collect();
    out.sort_unstable_by_key(|p| p.0);
    let (at, ranks) = out.into_iter().unzip();
    Ok(Some((at, ranks, scored)))
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

    #[test]
    fn rank_bins_keep_the_order_of_scores() {
        let mut state = 99u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let special = [0.0, -0.0, f64::INFINITY, f64::NEG_INFINITY, f64::MIN_POSITIVE, 5e-324, -5e-324, 1.0, 0.5];
        for round in 0..6 {
            let n = 1000 + 7000 * round;
            let x: Vec<f64> = (0..n)
                .map(|i| match (next() % 8, round) {
                    (0, _) => special[i % special.len()],
                    (1, _) => f64::NAN,
                    (_, 0) => (next() % 5) as f64,
                    (_, 1) => -((next() >> 11) as f64) / (1u64 << 53) as f64,
                    (_, 2) => f64::from_bits(next() >> 2), // every exponent
                    _ => (next() % 1_000_000) as f64 / 1e6 + 0.25 * ((next() % 3) as f64 - 1.0),
                })
                .collect();
            // laid out from the first rows only: the others fall past the sampled ranges
            let bins = Bins::new(&x[..n / 3]);
            let mut by: Vec<f64> = x.iter().copied().filter(|v| !v.is_nan()).collect();
            by.sort_by(|a, b| a.partial_cmp(b).unwrap());
            for w in by.windows(2) {
                let (a, b) = (bins.of(w[0]).0, bins.of(w[1]).0);
                assert!(a <= b && b < bins.n, "{} {}", w[0], w[1]);
                if w[0] == w[1] {
                    assert_eq!(a, b); // -0 and +0 too
                }
            }
            assert_eq!(bins.of(f64::NAN).0, bins.n);
            assert!(bins.n < u16::MAX as usize);
        }
    }
}

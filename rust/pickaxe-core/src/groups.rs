//! The batch controls' selections (`pickaxe.batch_controls`): a weighted draw without
//! replacement as the top k of Efraimidis–Spirakis keys, and the best k rows of each
//! group. Both are one bounded pass (`select::Bounded`), parallel over blocks of rows and
//! merged under a total order (key descending, then row), so the result does not depend
//! on the split; memory is O(k) (O(groups · k)), never an N-sized temporary.

use std::str::FromStr;

use ndarray::{s, ArrayView1};

use crate::cancel::Cancel;
use crate::error::Error;
use crate::math::Real;
use crate::select::{over_blocks, Bounded, Item};

/// The weight of a drawn row: score^β (`power`) or exp(β · score) (`softmax`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Draw {
    Power,
    Softmax,
}

impl FromStr for Draw {
    type Err = Error;

    fn from_str(name: &str) -> Result<Draw, Error> {
        match name {
            "power" => Ok(Draw::Power),
            "softmax" => Ok(Draw::Softmax),
            other => {
                Err(Error::argument("sampling", format!("a kernel draw is \"power\" or \"softmax\"; got {other:?}")))
            }
        }
    }
}

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// The uniform in [0, 1) of row `number` under `seed` (splitmix64, Steele, Lea and Flood
/// 2014): `pickaxe.engine.uniforms` bit for bit (`seed` is the Python seed mod 2^64).
#[inline]
pub fn uniform(number: i64, seed: u64) -> f64 {
    let mut z = (number as u64).wrapping_add(seed.wrapping_mul(GOLDEN)).wrapping_add(GOLDEN);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// A draw's key of one row, ln w − ln(−ln u) (Gumbel-top-k, Kool et al. 2019), written
/// as `pickaxe.batch_controls.log_weights` and `gumbel_keys` compute it: u moved to the
/// middle of its 2^-53 cell, NaN for a NaN score, −inf for weight 0.
#[inline]
pub fn draw_key(score: f64, u: f64, draw: Draw, beta: f64) -> f64 {
    -((-(u + HALF_CELL).ln()).ln() - log_weight(score, draw, beta))
}

/// u's offset to the middle of its 2^-53 cell, so that neither log is infinite.
const HALF_CELL: f64 = 1.0 / (1u64 << 54) as f64;

/// ln w of a score (`pickaxe.batch_controls.log_weights`): β ln s, or β s; under power
/// with β = 0, 0 for every score but NaN.
#[inline]
fn log_weight(score: f64, draw: Draw, beta: f64) -> f64 {
    match draw {
        Draw::Softmax => beta * score,
        Draw::Power if beta == 0.0 => {
            if score.is_nan() {
                f64::NAN
            } else {
                0.0
            }
        }
        Draw::Power => score.ln() * beta,
    }
}

/// A draw over a run of rows: row i's number is `numbers[i]`, or `offset + i` when the
/// rows are numbered in order; `seed` is the draw stream's seed mod 2^64.
#[derive(Clone, Copy, Debug)]
pub struct DrawSpec<'a> {
    pub numbers: Option<ArrayView1<'a, i64>>,
    pub offset: i64,
    pub seed: u64,
    pub draw: Draw,
    pub beta: f64,
}

impl DrawSpec<'_> {
    #[inline]
    fn uniform(&self, i: usize) -> f64 {
        let number = match &self.numbers {
            Some(n) => n[i],
            None => self.offset.wrapping_add(i as i64),
        };
        uniform(number, self.seed)
    }

    fn check(&self, n: usize) -> Result<(), Error> {
        match &self.numbers {
            Some(v) if v.len() != n => {
                Err(Error::Shape(format!("row numbers: {} for {n} scores; one per score", v.len())))
            }
            _ => Ok(()),
        }
    }
}

/// Each row's draw key (`draw_key` of its score and of the uniform of its number).
pub fn draw_keys<T: Real>(scores: ArrayView1<'_, T>, spec: &DrawSpec<'_>) -> Result<Vec<f64>, Error> {
    spec.check(scores.len())?;
    let mut out = crate::error::filled(scores.len(), 0.0f64)?;
    for (i, (o, &s)) in out.iter_mut().zip(scores.iter()).enumerate() {
        *o = draw_key(s.to_f64(), spec.uniform(i), spec.draw, spec.beta);
    }
    Ok(out)
}

/// The `k` rows with the highest draw keys, best first (ties: ascending position; a NaN
/// key never): positions and keys. The keys are made row by row and never stored.
pub fn draw_top_k<T: Real>(
    scores: ArrayView1<'_, T>, spec: &DrawSpec<'_>, k: usize, cancel: &Cancel,
) -> Result<(Vec<usize>, Vec<f64>), Error> {
    let n = scores.len();
    spec.check(n)?;
    let k = k.min(n);
    let (draw, beta) = (spec.draw, spec.beta);
    let best = over_blocks(
        n,
        cancel,
        || Bounded::new(k, true),
        |lo, hi| {
            // key = ln w − ln(−ln u) ≤ ln w_max − ln(−ln u), which is below the buffer's
            // floor t when u < exp(−exp(ln w_max − t)): such rows are skipped on their
            // uniform alone, before any logarithm (most rows, once the floor has risen).
            // The cut is made slightly low so that rounding never skips a row that enters.
            let top = (lo..hi).map(|i| scores[i].to_f64()).fold(f64::NEG_INFINITY, f64::max);
            let log_w_max = log_weight(top, draw, beta); // w grows with the score (β >= 0)
            let mut best = Bounded::new(k, true);
            let (mut floor, mut cut) = (f64::NEG_INFINITY, 0.0f64);
            for i in lo..hi {
                let u = spec.uniform(i);
                if u < cut {
                    continue;
                }
                let key = draw_key(scores[i].to_f64(), u, draw, beta);
                best.push(key, i as i64, i);
                if let Some(t) = best.floor() {
                    if t != floor {
                        floor = t;
                        let margin = 1e-9 * (1.0 + log_w_max.abs() + t.abs());
                        cut = (-(log_w_max - t - margin).exp()).exp() * (1.0 - 1e-12);
                    }
                }
            }
            best
        },
        Bounded::merge,
    )?;
    Ok(best.into_sorted().into_iter().map(|(key, _, i)| (i, key)).unzip())
}

/// A group code: an integer column's value (or a factorized label).
pub trait Code: Copy + Send + Sync {
    fn as_i64(self) -> i64;
}

impl Code for i32 {
    fn as_i64(self) -> i64 {
        self as i64
    }
}

impl Code for i64 {
    fn as_i64(self) -> i64 {
        self
    }
}

/// What `group_top_k` keeps: `rows` grouped by slot (code − offset) ascending, each
/// group's best first, group g's rows at `rows[ends[g-1]..ends[g]]`; per slot, the rows
/// whose key is not NaN (`scored`) and all its rows (`sizes`).
#[derive(Debug, Default, PartialEq)]
pub struct GroupTops {
    pub rows: Vec<usize>,
    pub ends: Vec<usize>,
    pub scored: Vec<u64>,
    pub sizes: Vec<u64>,
}

struct Partial<T> {
    best: Vec<Bounded<T>>,
    scored: Vec<u64>,
    sizes: Vec<u64>,
}

/// One block's rows (key, code) into `p`, the first at position `lo`: each row counted in
/// its group and pushed to the group's buffer when at or above its floor. Returns the
/// first row whose code is outside the groups (the scan stops there). One function per
/// iterator type, inlined: a per-row closure call cost three times the instructions.
#[inline(always)]
fn scan_block<T: Real, C: Code>(
    rows: impl Iterator<Item = (T, C)>, lo: usize, offset: i64, floor: &[T], ties: Option<ArrayView1<'_, i64>>,
    p: &mut Partial<T>,
) -> Option<usize> {
    let groups = floor.len();
    let (sizes, scored) = (&mut p.sizes[..groups], &mut p.scored[..groups]);
    let best = &mut p.best[..groups];
    for (j, (v, c)) in rows.enumerate() {
        let g = c.as_i64().wrapping_sub(offset);
        if g < 0 || g as usize >= groups {
            return Some(lo + j);
        }
        let g = g as usize;
        sizes[g] += 1;
        scored[g] += u64::from(!v.is_nan());
        if v >= floor[g] {
            best[g].push(v, ties.as_ref().map_or((lo + j) as i64, |t| t[j]), lo + j);
        }
    }
    None
}

/// Which groups `group_top_k` reads and what it keeps of each.
#[derive(Debug, Clone, Copy)]
pub struct GroupSpec<'a, T> {
    /// Codes run over `offset..offset + groups` (a slot is code − offset).
    pub offset: i64,
    pub groups: usize,
    /// Rows kept per group.
    pub k: usize,
    /// Each row's tie key (e.g. its row number); its position when None.
    pub ties: Option<ArrayView1<'a, i64>>,
    /// Per slot, a key below which no row can be among the group's best (the k-th best
    /// of the rows a streamed run kept so far): such rows are counted but never buffered,
    /// so after the first batches a batch's rows cost one compare each. A row equal to
    /// its floor is still kept (its tie key decides). None, or −∞ for a slot: no floor.
    pub floors: Option<ArrayView1<'a, T>>,
}

/// The best `spec.k` rows of each group in one pass: `keys` descending, then tie keys
/// ascending, NaN never. `codes[i]` names row i's group; a code outside
/// `offset..offset + groups` is an error naming the row. Each group's bounded buffer has
/// its own threshold, so past the first rows of a group few rows are pushed at all.
pub fn group_top_k<T: Real, C: Code>(
    keys: ArrayView1<'_, T>, codes: ArrayView1<'_, C>, spec: &GroupSpec<'_, T>, cancel: &Cancel,
) -> Result<GroupTops, Error> {
    let GroupSpec { offset, groups, k, ties, floors } = *spec;
    let n = keys.len();
    if codes.len() != n {
        return Err(Error::Shape(format!("group codes: {} for {n} keys; one per key", codes.len())));
    }
    if let Some(t) = &ties {
        if t.len() != n {
            return Err(Error::Shape(format!("tie keys: {} for {n} keys; one per key", t.len())));
        }
    }
    if let Some(f) = &floors {
        if f.len() != groups {
            return Err(Error::Shape(format!("floors: {} for {groups} groups; one per group", f.len())));
        }
    }
    let ascending = ties.is_none();
    let empty = || Partial {
        best: (0..groups).map(|_| Bounded::new(k, ascending)).collect(),
        scored: vec![0; groups],
        sizes: vec![0; groups],
    };
    let bad = std::sync::atomic::AtomicUsize::new(usize::MAX);
    // No floor is a floor of −∞ (NaN is never at or above a floor): one compare per row.
    let floor: Vec<T> = floors.map_or_else(|| vec![T::NEG_INF; groups], |f| f.to_vec());
    let block = |lo: usize, hi: usize| {
        let mut p = empty();
        let (kv, cv) = (keys.slice(s![lo..hi]), codes.slice(s![lo..hi]));
        let tie = ties.as_ref().map(|t| t.slice(s![lo..hi]));
        // Contiguous views (numpy's usual case) scan as slices: ndarray's general
        // iterators cost several times more per row.
        let first_bad = match (kv.as_slice(), cv.as_slice()) {
            (Some(ks), Some(cs)) => {
                scan_block(ks.iter().copied().zip(cs.iter().copied()), lo, offset, &floor, tie, &mut p)
            }
            _ => scan_block(kv.iter().copied().zip(cv.iter().copied()), lo, offset, &floor, tie, &mut p),
        };
        if let Some(i) = first_bad {
            bad.fetch_min(i, std::sync::atomic::Ordering::Relaxed);
        }
        p
    };
    let merge = |mut a: Partial<T>, b: Partial<T>| {
        a.best = a.best.into_iter().zip(b.best).map(|(x, y)| x.merge(y)).collect();
        a.scored.iter_mut().zip(&b.scored).for_each(|(x, y)| *x += y);
        a.sizes.iter_mut().zip(&b.sizes).for_each(|(x, y)| *x += y);
        a
    };
    let all = over_blocks(n, cancel, empty, block, merge)?;
    let bad = bad.into_inner();
    if bad != usize::MAX {
        return Err(Error::argument(
            "codes",
            format!(
                "row {bad} has group code {}, outside {offset}..{}",
                codes[bad].as_i64(),
                offset.saturating_add(groups as i64)
            ),
        ));
    }
    let mut out = GroupTops { scored: all.scored, sizes: all.sizes, ..GroupTops::default() };
    for b in all.best {
        let sorted: Vec<Item<T>> = b.into_sorted();
        out.rows.extend(sorted.into_iter().map(|p| p.2));
        out.ends.push(out.rows.len());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array1;

    fn xorshift(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    #[test]
    fn splitmix_matches_reference_values() {
        // pickaxe.engine.uniforms(np.array([0, 1, -5, 2**62]), 7), computed with numpy
        let want = [0.771546556331567, 0.5230671798509814, 0.4533640337970338, 0.030891014539195294];
        for (&x, w) in [0i64, 1, -5, 1 << 62].iter().zip(want) {
            assert_eq!(uniform(x, 7), w, "number {x}");
        }
    }

    #[test]
    fn group_top_matches_sorting_each_group() {
        let mut s = 99u64;
        for &n in &[0usize, 1, 50, 3000, 2 * crate::select::BLOCK + 5] {
            let groups = 7usize;
            let keys: Vec<f64> = (0..n)
                .map(|_| match xorshift(&mut s) % 9 {
                    0 => f64::NAN,
                    _ => (xorshift(&mut s) % 20) as f64,
                })
                .collect();
            // group 5 never appears: an empty group
            let codes: Vec<i64> = (0..n).map(|_| 10 + [0, 1, 2, 3, 4, 6, 6][(xorshift(&mut s) % 7) as usize]).collect();
            let ties: Vec<i64> = (0..n as i64).map(|i| (i * 7919) % (n as i64).max(1)).collect();
            for &k in &[0usize, 1, 3, 40, n + 1] {
                for explicit in [false, true] {
                    let t = Array1::from(ties.clone());
                    let spec = GroupSpec { offset: 10, groups, k, ties: explicit.then(|| t.view()), floors: None };
                    let got = group_top_k(
                        Array1::from(keys.clone()).view(),
                        Array1::from(codes.clone()).view(),
                        &spec,
                        &Cancel::new(),
                    )
                    .unwrap();
                    let mut start = 0;
                    for g in 0..groups {
                        let mut idx: Vec<usize> =
                            (0..n).filter(|&i| codes[i] == 10 + g as i64 && !keys[i].is_nan()).collect();
                        let tie = |i: usize| if explicit { ties[i] } else { i as i64 };
                        idx.sort_by(|&a, &b| keys[b].partial_cmp(&keys[a]).unwrap().then(tie(a).cmp(&tie(b))));
                        assert_eq!(got.scored[g] as usize, idx.len());
                        idx.truncate(k);
                        assert_eq!(&got.rows[start..got.ends[g]], &idx[..], "n={n} k={k} g={g} explicit={explicit}");
                        start = got.ends[g];
                        assert_eq!(got.sizes[g] as usize, codes.iter().filter(|&&c| c == 10 + g as i64).count());
                    }
                }
            }
        }
    }

    #[test]
    fn floors_keep_what_the_unfloored_top_keeps_above_them() {
        // The best k of the rows at or above a floor are the best k of all rows, cut at
        // the floor: what a streamed run relies on when it passes its k-th best as floor.
        let mut s = 7u64;
        let n = 5000;
        let keys: Vec<f64> = (0..n).map(|_| (xorshift(&mut s) % 300) as f64).collect();
        let codes: Vec<i64> = (0..n).map(|_| (xorshift(&mut s) % 4) as i64).collect();
        let floors = Array1::from(vec![f64::NEG_INFINITY, 150.0, 290.0, 400.0]);
        let (kv, cv) = (Array1::from(keys.clone()), Array1::from(codes.clone()));
        for k in [1usize, 10, 100] {
            let plain = GroupSpec { offset: 0, groups: 4, k, ties: None, floors: None };
            let all = group_top_k(kv.view(), cv.view(), &plain, &Cancel::new()).unwrap();
            let floored = GroupSpec { floors: Some(floors.view()), ..plain };
            let got = group_top_k(kv.view(), cv.view(), &floored, &Cancel::new()).unwrap();
            assert_eq!((&got.scored, &got.sizes), (&all.scored, &all.sizes));
            let (mut a0, mut g0) = (0, 0);
            for g in 0..4 {
                let want: Vec<usize> =
                    all.rows[a0..all.ends[g]].iter().copied().filter(|&i| keys[i] >= floors[g]).collect();
                assert_eq!(&got.rows[g0..got.ends[g]], &want[..], "k={k} g={g}");
                (a0, g0) = (all.ends[g], got.ends[g]);
            }
        }
    }

    #[test]
    fn a_code_out_of_range_names_the_row() {
        let keys = Array1::from(vec![1.0f64, 2.0, 3.0]);
        let codes = Array1::from(vec![0i32, 3, 1]);
        let spec = GroupSpec { offset: 0, groups: 2, k: 1, ties: None, floors: None };
        let e = group_top_k(keys.view(), codes.view(), &spec, &Cancel::new()).unwrap_err();
        assert!(format!("{e}").contains("row 1 has group code 3"), "{e}");
    }

    #[test]
    fn draw_top_is_the_top_of_the_keys() {
        let mut s = 5u64;
        let n = 2 * crate::select::BLOCK + 3;
        let scores: Vec<f64> = (0..n)
            .map(|_| if xorshift(&mut s) % 50 == 0 { f64::NAN } else { (xorshift(&mut s) % 1000) as f64 / 999.0 })
            .collect();
        let a = Array1::from(scores);
        for draw in [Draw::Power, Draw::Softmax] {
            let spec = DrawSpec { numbers: None, offset: 3, seed: 11, draw, beta: 1.5 };
            let keys = Array1::from(draw_keys(a.view(), &spec).unwrap());
            let want = crate::select::top_k(keys.view(), 300, &Cancel::new()).unwrap();
            let (rows, got_keys) = draw_top_k(a.view(), &spec, 300, &Cancel::new()).unwrap();
            assert_eq!(rows, want);
            assert!(rows.iter().zip(&got_keys).all(|(&i, &g)| keys[i] == g));
        }
    }
}

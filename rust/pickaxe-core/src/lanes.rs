//! Lane arrays `[T; LANES]`: the kernels accumulate in them (one value per lane, LLVM
//! vectorises the loop at the caller's SIMD level) and reduce them once per row with the
//! helpers here. Every reduction is the same halving tree (lanes l and l + 8, then l and
//! l + 4, ...), so a sum is pairwise and its order, hence its rounding, is fixed: the
//! results are bit for bit those of the references the tests compare against.

use crate::math::{Real, LANES};

/// `f` folded over the lanes as a halving tree: four vector steps instead of fifteen
/// scalar ones. `f` must be associative and commutative on the values it sees (min, max,
/// +; NaN handling is the caller's).
#[inline(always)]
pub(crate) fn tree<T: Copy>(a: [T; LANES], f: impl Fn(T, T) -> T) -> T {
    const _: () = assert!(LANES == 16);
    let mut h8 = [a[0]; 8];
    for l in 0..8 {
        h8[l] = f(a[l], a[l + 8]);
    }
    let mut h4 = [a[0]; 4];
    for l in 0..4 {
        h4[l] = f(h8[l], h8[l + 4]);
    }
    f(f(h4[0], h4[2]), f(h4[1], h4[3]))
}

/// Σ of the lanes, pairwise: ((l0 + l8) + (l4 + l12)) + ... .
#[inline(always)]
pub(crate) fn sum<T: Real>(a: [T; LANES]) -> T {
    tree(a, |x, y| x + y)
}

/// The smallest lane (a NaN lane is kept or dropped as the comparisons fall).
#[inline(always)]
pub(crate) fn min<T: Real>(a: [T; LANES]) -> T {
    tree(a, |x, y| if y < x { y } else { x })
}

/// The largest lane (a NaN lane is kept or dropped as the comparisons fall).
#[inline(always)]
pub(crate) fn max<T: Real>(a: [T; LANES]) -> T {
    tree(a, |x, y| if y > x { y } else { x })
}

/// Σ of 16 f64 lanes, pairwise, in `sum`'s order: the f64 accumulators' total, once per
/// row. Written out over the reference (not as `sum(*a)`, which copies the lanes first).
#[inline(always)]
pub(crate) fn total(a: &[f64; LANES]) -> f64 {
    const _: () = assert!(LANES == 16);
    let mut h8 = [0.0f64; 8];
    for l in 0..8 {
        h8[l] = a[l] + a[l + 8];
    }
    ((h8[0] + h8[4]) + (h8[2] + h8[6])) + ((h8[1] + h8[5]) + (h8[3] + h8[7]))
}

/// `total` of each of `K` f64 lane accumulators.
#[inline(always)]
pub(crate) fn totals<const K: usize>(wide: &[[f64; LANES]; K]) -> [f64; K] {
    let mut out = [0.0; K];
    for k in 0..K {
        out[k] = total(&wide[k]);
    }
    out
}

/// Adds `K` lane accumulators of `T` into f64 lane accumulators, lane by lane: plain
/// vector widening and adds, no shuffles in the hot loop. Float32 kernels flush every
/// few hundred values so that long rows keep the accuracy of an f64 sum.
#[inline(always)]
pub(crate) fn flush<T: Real, const K: usize>(acc: &[[T; LANES]; K], wide: &mut [[f64; LANES]; K]) {
    for k in 0..K {
        for l in 0..LANES {
            wide[k][l] += acc[k][l].to_f64();
        }
    }
}

/// The values of `x` after its whole chunks of `LANES`, in a lane array filled with
/// `fill` elsewhere. When `x` has a whole chunk, this reads its last `LANES` values and
/// replaces the ones already covered by `fill` (a select, not a copy loop or memcpy per
/// call); the tail values then sit in the last lanes, which sums do not mind.
#[inline(always)]
pub(crate) fn tail<T: Real>(x: &[T], fill: T) -> [T; LANES] {
    let n = x.len();
    let mut v = [fill; LANES];
    if n >= LANES {
        let covered = LANES - n % LANES;
        let last: &[T; LANES] = x[n - LANES..].try_into().expect("n >= LANES");
        for l in 0..LANES {
            v[l] = if l >= covered { last[l] } else { fill };
        }
    } else {
        v[..n].copy_from_slice(x);
    }
    v
}

/// The largest of the lanes' best values and the lowest position holding it, from each
/// lane's best value and its position (positions as `T`): ties go to the lowest position.
#[inline(always)]
pub(crate) fn argmax<T: Real>(best: [T; LANES], pos: [T; LANES]) -> (T, T) {
    let bv = max(best);
    let mut cand = [T::INF; LANES];
    for l in 0..LANES {
        cand[l] = if best[l] == bv { pos[l] } else { T::INF };
    }
    (bv, min(cand))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_holds_exactly_the_tail() {
        for n in 1..70usize {
            let x: Vec<f32> = (1..=n).map(|i| i as f32).collect();
            let t = tail(&x, 0.0);
            let mut got: Vec<f32> = t.iter().copied().filter(|&v| v != 0.0).collect();
            got.sort_by(f32::total_cmp);
            let want: Vec<f32> = x[n - n % LANES..].to_vec();
            assert_eq!(got, if n < LANES { x.clone() } else { want }, "n = {n}");
        }
    }

    #[test]
    fn sums_are_the_pairwise_tree() {
        let a: [f64; LANES] = std::array::from_fn(|l| 1.0 / (l as f64 + 1.0) * 1e16f64.powi(l as i32 % 3));
        let h: Vec<f64> = (0..8).map(|l| a[l] + a[l + 8]).collect();
        let want = ((h[0] + h[4]) + (h[2] + h[6])) + ((h[1] + h[5]) + (h[3] + h[7]));
        assert_eq!(total(&a).to_bits(), want.to_bits());
        assert_eq!(totals(&[a, a]), [want, want]);
    }

    #[test]
    fn argmax_takes_the_lowest_position_of_the_largest() {
        let mut best = [0.0f64; LANES];
        let pos: [f64; LANES] = std::array::from_fn(|l| (LANES - l) as f64);
        best[3] = 2.0;
        best[9] = 2.0;
        assert_eq!(argmax(best, pos), (2.0, 7.0));
        assert_eq!(min(pos), 1.0);
        assert_eq!(max(pos), 16.0);
    }
}

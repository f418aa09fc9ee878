//! One-pass row statistics shared by the kernels. Each function walks a contiguous row in
//! lane arrays of `LANES` values (vectorised by LLVM at the caller's SIMD level) and, for
//! float32, flushes the lane sums into f64 every `BLOCK` chunks so that rows of 100,000
//! classes still sum to within a few float32 ULP of the exact value.
//!
//! The fast passes only flag a row as *suspect* (a NaN or infinite sum, a value out of
//! range); `diagnose_*` then rescans that one row in scalar code to name the exact fault.

use crate::error::Fault;
use crate::lanes;
use crate::math::{clamp_low, madd, Isa, Real, LANES};

/// Chunks of `LANES` accumulated in `T` before a flush to f64: 256 values, so a float32
/// lane sum carries at most 16 roundings.
const BLOCK: usize = 16;

/// Largest and second largest value (as a multiset: a tie gives both the same value).
/// NaN is skipped, unless `CHECK`: then a NaN sticks in the max (a NaN max never
/// compares greater, so nothing replaces it) and the returned flag reports it.
/// Four independent lane arrays keep the max chains from waiting on each other.
#[inline(always)]
pub(crate) fn top2<T: Real, const TOP2: bool, const CHECK: bool>(x: &[T]) -> (T, T, bool) {
    const U: usize = 4;
    let mut m1 = [[T::NEG_INF; LANES]; U];
    let mut m2 = [[T::NEG_INF; LANES]; U];
    #[inline(always)]
    fn step<T: Real, const TOP2: bool, const CHECK: bool>(c: &[T; LANES], m1: &mut [T; LANES], m2: &mut [T; LANES]) {
        for l in 0..LANES {
            let v = c[l];
            if TOP2 {
                let lo = if v > m1[l] { m1[l] } else { v };
                m2[l] = if lo > m2[l] { lo } else { m2[l] };
            }
            let take = if CHECK { v > m1[l] || v.is_nan() } else { v > m1[l] };
            m1[l] = if take { v } else { m1[l] };
        }
    }
    let (chunks, tail) = x.as_chunks::<LANES>();
    let (quads, rest) = chunks.as_chunks::<U>();
    for q in quads {
        for u in 0..U {
            step::<T, TOP2, CHECK>(&q[u], &mut m1[u], &mut m2[u]);
        }
    }
    for c in rest {
        step::<T, TOP2, CHECK>(c, &mut m1[0], &mut m2[0]);
    }
    if !tail.is_empty() {
        let mut c = [T::NEG_INF; LANES];
        c[..tail.len()].copy_from_slice(tail);
        step::<T, TOP2, CHECK>(&c, &mut m1[0], &mut m2[0]);
    }
    if !TOP2 {
        // The max alone: fold the U arrays lane by lane, then a halving tree (a few vector
        // steps, where the pairwise scan below costs ~100 scalar compares a row; on short
        // rows that was most of a score's time). A NaN lane may win the tree: it is
        // flagged, and then the caller does not use the value.
        let mut m = m1[0];
        for mu in &m1[1..] {
            for l in 0..LANES {
                let take = if CHECK { mu[l] > m[l] || mu[l].is_nan() } else { mu[l] > m[l] };
                m[l] = if take { mu[l] } else { m[l] };
            }
        }
        let mut nan = false;
        if CHECK {
            for v in m {
                nan |= v.is_nan();
            }
        }
        return (lanes::max(m), T::NEG_INF, nan);
    }
    let (mut a, mut b) = (T::NEG_INF, T::NEG_INF);
    let mut nan = false;
    for u in 0..U {
        for l in 0..LANES {
            nan |= m1[u][l].is_nan();
            let pair = if TOP2 { [m1[u][l], m2[u][l]] } else { [m1[u][l], T::NEG_INF] };
            for v in pair {
                if v > a {
                    b = a;
                    a = v;
                } else if v > b {
                    b = v;
                }
            }
        }
    }
    (a, b, nan)
}

/// The largest value of a row, NaN skipped: `top2` without `CHECK` for the max alone, or
/// on the AVX2 path its specialised loops for float32 and float64.
#[inline(always)]
pub(crate) fn row_max<I: Isa, T: Real>(x: &[T]) -> T {
    if I::FMA && !I::WIDE {
        if let Some(m) = T::max_fma(x) {
            return m;
        }
    }
    top2::<T, false, false>(x).0
}

/// Sums over a logits row shifted by its max `m` (and scaled by `inv_t`):
/// with yᵢ = (xᵢ − m)·inv_t and eᵢ = exp(yᵢ),
/// `rest` = Σ eᵢ over yᵢ < 0, `top` = #{yᵢ = 0}, `ey` = Σ eᵢyᵢ, and the same weighted by
/// `w` when given. Keeping the max terms apart lets ln S = ln1p(top − 1 + rest) stay exact
/// when one class dominates. NaN or +inf anywhere make `rest` or `ey` NaN.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct ExpSums {
    pub rest: f64,
    pub top: f64,
    pub ey: f64,
    pub w_rest: f64,
    pub w_top: f64,
    pub w_ey: f64,
}

impl ExpSums {
    #[inline(always)]
    pub fn s(&self) -> f64 {
        self.top + self.rest
    }
    /// ln S, exact near S = 1: with u = S − 1 and s = 1 + u rounded, ln s + (u − (s − 1)) / s
    /// adds back the rounding of 1 + u (as `blocked`'s `ln_1p`). libm's `log1p` cost ~90
    /// cycles a row, 7 % of float32 entropy at 1,000 classes; `ln` and a division ~35.
    #[inline(always)]
    pub fn ln_s(&self) -> f64 {
        let u = (self.top - 1.0) + self.rest;
        let s = 1.0 + u;
        s.ln() + (u - (s - 1.0)) / s
    }
    #[inline(always)]
    pub fn finite(&self) -> bool {
        self.rest.is_finite() && self.ey.is_finite() && self.w_ey.is_finite()
    }
}

#[inline(always)]
pub(crate) fn exp_sums<I: Isa, T: Real, const SCALE: bool, const EY: bool, const W: bool>(
    x: &[T], m: T, inv_t: T, w: &[T],
) -> ExpSums {
    if I::FMA && !I::WIDE && !W {
        // float32 and float64 on the AVX2 path: the intrinsics loops (see `logits_x86`,
        // `logits_x86_f64`).
        if let Some([rest, top, ey]) = T::exp_sums_fma::<SCALE, EY>(x, m, inv_t) {
            return ExpSums { rest, top, ey, ..ExpSums::default() };
        }
    }
    // Accumulators: rest, top, ey, w_rest, w_top, w_ey.
    let (xc, xt) = x.as_chunks::<LANES>();
    let (wc, wt) = if W { w.as_chunks::<LANES>() } else { (&[][..], &[][..]) };
    let body = |c: &[T; LANES], wl: &[T; LANES], acc: &mut [[T; LANES]; 6]| {
        for l in 0..LANES {
            let y = if SCALE { (c[l] - m) * inv_t } else { c[l] - m };
            let yc = clamp_low(y);
            let e = yc.exp_clamped::<I>();
            let is_top = y == T::ZERO;
            acc[0][l] = acc[0][l] + if is_top { T::ZERO } else { e };
            acc[1][l] = acc[1][l] + if is_top { T::ONE } else { T::ZERO };
            if EY {
                acc[2][l] = madd::<I, T>(e, yc, acc[2][l]);
            }
            if W {
                let we = wl[l] * e;
                acc[3][l] = acc[3][l] + if is_top { T::ZERO } else { we };
                acc[4][l] = acc[4][l] + if is_top { wl[l] } else { T::ZERO };
                acc[5][l] = madd::<I, T>(wl[l] * e, yc, acc[5][l]);
            }
        }
    };
    let ones = [T::ONE; LANES];
    // Pad the tail with -inf logits and zero weights: they contribute nothing.
    let mut pad_x = [T::NEG_INF; LANES];
    pad_x[..xt.len()].copy_from_slice(xt);
    let mut pad_w = [T::ZERO; LANES];
    if W {
        pad_w[..wt.len()].copy_from_slice(wt);
    }
    let blocks = xc.len().div_ceil(BLOCK).max(1);
    let mut wide = [[0.0f64; LANES]; 6];
    for bi in 0..blocks {
        let lo = (bi * BLOCK).min(xc.len());
        let hi = ((bi + 1) * BLOCK).min(xc.len());
        let mut acc = [[T::ZERO; LANES]; 6];
        for ci in lo..hi {
            // The next row usually follows this one in memory: prefetching it lets its max
            // pass read from L1 while this row's exps run (as the AVX2 loops do).
            crate::simd::prefetch_lines(
                xc[ci].as_ptr().wrapping_add(x.len()).cast(),
                std::mem::size_of::<[T; LANES]>(),
            );
            let wl = if W { &wc[ci] } else { &ones };
            body(&xc[ci], wl, &mut acc);
        }
        // The tail joins the last block rather than paying for a flush of its own.
        if bi + 1 == blocks && !xt.is_empty() {
            body(&pad_x, &pad_w, &mut acc);
        }
        lanes::flush(&acc, &mut wide);
    }
    let tot = lanes::totals(&wide);
    ExpSums { rest: tot[0], top: tot[1], ey: tot[2], w_rest: tot[3], w_top: tot[4], w_ey: tot[5] }
}

/// exp(xᵢ − m) into `out` (a softmax row kept in scratch, unnormalised); returns the sums.
#[inline(always)]
pub(crate) fn exp_store<I: Isa, T: Real>(x: &[T], m: T, out: &mut [T]) -> ExpSums {
    let mut s = ExpSums::default();
    // Rows of committee members are short (C classes); a plain lane loop is enough.
    let (xc, xt) = x.as_chunks::<LANES>();
    let (oc, ot) = out.as_chunks_mut::<LANES>();
    let mut acc = [[T::ZERO; LANES]; 3];
    for (c, o) in xc.iter().zip(oc.iter_mut()) {
        for l in 0..LANES {
            let y = c[l] - m;
            let e = y.fast_exp_nonpos::<I>();
            let is_top = y == T::ZERO;
            acc[0][l] = acc[0][l] + if is_top { T::ZERO } else { e };
            acc[1][l] = acc[1][l] + if is_top { T::ONE } else { T::ZERO };
            acc[2][l] = madd::<I, T>(e, clamp_low(y), acc[2][l]);
            o[l] = e;
        }
    }
    let mut wide = [[0.0f64; LANES]; 3];
    lanes::flush(&acc, &mut wide);
    let mut tot = lanes::totals(&wide);
    for (v, o) in xt.iter().zip(ot.iter_mut()) {
        let y = *v - m;
        let e = y.fast_exp::<I>();
        if y == T::ZERO {
            tot[1] += 1.0;
        } else {
            tot[0] += e.to_f64();
        }
        tot[2] += (e * clamp_low(y)).to_f64();
        *o = e;
    }
    s.rest = tot[0];
    s.top = tot[1];
    s.ey = tot[2];
    s
}

/// Sum, min and max of a probability row, with optionally Σ w p ln p (0 ln 0 = 0).
#[derive(Clone, Copy, Debug)]
pub(crate) struct ProbStats {
    pub sum: f64,
    pub lo: f64,
    pub hi: f64,
    pub plogp: f64,
}

impl ProbStats {
    /// Whether the row may be invalid: a non-finite sum (NaN, ±inf), a value outside
    /// [0, 1] beyond the 1e-6 slack, or a sum off 1 by more than 1e-3.
    #[inline(always)]
    pub fn suspect(&self) -> bool {
        !self.sum.is_finite() || self.lo < -1e-6 || self.hi > 1.0 + 1e-6 || (self.sum - 1.0).abs() > 1e-3
    }
}

#[inline(always)]
pub(crate) fn prob_stats<I: Isa, T: Real, const ENT: bool, const W: bool>(x: &[T], w: &[T]) -> ProbStats {
    let mut lo = [T::INF; LANES];
    let mut hi = [T::NEG_INF; LANES];
    let (xc, xt) = x.as_chunks::<LANES>();
    let (wc, wt) = if W { w.as_chunks::<LANES>() } else { (&[][..], &[][..]) };
    // The tail is padded with zeros: nothing to the sums, and `lo` can only drop to 0.
    let mut pad_x = [T::ZERO; LANES];
    pad_x[..xt.len()].copy_from_slice(xt);
    let mut pad_w = [T::ZERO; LANES];
    if W {
        pad_w[..wt.len()].copy_from_slice(wt);
    }
    #[inline(always)]
    fn step<I: Isa, T: Real, const ENT: bool, const W: bool>(
        c: &[T; LANES], wl: &[T; LANES], acc: &mut [[T; LANES]; 2], lo: &mut [T; LANES], hi: &mut [T; LANES],
    ) {
        for l in 0..LANES {
            let p = c[l];
            acc[0][l] = acc[0][l] + p;
            lo[l] = if p < lo[l] { p } else { lo[l] };
            hi[l] = if p > hi[l] { p } else { hi[l] };
            if ENT {
                // 0 ln 0 = 0: p ≤ 0 (and NaN, which the sum reports) is clamped to 0, whose
                // fast_ln is finite (−127·ln 2), so its term is exactly 0: one max
                // instead of a compare and a blend.
                let q = if p > T::ZERO { p } else { T::ZERO };
                let qw = if W { wl[l] * q } else { q };
                acc[1][l] = madd::<I, T>(qw, q.fast_ln::<I>(), acc[1][l]);
            }
        }
    }
    let ones = [T::ONE; LANES];
    let mut wide = [[0.0f64; LANES]; 2];
    let blocks = xc.len().div_ceil(BLOCK).max(1);
    for bi in 0..blocks {
        let (b0, b1) = ((bi * BLOCK).min(xc.len()), ((bi + 1) * BLOCK).min(xc.len()));
        let mut acc = [[T::ZERO; LANES]; 2];
        for (k, c) in xc[b0..b1].iter().enumerate() {
            let wl = if W { &wc[b0 + k] } else { &ones };
            step::<I, T, ENT, W>(c, wl, &mut acc, &mut lo, &mut hi);
        }
        // The tail joins the last block rather than paying for a flush of its own.
        if bi + 1 == blocks && !xt.is_empty() {
            step::<I, T, ENT, W>(&pad_x, &pad_w, &mut acc, &mut lo, &mut hi);
        }
        lanes::flush(&acc, &mut wide);
    }
    // A barrier between the lane loop and the reductions after it: without it LLVM's SLP
    // vectoriser shapes the loop's lanes after the reduction tree (xmm pairs joined by
    // shuffles, every chunk) instead of whole registers.
    let (wide, lo, hi) = std::hint::black_box((wide, lo, hi));
    let tot = lanes::totals(&wide);
    let l0 = lanes::min(lo);
    let h0 = lanes::max(hi);
    ProbStats { sum: tot[0], lo: l0.to_f64(), hi: h0.to_f64(), plogp: tot[1] }
}

/// One committee member's probabilities: the validation statistics and, with `ENT`,
/// Σ p ln p (as `prob_stats`), and the member added into p̄ or the variance's sums (as
/// `accumulate`).
#[inline(always)]
pub(crate) fn prob_member<I: Isa, T: Real, const ENT: bool, const MEAN: bool, const VAR: bool>(
    x: &[T], p0: &[T], acc1: &mut [f64], acc2: &mut [f64],
) -> ProbStats {
    let st = prob_stats::<I, T, ENT, false>(x, &[]);
    accumulate::<T, MEAN, VAR>(x, p0, acc1, acc2);
    st
}

/// Adds a member into `acc1` (p̄, with `MEAN`) or into the variance's sums shifted by
/// member 0 (`acc1` += p − p₀, `acc2` += (p − p₀)², with `VAR`): plain element-wise loops
/// over the (cached) member, which vectorise on their own.
#[inline(always)]
pub(crate) fn accumulate<T: Real, const MEAN: bool, const VAR: bool>(
    x: &[T], p0: &[T], acc1: &mut [f64], acc2: &mut [f64],
) {
    if MEAN {
        for (a, &p) in acc1.iter_mut().zip(x) {
            *a += p.to_f64();
        }
    }
    if VAR {
        for ((a1, a2), (&p, &p0)) in acc1.iter_mut().zip(acc2.iter_mut()).zip(x.iter().zip(p0)) {
            let d = p.to_f64() - p0.to_f64();
            *a1 += d;
            *a2 += d * d;
        }
    }
}

/// Σ over classes of the variance over members (ddof = 0) of an (M, C) block of
/// probabilities: Σ_c (S2_c/M − (S1_c/M)²)⁺ with S1_c = Σ_m d_mc, S2_c = Σ_m d_mc²,
/// d_mc = p_mc − p_0c (shifted by member 0 so agreeing members cancel exactly).
///
/// Walks 16 classes at a time down the members, so S1 and S2 stay in registers instead of
/// a C-sized array loaded and stored once per member. A partial last chunk is copied into
/// zero-padded lanes, where d = 0 contributes nothing.
#[inline(always)]
pub(crate) fn variance_sum<I: Isa, T: Real>(row: &[T], m: usize, c: usize) -> f64 {
    let mut tot = [0.0f64; LANES];
    /// Classes k0..k0 + LANES of member j, or with TAIL the classes after the whole chunks.
    #[inline(always)]
    fn load<T: Real, const TAIL: bool>(row: &[T], c: usize, j: usize, k0: usize) -> [T; LANES] {
        if TAIL {
            lanes::tail(&row[j * c..(j + 1) * c], T::ZERO)
        } else {
            let at = j * c + k0;
            let chunk: &[T; LANES] = row[at..at + LANES].try_into().expect("LANES long");
            *chunk
        }
    }
    #[inline(always)]
    fn chunk<I: Isa, T: Real, const TAIL: bool>(row: &[T], (m, c, k0): (usize, usize, usize), tot: &mut [f64; LANES]) {
        let mf = m as f64;
        let p0 = load::<T, TAIL>(row, c, 0, k0);
        let mut s1 = [0.0f64; LANES];
        let mut s2 = [0.0f64; LANES];
        for j in 1..m {
            let x = load::<T, TAIL>(row, c, j, k0);
            for l in 0..LANES {
                let d = x[l].to_f64() - p0[l].to_f64();
                s1[l] += d;
                s2[l] = madd::<I, f64>(d, d, s2[l]);
            }
        }
        for l in 0..LANES {
            let mean = s1[l] / mf;
            let v = s2[l] / mf - mean * mean;
            tot[l] += if v > 0.0 { v } else { 0.0 };
        }
    }
    let full = c / LANES;
    for k in 0..full {
        chunk::<I, T, false>(row, (m, c, k * LANES), &mut tot);
    }
    if !c.is_multiple_of(LANES) {
        chunk::<I, T, true>(row, (m, c, 0), &mut tot);
    }
    // Keeps the loop in whole registers (see `prob_stats`).
    let tot = std::hint::black_box(tot);
    lanes::totals(&[tot])[0]
}

/// p̄ of an (M, C) block of probabilities in the input's type: p̄_c = (Σ_m p_mc) / M, the
/// sum in f64 in member order. Walks 16 classes at a time down the members, so the sums
/// stay in registers; the last chunk is the block's last 16 classes, overlapping the one
/// before (recomputed to the same values), so there is no tail code.
#[inline(always)]
pub(crate) fn member_mean<T: Real>(row: &[T], m: usize, c: usize, pbar: &mut [T]) {
    let mf = m as f64;
    if c < LANES {
        for (k, b) in pbar[..c].iter_mut().enumerate() {
            let mut s = 0.0;
            for j in 0..m {
                s += row[j * c + k].to_f64();
            }
            *b = T::from_f64(s / mf);
        }
        return;
    }
    let mut k0 = 0;
    loop {
        let k = k0.min(c - LANES);
        let mut s = [0.0f64; LANES];
        for j in 0..m {
            let x: &[T; LANES] = row[j * c + k..j * c + k + LANES].try_into().expect("LANES");
            for l in 0..LANES {
                s[l] += x[l].to_f64();
            }
        }
        let out: &mut [T; LANES] = (&mut pbar[k..k + LANES]).try_into().expect("LANES");
        for l in 0..LANES {
            out[l] = T::from_f64(s[l] / mf);
        }
        if k + LANES == c {
            break;
        }
        k0 += LANES;
    }
}

/// Σ x in `T` lanes, then a pairwise tree: for validating a short row's sum (1e-3
/// tolerance), not for results.
#[inline(always)]
pub(crate) fn lane_sum<T: Real>(x: &[T]) -> f64 {
    let (chunks, tail) = x.as_chunks::<LANES>();
    let mut s = [T::ZERO; LANES];
    for c in chunks {
        for l in 0..LANES {
            s[l] = s[l] + c[l];
        }
    }
    if !tail.is_empty() {
        let t = lanes::tail(x, T::ZERO);
        for l in 0..LANES {
            s[l] = s[l] + t[l];
        }
    }
    // Keeps the loop in whole registers (see `prob_stats`).
    let s = std::hint::black_box(s);
    lanes::sum(s).to_f64()
}

/// Σ xᵢ², Σ |xᵢ| and max |xᵢ| of an embedding row, accumulated in f64 so float32 squares
/// cannot overflow.
#[inline(always)]
pub(crate) fn norms<T: Real>(x: &[T]) -> (f64, f64, f64) {
    let mut sq = [0.0f64; LANES];
    let mut ab = [0.0f64; LANES];
    let mut mx = [0.0f64; LANES];
    let (chunks, tail) = x.as_chunks::<LANES>();
    let mut step = |c: &[T; LANES]| {
        for l in 0..LANES {
            let v = c[l].to_f64();
            let a = if v < 0.0 { -v } else { v };
            sq[l] += v * v;
            ab[l] += a;
            // Keep NaN so the caller notices it.
            mx[l] = if a > mx[l] || a.is_nan() { a } else { mx[l] };
        }
    };
    for c in chunks {
        step(c);
    }
    if !tail.is_empty() {
        let mut c = [T::ZERO; LANES];
        c[..tail.len()].copy_from_slice(tail);
        step(&c);
    }
    let (mut s, mut a, mut m) = (0.0, 0.0, 0.0f64);
    for l in 0..LANES {
        s += sq[l];
        a += ab[l];
        m = if mx[l] > m || mx[l].is_nan() { mx[l] } else { m };
    }
    (s, a, m)
}

/// Position of the largest value; ties go to the lowest index. NaN is never the largest.
/// Lanes keep their best value and its position (as `T`, exact below 2^24), then the
/// lanes are merged preferring the larger value and, on a tie, the lower position.
#[inline(always)]
pub(crate) fn argmax<T: Real>(x: &[T]) -> usize {
    let (chunks, tail) = x.as_chunks::<LANES>();
    if chunks.is_empty() || x.len() >= 1 << 24 {
        return argmax_scalar(x, 0, T::NEG_INF, 0);
    }
    let mut best = [T::NEG_INF; LANES];
    let mut pos = [T::ZERO; LANES];
    let mut base = [T::ZERO; LANES];
    for l in 0..LANES {
        base[l] = T::from_f64(l as f64);
    }
    let step = T::from_f64(LANES as f64);
    for c in chunks {
        for l in 0..LANES {
            // Strictly greater: within a lane the earliest of equal values stays.
            let take = c[l] > best[l];
            best[l] = if take { c[l] } else { best[l] };
            pos[l] = if take { base[l] } else { pos[l] };
            base[l] = base[l] + step;
        }
    }
    // Keeps the loop in whole registers (see `prob_stats`).
    let (best, pos) = std::hint::black_box((best, pos));
    // The largest value of all lanes, then the lowest position holding it.
    let (bv, bp) = lanes::argmax(best, pos);
    let bi = bp.to_f64() as usize;
    argmax_scalar(tail, chunks.len() * LANES, bv, bi)
}

/// One committee member's vote and validation statistics in a single walk: its argmax (as
/// `argmax`), its sum (in `T` lanes, as `lane_sum`), and its values folded into the lane
/// minima `lo` and maxima `hi`, which the caller carries across members and reduces once
/// per row.
#[inline(always)]
pub(crate) fn vote_member<T: Real>(x: &[T], lo_io: &mut [T; LANES], hi_io: &mut [T; LANES]) -> (usize, f64) {
    let (chunks, _) = x.as_chunks::<LANES>();
    if chunks.is_empty() || x.len() >= 1 << 24 {
        for &v in x {
            lo_io[0] = if v < lo_io[0] { v } else { lo_io[0] };
            hi_io[0] = if v > hi_io[0] { v } else { hi_io[0] };
        }
        return (argmax(x), lane_sum(x));
    }
    // Local copies: lanes behind a reference get split and shuffled by LLVM.
    let (mut lo, mut hi) = (*lo_io, *hi_io);
    let mut best = [T::NEG_INF; LANES];
    let mut pos = [T::ZERO; LANES];
    let mut base = [T::ZERO; LANES];
    let mut sum = [T::ZERO; LANES];
    for l in 0..LANES {
        base[l] = T::from_f64(l as f64);
    }
    let step = T::from_f64(LANES as f64);
    // One short loop per statistic (LLVM keeps each in whole registers).
    for c in chunks {
        for l in 0..LANES {
            let take = c[l] > best[l];
            best[l] = if take { c[l] } else { best[l] };
            pos[l] = if take { base[l] } else { pos[l] };
            base[l] = base[l] + step;
        }
        for l in 0..LANES {
            sum[l] = sum[l] + c[l];
        }
        for l in 0..LANES {
            lo[l] = if c[l] < lo[l] { c[l] } else { lo[l] };
            hi[l] = if c[l] > hi[l] { c[l] } else { hi[l] };
        }
    }
    if !x.len().is_multiple_of(LANES) {
        // Zeros elsewhere: nothing to the sum, and `lo`/`hi` can only move to 0.
        let t = lanes::tail(x, T::ZERO);
        for l in 0..LANES {
            sum[l] = sum[l] + t[l];
            lo[l] = if t[l] < lo[l] { t[l] } else { lo[l] };
            hi[l] = if t[l] > hi[l] { t[l] } else { hi[l] };
        }
    }
    // Keeps the loop in whole registers (see `prob_stats`).
    let (best, pos, sum, lo, hi) = std::hint::black_box((best, pos, sum, lo, hi));
    (*lo_io, *hi_io) = (lo, hi);
    let (bv, bp) = lanes::argmax(best, pos);
    let tail_start = chunks.len() * LANES;
    let a = argmax_scalar(&x[tail_start..], tail_start, bv, bp.to_f64() as usize);
    (a, lanes::sum(sum).to_f64())
}

/// Continues an argmax over `x` (which starts at position `offset`) from (`bv`, `bi`).
#[inline(always)]
fn argmax_scalar<T: Real>(x: &[T], offset: usize, mut bv: T, mut bi: usize) -> usize {
    for (i, &v) in x.iter().enumerate() {
        if v > bv {
            bv = v;
            bi = offset + i;
        }
    }
    bi
}

// --- Scalar diagnosis of a suspect row (cold path). ---

#[cold]
pub(crate) fn diagnose_logits<T: Real>(x: &[T]) -> Option<Fault> {
    for (i, &v) in x.iter().enumerate() {
        if v.is_nan() {
            return Some(Fault::Nan { index: i });
        }
        if v == T::INF {
            return Some(Fault::PosInf { index: i });
        }
    }
    if x.iter().all(|&v| v == T::NEG_INF) {
        return Some(Fault::AllNegInf);
    }
    None
}

#[cold]
pub(crate) fn diagnose_finite<T: Real>(x: &[T]) -> Option<Fault> {
    for (i, &v) in x.iter().enumerate() {
        if v.is_nan() {
            return Some(Fault::Nan { index: i });
        }
        if v == T::INF {
            return Some(Fault::PosInf { index: i });
        }
        if v == T::NEG_INF {
            return Some(Fault::NegInf { index: i });
        }
    }
    None
}

#[cold]
pub(crate) fn diagnose_probs<T: Real>(x: &[T], check_sum: bool) -> Option<Fault> {
    if let Some(f) = diagnose_finite(x) {
        return Some(f);
    }
    for (i, &v) in x.iter().enumerate() {
        let v = v.to_f64();
        if v < -1e-6 {
            return Some(Fault::Negative { index: i, value: v });
        }
        if v > 1.0 + 1e-6 {
            return Some(Fault::AboveOne { index: i, value: v });
        }
    }
    if check_sum {
        let sum: f64 = x.iter().map(|v| v.to_f64()).sum();
        if (sum - 1.0).abs() > 1e-3 {
            return Some(Fault::SumOff { sum });
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::math::Fma;

    /// A deterministic (M, C) block of float32 probabilities with ties and zeros.
    fn block(m: usize, c: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        let mut out = Vec::with_capacity(m * c);
        for _ in 0..m {
            let row: Vec<f32> = (0..c)
                .map(|_| {
                    s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    // A few exact zeros and repeated values, to exercise ties.
                    ((s >> 40) % 17) as f32 / 16.0
                })
                .collect();
            let sum: f32 = row.iter().sum::<f32>().max(1e-30);
            out.extend(row.iter().map(|v| v / sum));
        }
        out
    }

    const SHAPES: [(usize, usize); 9] =
        [(1, 1), (2, 3), (3, 15), (4, 16), (5, 17), (20, 100), (7, 31), (3, 33), (2, 1000)];

    #[test]
    fn variance_sum_matches_scalar_f64() {
        for (si, &(m, c)) in SHAPES.iter().enumerate() {
            let x = block(m, c, si as u64);
            let mut want = 0.0;
            for k in 0..c {
                let mean = (0..m).map(|j| x[j * c + k] as f64).sum::<f64>() / m as f64;
                want += (0..m).map(|j| (x[j * c + k] as f64 - mean).powi(2)).sum::<f64>() / m as f64;
            }
            let got = variance_sum::<Fma, f32>(&x, m, c);
            assert!((got - want).abs() <= 1e-12 + 1e-10 * want, "{m}x{c}: {got} vs {want}");
            // Identical members: exactly 0.
            let same: Vec<f32> = (0..m).flat_map(|_| x[..c].iter().copied()).collect();
            assert_eq!(variance_sum::<Fma, f32>(&same, m, c), 0.0, "{m}x{c}");
        }
    }

    #[test]
    fn member_mean_matches_scalar_f64() {
        for (si, &(m, c)) in SHAPES.iter().enumerate() {
            let x = block(m, c, 100 + si as u64);
            let mut got = vec![f32::NAN; c];
            member_mean(&x, m, c, &mut got);
            for k in 0..c {
                let s: f64 = (0..m).map(|j| x[j * c + k] as f64).sum();
                assert_eq!(got[k], (s / m as f64) as f32, "{m}x{c} class {k}");
            }
        }
    }

    #[test]
    fn vote_member_matches_argmax_sum_and_range() {
        for (si, &(m, c)) in SHAPES.iter().enumerate() {
            let mut x = block(m, c, 200 + si as u64);
            if c > 2 {
                x[c - 1] = -0.5; // a range fault in the tail
            }
            let (mut lo, mut hi) = ([f32::INFINITY; LANES], [f32::NEG_INFINITY; LANES]);
            for j in 0..m {
                let member = &x[j * c..(j + 1) * c];
                let (vote, sum) = vote_member(member, &mut lo, &mut hi);
                // The first of the largest values.
                let best = member.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                assert_eq!(vote, member.iter().position(|&v| v == best).unwrap(), "{m}x{c}");
                let want: f64 = member.iter().map(|&v| v as f64).sum();
                assert!((sum - want).abs() < 1e-5, "{m}x{c}: {sum} vs {want}");
            }
            let lo = lanes::min(lo);
            let hi = lanes::max(hi);
            let want_lo = x.iter().copied().fold(f32::INFINITY, f32::min);
            let want_hi = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            // Zero-filled tail lanes may pull the range towards 0, never past a real value.
            let padded = c >= LANES && c % LANES != 0;
            assert_eq!(lo, if padded { want_lo.min(0.0) } else { want_lo }, "{m}x{c}");
            assert!(hi == want_hi, "{m}x{c}: hi {hi} vs {want_hi}");
        }
    }
}

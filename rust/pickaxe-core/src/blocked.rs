//! Entropy of logits vectorised across rows instead of along them: lane l of a SIMD
//! register holds row (or pixel) l, and the loop runs over the classes. Short rows (a few
//! dozen classes) cost the row kernel more in per-row work (the max, the sums' setup and
//! totals, the logarithm) than in exps; side by side, a tile of rows pays each of those
//! once per register of rows.
//!
//! Two users:
//! - `seg`: class-major segmentation logits, where the pixels of a class are contiguous
//!   already (`entropy_tile` reads them in place);
//! - `driver`: (N, C) rows, any strides, copied a tile at a time into a class-major buffer
//!   (`entropy_rows`).
//!
//! Numbers are those of the row kernel (`rows::RowKernel::logits_eval`, entropy without
//! class weights), in the input's type: y = x − max (NaN skipped by the max), e = exp(y)
//! clamped at `EXP_ZERO`, `rest` = Σ e over y < 0, `top` = #{y = 0}, H = ln1p(top − 1 +
//! rest) − Σ e·y / S. A lane whose max is not finite or whose sums are not (NaN, +inf, only
//! −inf) is reported as not ok; the caller re-runs that row through the row kernel, which
//! raises (or omits) it with the same fault as the row path.

use ndarray::{ArrayView3, Axis};

use crate::driver::{Kernel, Scratch};
use crate::error::RowFault;
use crate::math::{clamp_low, madd, Isa, Real};

/// Rows (or pixels) per tile: a multiple of every lane width below.
pub(crate) const TILE: usize = 64;

/// Bytes of logits per tile of rows at most (down to 16 rows).
const L1_TILE_BYTES: usize = 16 * 1024;

/// ln(1 + u) for u ≥ 0 from `fast_ln`, exact near u = 0: the rounding of 1 + u is added
/// back (ln(s) + (u − (s − 1)) / s); `fast_ln(1)` is exactly 0.
#[inline(always)]
fn ln_1p<T: Real, I: Isa>(u: T, inv_s: T) -> T {
    let s = T::ONE + u;
    madd::<I, T>(u - (s - T::ONE), inv_s, s.fast_ln::<I>())
}

/// The entropy of the W lanes that `load(b)` returns for each class b < c.
#[inline(always)]
fn lanes_w<T: Real, I: Isa, const W: usize>(c: usize, load: impl Fn(usize) -> [T; W], h: &mut [T], ok: &mut [bool]) {
    let mut mx = [T::NEG_INF; W];
    for b in 0..c {
        let r = load(b);
        for l in 0..W {
            // NaN is skipped (a comparison with NaN is false) and shows in the sums.
            mx[l] = if r[l] > mx[l] { r[l] } else { mx[l] };
        }
    }
    let mut rest = [T::ZERO; W];
    let mut top = [T::ZERO; W];
    let mut ey = [T::ZERO; W];
    for b in 0..c {
        let r = load(b);
        for l in 0..W {
            let y = r[l] - mx[l];
            let yc = clamp_low(y);
            let e = yc.exp_clamped::<I>();
            let is_top = y == T::ZERO;
            rest[l] = rest[l] + if is_top { T::ZERO } else { e };
            top[l] = top[l] + if is_top { T::ONE } else { T::ZERO };
            ey[l] = madd::<I, T>(e, yc, ey[l]);
        }
    }
    for l in 0..W {
        let u = (top[l] - T::ONE) + rest[l];
        let inv_s = T::ONE / (top[l] + rest[l]);
        // H = ln S − Σ e·y / S, both terms ≥ 0.
        h[l] = ln_1p::<T, I>(u, inv_s) - ey[l] * inv_s;
        // NaN makes `rest` NaN; +inf makes the max +inf; only −inf leaves it −inf.
        ok[l] = mx[l] > T::NEG_INF && mx[l] < T::INF && rest[l] < T::INF && ey[l] > T::NEG_INF;
    }
}

/// `lanes_w` for 8 float32 lanes on AVX2 (`p` points at lane 0 of class 0, classes
/// `cstride` apart), for lanes whose max is attained once: y = x − max is clamped by one
/// integer min on its bits (for y ≤ 0 the integer order is backwards, and +0 lands on the
/// clamp, where exp is exactly 0: the max leaves `rest` without a compare and blend), and
/// one compare (equal or unordered) counts the classes at the max and the NaNs. The exp is
/// `math::exp_clamped` for float32 step by step. Returns false, leaving `h` and `ok`
/// alone, when some lane's count is not 1 (a tie for the max, a NaN): then `lanes_w` runs.
///
/// # Safety
/// AVX2 and FMA must be available; `p + b·cstride + 0..8` readable for b < c.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn lanes8_f32(p: *const f32, cstride: isize, c: usize, h: &mut [f32], ok: &mut [bool]) -> bool {
    use crate::math::{EXP_F32_MAGIC, EXP_F32_NONPOS as K};
    use std::arch::x86_64::*;
    // SAFETY (every load below): p + b·cstride + 0..8 is readable for b < c (the contract).
    let at = |b: usize| unsafe { p.offset(b as isize * cstride) };
    let mut mx = _mm256_set1_ps(f32::NEG_INFINITY);
    for b in 0..c {
        // SAFETY: see above. (max(x, mx) keeps mx when x is NaN.)
        mx = _mm256_max_ps(unsafe { _mm256_loadu_ps(at(b)) }, mx);
    }
    let low = _mm256_set1_epi32(f32::EXP_ZERO.to_bits() as i32);
    let zero = _mm256_setzero_ps();
    let mut cnt = _mm256_setzero_si256();
    let mut rest = _mm256_setzero_ps();
    let mut ey = _mm256_setzero_ps();
    for b in 0..c {
        // SAFETY: see above.
        let y = _mm256_sub_ps(unsafe { _mm256_loadu_ps(at(b)) }, mx);
        let yc = _mm256_castsi256_ps(_mm256_min_epi32(_mm256_castps_si256(y), low));
        cnt = _mm256_sub_epi32(cnt, _mm256_castps_si256(_mm256_cmp_ps::<_CMP_EQ_UQ>(y, zero)));
        let t = _mm256_fmadd_ps(yc, _mm256_set1_ps(std::f32::consts::LOG2_E), _mm256_set1_ps(EXP_F32_MAGIC));
        let n = _mm256_sub_ps(t, _mm256_set1_ps(EXP_F32_MAGIC));
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(std::f32::consts::LN_2), yc);
        let mut q = _mm256_set1_ps(K[4]);
        q = _mm256_fmadd_ps(q, r, _mm256_set1_ps(K[3]));
        q = _mm256_fmadd_ps(q, r, _mm256_set1_ps(K[2]));
        q = _mm256_fmadd_ps(q, r, _mm256_set1_ps(K[1]));
        q = _mm256_fmadd_ps(q, r, _mm256_set1_ps(K[0]));
        let scale = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_castps_si256(t)));
        let e = _mm256_fmadd_ps(q, _mm256_mul_ps(r, scale), scale);
        rest = _mm256_add_ps(rest, e);
        ey = _mm256_fmadd_ps(e, yc, ey);
    }
    if _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpeq_epi32(cnt, _mm256_set1_epi32(1)))) != 0xff {
        return false;
    }
    let (mut m, mut rs, mut es) = ([0f32; 8], [0f32; 8], [0f32; 8]);
    // SAFETY: three local arrays of 8 float32.
    unsafe {
        _mm256_storeu_ps(m.as_mut_ptr(), mx);
        _mm256_storeu_ps(rs.as_mut_ptr(), rest);
        _mm256_storeu_ps(es.as_mut_ptr(), ey);
    }
    // On local arrays (no bounds checks) so that this vectorises too.
    let (mut hh, mut kk) = ([0f32; 8], [false; 8]);
    for l in 0..8 {
        let inv_s = 1.0 / (1.0 + rs[l]);
        hh[l] = ln_1p::<f32, crate::math::Fma>(rs[l], inv_s) - es[l] * inv_s;
        kk[l] = m[l] > f32::NEG_INFINITY && m[l] < f32::INFINITY && rs[l] < f32::INFINITY && es[l] > f32::NEG_INFINITY;
    }
    h[..8].copy_from_slice(&hh);
    ok[..8].copy_from_slice(&kk);
    true
}

#[inline(always)]
fn tile_w<T: Real, I: Isa, const W: usize>(
    base: *const T, cstride: isize, c: usize, p: usize, h: &mut [T; TILE], ok: &mut [bool; TILE],
) {
    let at = |b: usize, l0: usize| -> *const T {
        // SAFETY: the caller's contract (see `entropy_tile`): for b < c and l0 < p the
        // element (b, l0) is at base + b·cstride + l0, inside one allocation.
        unsafe { base.offset(b as isize * cstride + l0 as isize) }
    };
    let full = p / W * W;
    // float32 on the AVX2 path: `lanes8_f32` first.
    #[cfg(target_arch = "x86_64")]
    let fast8 = W == 8
        && I::FMA
        && !I::WIDE
        && std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>()
        && std::arch::is_x86_feature_detected!("avx2")
        && std::arch::is_x86_feature_detected!("fma");
    for l0 in (0..full).step_by(W) {
        #[cfg(target_arch = "x86_64")]
        if fast8 {
            // SAFETY: AVX2 and FMA were detected; T is f32; classes b < c of lanes
            // l0..l0 + 8 ≤ p are readable (`at`); h and ok are f32 / bool slices of 8.
            let done = unsafe {
                lanes8_f32(
                    at(0, l0) as *const f32,
                    cstride,
                    c,
                    std::slice::from_raw_parts_mut(h[l0..].as_mut_ptr() as *mut f32, 8),
                    &mut ok[l0..l0 + 8],
                )
            };
            if done {
                continue;
            }
        }
        // SAFETY: lanes l0..l0 + W ≤ p of class b are contiguous elements (see `at`).
        let load = |b: usize| -> [T; W] { unsafe { std::ptr::read_unaligned(at(b, l0) as *const [T; W]) } };
        lanes_w::<T, I, W>(c, load, &mut h[l0..l0 + W], &mut ok[l0..l0 + W]);
    }
    if full < p {
        let rem = p - full;
        let load = |b: usize| -> [T; W] {
            // Lanes past p are 0: scored and dropped.
            let mut a = [T::ZERO; W];
            // SAFETY: lanes full..p of class b are contiguous elements (see `at`).
            a[..rem].copy_from_slice(unsafe { std::slice::from_raw_parts(at(b, full), rem) });
            a
        };
        lanes_w::<T, I, W>(c, load, &mut h[full..full + W], &mut ok[full..full + W]);
    }
}

/// Entropy of the logits of `p ≤ TILE` lanes (rows or pixels) whose C = `c` classes are
/// `cstride` elements apart and whose lanes are contiguous: lane l of class b is at
/// `base + b·cstride + l`, which must be inside one allocation for b < c, l < p. Into
/// `h[..p]`; `ok[l]` is false for a lane with NaN, +inf or only −inf (its `h` is garbage).
/// One SIMD register of lanes at a time (16 float32 lanes on AVX-512, 8 on AVX2, 4
/// otherwise): more registers per accumulator spill on AVX2.
#[inline(always)]
pub(crate) fn entropy_tile<T: Real, I: Isa>(
    base: *const T, cstride: isize, c: usize, p: usize, h: &mut [T; TILE], ok: &mut [bool; TILE],
) {
    let bytes = if I::WIDE {
        64
    } else if I::FMA {
        32
    } else {
        16
    };
    match (bytes / std::mem::size_of::<T>()).max(4) {
        16 => tile_w::<T, I, 16>(base, cstride, c, p, h, ok),
        8 => tile_w::<T, I, 8>(base, cstride, c, p, h, ok),
        _ => tile_w::<T, I, 4>(base, cstride, c, p, h, ok),
    }
}

/// 8 rows of float32 (`rows[k]`: row k's first class, classes contiguous) to class-major
/// order: class b of row k to `dst[b·TILE + k]`, in 8×8 blocks of registers (8 loads, 24
/// shuffles, 8 stores per 64 values); the last block overlaps the one before when c is
/// not a multiple of 8 (it rewrites the same values).
///
/// # Safety
/// AVX2 must be available; c ≥ 8; `rows[k]..rows[k] + c` readable, `dst + b·TILE + k`
/// writable for b < c, k < 8.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn transpose8_f32(rows: &[*const f32; 8], c: usize, dst: *mut f32) {
    use std::arch::x86_64::*;
    let mut b = 0;
    loop {
        let b0 = if b + 8 > c { c - 8 } else { b };
        // SAFETY (this block): classes b0..b0 + 8 ≤ c of each row are readable and
        // dst + (b0 + k)·TILE + 0..8 writable (the function's contract).
        let mut r = [_mm256_setzero_ps(); 8];
        for k in 0..8 {
            // SAFETY: see the block's comment.
            r[k] = unsafe { _mm256_loadu_ps(rows[k].add(b0)) };
        }
        let t0 = _mm256_unpacklo_ps(r[0], r[1]);
        let t1 = _mm256_unpackhi_ps(r[0], r[1]);
        let t2 = _mm256_unpacklo_ps(r[2], r[3]);
        let t3 = _mm256_unpackhi_ps(r[2], r[3]);
        let t4 = _mm256_unpacklo_ps(r[4], r[5]);
        let t5 = _mm256_unpackhi_ps(r[4], r[5]);
        let t6 = _mm256_unpacklo_ps(r[6], r[7]);
        let t7 = _mm256_unpackhi_ps(r[6], r[7]);
        let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
        let u1 = _mm256_shuffle_ps::<0xee>(t0, t2);
        let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
        let u3 = _mm256_shuffle_ps::<0xee>(t1, t3);
        let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
        let u5 = _mm256_shuffle_ps::<0xee>(t4, t6);
        let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
        let u7 = _mm256_shuffle_ps::<0xee>(t5, t7);
        let o = [
            _mm256_permute2f128_ps::<0x20>(u0, u4),
            _mm256_permute2f128_ps::<0x20>(u1, u5),
            _mm256_permute2f128_ps::<0x20>(u2, u6),
            _mm256_permute2f128_ps::<0x20>(u3, u7),
            _mm256_permute2f128_ps::<0x31>(u0, u4),
            _mm256_permute2f128_ps::<0x31>(u1, u5),
            _mm256_permute2f128_ps::<0x31>(u2, u6),
            _mm256_permute2f128_ps::<0x31>(u3, u7),
        ];
        for (k, v) in o.into_iter().enumerate() {
            // SAFETY: see the block's comment.
            unsafe { _mm256_storeu_ps(dst.add((b0 + k) * TILE), v) };
        }
        if b0 + 8 >= c {
            break;
        }
        b += 8;
    }
}

/// `transpose8_f32` for float64: 4 rows, 4×4 blocks (4 loads, 8 shuffles, 4 stores).
///
/// # Safety
/// AVX2 must be available; c ≥ 4; `rows[k]..rows[k] + c` readable, `dst + b·TILE + k`
/// writable for b < c, k < 4.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn transpose4_f64(rows: &[*const f64; 4], c: usize, dst: *mut f64) {
    use std::arch::x86_64::*;
    let mut b = 0;
    loop {
        let b0 = if b + 4 > c { c - 4 } else { b };
        // SAFETY (this block): classes b0..b0 + 4 ≤ c of each row are readable and
        // dst + (b0 + k)·TILE + 0..4 writable (the function's contract).
        let mut r = [_mm256_setzero_pd(); 4];
        for k in 0..4 {
            // SAFETY: see the block's comment.
            r[k] = unsafe { _mm256_loadu_pd(rows[k].add(b0)) };
        }
        let t0 = _mm256_unpacklo_pd(r[0], r[1]);
        let t1 = _mm256_unpackhi_pd(r[0], r[1]);
        let t2 = _mm256_unpacklo_pd(r[2], r[3]);
        let t3 = _mm256_unpackhi_pd(r[2], r[3]);
        let o = [
            _mm256_permute2f128_pd::<0x20>(t0, t2),
            _mm256_permute2f128_pd::<0x20>(t1, t3),
            _mm256_permute2f128_pd::<0x31>(t0, t2),
            _mm256_permute2f128_pd::<0x31>(t1, t3),
        ];
        for (k, v) in o.into_iter().enumerate() {
            // SAFETY: see the block's comment.
            unsafe { _mm256_storeu_pd(dst.add((b0 + k) * TILE), v) };
        }
        if b0 + 4 >= c {
            break;
        }
        b += 4;
    }
}

/// Rows `i0..i0 + p` (`row_ptr(i)`: row i's first class, classes `s2` apart) into `buf` in
/// class-major order (class b of row i0 + r at `buf[b·TILE + r]`).
#[inline(always)]
fn to_class_major<T: Real, I: Isa>(
    row_ptr: impl Fn(usize) -> *const T, s0: isize, s2: isize, i0: usize, p: usize, c: usize, buf: &mut [T],
) {
    assert!(buf.len() >= c * TILE && p <= TILE);
    let dst = buf.as_mut_ptr();
    let mut r0 = 0;
    #[cfg(target_arch = "x86_64")]
    if I::FMA && s2 == 1 && std::arch::is_x86_feature_detected!("avx2") {
        use std::any::TypeId;
        if TypeId::of::<T>() == TypeId::of::<f32>() && c >= 8 {
            while r0 + 8 <= p {
                let rows: [*const f32; 8] = std::array::from_fn(|k| row_ptr(i0 + r0 + k) as *const f32);
                // SAFETY: AVX2 was detected; T is f32; each row has c ≥ 8 contiguous
                // classes (s2 = 1) inside the view; buf holds c·TILE values and
                // r0 + 8 ≤ p ≤ TILE.
                unsafe { transpose8_f32(&rows, c, (dst as *mut f32).add(r0)) };
                r0 += 8;
            }
        } else if TypeId::of::<T>() == TypeId::of::<f64>() && c >= 4 {
            while r0 + 4 <= p {
                let rows: [*const f64; 4] = std::array::from_fn(|k| row_ptr(i0 + r0 + k) as *const f64);
                // SAFETY: as above, with T = f64, c ≥ 4 and r0 + 4 ≤ p.
                unsafe { transpose4_f64(&rows, c, (dst as *mut f64).add(r0)) };
                r0 += 4;
            }
        }
    }
    if r0 < p && s0.unsigned_abs() < s2.unsigned_abs() {
        // Rows side by side in memory (Fortran order): walk each class along the rows.
        for b in 0..c {
            for r in r0..p {
                // SAFETY: (i0 + r, 0, b) is inside the view; b·TILE + r < c·TILE.
                unsafe { *dst.add(b * TILE + r) = *row_ptr(i0 + r).offset(b as isize * s2) };
            }
        }
    } else {
        for r in r0..p {
            let src = row_ptr(i0 + r);
            for b in 0..c {
                // SAFETY: (i0 + r, 0, b) is inside the view; b·TILE + r < c·TILE.
                unsafe { *dst.add(b * TILE + r) = *src.offset(b as isize * s2) };
            }
        }
    }
}

/// Scores of rows `start..start + out.len()` of `x` (N, 1, C), any strides, by tiles of
/// `TILE` rows copied to class-major order; `div` divides every entropy (ln C for
/// `normalize`). A row the tile refuses goes through `kernel.score` (the row path's value
/// or fault). `record(i, result, out)` as in `driver::rows_generic`; returns when it says
/// stop.
#[inline(always)]
pub(crate) fn entropy_rows<T: Real, K: Kernel<T>, I: Isa>(
    kernel: &K, x: &ArrayView3<'_, T>, start: usize, out: &mut [T], div: f64, scratch: &mut Scratch<T>,
    mut record: impl FnMut(usize, Result<f64, RowFault>, &mut T) -> bool,
) {
    let c = x.len_of(Axis(2));
    let (s0, s2) = (x.strides()[0], x.strides()[2]);
    let base = x.as_ptr();
    let mut buf = vec![T::ZERO; c * TILE];
    let mut row = vec![T::ZERO; c];
    let mut h = [T::ZERO; TILE];
    let mut ok = [true; TILE];
    let row_ptr = |i: usize| -> *const T {
        // SAFETY: i < N (the caller's rows), and a view's pointer plus index · strides is
        // an element of it.
        unsafe { base.offset(i as isize * s0) }
    };
    // Rows per tile: TILE, fewer for long rows so that the tile's values stay in L1
    // (16 KiB; C = 100 float64: 16 rows); a multiple of 16, every level's lane count.
    let per_tile = (L1_TILE_BYTES / (c * std::mem::size_of::<T>()).max(1)).clamp(16, TILE) / 16 * 16;
    for (t, outs) in out.chunks_mut(per_tile).enumerate() {
        let i0 = start + t * per_tile;
        let p = outs.len();
        to_class_major::<T, I>(row_ptr, s0, s2, i0, p, c, &mut buf);
        entropy_tile::<T, I>(buf.as_ptr(), TILE as isize, c, p, &mut h, &mut ok);
        if ok[..p].iter().all(|&k| k) {
            for (o, v) in outs.iter_mut().zip(&h) {
                *o = T::from_f64(v.to_f64() / div);
            }
            continue;
        }
        for (r, o) in outs.iter_mut().enumerate() {
            let res = if ok[r] {
                Ok(h[r].to_f64() / div)
            } else {
                for (b, d) in row.iter_mut().enumerate() {
                    *d = buf[b * TILE + r];
                }
                kernel.score::<I>(&row, scratch)
            };
            if record(i0 + r, res, o) {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use ndarray::{Array2, ShapeBuilder};

    use super::*;
    use crate::cancel::Cancel;
    use crate::error::Field;
    use crate::rows::{RowKernel, RowScore};
    use crate::simd::{detected, set_level, SimdLevel};

    /// The row kernel without the blocked path.
    struct RowOnly<'a, T: Real>(&'a RowKernel<T>);

    impl<T: Real> Kernel<T> for RowOnly<'_, T> {
        fn score<I: Isa>(&self, row: &[T], scratch: &mut Scratch<T>) -> Result<f64, RowFault> {
            self.0.score::<I>(row, scratch)
        }
    }

    fn levels() -> Vec<SimdLevel> {
        [SimdLevel::Portable, SimdLevel::Avx2, SimdLevel::Avx512].into_iter().filter(|&l| l <= detected()).collect()
    }

    /// Deterministic logits in [-s, s), some rows with ties, −inf, one dominant class.
    fn logits<T: Real>(n: usize, c: usize, seed: u64, fortran: bool) -> Array2<T> {
        let mut st = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let mut next = move || {
            st ^= st << 13;
            st ^= st >> 7;
            st ^= st << 17;
            (st >> 11) as f64 / (1u64 << 53) as f64
        };
        let shape = if fortran { (n, c).f() } else { (n, c).into_shape_with_order() };
        let mut x = Array2::from_shape_fn(shape, |_| T::from_f64((next() - 0.5) * 16.0));
        for i in 0..n {
            match i % 7 {
                1 => x.row_mut(i).fill(T::from_f64(3.0)),
                2 => x[[i, i % c]] = T::NEG_INF,
                3 => x[[i, i % c]] = T::from_f64(60.0),
                4 if c > 1 => {
                    x[[i, 0]] = T::from_f64(5.0);
                    x[[i, c - 1]] = T::from_f64(5.0);
                }
                _ => {}
            }
        }
        x
    }

    fn run_both<T: Real>(
        k: &RowKernel<T>, x: ndarray::ArrayView2<'_, T>, raise: bool,
    ) -> (crate::driver::Scored<T>, crate::driver::Scored<T>) {
        let x3 = x.insert_axis(Axis(1));
        let cancel = Cancel::new();
        let a = crate::driver::run(k, x3.clone(), (0, 0, 0), raise, &cancel).unwrap();
        let b = crate::driver::run(&RowOnly(k), x3, (0, 0, 0), raise, &cancel).unwrap();
        (a, b)
    }

    fn close<T: Real>(a: &[T], b: &[T], what: &str) {
        let rtol = if std::mem::size_of::<T>() == 4 { 1e-5 } else { 1e-10 };
        for (i, (&u, &v)) in a.iter().zip(b).enumerate() {
            let (u, v) = (u.to_f64(), v.to_f64());
            assert!(
                u == v || (u.is_nan() && v.is_nan()) || (u - v).abs() <= rtol * v.abs(),
                "{what}: row {i}: blocked {u} vs row {v}"
            );
        }
    }

    fn blocked_matches_rows<T: Real>() {
        for level in levels() {
            set_level(level).unwrap();
            for c in 1..=64 {
                for &n in &[1usize, 7, 64, 65, 200] {
                    for fortran in [false, true] {
                        for normalize in [false, true] {
                            let x = logits::<T>(n, c, (c * 1000 + n) as u64, fortran);
                            let score = RowScore::Entropy { normalize, class_weights: None };
                            let k = crate::row_kernel::<T>(Field::Logits, &score, c).unwrap();
                            let what = format!("{level:?} {} C={c} N={n} F={fortran} norm={normalize}", T::DTYPE);
                            let ((a, fa), (b, fb)) = run_both(&k, x.view(), true);
                            assert!(fa.is_none() && fb.is_none(), "{what}");
                            close(&a, &b, &what);
                            // Every other row, reversed: negative strides, steps.
                            let v = x.slice(ndarray::s![..;-2, ..]);
                            let ((a, _), (b, _)) = run_both(&k, v, true);
                            close(&a, &b, &format!("{what} strided"));
                            // Every other class: class stride 2.
                            if c >= 4 {
                                let v = x.slice(ndarray::s![.., ..;2]);
                                let k2 = crate::row_kernel::<T>(Field::Logits, &score, v.ncols()).unwrap();
                                let ((a, _), (b, _)) = run_both(&k2, v, true);
                                close(&a, &b, &format!("{what} class step"));
                            }
                        }
                    }
                }
            }
        }
        set_level(detected()).unwrap();
    }

    #[test]
    fn blocked_matches_rows_f32() {
        blocked_matches_rows::<f32>();
    }

    #[test]
    fn blocked_matches_rows_f64() {
        blocked_matches_rows::<f64>();
    }

    /// Invalid rows: the same first fault under raise, NaN at the same rows under omit.
    fn invalid_rows<T: Real>() {
        for level in levels() {
            set_level(level).unwrap();
            for c in [2usize, 3, 10, 33, 64] {
                let n = 150;
                let mut x = logits::<T>(n, c, c as u64, false);
                x[[5, c - 1]] = T::NAN;
                x[[70, 0]] = T::INF;
                x.row_mut(100).fill(T::NEG_INF);
                x[[149, c / 2]] = T::NAN;
                x[[149, 0]] = T::INF;
                let score = RowScore::Entropy { normalize: false, class_weights: None };
                let k = crate::row_kernel::<T>(Field::Logits, &score, c).unwrap();
                let ((_, fa), (_, fb)) = run_both(&k, x.view(), true);
                assert_eq!(fa, fb, "{level:?} C={c}");
                assert_eq!(fa.map(|f| f.0), Some(5));
                let ((a, fa), (b, fb)) = run_both(&k, x.view(), false);
                assert_eq!(fa, fb);
                let nan: Vec<usize> = (0..n).filter(|&i| a[i].is_nan()).collect();
                assert_eq!(nan, vec![5, 70, 100, 149], "{level:?} C={c}");
                close(&a, &b, &format!("{level:?} C={c} omit"));
            }
        }
        set_level(detected()).unwrap();
    }

    #[test]
    fn invalid_rows_f32() {
        invalid_rows::<f32>();
    }

    #[test]
    fn invalid_rows_f64() {
        invalid_rows::<f64>();
    }
}

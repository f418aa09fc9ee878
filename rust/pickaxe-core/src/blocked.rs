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
//!   (`entropy_rows`); on the AVX2 path, rows whose classes are contiguous are instead
//!   transposed in registers straight from the rows, 8 float32 or 4 float64 rows at a time
//!   (`groups`), with the AVX2 row kernels' exps.
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

/// Classes per row at most in `groups` (the register-transposing kernel).
#[cfg(target_arch = "x86_64")]
const GROUP_C: usize = 160;

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

/// The float32 AVX2 lane kernel's running sums, one lane per row: `cnt` the classes equal
/// to the max or NaN, `rest` Σ e over the others, `ey` Σ e·yc.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
struct Sums8 {
    cnt: std::arch::x86_64::__m256i,
    rest: std::arch::x86_64::__m256,
    ey: std::arch::x86_64::__m256,
}

/// The constants of `class8_f32`'s exp, held in registers across the loop over classes.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
struct Exp8 {
    low: std::arch::x86_64::__m256i,
    log2e: std::arch::x86_64::__m256,
    magic: std::arch::x86_64::__m256,
    ln2: std::arch::x86_64::__m256,
    c: [std::arch::x86_64::__m256; 3],
    table: std::arch::x86_64::__m256,
}

#[cfg(target_arch = "x86_64")]
impl Exp8 {
    /// # Safety
    /// AVX2 (call from code compiled with it).
    #[inline(always)]
    unsafe fn new() -> Exp8 {
        use crate::logits_x86::{EXP8_LN2, EXP8_LOG2E, EXP8_LOW, EXP8_MAGIC, EXP8_POLY as C, EXP8_TABLE};
        use std::arch::x86_64::*;
        Exp8 {
            low: _mm256_set1_epi32(EXP8_LOW.to_bits() as i32),
            log2e: _mm256_set1_ps(EXP8_LOG2E),
            magic: _mm256_set1_ps(EXP8_MAGIC),
            ln2: _mm256_set1_ps(EXP8_LN2),
            c: [_mm256_set1_ps(C[0]), _mm256_set1_ps(C[1]), _mm256_set1_ps(C[2])],
            table: _mm256_loadu_ps(EXP8_TABLE.as_ptr().cast()),
        }
    }
}

/// One class `x` of 8 lanes whose max is `mx` into `s`, for lanes whose max is attained
/// once: y = x − max is clamped by one integer min on its bits (for y ≤ 0 the integer
/// order is backwards, and +0 lands on the clamp, where exp is exactly 0: the max leaves
/// `rest` without a compare and blend), and one compare (x equal to the max, or
/// unordered) counts the classes at the max and the NaNs. The exp is the AVX2 row
/// kernel's (`logits_x86`): 2^(n/8) from an 8-entry table in a register, a degree-3
/// polynomial; within 1.9 ULP above exp(−20), 5.3 at the bottom of the range.
///
/// # Safety
/// AVX2 and FMA (call from code compiled with them).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn class8_f32(x: std::arch::x86_64::__m256, mx: std::arch::x86_64::__m256, k: &Exp8, s: &mut Sums8) {
    use std::arch::x86_64::*;
    let y = _mm256_sub_ps(x, mx);
    // x = max ⇔ y = +0, and NaN either way (mx is never NaN).
    s.cnt = _mm256_sub_epi32(s.cnt, _mm256_castps_si256(_mm256_cmp_ps::<_CMP_EQ_UQ>(mx, x)));
    let yc = _mm256_castsi256_ps(_mm256_min_epi32(_mm256_castps_si256(y), k.low));
    let t = _mm256_fmadd_ps(yc, k.log2e, k.magic);
    let n = _mm256_sub_ps(t, k.magic);
    let r = _mm256_fnmadd_ps(n, k.ln2, yc);
    let p = _mm256_fmadd_ps(_mm256_fmadd_ps(k.c[2], r, k.c[1]), r, k.c[0]);
    let ti = _mm256_castps_si256(t);
    let entry = _mm256_castps_si256(_mm256_permutevar8x32_ps(k.table, ti));
    let scale = _mm256_castsi256_ps(_mm256_add_epi32(entry, _mm256_slli_epi32::<20>(ti)));
    let e = _mm256_fmadd_ps(p, _mm256_mul_ps(r, scale), scale);
    s.rest = _mm256_add_ps(s.rest, e);
    s.ey = _mm256_fmadd_ps(e, yc, s.ey);
}

#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn sums8_zero() -> Sums8 {
    use std::arch::x86_64::*;
    Sums8 { cnt: _mm256_setzero_si256(), rest: _mm256_setzero_ps(), ey: _mm256_setzero_ps() }
}

/// The entropies of the 8 lanes of `class8_f32`'s sums and a bit mask of the valid lanes
/// (the max finite), or `None` when some lane's count is not 1 (a tie for the max, a NaN):
/// then `lanes_w` has to run.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn finish8_f32(mx: std::arch::x86_64::__m256, s: &Sums8) -> Option<(std::arch::x86_64::__m256, i32)> {
    use std::arch::x86_64::*;
    if _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpeq_epi32(s.cnt, _mm256_set1_epi32(1)))) != 0xff {
        return None;
    }
    let (mut rs, mut es) = ([0f32; 8], [0f32; 8]);
    // SAFETY: two local arrays of 8 float32.
    unsafe {
        _mm256_storeu_ps(rs.as_mut_ptr(), s.rest);
        _mm256_storeu_ps(es.as_mut_ptr(), s.ey);
    }
    // On local arrays (no bounds checks) so that this vectorises too.
    let mut hh = [0f32; 8];
    for l in 0..8 {
        let inv_s = 1.0 / (1.0 + rs[l]);
        hh[l] = ln_1p::<f32, crate::math::Fma>(rs[l], inv_s) - es[l] * inv_s;
    }
    // With one class at the max and no NaN, `rest` and `ey` are finite sums of e ≤ 1 and
    // e·yc ≥ EXP_ZERO; a lane is valid when its max is finite (mx − mx = 0).
    let fin = _mm256_cmp_ps::<_CMP_EQ_OQ>(_mm256_sub_ps(mx, mx), _mm256_setzero_ps());
    // SAFETY: `hh` is 8 readable float32.
    Some((unsafe { _mm256_loadu_ps(hh.as_ptr()) }, _mm256_movemask_ps(fin)))
}

/// `lanes_w` for 8 float32 lanes on AVX2 (`p` points at lane 0 of class 0, classes
/// `cstride` apart) by `class8_f32`. Returns false, leaving `h` and `ok` alone, when some
/// lane's count is not 1 (a tie for the max, a NaN): then `lanes_w` runs.
///
/// # Safety
/// AVX2 and FMA must be available; `p + b·cstride + 0..8` readable for b < c.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn lanes8_f32(p: *const f32, cstride: isize, c: usize, h: &mut [f32], ok: &mut [bool]) -> bool {
    use std::arch::x86_64::*;
    // SAFETY (every load below): p + b·cstride + 0..8 is readable for b < c (the contract).
    let at = |b: usize| unsafe { p.offset(b as isize * cstride) };
    let mut mx = _mm256_set1_ps(f32::NEG_INFINITY);
    for b in 0..c {
        // SAFETY: see above. (max(x, mx) keeps mx when x is NaN.)
        mx = _mm256_max_ps(unsafe { _mm256_loadu_ps(at(b)) }, mx);
    }
    let k = Exp8::new();
    let mut s = sums8_zero();
    for b in 0..c {
        // SAFETY: see above.
        class8_f32(unsafe { _mm256_loadu_ps(at(b)) }, mx, &k, &mut s);
    }
    let Some((hv, okm)) = finish8_f32(mx, &s) else { return false };
    // SAFETY: `h` holds at least 8 float32 (the caller's slice of 8).
    unsafe { _mm256_storeu_ps(h[..8].as_mut_ptr(), hv) };
    for (l, k) in ok[..8].iter_mut().enumerate() {
        *k = okm >> l & 1 != 0;
    }
    true
}

/// 8×8 float32 transpose in registers: `o[b]` lane k = `r[k]` lane b (24 shuffles).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn transpose8x8(r: [std::arch::x86_64::__m256; 8]) -> [std::arch::x86_64::__m256; 8] {
    use std::arch::x86_64::*;
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
    [
        _mm256_permute2f128_ps::<0x20>(u0, u4),
        _mm256_permute2f128_ps::<0x20>(u1, u5),
        _mm256_permute2f128_ps::<0x20>(u2, u6),
        _mm256_permute2f128_ps::<0x20>(u3, u7),
        _mm256_permute2f128_ps::<0x31>(u0, u4),
        _mm256_permute2f128_ps::<0x31>(u1, u5),
        _mm256_permute2f128_ps::<0x31>(u2, u6),
        _mm256_permute2f128_ps::<0x31>(u3, u7),
    ]
}

/// Classes `b0..b0 + 8` of 8 rows (`rows[k]`: row k's class 0, classes contiguous) as 8
/// registers of class-major lanes, the last `R` of them into `cls[b0 + 8 − R..]` and into
/// the running max `mx` (`R` < 8: the block overlaps the one before and only its new
/// classes are kept; the shuffles for the others are left out).
///
/// # Safety
/// AVX2; `rows[k] + b0 + 0..8` readable for k < 8; `cls + b0 + 0..8` writable.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn block8_f32<const R: usize>(
    rows: &[*const f32; 8], b0: usize, cls: *mut std::arch::x86_64::__m256, mx: &mut std::arch::x86_64::__m256,
) {
    use std::arch::x86_64::*;
    // SAFETY: the function's contract.
    let r: [__m256; 8] = std::array::from_fn(|k| unsafe { _mm256_loadu_ps(rows[k].add(b0)) });
    let o = transpose8x8(r);
    for (b, &v) in o.iter().enumerate().skip(8 - R) {
        cls.add(b0 + b).write(v);
    }
    // The block's max as a tree (depth 3, not a chain of R maxima through `mx`: the exps
    // wait for it). max(a, b) returns b when either is NaN: a NaN can hide its lane's other
    // values from `m`, never make `mx` NaN (it goes second below); such a lane counts its
    // NaN at the max, so its sums are refused and the exact loop scores it.
    let kept = &o[8 - R..];
    let mut m = kept[0];
    if R == 8 {
        let a = _mm256_max_ps(_mm256_max_ps(o[1], o[0]), _mm256_max_ps(o[3], o[2]));
        let b = _mm256_max_ps(_mm256_max_ps(o[5], o[4]), _mm256_max_ps(o[7], o[6]));
        m = _mm256_max_ps(a, b);
    } else {
        for &v in &kept[1..] {
            m = _mm256_max_ps(v, m);
        }
    }
    *mx = _mm256_max_ps(m, *mx);
}

/// Classes 0..c of 8 float32 rows (`p`: row 0's class 0, rows `s0` elements apart,
/// classes contiguous), c ≥ 8, transposed in registers 8 classes at a time into `cls`
/// (class b of row k in lane k of `cls[b]`; the last block overlaps the one before when 8
/// does not divide c); returns the rows' max (a lane with a NaN: see `block8_f32`).
///
/// # Safety
/// AVX2; 8 ≤ c ≤ GROUP_C; `p + k·s0 + 0..c` readable for k < 8.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn load8_f32(
    p: *const f32, s0: isize, c: usize, cls: &mut [std::arch::x86_64::__m256; GROUP_C],
) -> std::arch::x86_64::__m256 {
    use std::arch::x86_64::*;
    let rows: [*const f32; 8] = std::array::from_fn(|k| p.wrapping_offset(k as isize * s0));
    let cls = cls.as_mut_ptr();
    let mut mx = _mm256_set1_ps(f32::NEG_INFINITY);
    let full = c / 8 * 8;
    for b0 in (0..full).step_by(8) {
        // SAFETY: classes b0..b0 + 8 ≤ c of the 8 rows (the contract); b0 + 8 ≤ GROUP_C.
        unsafe { block8_f32::<8>(&rows, b0, cls, &mut mx) };
    }
    // SAFETY: classes c − 8..c of the 8 rows; c ≤ GROUP_C.
    unsafe {
        match c - full {
            0 => {}
            1 => block8_f32::<1>(&rows, c - 8, cls, &mut mx),
            2 => block8_f32::<2>(&rows, c - 8, cls, &mut mx),
            3 => block8_f32::<3>(&rows, c - 8, cls, &mut mx),
            4 => block8_f32::<4>(&rows, c - 8, cls, &mut mx),
            5 => block8_f32::<5>(&rows, c - 8, cls, &mut mx),
            6 => block8_f32::<6>(&rows, c - 8, cls, &mut mx),
            _ => block8_f32::<7>(&rows, c - 8, cls, &mut mx),
        }
    }
    mx
}

/// The 8 entropies and the bit mask of valid lanes from `finish8_f32`, or from `lanes_w`
/// over the class-major `cls` when some lane has a tie for the max or a NaN.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn entropies8_f32(
    mx: std::arch::x86_64::__m256, s: &Sums8, cls: &[std::arch::x86_64::__m256],
) -> ([f32; 8], u32) {
    use std::arch::x86_64::*;
    let mut h = [0f32; 8];
    if let Some((hv, okm)) = finish8_f32(mx, s) {
        // SAFETY: `h` is 8 writable float32.
        unsafe { _mm256_storeu_ps(h.as_mut_ptr(), hv) };
        return (h, okm as u32);
    }
    let mut ok = [false; 8];
    // SAFETY: `cls[b]` is 8 float32 (class b of the 8 rows).
    let load = |b: usize| -> [f32; 8] { unsafe { std::mem::transmute::<__m256, [f32; 8]>(cls[b]) } };
    lanes_w::<f32, crate::math::Fma, 8>(cls.len(), load, &mut h, &mut ok);
    (h, ok.iter().enumerate().map(|(l, &k)| (k as u32) << l).sum())
}

/// A float type's row-blocked kernel on AVX2 for `groups`: `L` rows in the lanes of a
/// register `V` (float32 8, float64 4), c ≥ L classes, rows contiguous.
#[cfg(target_arch = "x86_64")]
trait Group: Real {
    const L: usize;
    type V: Copy;
    type S: Copy;
    type K;
    /// The exp's constants. # Safety: AVX2 and FMA.
    unsafe fn consts() -> Self::K;
    /// Classes 0..c of the L rows at `p` (rows `s0` apart) into `cls` (class b of row k in
    /// lane k of `cls[b]`); returns their max (NaN skipped).
    /// # Safety: AVX2; L ≤ c ≤ GROUP_C; `p + k·s0 + 0..c` readable for k < L.
    unsafe fn load(p: *const Self, s0: isize, c: usize, cls: &mut [Self::V; GROUP_C]) -> Self::V;
    /// The exp-sums of the classes `cls` whose max is `mx`. # Safety: AVX2 and FMA.
    unsafe fn sums(cls: &[Self::V], mx: Self::V, k: &Self::K) -> Self::S;
    /// The L entropies (in the first L of 8) and the bit mask of the valid lanes, from the
    /// sums or, when some lane has a tie for the max or a NaN, from `lanes_w` over `cls`.
    /// # Safety: AVX2 and FMA.
    unsafe fn entropies(mx: Self::V, s: &Self::S, cls: &[Self::V]) -> ([Self; 8], u32);
    /// `h[..L]` / `div` (in f64, as `driver`'s record) to `o..o + L`. # Safety: AVX2, `o` writable.
    unsafe fn store(o: *mut Self, h: &[Self; 8], div: f64);
}

#[cfg(target_arch = "x86_64")]
impl Group for f32 {
    const L: usize = 8;
    type V = std::arch::x86_64::__m256;
    type S = Sums8;
    type K = Exp8;
    #[inline(always)]
    unsafe fn consts() -> Exp8 {
        Exp8::new()
    }
    #[inline(always)]
    unsafe fn load(p: *const f32, s0: isize, c: usize, cls: &mut [Self::V; GROUP_C]) -> Self::V {
        load8_f32(p, s0, c, cls)
    }
    #[inline(always)]
    unsafe fn sums(cls: &[Self::V], mx: Self::V, k: &Exp8) -> Sums8 {
        let mut s = sums8_zero();
        for &x in cls {
            class8_f32(x, mx, k, &mut s);
        }
        s
    }
    #[inline(always)]
    unsafe fn entropies(mx: Self::V, s: &Sums8, cls: &[Self::V]) -> ([f32; 8], u32) {
        entropies8_f32(mx, s, cls)
    }
    #[inline(always)]
    unsafe fn store(o: *mut f32, h: &[f32; 8], div: f64) {
        use std::arch::x86_64::*;
        let hv = _mm256_loadu_ps(h.as_ptr());
        if div == 1.0 {
            _mm256_storeu_ps(o, hv);
        } else {
            let d = _mm256_set1_pd(div);
            let lo = _mm256_cvtpd_ps(_mm256_div_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(hv)), d));
            let hi = _mm256_cvtpd_ps(_mm256_div_pd(_mm256_cvtps_pd(_mm256_extractf128_ps::<1>(hv)), d));
            _mm256_storeu_ps(o, _mm256_set_m128(hi, lo));
        }
    }
}

/// float64 sums of 4 lanes: as `Sums8`, the count in 64-bit lanes.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
struct Sums4 {
    cnt: std::arch::x86_64::__m256i,
    rest: std::arch::x86_64::__m256d,
    ey: std::arch::x86_64::__m256d,
}

/// 4×4 float64 transpose in registers: `o[b]` lane k = `r[k]` lane b (8 shuffles).
///
/// # Safety
/// AVX (call from code compiled with it).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn transpose4x4(r: [std::arch::x86_64::__m256d; 4]) -> [std::arch::x86_64::__m256d; 4] {
    use std::arch::x86_64::*;
    let t0 = _mm256_unpacklo_pd(r[0], r[1]);
    let t1 = _mm256_unpackhi_pd(r[0], r[1]);
    let t2 = _mm256_unpacklo_pd(r[2], r[3]);
    let t3 = _mm256_unpackhi_pd(r[2], r[3]);
    [
        _mm256_permute2f128_pd::<0x20>(t0, t2),
        _mm256_permute2f128_pd::<0x20>(t1, t3),
        _mm256_permute2f128_pd::<0x31>(t0, t2),
        _mm256_permute2f128_pd::<0x31>(t1, t3),
    ]
}

/// `block8_f32` for float64: classes `b0..b0 + 4` of 4 rows, the last `R` kept.
///
/// # Safety
/// AVX2; `rows[k] + b0 + 0..4` readable for k < 4; `cls + b0 + 0..4` writable.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn block4_f64<const R: usize>(
    rows: &[*const f64; 4], b0: usize, cls: *mut std::arch::x86_64::__m256d, mx: &mut std::arch::x86_64::__m256d,
) {
    use std::arch::x86_64::*;
    let r: [__m256d; 4] = std::array::from_fn(|k| _mm256_loadu_pd(rows[k].add(b0)));
    let o = transpose4x4(r);
    for (b, &v) in o.iter().enumerate().skip(4 - R) {
        cls.add(b0 + b).write(v);
    }
    // The block's max as a tree, as `block8_f32` (and NaN likewise).
    let kept = &o[4 - R..];
    let mut m = kept[0];
    if R == 4 {
        m = _mm256_max_pd(_mm256_max_pd(o[1], o[0]), _mm256_max_pd(o[3], o[2]));
    } else {
        for &v in &kept[1..] {
            m = _mm256_max_pd(v, m);
        }
    }
    *mx = _mm256_max_pd(m, *mx);
}

#[cfg(target_arch = "x86_64")]
impl Group for f64 {
    const L: usize = 4;
    type V = std::arch::x86_64::__m256d;
    type S = Sums4;
    type K = crate::logits_x86_f64::Consts;
    #[inline(always)]
    unsafe fn consts() -> Self::K {
        crate::logits_x86_f64::Consts::new(0.0, 1.0)
    }
    #[inline(always)]
    unsafe fn load(p: *const f64, s0: isize, c: usize, cls: &mut [Self::V; GROUP_C]) -> Self::V {
        use std::arch::x86_64::*;
        let rows: [*const f64; 4] = std::array::from_fn(|k| p.wrapping_offset(k as isize * s0));
        let cls = cls.as_mut_ptr();
        let mut mx = _mm256_set1_pd(f64::NEG_INFINITY);
        let full = c / 4 * 4;
        for b0 in (0..full).step_by(4) {
            block4_f64::<4>(&rows, b0, cls, &mut mx);
        }
        match c - full {
            0 => {}
            1 => block4_f64::<1>(&rows, c - 4, cls, &mut mx),
            2 => block4_f64::<2>(&rows, c - 4, cls, &mut mx),
            _ => block4_f64::<3>(&rows, c - 4, cls, &mut mx),
        }
        mx
    }
    /// As `class8_f32` for 4 float64 lanes, with the AVX2 row kernel's exp
    /// (`logits_x86_f64::exp4`: 2^(n/256) by a gather from a 256-entry table, within 2
    /// ULP); without a 64-bit integer min on AVX2 the max classes are masked out of Σ e by
    /// the compare that counts them.
    #[inline(always)]
    unsafe fn sums(cls: &[Self::V], mx: Self::V, k: &Self::K) -> Sums4 {
        use std::arch::x86_64::*;
        // exp4's bottom, where its scale is exactly +0: −inf logits give e = 0 exactly.
        let low = _mm256_set1_pd(crate::logits_x86_f64::EXP_LOW);
        let mut s = Sums4 { cnt: _mm256_setzero_si256(), rest: _mm256_setzero_pd(), ey: _mm256_setzero_pd() };
        for &x in cls {
            let y = _mm256_sub_pd(x, mx);
            let top = _mm256_cmp_pd::<_CMP_EQ_UQ>(mx, x);
            s.cnt = _mm256_sub_epi64(s.cnt, _mm256_castpd_si256(top));
            let yc = _mm256_max_pd(low, y);
            let e = crate::logits_x86_f64::exp4(k, yc);
            s.rest = _mm256_add_pd(s.rest, _mm256_andnot_pd(top, e));
            s.ey = _mm256_fmadd_pd(e, yc, s.ey);
        }
        s
    }
    #[inline(always)]
    unsafe fn entropies(mx: Self::V, s: &Sums4, cls: &[Self::V]) -> ([f64; 8], u32) {
        use std::arch::x86_64::*;
        let mut h = [0f64; 8];
        if _mm256_movemask_pd(_mm256_castsi256_pd(_mm256_cmpeq_epi64(s.cnt, _mm256_set1_epi64x(1)))) == 0xf {
            let (mut rs, mut es) = ([0f64; 4], [0f64; 4]);
            _mm256_storeu_pd(rs.as_mut_ptr(), s.rest);
            _mm256_storeu_pd(es.as_mut_ptr(), s.ey);
            for l in 0..4 {
                let inv_s = 1.0 / (1.0 + rs[l]);
                h[l] = ln_1p::<f64, crate::math::Fma>(rs[l], inv_s) - es[l] * inv_s;
            }
            let fin = _mm256_cmp_pd::<_CMP_EQ_OQ>(_mm256_sub_pd(mx, mx), _mm256_setzero_pd());
            return (h, _mm256_movemask_pd(fin) as u32);
        }
        let mut ok = [false; 4];
        let load = |b: usize| -> [f64; 4] { std::mem::transmute::<__m256d, [f64; 4]>(cls[b]) };
        lanes_w::<f64, crate::math::Fma, 4>(cls.len(), load, &mut h[..4], &mut ok);
        (h, ok.iter().enumerate().map(|(l, &k)| (k as u32) << l).sum())
    }
    #[inline(always)]
    unsafe fn store(o: *mut f64, h: &[f64; 8], div: f64) {
        use std::arch::x86_64::*;
        let hv = _mm256_loadu_pd(h.as_ptr());
        _mm256_storeu_pd(o, if div == 1.0 { hv } else { _mm256_div_pd(hv, _mm256_set1_pd(div)) });
    }
}

/// How far ahead `groups` prefetches contiguous rows: 2-8 KiB measured the same.
#[cfg(target_arch = "x86_64")]
const PREFETCH_BYTES: usize = 4096;

/// Entropy of `n` groups of `T::L` rows (group g: rows L·g..L·g + L from `p`, rows `s0`
/// elements apart, c ≥ L contiguous classes) into `out[..L·n]`, divided by `div`:
/// `Group::load`, `Group::sums`, `Group::entropies`. A group with an invalid row goes to
/// `fix(g, h, ok)` instead (its entropies, row L·g + k in `h[k]`, and the bit mask of its
/// valid rows), which writes its outputs and returns true to stop. (Software-pipelining
/// the groups, group g + 1 transposed and g − 1 finished around g's exp-sums, measured
/// the same time, 0.97-1.01x in one process, for more instructions.)
///
/// # Safety
/// AVX2 and FMA; L ≤ c ≤ GROUP_C; `p + (L·g + k)·s0 + 0..c` readable for g < n, k < L;
/// `out + 0..L·n` writable.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn groups<T: Group>(
    p: *const T, s0: isize, c: usize, n: usize, out: *mut T, div: f64, mut fix: impl FnMut(usize, &[T], u32) -> bool,
) {
    // SAFETY: an array of plain SIMD values, all bits valid.
    let mut cls: [T::V; GROUP_C] = std::mem::zeroed();
    let k = T::consts();
    // Contiguous rows are prefetched PREFETCH_BYTES ahead, a line at a time: short rows
    // are a stream the kernel reads faster than the hardware prefetcher fetches it from
    // memory (float32 C = 10, 80 MB, AVX2: 0.70 -> 0.65 ns a value; float64 1.85 -> 1.73).
    let span = if s0 == c as isize { T::L * c * std::mem::size_of::<T>() } else { 0 };
    for g in 0..n {
        let first = p.wrapping_offset((T::L * g) as isize * s0);
        crate::simd::prefetch_lines(first.cast::<u8>().wrapping_add(PREFETCH_BYTES), span);
        let mx = T::load(first, s0, c, &mut cls);
        let s = T::sums(&cls[..c], mx, &k);
        let (h, ok) = T::entropies(mx, &s, &cls[..c]);
        if ok == (1 << T::L) - 1 {
            T::store(out.add(T::L * g), &h, div);
        } else if fix(g, &h[..T::L], ok) {
            return;
        }
    }
}

/// `groups` for T = f32 or f64 (false, doing nothing, for other types or without AVX2 and
/// FMA). # Safety: as `groups`, with L = 8 for f32, 4 for f64.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn groups_any<T: Real>(
    p: *const T, s0: isize, c: usize, n: usize, out: *mut T, div: f64, mut fix: impl FnMut(usize, &[T], u32) -> bool,
) -> bool {
    use std::any::TypeId;
    if !(std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")) {
        return false;
    }
    if TypeId::of::<T>() == TypeId::of::<f32>() {
        groups::<f32>(p.cast(), s0, c, n, out.cast(), div, |g, h, ok| {
            fix(g, std::slice::from_raw_parts(h.as_ptr().cast(), h.len()), ok)
        });
        true
    } else if TypeId::of::<T>() == TypeId::of::<f64>() {
        groups::<f64>(p.cast(), s0, c, n, out.cast(), div, |g, h, ok| {
            fix(g, std::slice::from_raw_parts(h.as_ptr().cast(), h.len()), ok)
        });
        true
    } else {
        false
    }
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
        let o = transpose8x8(r);
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
        let o = transpose4x4(r);
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
    // Rows scored by the register-transposing kernel (AVX2 registers: 8 float32 or 4
    // float64 rows at a time; also on the AVX-512 path, where it prefetches and the tiles
    // do not: 80 MB of logits 15-35 % faster, in cache float32 0.96-1.04x and float64
    // 0.95-1.04x: session 14), the rest below.
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if I::FMA && s2 == 1 && (32 / std::mem::size_of::<T>()..=GROUP_C).contains(&c) {
        let lanes = 32 / std::mem::size_of::<T>();
        let n = out.len() / lanes;
        let out_ptr = out.as_mut_ptr();
        let mut stopped = false;
        let fix = |g: usize, h: &[T], okm: u32| -> bool {
            let i0 = start + lanes * g;
            for (r, &v) in h.iter().enumerate() {
                let res = if okm >> r & 1 != 0 {
                    Ok(v.to_f64() / div)
                } else {
                    // SAFETY: row i0 + r's c contiguous classes (s2 = 1) are in the view.
                    kernel.score::<I>(unsafe { std::slice::from_raw_parts(row_ptr(i0 + r), c) }, scratch)
                };
                // SAFETY: lanes·g + r < lanes·n ≤ out.len(); `out` is not otherwise borrowed
                // while `groups` runs (it writes through the same pointer).
                if record(i0 + r, res, unsafe { &mut *out_ptr.add(lanes * g + r) }) {
                    stopped = true;
                    return true;
                }
            }
            false
        };
        // SAFETY: rows start..start + lanes·n are rows of the view, s0 apart, each of
        // lanes ≤ c ≤ GROUP_C contiguous classes (s2 = 1); out[..lanes·n] is writable; the
        // CPU's AVX2 and FMA are checked inside.
        if unsafe { groups_any(row_ptr(start), s0, c, n, out_ptr, div, fix) } {
            if stopped {
                return;
            }
            done = lanes * n;
        }
    }
    for (t, outs) in out[done..].chunks_mut(per_tile).enumerate() {
        let i0 = start + done + t * per_tile;
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

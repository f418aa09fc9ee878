//! float32 logits rows with AVX2 and FMA, written with intrinsics: the row max and the
//! exp-sums of entropy, least confidence, margin and energy from logits.
//!
//! The generic lane-array loop (`passes::exp_sums`) carries 16 lanes, two AVX2 registers per
//! accumulator; with the polynomial's constants that is more than AVX2's 16 registers, and
//! LLVM answered with spills, constant reloads and register-rotating copies (~55
//! instructions per 8 values). Here the accumulators are one register of 8 lanes each: Σ e
//! over non-max classes, Σ e·y, and the count of max classes as integers. Each value takes:
//! y = x − m (·1/T),
//! the clamp, exp as `math::exp_f32_nonpos` (the same operations in the same order, so an
//! element's e is bit for bit the generic one's), a compare for x = m, and the three updates.
//!
//! Only the AVX2 path calls these (`Isa::WIDE` is false there): with AVX-512's 32 wide
//! registers the generic loop compiles to what this does by hand. Each entry point checks the
//! CPU (a cached bit test) and returns `None` without AVX2 and FMA, so it is sound to call
//! from anywhere.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use crate::math::{Real, EXP_F32_MAGIC, EXP_F32_NONPOS};

/// The largest value of a row, NaN skipped (as `passes::top2` without `CHECK`; -inf for an
/// empty or all-NaN row). `None` without AVX2.
#[inline(always)]
pub(crate) fn max_f32(x: &[f32]) -> Option<f32> {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2 (checked just above).
            return Some(unsafe { max(x) });
        }
    }
    let _ = x;
    None
}

#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2")]
fn max(x: &[f32]) -> f32 {
    let ninf = _mm256_set1_ps(f32::NEG_INFINITY);
    // Four independent maxima; max(v, a) keeps a when v is NaN (the second operand).
    let mut a = [ninf; 4];
    let (quads, rest) = x.as_chunks::<32>();
    for q in quads {
        for (u, acc) in a.iter_mut().enumerate() {
            // SAFETY: q[8u..8u + 8] is inside the 32 floats of `q`.
            let v = unsafe { _mm256_loadu_ps(q.as_ptr().add(8 * u)) };
            *acc = _mm256_max_ps(v, *acc);
        }
    }
    let (chunks, tail) = rest.as_chunks::<8>();
    for c in chunks {
        // SAFETY: `c` is 8 readable floats.
        a[0] = _mm256_max_ps(unsafe { _mm256_loadu_ps(c.as_ptr()) }, a[0]);
    }
    if !tail.is_empty() {
        a[1] = _mm256_max_ps(load_tail(tail, ninf), a[1]);
    }
    let m = _mm256_max_ps(_mm256_max_ps(a[0], a[1]), _mm256_max_ps(a[2], a[3]));
    let m = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps::<1>(m));
    let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    let m = _mm_max_ss(m, _mm_movehdup_ps(m));
    _mm_cvtss_f32(m)
}

/// The < 8 values of `tail` in the first lanes, `fill` in the others.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2")]
fn load_tail(tail: &[f32], fill: __m256) -> __m256 {
    let live = _mm256_cmpgt_epi32(_mm256_set1_epi32(tail.len() as i32), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    // SAFETY: a masked load touches only the lanes set in `live`, the first `tail.len()`
    // < 8, all inside `tail`.
    let v = unsafe { _mm256_maskload_ps(tail.as_ptr(), live) };
    _mm256_blendv_ps(fill, v, _mm256_castsi256_ps(live))
}

/// Steps of 8 values accumulated in float32 before a flush to f64, as `passes::BLOCK`:
/// at most 16 roundings per lane sum.
#[cfg(target_arch = "x86_64")]
const BLOCK: usize = 16;

/// (Σ e over y < 0, #{y = 0}, Σ e·y) of a row, with y = (x − m)·inv_t (`SCALE`) or x − m,
/// e = exp(y); `ey` only with `EY` (else 0). NaN anywhere makes the sums NaN. `None` when the
/// CPU lacks AVX2 or FMA (or is not x86-64): then the caller runs the generic loop.
#[inline(always)]
pub(crate) fn exp_sums_f32<const SCALE: bool, const EY: bool>(x: &[f32], m: f32, inv_t: f32) -> Option<[f64; 3]> {
    #[cfg(target_arch = "x86_64")]
    {
        // A cached bit test: the kernels call this only on the AVX2 and AVX-512 paths, but
        // the check keeps it sound wherever it is called from.
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU has AVX2 and FMA (checked just above).
            return Some(unsafe { sums::<SCALE, EY>(x, m, inv_t) });
        }
    }
    let _ = (x, m, inv_t);
    None
}

#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2,fma")]
fn sums<const SCALE: bool, const EY: bool>(x: &[f32], m: f32, inv_t: f32) -> [f64; 3] {
    let k = Consts::new(m, inv_t);
    let (chunks, tail) = x.as_chunks::<8>();
    let mut rest_wide = [_mm256_setzero_pd(); 2];
    let mut ey = [_mm256_setzero_pd(); 2];
    let mut top = _mm256_setzero_si256();
    for block in chunks.chunks(BLOCK) {
        let mut acc = [_mm256_setzero_ps(); 2];
        // Four registers a turn, each operation done for all four before the next: the exp
        // chain is ~40 cycles deep, and in program order the scheduler then always holds
        // work that is ready (one register at a time ran ~10% slower).
        let (quads, rest) = block.as_chunks::<4>();
        for q in quads {
            // SAFETY: each q[i] is 8 readable floats.
            let v = unsafe {
                [
                    _mm256_loadu_ps(q[0].as_ptr()),
                    _mm256_loadu_ps(q[1].as_ptr()),
                    _mm256_loadu_ps(q[2].as_ptr()),
                    _mm256_loadu_ps(q[3].as_ptr()),
                ]
            };
            step::<4, SCALE, EY>(&k, v, &mut acc, &mut top);
        }
        for c in rest {
            // SAFETY: `c` is 8 readable floats.
            let v = unsafe { _mm256_loadu_ps(c.as_ptr()) };
            step::<1, SCALE, EY>(&k, [v], &mut acc, &mut top);
        }
        flush(acc[0], &mut rest_wide);
        if EY {
            flush(acc[1], &mut ey);
        }
    }
    if !tail.is_empty() {
        // -inf in the lanes after the tail: e = 0, not a max.
        let v = load_tail(tail, _mm256_set1_ps(f32::NEG_INFINITY));
        let mut acc = [_mm256_setzero_ps(); 2];
        step::<1, SCALE, EY>(&k, [v], &mut acc, &mut top);
        flush(acc[0], &mut rest_wide);
        flush(acc[1], &mut ey);
    }
    let mut t = [0i32; 8];
    // SAFETY: `t` is 8 writable i32.
    unsafe { _mm256_storeu_si256(t.as_mut_ptr().cast(), top) };
    let tops: i64 = t.iter().map(|&v| v as i64).sum();
    [total(rest_wide), tops as f64, if EY { total(ey) } else { 0.0 }]
}

/// The loop's constants, held in registers across it.
#[cfg(target_arch = "x86_64")]
struct Consts {
    m: __m256,
    inv_t: __m256,
    low: __m256,
    log2e: __m256,
    magic: __m256,
    ln2: __m256,
    c: [__m256; 5],
}

#[cfg(target_arch = "x86_64")]
impl Consts {
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn new(m: f32, inv_t: f32) -> Consts {
        let c = EXP_F32_NONPOS;
        Consts {
            m: _mm256_set1_ps(m),
            inv_t: _mm256_set1_ps(inv_t),
            low: _mm256_set1_ps(f32::EXP_ZERO),
            log2e: _mm256_set1_ps(std::f32::consts::LOG2_E),
            magic: _mm256_set1_ps(EXP_F32_MAGIC),
            ln2: _mm256_set1_ps(std::f32::consts::LN_2),
            c: [
                _mm256_set1_ps(c[0]),
                _mm256_set1_ps(c[1]),
                _mm256_set1_ps(c[2]),
                _mm256_set1_ps(c[3]),
                _mm256_set1_ps(c[4]),
            ],
        }
    }
}

/// `N` registers of 8 values into the accumulators: acc[0] += e where x ≠ m, acc[1] += e·y,
/// `top` −= (x = m) as an all-ones mask, i.e. += 1 where x = m. Each operation is done for
/// the `N` registers before the next (the loops unroll).
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2,fma")]
fn step<const N: usize, const SCALE: bool, const EY: bool>(
    k: &Consts, v: [__m256; N], acc: &mut [__m256; 2], top: &mut __m256i,
) {
    // The value of `$e` for each i < N, as a plain loop (unrolled).
    macro_rules! each {
        ($i:ident => $e:expr) => {{
            let mut out = [_mm256_setzero_ps(); N];
            for $i in 0..N {
                out[$i] = $e;
            }
            out
        }};
    }
    let y = each!(i => {
        let y = _mm256_sub_ps(v[i], k.m);
        if SCALE {
            _mm256_mul_ps(y, k.inv_t)
        } else {
            y
        }
    });
    // max(low, y) returns y when y is NaN (the second operand), as `clamp_low`.
    let yc = each!(i => _mm256_max_ps(k.low, y[i]));
    let t = each!(i => _mm256_fmadd_ps(yc[i], k.log2e, k.magic));
    let n = each!(i => _mm256_sub_ps(t[i], k.magic));
    let r = each!(i => _mm256_fnmadd_ps(n[i], k.ln2, yc[i]));
    let mut p = each!(i => _mm256_fmadd_ps(k.c[4], r[i], k.c[3]));
    p = each!(i => _mm256_fmadd_ps(p[i], r[i], k.c[2]));
    p = each!(i => _mm256_fmadd_ps(p[i], r[i], k.c[1]));
    p = each!(i => _mm256_fmadd_ps(p[i], r[i], k.c[0]));
    let scale = each!(i => _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_castps_si256(t[i]))));
    let e = each!(i => _mm256_fmadd_ps(p[i], _mm256_mul_ps(r[i], scale[i]), scale[i]));
    for i in 0..N {
        // x = m where y = 0 (no zero register needed; with a scale, a difference that
        // underflows to y = 0 has e = 1 whichever sum takes it).
        let is_top = _mm256_cmp_ps::<_CMP_EQ_OQ>(v[i], k.m);
        acc[0] = _mm256_add_ps(acc[0], _mm256_andnot_ps(is_top, e[i]));
        *top = _mm256_sub_epi32(*top, _mm256_castps_si256(is_top));
        if EY {
            acc[1] = _mm256_fmadd_ps(e[i], yc[i], acc[1]);
        }
    }
}

/// 8 float32 lanes added into 8 f64 lanes (two registers).
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2,fma")]
fn flush(acc: __m256, wide: &mut [__m256d; 2]) {
    wide[0] = _mm256_add_pd(wide[0], _mm256_cvtps_pd(_mm256_castps256_ps128(acc)));
    wide[1] = _mm256_add_pd(wide[1], _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(acc)));
}

/// Σ of 8 f64 lanes, pairwise: (l0 + l4) + (l2 + l6) + ((l1 + l5) + (l3 + l7)).
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2,fma")]
fn total(wide: [__m256d; 2]) -> f64 {
    let mut a = [0.0f64; 4];
    // SAFETY: `a` is 4 writable f64.
    unsafe { _mm256_storeu_pd(a.as_mut_ptr(), _mm256_add_pd(wide[0], wide[1])) };
    (a[0] + a[2]) + (a[1] + a[3])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::math::{clamp_low, Fma, Real};

    /// The sums in f64 from the generic element function (the same e per element).
    fn reference(x: &[f32], m: f32, inv_t: f32, scale: bool) -> [f64; 3] {
        let mut s = [0.0f64; 3];
        for &v in x {
            let y = if scale { (v - m) * inv_t } else { v - m };
            let yc = clamp_low(y);
            let e = yc.exp_clamped::<Fma>();
            if v == m {
                s[1] += 1.0;
            } else {
                s[0] += e as f64;
            }
            s[2] += e as f64 * yc as f64;
        }
        s
    }

    #[test]
    fn sums_match_the_element_function() {
        let mut seed = 7u64;
        for c in [1usize, 2, 7, 8, 9, 15, 16, 17, 100, 127, 128, 129, 1000, 3001] {
            let mut x: Vec<f32> = (0..c)
                .map(|_| {
                    seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    ((seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 40.0
                })
                .collect();
            if c > 3 {
                x[c / 2] = f32::NEG_INFINITY;
                x[1] = -200.0;
                x[c - 1] = x[0]; // a tie for the max, maybe
            }
            let m = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            for (scale, inv_t) in [(false, 1.0f32), (true, 0.37)] {
                let Some(got) = (if scale {
                    exp_sums_f32::<true, true>(&x, m, inv_t)
                } else {
                    exp_sums_f32::<false, true>(&x, m, inv_t)
                }) else {
                    return; // no AVX2 here
                };
                let want = reference(&x, m, inv_t, scale);
                assert_eq!(got[1], want[1], "c = {c}: tops");
                for k in [0, 2] {
                    let tol = 1e-6 * want[k].abs() + 1e-30;
                    assert!((got[k] - want[k]).abs() <= tol, "c = {c}, sum {k}: {} vs {}", got[k], want[k]);
                }
                let no_ey = exp_sums_f32::<false, false>(&x, m, 1.0).unwrap();
                assert_eq!(no_ey[2], 0.0);
            }
            let nan_free = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            assert_eq!(max_f32(&x), Some(nan_free), "c = {c}");
            // NaN anywhere makes the sums NaN.
            let mut bad = x.clone();
            bad[c - 1] = f32::NAN;
            let got = exp_sums_f32::<false, true>(&bad, m, 1.0).unwrap();
            assert!(got[0].is_nan() && got[2].is_nan(), "c = {c}");
            // The max skips it.
            assert_eq!(max_f32(&bad), Some(bad.iter().copied().fold(f32::NEG_INFINITY, f32::max)), "c = {c}");
        }
    }
}

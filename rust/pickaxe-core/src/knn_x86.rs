//! The direct search's register block (`knn::block_totals`) on AVX-512 and on AVX2, written
//! with intrinsics.
//!
//! The generic block keeps Q × R lane arrays `[f64; 16]` of sums and leaves it to LLVM to
//! hold them in registers. Under the release profile's fat LTO it stopped doing so
//! (session 10): every sum was stored to the stack after every multiply-add, and the
//! direct search ran at half speed. Here the sums are vector values the optimiser has
//! nothing to promote, in a number that fits the registers:
//!
//! * AVX-512: a pair's 16 lanes are two `__m512d`; 4 × 2 pairs are 16 accumulators, plus 8
//!   query and 4 reference registers, inside the 32.
//! * AVX2: 16 lanes would be four `__m256d` a pair, so a block could hold only 3 pairs in
//!   the 16 registers. The lanes are instead summed a quarter at a time (lanes 0–3 over the
//!   whole row, then 4–7, ...): one `__m256d` a pair, Q × R of them.
//!
//! Each lane gets the generic block's operations in its order (v = q − r, then
//! fma(v, v, s); or fma(q, r, s) for the inner product), and the lanes are totalled in
//! registers in `lanes::total`'s order, so every distance keeps `pair_distances`' bits.

use std::arch::x86_64::*;

use crate::knn::{M_COS, M_IP, M_L2};
use crate::math::LANES;

/// The pointers to Q queries' and R reference rows' values, and their length in
/// lane arrays: the first reference row's (every row must be at least that long).
#[inline(always)]
fn rows<const Q: usize, const R: usize>(q: [&[f64]; Q], r: [&[f64]; R]) -> ([*const f64; Q], [*const f64; R], usize) {
    const _: () = assert!(LANES == 16);
    let n = r[0].len() / LANES;
    for v in q.iter().chain(r.iter()) {
        assert!(v.len() >= n * LANES, "a block's rows are shorter than its first reference row");
    }
    (q.map(|v| v.as_ptr()), r.map(|v| v.as_ptr()), n)
}

/// `knn::block_totals` at AVX-512: the lane totals of Q prepared queries against R
/// prepared reference rows. `M`: the metric (`knn::M_*`); the inner product sums q·r, the
/// others (q − r)².
///
/// # Safety
/// The CPU must have AVX-512F.
#[inline]
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn block_totals_avx512<const M: u8, const Q: usize, const R: usize>(
    q: [&[f64]; Q], r: [&[f64]; R],
) -> [[f64; R]; Q] {
    let (qp, rp, n) = rows(q, r);
    let mut acc = [[[_mm512_setzero_pd(); 2]; R]; Q];
    for c in 0..n {
        let at = c * LANES;
        // SAFETY: at + 16 <= n·16 <= the length of every row (`rows`).
        let rv: [[__m512d; 2]; R] =
            std::array::from_fn(|i| unsafe { [_mm512_loadu_pd(rp[i].add(at)), _mm512_loadu_pd(rp[i].add(at + 8))] });
        for j in 0..Q {
            // SAFETY: as for `rv`.
            let qv = unsafe { [_mm512_loadu_pd(qp[j].add(at)), _mm512_loadu_pd(qp[j].add(at + 8))] };
            for i in 0..R {
                for h in 0..2 {
                    acc[j][i][h] = if M == M_IP {
                        _mm512_fmadd_pd(qv[h], rv[i][h], acc[j][i][h])
                    } else {
                        let v = _mm512_sub_pd(qv[h], rv[i][h]);
                        _mm512_fmadd_pd(v, v, acc[j][i][h])
                    };
                }
            }
        }
    }
    let mut out = [[0.0f64; R]; Q];
    for j in 0..Q {
        for i in 0..R {
            out[j][i] = total_avx512(acc[j][i]);
        }
    }
    out
}

/// `lanes::total` of a pair's 16 lanes held in two registers, in its order: lanes l and
/// l + 8, then l and l + 4, then the halves and the pair (in registers, not through a
/// stored lane array and scalar adds).
#[inline]
#[target_feature(enable = "avx512f")]
fn total_avx512(v: [__m512d; 2]) -> f64 {
    let h8 = _mm512_add_pd(v[0], v[1]);
    let h4 = _mm256_add_pd(_mm512_castpd512_pd256(h8), _mm512_extractf64x4_pd::<1>(h8));
    total_avx(h4)
}

/// `lanes::total`'s last steps on the four sums of lanes l, l + 4, l + 8 and l + 12
/// (l = 0..4): ((h0 + h2) + (h1 + h3)).
#[inline]
#[target_feature(enable = "avx")]
fn total_avx(h4: __m256d) -> f64 {
    let h2 = _mm_add_pd(_mm256_castpd256_pd128(h4), _mm256_extractf128_pd::<1>(h4));
    _mm_cvtsd_f64(_mm_add_sd(h2, _mm_unpackhi_pd(h2, h2)))
}

/// `knn::block_totals` at AVX2 (as `block_totals_avx512`), a quarter of the lanes at a time.
///
/// The quarters come back as registers and are totalled in them, in `lanes::total`'s
/// order: lanes l and l + 8 are quarters 0 and 2 (1 and 3), lanes l and l + 4 the two
/// sums of those, then the halves and the pair. Storing the quarters into zeroed lane
/// arrays and totalling them one lane at a time took an eighth of the direct search.
///
/// # Safety
/// The CPU must have AVX2 and FMA.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn block_totals_avx2<const M: u8, const Q: usize, const R: usize>(
    q: [&[f64]; Q], r: [&[f64]; R],
) -> [[f64; R]; Q] {
    let (qp, rp, n) = rows(q, r);
    // SAFETY: the CPU has AVX2 and FMA (this function's contract); the rows hold n·16
    // values (`rows`).
    let s: [[[__m256d; R]; Q]; 4] =
        std::array::from_fn(|quarter| unsafe { quarter_avx2::<M, Q, R>(&qp, &rp, n, quarter) });
    let mut out = [[0.0f64; R]; Q];
    for j in 0..Q {
        for i in 0..R {
            let h8_lo = _mm256_add_pd(s[0][j][i], s[2][j][i]);
            let h8_hi = _mm256_add_pd(s[1][j][i], s[3][j][i]);
            out[j][i] = total_avx(_mm256_add_pd(h8_lo, h8_hi));
        }
    }
    out
}

/// Lanes 4·quarter .. 4·quarter + 4 of every pair's sums, one register a pair. Not inlined:
/// unrolled into its caller, fat LTO kept the finished quarters' sums in registers and
/// spilled a running one.
///
/// # Safety
/// The CPU must have AVX2 and FMA; every row pointer must have n·16 values.
#[inline(never)]
#[target_feature(enable = "avx2,fma")]
unsafe fn quarter_avx2<const M: u8, const Q: usize, const R: usize>(
    qp: &[*const f64; Q], rp: &[*const f64; R], n: usize, quarter: usize,
) -> [[__m256d; R]; Q] {
    let mut acc = [[_mm256_setzero_pd(); R]; Q];
    for c in 0..n {
        let at = c * LANES + 4 * quarter;
        // SAFETY: at + 4 <= n·16 (this function's contract).
        let rv: [__m256d; R] = std::array::from_fn(|i| unsafe { _mm256_loadu_pd(rp[i].add(at)) });
        for j in 0..Q {
            // SAFETY: as for `rv`.
            let qv = unsafe { _mm256_loadu_pd(qp[j].add(at)) };
            for i in 0..R {
                acc[j][i] = if M == M_IP {
                    _mm256_fmadd_pd(qv, rv[i], acc[j][i])
                } else {
                    let v = _mm256_sub_pd(qv, rv[i]);
                    _mm256_fmadd_pd(v, v, acc[j][i])
                };
            }
        }
    }
    acc
}

/// `Keyed::finish_pack4` for float32 keys: four pairs' `knn::finish` (L2 √t; cosine ½t
/// clamped to [0, 2], NaN kept, 1 when a norm is not > 0; inner product 1 − t), + 0.0, the
/// float32 rounding and the key (the bits in `total_cmp`'s order above the id), side by
/// side: the same bits as `Keyed::pack(stored(finish(..)), id)` one pair at a time.
///
/// # Safety
/// The CPU must have AVX2.
#[inline]
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn finish_pack4_f32<const M: u8>(
    tot: [f64; 4], qn: [f64; 4], rn: [f64; 4], ids: [u64; 4],
) -> [u64; 4] {
    // SAFETY: each array is 4 readable f64 / u64.
    let (t, q, r, id) = unsafe {
        (
            _mm256_loadu_pd(tot.as_ptr()),
            _mm256_loadu_pd(qn.as_ptr()),
            _mm256_loadu_pd(rn.as_ptr()),
            _mm256_loadu_si256(ids.as_ptr().cast()),
        )
    };
    let zero = _mm256_setzero_pd();
    let v = match M {
        M_L2 => _mm256_sqrt_pd(t),
        M_COS => {
            // max / min return their second operand when either is NaN: NaN stays.
            let c = _mm256_min_pd(_mm256_set1_pd(2.0), _mm256_max_pd(zero, _mm256_mul_pd(_mm256_set1_pd(0.5), t)));
            let both = _mm256_and_pd(_mm256_cmp_pd::<_CMP_GT_OQ>(q, zero), _mm256_cmp_pd::<_CMP_GT_OQ>(r, zero));
            _mm256_blendv_pd(_mm256_set1_pd(1.0), c, both)
        }
        _ => _mm256_sub_pd(_mm256_set1_pd(1.0), t),
    };
    let b = _mm_castps_si128(_mm256_cvtpd_ps(_mm256_add_pd(v, zero)));
    // total_cmp's order: negative values every bit flipped, the others the sign bit.
    let o = _mm_xor_si128(b, _mm_or_si128(_mm_srai_epi32::<31>(b), _mm_set1_epi32(i32::MIN)));
    let keys = _mm256_or_si256(_mm256_slli_epi64::<32>(_mm256_cvtepu32_epi64(o)), id);
    let mut out = [0u64; 4];
    // SAFETY: `out` is 4 writable u64.
    unsafe { _mm256_storeu_si256(out.as_mut_ptr().cast(), keys) };
    out
}

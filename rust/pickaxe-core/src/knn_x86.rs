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
//! fma(v, v, s); or fma(q, r, s) for the inner product), and the lanes are totalled by
//! `lanes::totals`, so every distance keeps `pair_distances`' bits.

use std::arch::x86_64::*;

use crate::knn::M_IP;
use crate::lanes;
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
    let mut sums = [[[0.0f64; LANES]; R]; Q];
    for j in 0..Q {
        for i in 0..R {
            // SAFETY: a lane array holds 16 f64, the two stores 8 each.
            unsafe {
                _mm512_storeu_pd(sums[j][i].as_mut_ptr(), acc[j][i][0]);
                _mm512_storeu_pd(sums[j][i].as_mut_ptr().add(8), acc[j][i][1]);
            }
        }
    }
    sums.map(|row| lanes::totals(&row))
}

/// `knn::block_totals` at AVX2 (as `block_totals_avx512`), a quarter of the lanes at a time.
///
/// # Safety
/// The CPU must have AVX2 and FMA.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn block_totals_avx2<const M: u8, const Q: usize, const R: usize>(
    q: [&[f64]; Q], r: [&[f64]; R],
) -> [[f64; R]; Q] {
    let (qp, rp, n) = rows(q, r);
    let mut sums = [[[0.0f64; LANES]; R]; Q];
    for quarter in 0..4 {
        // SAFETY: the CPU has AVX2 and FMA (this function's contract); the rows hold n·16
        // values (`rows`).
        unsafe { quarter_avx2::<M, Q, R>(&qp, &rp, n, quarter, &mut sums) };
    }
    sums.map(|row| lanes::totals(&row))
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
    qp: &[*const f64; Q], rp: &[*const f64; R], n: usize, quarter: usize, sums: &mut [[[f64; LANES]; R]; Q],
) {
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
    for j in 0..Q {
        for i in 0..R {
            // SAFETY: lanes 4·quarter .. 4·quarter + 4 of a 16-lane array.
            unsafe { _mm256_storeu_pd(sums[j][i].as_mut_ptr().add(4 * quarter), acc[j][i]) };
        }
    }
}

//! float64 logits rows with AVX2 and FMA, written with intrinsics: the row max and the
//! exp-sums of entropy, least confidence, margin and energy from logits (the float64
//! counterpart of `logits_x86`).
//!
//! The generic lane-array loop (`passes::exp_sums`) holds 16 lanes, four AVX2 registers per
//! accumulator, and its float64 exp is a degree-13 Taylor polynomial on |r| ≤ ln2/2: ~16
//! operations on the FMA pipes per 4 values. Here the accumulators are one register of 4
//! lanes each (float64 sums, no flushes), and exp comes from a 256-entry table:
//!
//! - exp(y) = 2^(n/256) · exp(r) with n = round(256·y·log2 e) (the 1.5·2^52 "magic number"
//!   rounding) and r = y − n·ln2/256 in two FMA steps (ln2/256 as a sum of two doubles, so
//!   r is right to an ULP of r at every n); |r| ≤ ln2/512, where exp(r) = 1 + r·q(r) with q
//!   the Taylor polynomial of degree 3 (remainder r⁵/120 < 3.8e-17, 0.17 ULP);
//!   2^(n mod 256 / 256) from the table by a gather (`vgatherqpd`), and 2^⌊n/256⌋ added to
//!   that entry's exponent as an integer (t's bits shifted left by 44; the table entries
//!   are stored minus the 8 bits that land in the mantissa). Within 1 ULP of std's exp
//!   above −20, 2 ULP down to the bottom of the normal range (`table_exp_within_2_ulp`).
//!   At the bottom, −1023·ln 2, n = −1023·256 and the entry plus the exponent is exactly
//!   +0, so −inf logits give e = 0 exactly. Below −1022·ln 2 (e < 2^−1022) e is a
//!   subnormal off by up to 2^−1022: nothing in a sum that holds the max's e = 1.
//! - First a fast pass that assumes the max is unique and the row NaN-free (nearly every
//!   row): one compare (equal or unordered with 0) both counts the max classes and NaNs and
//!   masks the max out of Σ e; if the count is other than one the row runs again through
//!   the exact pass, which keeps the max classes apart by comparing x with m (as
//!   `logits_x86`).
//!
//! The gather costs about as much as the FMAs the table saves; in-register tables (4
//! doubles per `vpermps`, so 4 or 8 entries) need polynomials of degree 7-8 and measured
//! slower on Zen 4 (see benches/RESULTS.md). The fast pass's loop is inline assembly
//! (`fast_exp4`), the same operations in the same order as the intrinsics step, for the
//! reason `logits_x86` gives: the compiler's loop reloaded constants and copied registers.
//!
//! Only the AVX2 path calls these (`Isa::WIDE` is false there; on the AVX-512 path this
//! loop measured no faster than the generic one, see RESULTS). Each entry point checks the
//! CPU (a cached bit test) and returns `None` without AVX2 and FMA, so it is sound to call
//! from anywhere.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// The largest value of a row, NaN skipped (as `passes::top2` without `CHECK`; -inf for an
/// empty or all-NaN row). `None` without AVX2.
#[inline(always)]
pub(crate) fn max_f64(x: &[f64]) -> Option<f64> {
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
fn max(x: &[f64]) -> f64 {
    let ninf = _mm256_set1_pd(f64::NEG_INFINITY);
    // Four independent maxima; max(v, a) keeps a when v is NaN (the second operand).
    let mut a = [ninf; 4];
    let (quads, rest) = x.as_chunks::<16>();
    for q in quads {
        for (u, acc) in a.iter_mut().enumerate() {
            // SAFETY: q[4u..4u + 4] is inside the 16 values of `q`.
            let v = unsafe { _mm256_loadu_pd(q.as_ptr().add(4 * u)) };
            *acc = _mm256_max_pd(v, *acc);
        }
    }
    let (chunks, tail) = rest.as_chunks::<4>();
    for c in chunks {
        // SAFETY: `c` is 4 readable values.
        a[0] = _mm256_max_pd(unsafe { _mm256_loadu_pd(c.as_ptr()) }, a[0]);
    }
    if !tail.is_empty() {
        a[1] = _mm256_max_pd(load_tail(tail, ninf), a[1]);
    }
    let m = _mm256_max_pd(_mm256_max_pd(a[0], a[1]), _mm256_max_pd(a[2], a[3]));
    let m = _mm_max_pd(_mm256_castpd256_pd128(m), _mm256_extractf128_pd::<1>(m));
    let m = _mm_max_sd(m, _mm_unpackhi_pd(m, m));
    _mm_cvtsd_f64(m)
}

/// The < 4 values of `tail` in the first lanes, `fill` in the others.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2")]
fn load_tail(tail: &[f64], fill: __m256d) -> __m256d {
    let live = _mm256_cmpgt_epi64(_mm256_set1_epi64x(tail.len() as i64), _mm256_setr_epi64x(0, 1, 2, 3));
    // SAFETY: a masked load touches only the lanes set in `live`, the first `tail.len()`
    // < 4, all inside `tail`.
    let v = unsafe { _mm256_maskload_pd(tail.as_ptr(), live) };
    _mm256_blendv_pd(fill, v, _mm256_castsi256_pd(live))
}

/// (Σ e over y < 0, #{y = 0}, Σ e·y) of a row, with y = (x − m)·inv_t (`SCALE`) or x − m,
/// e = exp(y); `ey` only with `EY` (else 0). NaN anywhere makes the sums NaN. `None` when the
/// CPU lacks AVX2 or FMA (or is not x86-64): then the caller runs the generic loop.
#[inline(always)]
pub(crate) fn exp_sums_f64<const SCALE: bool, const EY: bool>(x: &[f64], m: f64, inv_t: f64) -> Option<[f64; 3]> {
    #[cfg(target_arch = "x86_64")]
    {
        // A cached bit test: the kernels call this only on the AVX2 path, but the check
        // keeps it sound wherever it is called from.
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU has AVX2 and FMA (checked just above).
            return Some(unsafe { sums::<SCALE, EY>(x, m, inv_t) });
        }
    }
    let _ = (x, m, inv_t);
    None
}

/// 1.5 · 2^52: t = z + EXP_MAGIC holds n = round(z) in its low mantissa bits (two's
/// complement below 2^51), so t's bits give n mod 256 (the table index) and ⌊n/256⌋ (the
/// exponent).
const EXP_MAGIC: f64 = 6_755_399_441_055_744.0;
/// 256·log2(e).
const EXP_LOG2E: f64 = 369.329_930_467_574_6;
/// ln2/256 as hi + lo (hi the double nearest, lo the double nearest the rest; mpmath at 200
/// bits): r = (y − n·hi) − n·lo in two FMA steps.
const EXP_LN2_HI: f64 = 0.002_707_606_174_062_286_3;
const EXP_LN2_LO: f64 = 9.058_776_616_587_108e-20;
/// exp(r) ≈ 1 + r·(q0 + r·(q1 + r·(q2 + r·q3))) on |r| ≤ ln2/512: Taylor's coefficients.
const EXP_Q: [f64; 4] = [1.0, 0.5, 1.0 / 6.0, 1.0 / 24.0];
/// The bottom of the range: −1023·ln 2 rounded, where n = −1023·256 and the scale is +0
/// (the entry for n mod 256 = 0, 1.0, plus −1023 in the exponent field).
pub(crate) const EXP_LOW: f64 = -709.089_565_712_824_1;
/// The bits of 2^(j/256), j = 0..256, correctly rounded (mpmath at 200 bits).
const EXP_POW2: [u64; 256] = [
    0x3ff0_0000_0000_0000,
    0x3ff0_0b1a_fa5a_bcbf,
    0x3ff0_163d_a9fb_3335,
    0x3ff0_2168_143b_0281,
    0x3ff0_2c9a_3e77_8061,
    0x3ff0_37d4_2e11_bbcc,
    0x3ff0_4315_e86e_7f85,
    0x3ff0_4e5f_72f6_54b1,
    0x3ff0_59b0_d315_8574,
    0x3ff0_650a_0e3c_1f89,
    0x3ff0_706b_29dd_f6de,
    0x3ff0_7bd4_2b72_a836,
    0x3ff0_8745_1875_9bc8,
    0x3ff0_92bd_f666_07e0,
    0x3ff0_9e3e_cac6_f383,
    0x3ff0_a9c7_9b1f_3919,
    0x3ff0_b558_6cf9_890f,
    0x3ff0_c0f1_45e4_6c85,
    0x3ff0_cc92_2b72_47f7,
    0x3ff0_d83b_2339_5dec,
    0x3ff0_e3ec_32d3_d1a2,
    0x3ff0_efa5_5fdf_a9c5,
    0x3ff0_fb66_affe_d31b,
    0x3ff1_0730_28d7_233e,
    0x3ff1_1301_d012_5b51,
    0x3ff1_1edb_ab5e_2ab6,
    0x3ff1_2abd_c06c_31cc,
    0x3ff1_36a8_14f2_04ab,
    0x3ff1_429a_aea9_2de0,
    0x3ff1_4e95_934f_312e,
    0x3ff1_5a98_c8a5_8e51,
    0x3ff1_66a4_5471_c3c2,
    0x3ff1_72b8_3c7d_517b,
    0x3ff1_7ed4_8695_bbc0,
    0x3ff1_8af9_388c_8dea,
    0x3ff1_9726_5837_5d2f,
    0x3ff1_a35b_eb6f_cb75,
    0x3ff1_af99_f813_8a1c,
    0x3ff1_bbe0_8404_5cd4,
    0x3ff1_c82f_9528_1c6b,
    0x3ff1_d487_3168_b9aa,
    0x3ff1_e0e7_5eb4_4027,
    0x3ff1_ed50_22fc_d91d,
    0x3ff1_f9c1_8438_ce4d,
    0x3ff2_063b_8862_8cd6,
    0x3ff2_12be_3578_a819,
    0x3ff2_1f49_917d_dc96,
    0x3ff2_2bdd_a279_12d1,
    0x3ff2_387a_6e75_6238,
    0x3ff2_451f_fb82_140a,
    0x3ff2_51ce_4fb2_a63f,
    0x3ff2_5e85_711e_ce75,
    0x3ff2_6b45_65e2_7cdd,
    0x3ff2_780e_341d_df29,
    0x3ff2_84df_e1f5_6381,
    0x3ff2_91ba_7591_bb70,
    0x3ff2_9e9d_f51f_dee1,
    0x3ff2_ab8a_66d1_0f13,
    0x3ff2_b87f_d0da_d990,
    0x3ff2_c57e_3977_1b2f,
    0x3ff2_d285_a6e4_030b,
    0x3ff2_df96_1f64_1589,
    0x3ff2_ecaf_a93e_2f56,
    0x3ff2_f9d2_4abd_886b,
    0x3ff3_06fe_0a31_b715,
    0x3ff3_1432_edee_b2fd,
    0x3ff3_2170_fc4c_d831,
    0x3ff3_2eb8_3ba8_ea32,
    0x3ff3_3c08_b264_16ff,
    0x3ff3_4962_66e3_fa2d,
    0x3ff3_56c5_5f92_9ff1,
    0x3ff3_6431_a2de_883b,
    0x3ff3_71a7_373a_a9cb,
    0x3ff3_7f26_231e_754a,
    0x3ff3_8cae_6d05_d866,
    0x3ff3_9a40_1b71_40ef,
    0x3ff3_a7db_34e5_9ff7,
    0x3ff3_b57f_bfec_6cf4,
    0x3ff3_c32d_c313_a8e5,
    0x3ff3_d0e5_44ed_e173,
    0x3ff3_dea6_4c12_3422,
    0x3ff3_ec70_df1c_5175,
    0x3ff3_fa45_04ac_801c,
    0x3ff4_0822_c367_a024,
    0x3ff4_160a_21f7_2e2a,
    0x3ff4_23fb_2709_468a,
    0x3ff4_31f5_d950_a897,
    0x3ff4_3ffa_3f84_b9d4,
    0x3ff4_4e08_6061_892d,
    0x3ff4_5c20_42a7_d232,
    0x3ff4_6a41_ed1d_0057,
    0x3ff4_786d_668b_3237,
    0x3ff4_86a2_b5c1_3cd0,
    0x3ff4_94e1_e192_aed2,
    0x3ff4_a32a_f0d7_d3de,
    0x3ff4_b17d_ea6d_b7d7,
    0x3ff4_bfda_d536_2a27,
    0x3ff4_ce41_b817_c114,
    0x3ff4_dcb2_99fd_dd0d,
    0x3ff4_eb2d_81d8_abff,
    0x3ff4_f9b2_769d_2ca7,
    0x3ff5_0841_7f45_31ee,
    0x3ff5_16da_a2cf_6642,
    0x3ff5_257d_e83f_4eef,
    0x3ff5_342b_569d_4f82,
    0x3ff5_42e2_f4f6_ad27,
    0x3ff5_51a4_ca5d_920f,
    0x3ff5_6070_dde9_10d2,
    0x3ff5_6f47_36b5_27da,
    0x3ff5_7e27_dbe2_c4cf,
    0x3ff5_8d12_d497_c7fd,
    0x3ff5_9c08_27ff_07cc,
    0x3ff5_ab07_dd48_5429,
    0x3ff5_ba11_fba8_7a03,
    0x3ff5_c926_8a59_46b7,
    0x3ff5_d845_9099_8b93,
    0x3ff5_e76f_15ad_2148,
    0x3ff5_f6a3_20dc_eb71,
    0x3ff6_05e1_b976_dc09,
    0x3ff6_152a_e6cd_f6f4,
    0x3ff6_247e_b03a_5585,
    0x3ff6_33dd_1d19_29fd,
    0x3ff6_4346_34cc_c320,
    0x3ff6_52b9_febc_8fb7,
    0x3ff6_6238_8255_2225,
    0x3ff6_71c1_c708_33f6,
    0x3ff6_8155_d44c_a973,
    0x3ff6_90f4_b19e_9538,
    0x3ff6_a09e_667f_3bcd,
    0x3ff6_b052_fa75_173e,
    0x3ff6_c012_750b_dabf,
    0x3ff6_cfdc_ddd4_7645,
    0x3ff6_dfb2_3c65_1a2f,
    0x3ff6_ef92_9859_3ae5,
    0x3ff6_ff7d_f951_9484,
    0x3ff7_0f74_66f4_2e87,
    0x3ff7_1f75_e8ec_5f74,
    0x3ff7_2f82_86ea_d08a,
    0x3ff7_3f9a_48a5_8174,
    0x3ff7_4fbd_35d7_cbfd,
    0x3ff7_5feb_5642_67c9,
    0x3ff7_7024_b1ab_6e09,
    0x3ff7_8069_4fde_5d3f,
    0x3ff7_90b9_38ac_1cf6,
    0x3ff7_a114_73eb_0187,
    0x3ff7_b17b_0976_cfdb,
    0x3ff7_c1ed_0130_c132,
    0x3ff7_d26a_62ff_86f0,
    0x3ff7_e2f3_36cf_4e62,
    0x3ff7_f387_8491_c491,
    0x3ff8_0427_543e_1a12,
    0x3ff8_14d2_add1_06d9,
    0x3ff8_2589_994c_ce13,
    0x3ff8_364c_1eb9_41f7,
    0x3ff8_471a_4623_c7ad,
    0x3ff8_57f4_179f_5b21,
    0x3ff8_68d9_9b44_92ed,
    0x3ff8_79ca_d931_a436,
    0x3ff8_8ac7_d98a_6699,
    0x3ff8_9bd0_a478_580f,
    0x3ff8_ace5_422a_a0db,
    0x3ff8_be05_bad6_1778,
    0x3ff8_cf32_16b5_448c,
    0x3ff8_e06a_5e08_66d9,
    0x3ff8_f1ae_9915_7736,
    0x3ff9_02fe_d028_2c8a,
    0x3ff9_145b_0b91_ffc6,
    0x3ff9_25c3_53aa_2fe2,
    0x3ff9_3737_b0cd_c5e5,
    0x3ff9_48b8_2b5f_98e5,
    0x3ff9_5a44_cbc8_520f,
    0x3ff9_6bdd_9a76_70b3,
    0x3ff9_7d82_9fde_4e50,
    0x3ff9_8f33_e47a_22a2,
    0x3ff9_a0f1_70ca_07ba,
    0x3ff9_b2bb_4d53_fe0d,
    0x3ff9_c491_82a3_f090,
    0x3ff9_d674_194b_b8d5,
    0x3ff9_e863_19e3_2323,
    0x3ff9_fa5e_8d07_f29e,
    0x3ffa_0c66_7b5d_e565,
    0x3ffa_1e7a_ed8e_b8bb,
    0x3ffa_309b_ec4a_2d33,
    0x3ffa_42c9_8046_0ad8,
    0x3ffa_5503_b23e_255d,
    0x3ffa_674a_8af4_6052,
    0x3ffa_799e_1330_b358,
    0x3ffa_8bfe_53c1_2e59,
    0x3ffa_9e6b_5579_fdbf,
    0x3ffa_b0e5_2135_6eba,
    0x3ffa_c36b_bfd3_f37a,
    0x3ffa_d5ff_3a3c_2774,
    0x3ffa_e89f_995a_d3ad,
    0x3ffa_fb4c_e622_f2ff,
    0x3ffb_0e07_298d_b666,
    0x3ffb_20ce_6c9a_8952,
    0x3ffb_33a2_b84f_15fb,
    0x3ffb_4684_15b7_49b1,
    0x3ffb_5972_8de5_593a,
    0x3ffb_6c6e_29f1_c52a,
    0x3ffb_7f76_f2fb_5e47,
    0x3ffb_928c_f227_49e4,
    0x3ffb_a5b0_30a1_064a,
    0x3ffb_b8e0_b79a_6f1f,
    0x3ffb_cc1e_904b_c1d2,
    0x3ffb_df69_c3f3_a207,
    0x3ffb_f2c2_5bd7_1e09,
    0x3ffc_0628_6141_b33d,
    0x3ffc_199b_dd85_529c,
    0x3ffc_2d1c_d9fa_652c,
    0x3ffc_40ab_5fff_d07a,
    0x3ffc_5447_78fa_fb22,
    0x3ffc_67f1_2e57_d14b,
    0x3ffc_7ba8_8988_c933,
    0x3ffc_8f6d_9406_e7b5,
    0x3ffc_a340_5751_c4db,
    0x3ffc_b720_dcef_9069,
    0x3ffc_cb0f_2e6d_1675,
    0x3ffc_df0b_555d_c3fa,
    0x3ffc_f315_5b5b_ab74,
    0x3ffd_072d_4a07_897c,
    0x3ffd_1b53_2b08_c968,
    0x3ffd_2f87_080d_89f2,
    0x3ffd_43c8_eaca_a1d6,
    0x3ffd_5818_dcfb_a487,
    0x3ffd_6c76_e862_e6d3,
    0x3ffd_80e3_16c9_8398,
    0x3ffd_955d_71ff_6075,
    0x3ffd_a9e6_03db_3285,
    0x3ffd_be7c_d63a_8315,
    0x3ffd_d321_f301_b460,
    0x3ffd_e7d5_641c_0658,
    0x3ffd_fc97_337b_9b5f,
    0x3ffe_1167_6b19_7d17,
    0x3ffe_2646_14f5_a129,
    0x3ffe_3b33_3b16_ee12,
    0x3ffe_502e_e78b_3ff6,
    0x3ffe_6539_2467_6d76,
    0x3ffe_7a51_fbc7_4c83,
    0x3ffe_8f79_77cd_b740,
    0x3ffe_a4af_a2a4_90da,
    0x3ffe_b9f4_867c_ca6e,
    0x3ffe_cf48_2d8e_67f1,
    0x3ffe_e4aa_a218_8510,
    0x3ffe_fa1b_ee61_5a27,
    0x3fff_0f9c_1cb6_412a,
    0x3fff_252b_376b_ba97,
    0x3fff_3ac9_48dd_7274,
    0x3fff_5076_5b6e_4540,
    0x3fff_6632_7988_44f8,
    0x3fff_7bfd_ad9c_be14,
    0x3fff_91d8_0224_3c89,
    0x3fff_a7c1_819e_90d8,
    0x3fff_bdba_3692_d514,
    0x3fff_d3c2_2b8f_71f1,
    0x3fff_e9d9_6b2a_23d9,
];

/// The table the gather reads: the bits of 2^(j/256) minus j·2^44, the part of t's bits that
/// lands in the mantissa when t is shifted left by 44 to put ⌊n/256⌋ in the exponent.
#[repr(C, align(64))]
struct Table([u64; 256]);

static EXP_TABLE: Table = Table({
    let mut t = [0u64; 256];
    let mut j = 0;
    while j < 256 {
        t[j] = EXP_POW2[j].wrapping_sub((j as u64) << 44);
        j += 1;
    }
    t
});

/// The scalar model of the AVX2 table exp for y in [EXP_LOW, 0] (NaN stays NaN), the same
/// operations in the same order: the tests hold the vector loop to it bit for bit and it to
/// exp within 2 ULP.
#[cfg(test)]
pub(crate) fn exp_table_f64(y: f64) -> f64 {
    let t = y.mul_add(EXP_LOG2E, EXP_MAGIC);
    let n = t - EXP_MAGIC;
    let r = (-n).mul_add(EXP_LN2_HI, y);
    let r = (-n).mul_add(EXP_LN2_LO, r);
    let q = EXP_Q[3].mul_add(r, EXP_Q[2]).mul_add(r, EXP_Q[1]).mul_add(r, EXP_Q[0]);
    let bits = t.to_bits();
    let s = f64::from_bits(EXP_TABLE.0[(bits & 255) as usize].wrapping_add(bits << 44));
    q.mul_add(r * s, s)
}

// Not inlined, as `logits_x86::sums`: the AVX2 wrapper stays small and the AVX-512 wrapper
// compiles as before.
#[cfg(target_arch = "x86_64")]
#[inline(never)]
#[target_feature(enable = "avx2,fma")]
fn sums<const SCALE: bool, const EY: bool>(x: &[f64], m: f64, inv_t: f64) -> [f64; 3] {
    let k = Consts::new(m, inv_t);
    match pass::<SCALE, EY, true>(&k, x) {
        // One class at the max and no NaN: the fast pass's sums are the row's.
        (s, 1) => s,
        // Ties for the max, NaN, or a scaled difference that underflowed to 0.
        _ => pass::<SCALE, EY, false>(&k, x).0,
    }
}

/// The loop's constants.
#[cfg(target_arch = "x86_64")]
pub(crate) struct Consts {
    m: __m256d,
    inv_t: __m256d,
    low: __m256d,
    log2e: __m256d,
    magic: __m256d,
    ln2: [__m256d; 2],
    q: [__m256d; 4],
    index: __m256i,
}

#[cfg(target_arch = "x86_64")]
impl Consts {
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(crate) fn new(m: f64, inv_t: f64) -> Consts {
        let q = EXP_Q;
        Consts {
            m: _mm256_set1_pd(m),
            inv_t: _mm256_set1_pd(inv_t),
            low: _mm256_set1_pd(EXP_LOW),
            log2e: _mm256_set1_pd(EXP_LOG2E),
            magic: _mm256_set1_pd(EXP_MAGIC),
            ln2: [_mm256_set1_pd(EXP_LN2_HI), _mm256_set1_pd(EXP_LN2_LO)],
            q: [_mm256_set1_pd(q[0]), _mm256_set1_pd(q[1]), _mm256_set1_pd(q[2]), _mm256_set1_pd(q[3])],
            index: _mm256_set1_epi64x(255),
        }
    }
}

/// One pass over the row: ([Σ e over y < 0, #{y = 0}, Σ e·y], count). `FAST`: the max
/// classes masked out of Σ e by the compare that counts y = 0 or NaN (the sums hold only
/// when the count is 1, and then #{y = 0} = 1); exact: the max classes counted apart, NaN
/// kept.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2,fma")]
fn pass<const SCALE: bool, const EY: bool, const FAST: bool>(k: &Consts, x: &[f64]) -> ([f64; 3], i64) {
    let (chunks, tail) = x.as_chunks::<4>();
    let mut acc = [_mm256_setzero_pd(); 2];
    let mut top = _mm256_setzero_si256();
    if FAST {
        // Prefetching the next row (`x.len()` values further).
        fast_chunks::<SCALE, EY>(k, chunks, 8 * x.len(), &mut acc, &mut top);
    } else {
        for c in chunks {
            // SAFETY: `c` is 4 readable values.
            let v = unsafe { _mm256_loadu_pd(c.as_ptr()) };
            step::<SCALE, EY, FAST>(k, v, &mut acc, &mut top);
        }
    }
    if !tail.is_empty() {
        // -inf in the lanes after the tail: e = 0, not a max.
        let v = load_tail(tail, _mm256_set1_pd(f64::NEG_INFINITY));
        step::<SCALE, EY, FAST>(k, v, &mut acc, &mut top);
    }
    let mut t = [0i64; 4];
    // SAFETY: `t` is 4 writable i64.
    unsafe { _mm256_storeu_si256(t.as_mut_ptr().cast(), top) };
    let count = (t[0] + t[2]) + (t[1] + t[3]);
    ([total(acc[0]), if FAST { 1.0 } else { count as f64 }, if EY { total(acc[1]) } else { 0.0 }], count)
}

/// The fast pass's step over one 4-value register (`step::<SCALE, EY, true>`, the same
/// operations in the same order, so the same bits for NaN-free rows), as assembly text: the
/// compiler's loop reloaded four constants by broadcasts every turn, re-zeroed two
/// registers and copied two (32 instructions per 4 values with the loop's add and branch,
/// thin LTO); this is 27. `$at`
/// addresses the 4 values; the constants used once per value are memory operands
/// (`FastMem`). The clamp is max(y, low), which sends NaN to low: such a row is counted and
/// runs again through the exact pass.
macro_rules! fast_exp4 {
    ($at:literal, $scale:tt, $ey:tt) => {
        concat!(
            "vaddpd {y}, {negm}, ymmword ptr [", $at, "]\n",
            fast_exp4!(@scale $scale),
            // y = 0 or NaN: counted.
            "vcmppd {c}, {y}, ymmword ptr [{k}], 8\n",
            "vpsubq {top}, {top}, {c}\n",
            "vmaxpd {y}, {y}, ymmword ptr [{k} + 32]\n",
            // t = yc·256·log2e + magic; n = t − magic; r = (yc − n·hi) − n·lo.
            "vmovapd {t}, {y}\n",
            "vfmadd213pd {t}, {log2e}, ymmword ptr [{k} + 64]\n",
            "vsubpd {n}, {t}, ymmword ptr [{k} + 64]\n",
            "vmovapd {r}, {y}\n",
            "vfnmadd231pd {r}, {n}, {hi}\n",
            "vfnmadd231pd {r}, {n}, ymmword ptr [{k} + 96]\n",
            // q = ((q3·r + q2)·r + q1)·r + q0.
            "vmovapd {q}, ymmword ptr [{k} + 128]\n",
            "vfmadd213pd {q}, {r}, ymmword ptr [{k} + 160]\n",
            "vfmadd213pd {q}, {r}, ymmword ptr [{k} + 192]\n",
            "vfmadd213pd {q}, {r}, ymmword ptr [{k} + 224]\n",
            // s = table[t & 255] + (t << 44) as integers. The gather clears its mask and
            // merges into s: zeroing s first breaks the chain through the last turn's s
            // (without it, one gather latency a turn: 1.8 against 1.0 ns/value).
            "vpand {n}, {t}, ymmword ptr [{k} + 256]\n",
            "vpcmpeqd {g}, {g}, {g}\n",
            "vpxor {s}, {s}, {s}\n",
            "vgatherqpd {s}, qword ptr [{tab} + {n}*8], {g}\n",
            "vpsllq {t}, {t}, 44\n",
            "vpaddq {s}, {s}, {t}\n",
            // e = q·(r·s) + s.
            "vmulpd {r}, {r}, {s}\n",
            "vfmadd213pd {q}, {r}, {s}\n",
            "vandnpd {c}, {c}, {q}\n",
            "vaddpd {acc}, {acc}, {c}\n",
            fast_exp4!(@ey $ey),
        )
    };
    (@scale true) => { "vmulpd {y}, {y}, {inv_t}\n" };
    (@scale false) => { "" };
    (@ey true) => { "vfmadd231pd {ey}, {q}, {y}\n" };
    (@ey false) => { "" };
}

/// The constants `fast_exp4` reads from memory, 4 lanes each (bits): 0, low, magic, ln2/256's
/// lo, q3, q2, q1, q0, the index mask 255.
#[cfg(target_arch = "x86_64")]
#[repr(C, align(32))]
struct FastMem([[u64; 4]; 9]);

#[cfg(target_arch = "x86_64")]
static FAST_MEM: FastMem = FastMem([
    [0; 4],
    [EXP_LOW.to_bits(); 4],
    [EXP_MAGIC.to_bits(); 4],
    [EXP_LN2_LO.to_bits(); 4],
    [EXP_Q[3].to_bits(); 4],
    [EXP_Q[2].to_bits(); 4],
    [EXP_Q[1].to_bits(); 4],
    [EXP_Q[0].to_bits(); 4],
    [255; 4],
]);

/// The fast pass over whole chunks of 4: acc[0] += e where y ≠ 0, acc[1] += e·yc (`EY`),
/// `top` += 1 where y = 0 or is NaN. Two chunks a turn (an odd count runs one alone first),
/// with one prefetch of the 64 bytes `ahead` bytes further: the next row, when rows are
/// contiguous, so that its max pass reads from L1 and not from L3 while this row's exp runs
/// (C = 1,000: −10% in a standalone copy of the kernel, 3-6% in bench_scores on a busy
/// machine; see benches/RESULTS.md).
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2,fma")]
fn fast_chunks<const SCALE: bool, const EY: bool>(
    k: &Consts, chunks: &[[f64; 4]], ahead: usize, acc: &mut [__m256d; 2], top: &mut __m256i,
) {
    if chunks.is_empty() {
        return;
    }
    let negm = _mm256_sub_pd(_mm256_setzero_pd(), k.m);
    // From the end, i = −32·len up to 0.
    let x = chunks.as_ptr_range().end;
    let i = -32 * chunks.len() as isize;
    let next = x.cast::<u8>().wrapping_add(ahead);
    let (mut a, mut b, mut t) = (acc[0], acc[1], *top);
    macro_rules! run {
        ($scale:tt, $ey:tt) => {
            // SAFETY: x + i for i = −32·len, …, −32 are the chunks; FAST_MEM is 9·32
            // readable bytes, 32-aligned; the gather reads EXP_TABLE at t's bits & 255,
            // inside its 256 entries; `prefetcht0` is a hint that reads nothing the
            // program sees and never faults, whatever the address; no stack, no flags the
            // compiler relies on.
            unsafe {
                std::arch::asm!(
                    // Two chunks a turn; an odd number of chunks runs one alone first
                    // (−32·n has bit 5 set when n is odd).
                    "test {i}, 32",
                    "jz 2f",
                    fast_exp4!("{x} + {i}", $scale, $ey),
                    "add {i}, 32",
                    "jz 3f",
                    "2:",
                    "prefetcht0 byte ptr [{next} + {i}]",
                    fast_exp4!("{x} + {i}", $scale, $ey),
                    fast_exp4!("{x} + {i} + 32", $scale, $ey),
                    "add {i}, 64",
                    "jnz 2b",
                    "3:",
                    "/* {inv_t} {ey} */",
                    x = in(reg) x,
                    next = in(reg) next,
                    i = inout(reg) i => _,
                    k = in(reg) FAST_MEM.0.as_ptr(),
                    tab = in(reg) EXP_TABLE.0.as_ptr(),
                    negm = in(ymm_reg) negm,
                    inv_t = in(ymm_reg) k.inv_t,
                    log2e = in(ymm_reg) k.log2e,
                    hi = in(ymm_reg) k.ln2[0],
                    acc = inout(ymm_reg) a,
                    ey = inout(ymm_reg) b,
                    top = inout(ymm_reg) t,
                    y = out(ymm_reg) _,
                    c = out(ymm_reg) _,
                    t = out(ymm_reg) _,
                    n = out(ymm_reg) _,
                    r = out(ymm_reg) _,
                    q = out(ymm_reg) _,
                    s = out(ymm_reg) _,
                    g = out(ymm_reg) _,
                    options(nostack, readonly),
                )
            }
        };
    }
    match (SCALE, EY) {
        (false, true) => run!(false, true),
        (false, false) => run!(false, false),
        (true, true) => run!(true, true),
        (true, false) => run!(true, false),
    }
    acc[0] = a;
    acc[1] = b;
    *top = t;
}

/// 4 values into the accumulators: acc[0] += e where x ≠ m, acc[1] += e·y (`EY`), `top` −=
/// an all-ones mask where x = m (exact pass) or where y = 0 or is NaN (`FAST`), i.e. += 1
/// there.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2,fma")]
fn step<const SCALE: bool, const EY: bool, const FAST: bool>(
    k: &Consts, v: __m256d, acc: &mut [__m256d; 2], top: &mut __m256i,
) {
    let y = _mm256_sub_pd(v, k.m);
    let y = if SCALE { _mm256_mul_pd(y, k.inv_t) } else { y };
    let is_top = if FAST {
        // y = 0 or NaN (x = m, or a scaled difference that underflowed, or NaN).
        _mm256_cmp_pd::<_CMP_EQ_UQ>(y, _mm256_setzero_pd())
    } else {
        // x = m (with a scale, a difference that underflows to y = 0 has e = 1 whichever
        // sum takes it).
        _mm256_cmp_pd::<_CMP_EQ_OQ>(v, k.m)
    };
    *top = _mm256_sub_epi64(*top, _mm256_castpd_si256(is_top));
    // max(low, y) returns y when y is NaN (the second operand), as `clamp_low`.
    let yc = _mm256_max_pd(k.low, y);
    let e = exp4(k, yc);
    acc[0] = _mm256_add_pd(acc[0], _mm256_andnot_pd(is_top, e));
    if EY {
        acc[1] = _mm256_fmadd_pd(e, yc, acc[1]);
    }
}

/// exp of 4 values in [EXP_LOW, 0] (or NaN): `exp_table_f64`'s operations.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(crate) fn exp4(k: &Consts, yc: __m256d) -> __m256d {
    let t = _mm256_fmadd_pd(yc, k.log2e, k.magic);
    let n = _mm256_sub_pd(t, k.magic);
    let r = _mm256_fnmadd_pd(n, k.ln2[0], yc);
    let r = _mm256_fnmadd_pd(n, k.ln2[1], r);
    let q = _mm256_fmadd_pd(k.q[3], r, k.q[2]);
    let q = _mm256_fmadd_pd(q, r, k.q[1]);
    let q = _mm256_fmadd_pd(q, r, k.q[0]);
    let ti = _mm256_castpd_si256(t);
    // 2^(n/256): the table's entry for n mod 256 (the low 8 bits of t) with ⌊n/256⌋ added to
    // its exponent (t's bits shifted left by 44; the 8 bits that land in the mantissa are
    // taken off in the table).
    // SAFETY: the indices are t's bits & 255, inside the 256 entries of EXP_TABLE.
    let entry = unsafe { _mm256_i64gather_pd::<8>(EXP_TABLE.0.as_ptr().cast(), _mm256_and_si256(ti, k.index)) };
    let s = _mm256_castsi256_pd(_mm256_add_epi64(_mm256_castpd_si256(entry), _mm256_slli_epi64::<44>(ti)));
    // 2^(n/256) · (1 + r·q) as q·(r·s) + s.
    _mm256_fmadd_pd(q, _mm256_mul_pd(r, s), s)
}

/// Σ of 4 f64 lanes, pairwise: (l0 + l2) + (l1 + l3).
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2,fma")]
fn total(v: __m256d) -> f64 {
    let mut a = [0.0f64; 4];
    // SAFETY: `a` is 4 writable f64.
    unsafe { _mm256_storeu_pd(a.as_mut_ptr(), v) };
    (a[0] + a[2]) + (a[1] + a[3])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `c` logits uniform in [−spread/2, spread/2), from a linear congruential `seed`.
    fn uniform(seed: &mut u64, c: usize, spread: f64) -> Vec<f64> {
        (0..c)
            .map(|_| {
                *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((*seed >> 11) as f64 / (1u64 << 53) as f64 - 0.5) * spread
            })
            .collect()
    }

    /// The sums in f64 from the scalar model of the kernel's exp (the same e per element).
    fn reference(x: &[f64], m: f64, inv_t: f64, scale: bool) -> [f64; 3] {
        let mut s = [0.0f64; 3];
        for &v in x {
            let y = if scale { (v - m) * inv_t } else { v - m };
            let yc = if y < EXP_LOW { EXP_LOW } else { y };
            let e = exp_table_f64(yc);
            if v == m {
                s[1] += 1.0;
            } else {
                s[0] += e;
            }
            s[2] += e * yc;
        }
        s
    }

    /// ULPs between `got` and `want` (std's exp, itself within an ULP of exact).
    fn ulps(got: f64, want: f64) -> f64 {
        if got == want {
            return 0.0;
        }
        let ulp = f64::from_bits(want.to_bits() + 1) - want;
        (got - want).abs() / ulp
    }

    #[test]
    fn table_is_2_to_the_j_over_256() {
        for (j, &b) in EXP_POW2.iter().enumerate() {
            let want = (j as f64 / 256.0).exp2();
            assert!(ulps(f64::from_bits(b), want) <= 1.0, "entry {j}");
        }
        assert_eq!(EXP_LOW.mul_add(EXP_LOG2E, EXP_MAGIC) - EXP_MAGIC, -1023.0 * 256.0);
    }

    #[test]
    fn table_exp_within_2_ulp() {
        let (mut worst, mut worst_above_20) = (0.0f64, 0.0f64);
        // Every ~1.7e-5 down to the bottom of the normal range: every table entry and r.
        let mut i = 0u64;
        let mut y = 0.0f64;
        while y > -708.39 {
            let u = ulps(exp_table_f64(y), y.exp());
            worst = worst.max(u);
            if y > -20.0 {
                worst_above_20 = worst_above_20.max(u);
            }
            i += 1;
            y = -(i as f64) * 1.7e-5 - (i % 7) as f64 * 1e-12;
        }
        // Measured (41.7M points): 1.00 ULP above -20, 2.00 in all, against std's exp (itself
        // within 0.5 ULP of exact); the generic float64 exp is held to 2.
        assert!(worst <= 2.0, "{worst} ULP");
        assert!(worst_above_20 <= 1.0, "{worst_above_20} ULP above -20");
        assert_eq!(exp_table_f64(0.0), 1.0);
        assert_eq!(exp_table_f64(EXP_LOW), 0.0);
        assert!(exp_table_f64(f64::NAN).is_nan());
    }

    /// The fast pass's assembly loop against the intrinsics step it transcribes, bit for bit.
    #[test]
    fn fast_loop_is_the_intrinsics_step() {
        if !(std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")) {
            return;
        }
        let mut seed = 11u64;
        for c in [4usize, 8, 12, 100, 1000, 1003] {
            let x = uniform(&mut seed, c, 60.0);
            let m = x.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            for inv_t in [1.0, 0.37] {
                // SAFETY: the CPU has AVX2 and FMA (checked above); the loads read `x`'s
                // whole chunks of 4.
                let (asm, steps) = unsafe {
                    let k = Consts::new(m, inv_t);
                    let asm =
                        if inv_t == 1.0 { pass::<false, true, true>(&k, &x) } else { pass::<true, true, true>(&k, &x) };
                    let (chunks, tail) = x.as_chunks::<4>();
                    let mut acc = [_mm256_setzero_pd(); 2];
                    let mut top = _mm256_setzero_si256();
                    for ch in chunks {
                        let v = _mm256_loadu_pd(ch.as_ptr());
                        if inv_t == 1.0 {
                            step::<false, true, true>(&k, v, &mut acc, &mut top);
                        } else {
                            step::<true, true, true>(&k, v, &mut acc, &mut top);
                        }
                    }
                    if !tail.is_empty() {
                        let v = load_tail(tail, _mm256_set1_pd(f64::NEG_INFINITY));
                        if inv_t == 1.0 {
                            step::<false, true, true>(&k, v, &mut acc, &mut top);
                        } else {
                            step::<true, true, true>(&k, v, &mut acc, &mut top);
                        }
                    }
                    (asm, [total(acc[0]), total(acc[1])])
                };
                assert_eq!(asm.1, 1, "c = {c}");
                assert_eq!(asm.0[0].to_bits(), steps[0].to_bits(), "c = {c}, inv_t {inv_t}: rest");
                assert_eq!(asm.0[2].to_bits(), steps[1].to_bits(), "c = {c}, inv_t {inv_t}: ey");
            }
        }
    }

    #[test]
    fn sums_match_the_element_function() {
        let mut seed = 7u64;
        for c in [1usize, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 100, 127, 128, 129, 1000, 3001] {
            let mut x = uniform(&mut seed, c, 40.0);
            if c > 3 {
                x[c / 2] = f64::NEG_INFINITY;
                x[1] = -2000.0;
            }
            // A unique max (the fast pass), then a tie for it (the exact pass).
            for tie in [false, true] {
                let m = x.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                if tie && c > 1 {
                    let at = x.iter().position(|&v| v == m).unwrap();
                    x[(at + c / 2 + 1) % c] = m;
                }
                for (scale, inv_t) in [(false, 1.0f64), (true, 0.37)] {
                    let Some(got) = (if scale {
                        exp_sums_f64::<true, true>(&x, m, inv_t)
                    } else {
                        exp_sums_f64::<false, true>(&x, m, inv_t)
                    }) else {
                        return; // no AVX2 here
                    };
                    let want = reference(&x, m, inv_t, scale);
                    assert_eq!(got[1], want[1], "c = {c}, tie {tie}: tops");
                    for k in [0, 2] {
                        let tol = 1e-14 * want[k].abs() + 1e-300;
                        assert!(
                            (got[k] - want[k]).abs() <= tol,
                            "c = {c}, tie {tie}, sum {k}: {} vs {}",
                            got[k],
                            want[k]
                        );
                    }
                    let no_ey = exp_sums_f64::<false, false>(&x, m, 1.0).unwrap();
                    assert_eq!(no_ey[2], 0.0);
                    assert_eq!(no_ey[..2], exp_sums_f64::<false, true>(&x, m, 1.0).unwrap()[..2]);
                }
            }
            let m = x.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            assert_eq!(max_f64(&x), Some(m), "c = {c}");
            // NaN anywhere makes the sums NaN, whichever its sign.
            for nan in [f64::NAN, -f64::NAN] {
                let mut bad = x.clone();
                bad[c - 1] = nan;
                let m = bad.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let got = exp_sums_f64::<false, true>(&bad, m, 1.0).unwrap();
                assert!(got[0].is_nan() && got[2].is_nan(), "c = {c}");
                // The max skips it.
                assert_eq!(max_f64(&bad), Some(m), "c = {c}");
            }
        }
        // The vector exp is the scalar model's, bit for bit: [0, y, -inf, ...] with the max at
        // 0 has Σ e = exp(y); 3 values run the intrinsics tail, 4 the assembly loop.
        let ninf = f64::NEG_INFINITY;
        for i in 1..4001 {
            let y = -(i as f64) * 0.1773 - (i % 13) as f64 * 1e-9;
            let yc = if y < EXP_LOW { EXP_LOW } else { y };
            for row in [&[0.0, y, ninf][..], &[0.0, y, ninf, ninf][..]] {
                let got = exp_sums_f64::<false, true>(row, 0.0, 1.0).unwrap();
                assert_eq!(got[0].to_bits(), exp_table_f64(yc).to_bits(), "y = {y}, {} values", row.len());
            }
        }
        // A scaled difference that underflows to -0: e = 1, in the rest.
        let x = [1.0f64, 1.0 - f64::EPSILON / 2.0, -3.0];
        let got = exp_sums_f64::<true, true>(&x, 1.0, f64::MIN_POSITIVE).unwrap();
        assert_eq!(got[1], 1.0);
        assert!((got[0] - 2.0).abs() < 1e-15, "{got:?}");
        // Only -inf but one: e = 0 for them, exactly.
        let x = [f64::NEG_INFINITY, 2.0, f64::NEG_INFINITY];
        assert_eq!(exp_sums_f64::<false, true>(&x, 2.0, 1.0).unwrap(), [0.0, 1.0, 0.0]);
    }
}

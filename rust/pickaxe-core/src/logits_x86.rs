//! float32 logits rows with AVX2 and FMA, written with intrinsics: the row max and the
//! exp-sums of entropy, least confidence, margin and energy from logits.
//!
//! The generic lane-array loop (`passes::exp_sums`) carries 16 lanes, two AVX2 registers per
//! accumulator; with the polynomial's constants that is more than AVX2's 16 registers, and
//! LLVM answered with spills, constant reloads and register-rotating copies (~55
//! instructions per 8 values). Here the accumulators are one register of 8 lanes each.
//!
//! The loop is bound by its instruction count (each vector instruction taken out of it was
//! worth 4-5% on Zen 4 at `PICKAXE_SIMD=avx2`), so it does as little per value as it can:
//!
//! - exp from an 8-entry table (`_mm256_permutevar8x32_ps`, the table in one register):
//!   2^(n/8) with n = round(8·y·log2 e), r = y − n·ln2/8, and exp(r) by a degree-3
//!   polynomial (`exp_table_f32` is its scalar model): two FMAs fewer than the generic
//!   degree-5 exp on |r| ≤ ln2/2, for two integer operations more (the table look-up and
//!   an add that puts 2^⌊n/8⌋ into the entry's exponent). Within 1.9 ULP above exp(-20), 5.3
//!   at the bottom of the range (the generic exp: 2.5 and 4.8 on the same test);
//! - first a fast pass that assumes the max is unique and the row NaN-free (nearly every row):
//!   the clamp at the bottom of exp's range is an integer min of y's bits, which also sends
//!   y = +0 (the max) to the bottom, e = 0, so the max stays out of Σ e with no compare and
//!   mask; a compare (equal or unordered) counts the max classes and NaNs; if it finds other
//!   than one, the row runs again through the exact pass, which keeps the max classes apart
//!   with a compare and a mask and NaN in the sums (`max(low, y)` keeps NaN);
//! - the fast pass is one `asm!` block a row (`fast_chunks`: blocks, flushes, two chunks a
//!   turn) that prefetches the next row as it goes (the 64 bytes a row further each turn):
//!   the next row's max pass then reads from L1 instead of waiting on L3.
//!
//! Only the AVX2 path calls these (`Isa::WIDE` is false there): with AVX-512's 32 wide
//! registers the generic loop compiles to what this does by hand. Each entry point checks the
//! CPU (a cached bit test) and returns `None` without AVX2 and FMA, so it is sound to call
//! from anywhere.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

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

/// The table exp's constants (see the module's notes and `exp_table_f32`).
/// 1.5 · 2^23: t = z + EXP8_MAGIC holds n = round(z) in its low mantissa bits (two's
/// complement below 2^22), so t's bits give n mod 8 (the table index) and ⌊n/8⌋ (the exponent).
pub(crate) const EXP8_MAGIC: f32 = 12_582_912.0;
/// 8·log2(e) in float32.
pub(crate) const EXP8_LOG2E: f32 = 11.541_56;
/// ln2/8: ln 2's float32 error times |n| ≤ 1016 is at most 2.4e-7 (as `exp_f32_nonpos`'s
/// ln 2 times |n| ≤ 127).
pub(crate) const EXP8_LN2: f32 = std::f32::consts::LN_2 / 8.0;
/// exp(r) ≈ 1 + r·(c0 + r·(c1 + r·c2)) on |r| ≤ ln2/16: a minimax fit of the relative
/// error (2.5e-8, 0.42 ULP, in exact arithmetic).
pub(crate) const EXP8_POLY: [f32; 3] = [1.0, 0.500_064_8, 0.166_642_96];
/// The bottom of the range: −127·ln 2 in float32, where n = −1016 and 2^(n/8) = 2^−127 comes
/// out as exactly +0 (the entry for n mod 8 = 0 plus the exponent field wraps to 0). Values
/// between this and −127·ln2 + ln2/8 get a subnormal e off by up to 1.2e-38: nothing in a sum
/// that holds the max's e = 1.
pub(crate) const EXP8_LOW: f32 = -88.029_69;
/// The table: the bits of 2^(j/8) (rounded to float32) minus j·2^20, the part of t's bits
/// that lands in the mantissa when t is shifted left by 20 to put ⌊n/8⌋ in the exponent.
pub(crate) const EXP8_TABLE: [u32; 8] = {
    let mut t = [0u32; 8];
    let mut j = 0;
    while j < 8 {
        t[j] = EXP8_POW2[j].to_bits() - ((j as u32) << 20);
        j += 1;
    }
    t
};
/// 2^(j/8), j = 0..8, rounded to float32.
const EXP8_POW2: [f32; 8] =
    [1.0, 1.090_507_7, 1.189_207_1, 1.296_839_6, std::f32::consts::SQRT_2, 1.542_210_8, 1.681_792_8, 1.834_008_1];

/// The scalar model of the AVX2 table exp for y in [EXP8_LOW, 0] (NaN stays NaN), the same
/// operations in the same order: the tests hold the vector loop to it bit for bit and it to
/// exp within a few ULP.
#[cfg(test)]
pub(crate) fn exp_table_f32(y: f32) -> f32 {
    let t = y.mul_add(EXP8_LOG2E, EXP8_MAGIC);
    let n = t - EXP8_MAGIC;
    let r = (-n).mul_add(EXP8_LN2, y);
    let p = EXP8_POLY[2].mul_add(r, EXP8_POLY[1]).mul_add(r, EXP8_POLY[0]);
    let bits = t.to_bits();
    let s = f32::from_bits(EXP8_TABLE[(bits & 7) as usize].wrapping_add(bits << 20));
    p.mul_add(r * s, s)
}

// Not inlined: with the `asm!` loop inside, inlining this into the AVX2 wrapper changed how
// fat LTO compiled the AVX-512 wrapper (same source; its float32 C = 1,000 entropy ran 17%
// slower, C = 10 40% faster); out of line, the AVX-512 path compiles as before.
#[cfg(target_arch = "x86_64")]
#[inline(never)]
#[target_feature(enable = "avx2,fma")]
fn sums<const SCALE: bool, const EY: bool>(x: &[f32], m: f32, inv_t: f32) -> [f64; 3] {
    let k = Consts::new(m, inv_t);
    match pass::<SCALE, EY, true>(&k, x) {
        // One class at the max and no NaN: the fast pass's sums are the row's.
        (s, 1) => s,
        // Ties for the max, NaN, or a scaled difference that underflowed to 0.
        _ => pass::<SCALE, EY, false>(&k, x).0,
    }
}

/// One pass over the row: ([Σ e over y < 0, #{y = 0}, Σ e·y], count). `FAST`: the max
/// classes left out of Σ e by the clamp, the count that of y = 0 or NaN (the sums hold only
/// when it is 1, and then #{y = 0} = 1); exact: the max classes counted apart, NaN kept.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2,fma")]
fn pass<const SCALE: bool, const EY: bool, const FAST: bool>(k: &Consts, x: &[f32]) -> ([f64; 3], i64) {
    let (chunks, tail) = x.as_chunks::<8>();
    let mut rest_wide = _mm256_setzero_pd();
    let mut ey = _mm256_setzero_pd();
    let mut top = _mm256_setzero_si256();
    if FAST {
        // The next row usually follows this one in memory: the loop prefetches it, so that
        // its max pass reads from L1 while this row's exp runs.
        fast_chunks::<SCALE, EY>(k, chunks, 4 * x.len(), &mut rest_wide, &mut ey, &mut top);
    } else {
        for block in chunks.chunks(BLOCK) {
            let mut acc = [_mm256_setzero_ps(); 2];
            // Four registers a turn, each operation done for all four before the next: the exp
            // chain is ~30 cycles deep, and in program order the scheduler then always holds
            // work that is ready.
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
                step::<4, SCALE, EY, FAST>(k, v, &mut acc, &mut top);
            }
            for c in rest {
                // SAFETY: `c` is 8 readable floats.
                let v = unsafe { _mm256_loadu_ps(c.as_ptr()) };
                step::<1, SCALE, EY, FAST>(k, [v], &mut acc, &mut top);
            }
            flush(acc[0], &mut rest_wide);
            if EY {
                flush(acc[1], &mut ey);
            }
        }
    }
    if !tail.is_empty() {
        // -inf in the lanes after the tail: e = 0, not a max. (Joining it to the last block
        // to save its flush measured more instructions, not fewer: callgrind, entropy C = 10,
        // 7.71M -> 8.17M; C = 1,000, 0.669M -> 0.680M.)
        let v = load_tail(tail, _mm256_set1_ps(f32::NEG_INFINITY));
        let mut acc = [_mm256_setzero_ps(); 2];
        step::<1, SCALE, EY, FAST>(k, [v], &mut acc, &mut top);
        flush(acc[0], &mut rest_wide);
        flush(acc[1], &mut ey);
    }
    let mut t = [0i32; 8];
    // SAFETY: `t` is 8 writable i32.
    unsafe { _mm256_storeu_si256(t.as_mut_ptr().cast(), top) };
    let count: i64 = t.iter().map(|&v| v as i64).sum();
    ([total(rest_wide), if FAST { 1.0 } else { count as f64 }, if EY { total(ey) } else { 0.0 }], count)
}

/// The fast pass's exp over one 8-value register (`step::<1, SCALE, EY, true>`, the same
/// operations in the same order, so the same bits), as assembly text: the compiler's
/// version of the loop spilled y to the stack, reloaded the constants each turn and copied
/// registers (~23 instructions per 8 values); this is 16-18. `$at` addresses the 8 values;
/// the rarely reused constants are memory operands (`FastMem`); e·yc goes to the block's
/// `{eyb}`.
macro_rules! fast_exp8 {
    ($at:literal, $scale:tt, $ey:tt) => {
        concat!(
            "vaddps {y}, {negm}, ymmword ptr [", $at, "]\n",
            fast_exp8!(@scale $scale),
            // y = 0 or NaN: counted.
            "vcmpps {c}, {y}, ymmword ptr [{k} + 160], 8\n",
            "vpsubd {top}, {top}, {c}\n",
            // The clamp, which also sends +0 (the max) to the bottom: e = 0.
            "vpminsd {y}, {y}, {low}\n",
            // t = yc·8·log2e + magic; n = t − magic; r = yc − n·ln2/8.
            "vmovaps {t}, {y}\n",
            "vfmadd213ps {t}, {log2e}, ymmword ptr [{k}]\n",
            "vsubps {r}, {t}, ymmword ptr [{k}]\n",
            "vfnmadd132ps {r}, {y}, ymmword ptr [{k} + 32]\n",
            // p = (c2·r + c1)·r + c0.
            "vmovaps {p}, ymmword ptr [{k} + 64]\n",
            "vfmadd213ps {p}, {r}, ymmword ptr [{k} + 96]\n",
            "vfmadd213ps {p}, {r}, ymmword ptr [{k} + 128]\n",
            // scale = table[t mod 8] + (t << 20) as integers.
            "vpermps {c}, {t}, {table}\n",
            "vpslld {t}, {t}, 20\n",
            "vpaddd {c}, {c}, {t}\n",
            // e = p·(r·scale) + scale.
            "vmulps {r}, {r}, {c}\n",
            "vfmadd213ps {p}, {r}, {c}\n",
            "vaddps {acc}, {acc}, {p}\n",
            fast_exp8!(@ey $ey),
        )
    };
    (@scale true) => { "vmulps {y}, {y}, {inv_t}\n" };
    (@scale false) => { "" };
    (@ey true) => { "vfmadd231ps {eyb}, {p}, {y}\n" };
    (@ey false) => { "" };
}

/// The constants `fast_exp8` reads from memory, 8 lanes each: magic, ln2/8, c2, c1, c0, 0.
#[cfg(target_arch = "x86_64")]
#[repr(C, align(32))]
struct FastMem([[f32; 8]; 6]);

#[cfg(target_arch = "x86_64")]
static FAST_MEM: FastMem =
    FastMem([[EXP8_MAGIC; 8], [EXP8_LN2; 8], [EXP8_POLY[2]; 8], [EXP8_POLY[1]; 8], [EXP8_POLY[0]; 8], [0.0; 8]]);

/// A block's float32 sum `{$sum}` added into the f64 lanes `{$wide}`, the low four lanes
/// then the high four, as `flush`: through the spill area at `{s} + $off` (`mem`: converting
/// from memory is one vector operation, from a register's high half three: extract,
/// shuffle, convert) or from the register (`reg`).
macro_rules! fast_flush {
    (mem, $sum:literal, $wide:literal, $off:literal) => {
        concat!(
            "vmovaps ymmword ptr [{s} + ",
            $off,
            "], {",
            $sum,
            "}\n",
            "vcvtps2pd {t}, xmmword ptr [{s} + ",
            $off,
            "]\n",
            "vcvtps2pd {c}, xmmword ptr [{s} + ",
            $off,
            " + 16]\n",
            "vaddpd {",
            $wide,
            "}, {",
            $wide,
            "}, {t}\n",
            "vaddpd {",
            $wide,
            "}, {",
            $wide,
            "}, {c}\n",
        )
    };
    (reg, $sum:literal, $wide:literal, $off:literal) => {
        concat!(
            "vcvtps2pd {t}, {",
            $sum,
            ":x}\n",
            "vextractf128 {c:x}, {",
            $sum,
            "}, 1\n",
            "vcvtps2pd {c}, {c:x}\n",
            "vaddpd {",
            $wide,
            "}, {",
            $wide,
            "}, {t}\n",
            "vaddpd {",
            $wide,
            "}, {",
            $wide,
            "}, {c}\n",
        )
    };
}

/// The flush of the block's e·y sum into `we` (`EY`; `fast_flush`).
macro_rules! fast_flush_ey {
    ($how:tt, true) => {
        fast_flush!($how, "eyb", "we", "32")
    };
    ($how:tt, false) => {
        "/* {we} */"
    };
}

/// The fast pass over a row's whole chunks of 8, in blocks of `BLOCK` chunks: each block's
/// float32 sums (acc += e, the max's e being 0; eyb += e·yc with `EY`) start at 0 and are
/// flushed into `rest` and `ey` (`flush`) at its end; `top` += 1 where y = 0 or is NaN.
/// The same operations in the same order as `step::<1, SCALE, EY, true>` chunk after chunk
/// and `flush` after each block (the test `fast_pass_is_the_intrinsics_steps` holds them
/// to the same bits), all in one `asm!` block: a block per call cost ~35 instructions
/// (call, flushes, constants) a block. Two chunks a turn, with one prefetch of the 64 bytes
/// `ahead` bytes further (the next row when rows are contiguous: its max pass then reads
/// from L1); a block of an odd number of chunks (only the last one can be) runs one
/// chunk alone first.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2,fma")]
fn fast_chunks<const SCALE: bool, const EY: bool>(
    k: &Consts, chunks: &[[f32; 8]], ahead: usize, rest: &mut __m256d, ey: &mut __m256d, top: &mut __m256i,
) {
    if chunks.is_empty() {
        return;
    }
    let negm = _mm256_sub_ps(_mm256_setzero_ps(), k.m);
    let low = _mm256_castps_si256(k.low);
    // Offsets from the end of the chunks: i = −32·len up to 0.
    let x = chunks.as_ptr_range().end;
    let i = -32 * chunks.len() as isize;
    let (mut wr, mut we, mut t) = (*rest, *ey, *top);
    // Where the flushes store the block sums to convert them (64 bytes, 32-aligned).
    let mut spill = Spill([0.0; 16]);
    const { assert!(BLOCK == 16) };
    macro_rules! run {
        ($scale:tt, $ey:tt) => {
            // SAFETY: the loads read x + i for i = −32·len, …, −32 (as the block's end xb
            // plus offsets from it), the chunks; FAST_MEM is 6·32 readable bytes,
            // 32-aligned; the only stores are to `spill`, 64 writable bytes, 32-aligned,
            // that nothing else reads; `prefetcht0` is a hint that reads nothing the program
            // sees and never faults, whatever the address; no stack, no flags the compiler
            // relies on.
            unsafe {
                std::arch::asm!(
                    // A block: j = min(i + 32·BLOCK, 0) its end (BLOCK = 16, asserted
                    // below), xb its end's address, i the offset from there.
                    "2:",
                    "vxorps {acc}, {acc}, {acc}",
                    "vxorps {eyb}, {eyb}, {eyb}",
                    "lea {j}, [{i} + 512]",
                    "xor {z:e}, {z:e}",
                    "test {j}, {j}",
                    "cmovg {j}, {z}",
                    "lea {xb}, [{x} + {j}]",
                    "lea {xp}, [{xb} + {ahead}]",
                    "sub {i}, {j}",
                    // −32·n has bit 5 set when n is odd.
                    "test {i}, 32",
                    "jz 3f",
                    fast_exp8!("{xb} + {i}", $scale, $ey),
                    "add {i}, 32",
                    "jz 4f",
                    "3:",
                    "prefetcht0 byte ptr [{xp} + {i}]",
                    fast_exp8!("{xb} + {i}", $scale, $ey),
                    fast_exp8!("{xb} + {i} + 32", $scale, $ey),
                    "add {i}, 64",
                    "jnz 3b",
                    "4:",
                    // The flushes through memory but for the row's last block (0.6 -> 0.3
                    // cycles a chunk): its sums go on to the row's score, where the store's
                    // latency showed (C = 256 3 % slower through memory).
                    "test {j}, {j}",
                    "jz 5f",
                    fast_flush!(mem, "acc", "wr", "0"),
                    fast_flush_ey!(mem, $ey),
                    "mov {i}, {j}",
                    "jmp 2b",
                    "5:",
                    fast_flush!(reg, "acc", "wr", "0"),
                    fast_flush_ey!(reg, $ey),
                    "/* {inv_t} */",
                    x = in(reg) x,
                    i = inout(reg) i => _,
                    j = out(reg) _,
                    z = out(reg) _,
                    xb = out(reg) _,
                    xp = out(reg) _,
                    ahead = in(reg) ahead,
                    k = in(reg) FAST_MEM.0.as_ptr(),
                    s = in(reg) spill.0.as_mut_ptr(),
                    negm = in(ymm_reg) negm,
                    inv_t = in(ymm_reg) k.inv_t,
                    low = in(ymm_reg) low,
                    log2e = in(ymm_reg) k.log2e,
                    table = in(ymm_reg) k.table,
                    wr = inout(ymm_reg) wr,
                    we = inout(ymm_reg) we,
                    top = inout(ymm_reg) t,
                    acc = out(ymm_reg) _,
                    eyb = out(ymm_reg) _,
                    y = out(ymm_reg) _,
                    c = out(ymm_reg) _,
                    t = out(ymm_reg) _,
                    r = out(ymm_reg) _,
                    p = out(ymm_reg) _,
                    options(nostack),
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
    *rest = wr;
    *ey = we;
    *top = t;
}

/// The fast pass's flush area: the block's two float32 sums, stored to be converted.
#[cfg(target_arch = "x86_64")]
#[repr(C, align(32))]
struct Spill([f32; 16]);

/// The loop's constants, held in registers across it.
#[cfg(target_arch = "x86_64")]
struct Consts {
    m: __m256,
    inv_t: __m256,
    low: __m256,
    log2e: __m256,
    magic: __m256,
    ln2: __m256,
    c: [__m256; 3],
    table: __m256,
}

#[cfg(target_arch = "x86_64")]
impl Consts {
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn new(m: f32, inv_t: f32) -> Consts {
        let c = EXP8_POLY;
        Consts {
            m: _mm256_set1_ps(m),
            inv_t: _mm256_set1_ps(inv_t),
            low: _mm256_set1_ps(EXP8_LOW),
            log2e: _mm256_set1_ps(EXP8_LOG2E),
            magic: _mm256_set1_ps(EXP8_MAGIC),
            ln2: _mm256_set1_ps(EXP8_LN2),
            c: [_mm256_set1_ps(c[0]), _mm256_set1_ps(c[1]), _mm256_set1_ps(c[2])],
            // SAFETY: EXP8_TABLE is 8 readable u32.
            table: unsafe { _mm256_loadu_ps(EXP8_TABLE.as_ptr().cast()) },
        }
    }
}

/// `N` registers of 8 values into the accumulators: acc[0] += e where x ≠ m, acc[1] += e·y,
/// `top` −= an all-ones mask where x = m (exact pass) or where y = 0 or is NaN (`FAST`), i.e.
/// += 1 there. Each operation is done for the `N` registers before the next (the loops
/// unroll).
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2,fma")]
fn step<const N: usize, const SCALE: bool, const EY: bool, const FAST: bool>(
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
    let yc = if FAST {
        for i in 0..N {
            // y = 0 or NaN (x = m, or a scaled difference that underflowed, or NaN).
            let odd = _mm256_cmp_ps::<_CMP_EQ_UQ>(y[i], _mm256_setzero_ps());
            *top = _mm256_sub_epi32(*top, _mm256_castps_si256(odd));
        }
        // As integers, the bits of y ≤ 0 order backwards and +0 (0) is above every
        // negative y: min(y, low) clamps y at low and sends +0 there too, so the max's e is
        // 0. (NaN goes there as well; the count above sends such a row to the exact pass.)
        let low = _mm256_castps_si256(k.low);
        each!(i => _mm256_castsi256_ps(_mm256_min_epi32(_mm256_castps_si256(y[i]), low)))
    } else {
        // max(low, y) returns y when y is NaN (the second operand), as `clamp_low`.
        each!(i => _mm256_max_ps(k.low, y[i]))
    };
    let t = each!(i => _mm256_fmadd_ps(yc[i], k.log2e, k.magic));
    let n = each!(i => _mm256_sub_ps(t[i], k.magic));
    let r = each!(i => _mm256_fnmadd_ps(n[i], k.ln2, yc[i]));
    let mut p = each!(i => _mm256_fmadd_ps(k.c[2], r[i], k.c[1]));
    p = each!(i => _mm256_fmadd_ps(p[i], r[i], k.c[0]));
    // 2^(n/8): the table's entry for n mod 8 (the low 3 bits of t) with ⌊n/8⌋ added to its
    // exponent (t's bits shifted left by 20; the 3 bits that land in the mantissa are
    // taken off in the table).
    let scale = each!(i => {
        let ti = _mm256_castps_si256(t[i]);
        let entry = _mm256_castps_si256(_mm256_permutevar8x32_ps(k.table, ti));
        _mm256_castsi256_ps(_mm256_add_epi32(entry, _mm256_slli_epi32::<20>(ti)))
    });
    let e = each!(i => _mm256_fmadd_ps(p[i], _mm256_mul_ps(r[i], scale[i]), scale[i]));
    for i in 0..N {
        if FAST {
            acc[0] = _mm256_add_ps(acc[0], e[i]);
        } else {
            // x = m where y = 0 (no zero register needed; with a scale, a difference that
            // underflows to y = 0 has e = 1 whichever sum takes it).
            let is_top = _mm256_cmp_ps::<_CMP_EQ_OQ>(v[i], k.m);
            acc[0] = _mm256_add_ps(acc[0], _mm256_andnot_ps(is_top, e[i]));
            *top = _mm256_sub_epi32(*top, _mm256_castps_si256(is_top));
        }
        if EY {
            acc[1] = _mm256_fmadd_ps(e[i], yc[i], acc[1]);
        }
    }
}

/// 8 float32 lanes added into 4 f64 lanes: the low four, then the high four.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2,fma")]
fn flush(acc: __m256, wide: &mut __m256d) {
    *wide = _mm256_add_pd(*wide, _mm256_cvtps_pd(_mm256_castps256_ps128(acc)));
    *wide = _mm256_add_pd(*wide, _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(acc)));
}

/// Σ of 4 f64 lanes, pairwise: (l0 + l2) + (l1 + l3).
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2,fma")]
fn total(wide: __m256d) -> f64 {
    let mut a = [0.0f64; 4];
    // SAFETY: `a` is 4 writable f64.
    unsafe { _mm256_storeu_pd(a.as_mut_ptr(), wide) };
    (a[0] + a[2]) + (a[1] + a[3])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `c` logits uniform in [−spread/2, spread/2), from a linear congruential `seed`.
    fn uniform(seed: &mut u64, c: usize, spread: f32) -> Vec<f32> {
        (0..c)
            .map(|_| {
                *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((*seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * spread
            })
            .collect()
    }

    /// The sums in f64 from the scalar model of the kernel's exp (the same e per element).
    fn reference(x: &[f32], m: f32, inv_t: f32, scale: bool) -> [f64; 3] {
        let mut s = [0.0f64; 3];
        for &v in x {
            let y = if scale { (v - m) * inv_t } else { v - m };
            let yc = if y < EXP8_LOW { EXP8_LOW } else { y };
            let e = exp_table_f32(yc);
            if v == m {
                s[1] += 1.0;
            } else {
                s[0] += e as f64;
            }
            s[2] += e as f64 * yc as f64;
        }
        s
    }

    /// ULPs between float32 `got` and the exact `want`.
    fn ulps(got: f32, want: f64) -> f64 {
        let w = want as f32;
        let ulp = (f32::from_bits(w.to_bits() + 1) - w) as f64;
        (got as f64 - want).abs() / ulp
    }

    #[test]
    fn table_exp_within_6_ulp() {
        let (mut worst, mut worst_above_20) = (0.0f64, 0.0f64);
        let mut y = 0.0f32;
        // Every 2^-14 or so down to the bottom of the range: every table entry and r.
        while y > EXP8_LOW {
            let want = (y as f64).exp();
            if want > f32::MIN_POSITIVE as f64 {
                let u = ulps(exp_table_f32(y), want);
                worst = worst.max(u);
                if y > -20.0 {
                    worst_above_20 = worst_above_20.max(u);
                }
            }
            y -= 6.1e-5;
        }
        // Measured: 1.84 above -20, 5.21 in all; the generic float32 exp
        // (`math::exp_f32_nonpos`) 2.45 and 4.72 on the same sweep.
        assert!(worst_above_20 <= 2.0, "{worst_above_20} ULP above -20");
        assert!(worst <= 6.0, "{worst} ULP");
        assert_eq!(exp_table_f32(0.0), 1.0);
        assert_eq!(exp_table_f32(EXP8_LOW), 0.0);
        assert!(exp_table_f32(f32::NAN).is_nan());
    }

    /// The fast pass's assembly (blocks, flushes, two chunks a turn, the odd chunk alone)
    /// against the intrinsics steps it transcribes, chunk after chunk and a flush a block,
    /// bit for bit.
    #[test]
    fn fast_pass_is_the_intrinsics_steps() {
        if !(std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")) {
            return;
        }
        let mut seed = 11u64;
        for c in [8usize, 16, 24, 120, 128, 136, 256, 264, 1000, 1003, 3001] {
            let x = uniform(&mut seed, c, 60.0);
            let m = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            for inv_t in [1.0f32, 0.37] {
                // SAFETY: the CPU has AVX2 and FMA (checked above); the loads read `x`'s
                // whole chunks of 8.
                let (asm, steps) = unsafe {
                    let k = Consts::new(m, inv_t);
                    let asm =
                        if inv_t == 1.0 { pass::<false, true, true>(&k, &x) } else { pass::<true, true, true>(&k, &x) };
                    let (chunks, tail) = x.as_chunks::<8>();
                    let (mut rest, mut ey) = (_mm256_setzero_pd(), _mm256_setzero_pd());
                    let mut top = _mm256_setzero_si256();
                    let run = |v: __m256, acc: &mut [__m256; 2], top: &mut __m256i| {
                        if inv_t == 1.0 {
                            step::<1, false, true, true>(&k, [v], acc, top);
                        } else {
                            step::<1, true, true, true>(&k, [v], acc, top);
                        }
                    };
                    for block in chunks.chunks(BLOCK) {
                        let mut acc = [_mm256_setzero_ps(); 2];
                        for ch in block {
                            run(_mm256_loadu_ps(ch.as_ptr()), &mut acc, &mut top);
                        }
                        flush(acc[0], &mut rest);
                        flush(acc[1], &mut ey);
                    }
                    if !tail.is_empty() {
                        let mut acc = [_mm256_setzero_ps(); 2];
                        run(load_tail(tail, _mm256_set1_ps(f32::NEG_INFINITY)), &mut acc, &mut top);
                        flush(acc[0], &mut rest);
                        flush(acc[1], &mut ey);
                    }
                    (asm, [total(rest), total(ey)])
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
        for c in [1usize, 2, 7, 8, 9, 15, 16, 17, 31, 32, 33, 100, 127, 128, 129, 1000, 3001] {
            let mut x = uniform(&mut seed, c, 40.0);
            if c > 3 {
                x[c / 2] = f32::NEG_INFINITY;
                x[1] = -200.0;
            }
            // A unique max (the fast pass), then a tie for it (the exact pass).
            for tie in [false, true] {
                let m = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                if tie {
                    let at = x.iter().position(|&v| v == m).unwrap();
                    x[(at + c / 2 + 1) % c] = m;
                }
                for (scale, inv_t) in [(false, 1.0f32), (true, 0.37)] {
                    let Some(got) = (if scale {
                        exp_sums_f32::<true, true>(&x, m, inv_t)
                    } else {
                        exp_sums_f32::<false, true>(&x, m, inv_t)
                    }) else {
                        return; // no AVX2 here
                    };
                    let want = reference(&x, m, inv_t, scale);
                    assert_eq!(got[1], want[1], "c = {c}, tie {tie}: tops");
                    for k in [0, 2] {
                        let tol = 1e-6 * want[k].abs() + 1e-30;
                        assert!(
                            (got[k] - want[k]).abs() <= tol,
                            "c = {c}, tie {tie}, sum {k}: {} vs {}",
                            got[k],
                            want[k]
                        );
                    }
                    let no_ey = exp_sums_f32::<false, false>(&x, m, 1.0).unwrap();
                    assert_eq!(no_ey[2], 0.0);
                    assert_eq!(no_ey[..2], exp_sums_f32::<false, true>(&x, m, 1.0).unwrap()[..2]);
                }
            }
            let m = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            assert_eq!(max_f32(&x), Some(m), "c = {c}");
            // NaN anywhere makes the sums NaN, whichever its sign.
            for nan in [f32::NAN, -f32::NAN] {
                let mut bad = x.clone();
                bad[c - 1] = nan;
                let m = bad.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let got = exp_sums_f32::<false, true>(&bad, m, 1.0).unwrap();
                assert!(got[0].is_nan() && got[2].is_nan(), "c = {c}");
                // The max skips it.
                assert_eq!(max_f32(&bad), Some(m), "c = {c}");
            }
        }
        // A scaled difference that underflows to -0: e = 1, in the rest.
        let x = [1.0f32, 1.0 - f32::EPSILON / 2.0, -3.0];
        let got = exp_sums_f32::<true, true>(&x, 1.0, f32::MIN_POSITIVE).unwrap();
        assert_eq!(got[1], 1.0);
        assert!((got[0] - 2.0).abs() < 1e-6, "{got:?}");
        // Only -inf but one: e = 0 for them, exactly.
        let x = [f32::NEG_INFINITY, 2.0, f32::NEG_INFINITY];
        assert_eq!(exp_sums_f32::<false, true>(&x, 2.0, 1.0).unwrap(), [0.0, 1.0, 0.0]);
    }
}

//! Element functions written branch-free so that a loop over a lane array `[T; LANES]`
//! compiles to SIMD instructions at whatever level the calling kernel was compiled for.
//!
//! `fast_exp` is Cephes' range reduction exp(x) = 2^n · exp(r), |r| ≤ ln2/2, with the
//! rounding of n done by the 1.5·2^k "magic number" so everything stays in vector
//! registers. `fast_ln` splits x = 2^e · m with m in [√½, √2); ln m is Cephes' logf
//! polynomial in m − 1 for float32 (no division) and the atanh series
//! 2(f + f³/3 + f⁵/5 + …), f = (m−1)/(m+1), for float64. `fast_exp` keeps NaN as NaN,
//! which the logits kernels rely on to notice invalid input without a separate pass; the
//! float32 `fast_ln` gives a finite value for NaN and 0, and its callers check the input
//! through the row's sum instead.

use std::fmt::Debug;
use std::ops::{Add, Div, Mul, Neg, Sub};

/// Width of the lane arrays the kernels accumulate in: one AVX-512 register of f32, two of
/// f64; LLVM splits it into whatever the target level has.
pub const LANES: usize = 16;

/// Whether the code being compiled may use fused multiply-add. The AVX2 path instantiates
/// the kernels with `Fma`, the AVX-512 path with `Fma512`, the portable path with `NoFma`
/// (there `mul_add` would be a libm call per element).
pub trait Isa: 'static {
    const FMA: bool;
    /// AVX-512's 32 wide registers: the generic lane loops compile well there, so the
    /// float32 loops written for AVX2 (`logits_x86`) are left to the AVX2 path.
    const WIDE: bool = false;
}
pub struct Fma;
/// `Fma` on the AVX-512 path.
pub struct Fma512;
pub struct NoFma;
impl Isa for Fma {
    const FMA: bool = true;
}
impl Isa for Fma512 {
    const FMA: bool = true;
    const WIDE: bool = true;
}
impl Isa for NoFma {
    const FMA: bool = false;
}

/// a · b + c, fused where the instruction set has it.
#[inline(always)]
pub fn madd<I: Isa, T: Real>(a: T, b: T, c: T) -> T {
    if I::FMA {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

pub trait Real:
    Copy
    + Send
    + Sync
    + Default
    + Debug
    + PartialOrd
    + 'static
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
{
    const ZERO: Self;
    const ONE: Self;
    const INF: Self;
    const NEG_INF: Self;
    const NAN: Self;
    /// The largest finite value.
    const MAX: Self;
    /// The smallest positive normal value.
    const MIN_POSITIVE: Self;
    /// Below this, exp flushes to 0; `fast_exp` is exact to a few ULP above it.
    const EXP_LOW: Self;
    /// Above this, exp is +inf.
    const EXP_HIGH: Self;
    /// `exp_clamped` of this is exactly 0 (its 2^n underflows to a zero scale), and of
    /// anything above it exp to a few ULP, down to the normal range's end.
    const EXP_ZERO: Self;
    const DTYPE: &'static str;

    fn from_f64(v: f64) -> Self;
    fn to_f64(self) -> f64;
    /// a · b + c with one rounding (std's `mul_add`).
    fn mul_add(self, a: Self, b: Self) -> Self;
    fn fast_exp<I: Isa>(self) -> Self;
    /// exp of x ≤ 0 (or NaN): `exp_clamped` of `clamp_low(x)`.
    #[inline(always)]
    fn fast_exp_nonpos<I: Isa>(self) -> Self {
        clamp_low(self).exp_clamped::<I>()
    }
    /// exp of x in [EXP_ZERO, 0] (or NaN, which stays NaN): 0 at EXP_ZERO, no range checks,
    /// for the kernels' exp-sums, which clamp once and reuse the clamped value.
    fn exp_clamped<I: Isa>(self) -> Self;
    /// `passes::exp_sums` without weights as (rest, top, ey), from a loop specialised for
    /// this type with FMA, or `None`: then the generic loop runs. float32 and float64 on
    /// x86-64 have one (`logits_x86`, `logits_x86_f64`).
    #[inline(always)]
    fn exp_sums_fma<const SCALE: bool, const EY: bool>(x: &[Self], m: Self, inv_t: Self) -> Option<[f64; 3]> {
        let _ = (x, m, inv_t);
        None
    }
    /// `passes::row_max` from a loop specialised for this type on the FMA paths, or `None`.
    #[inline(always)]
    fn max_fma(x: &[Self]) -> Option<Self> {
        let _ = x;
        None
    }
    /// ln x for positive normal x; other inputs give finite garbage or NaN, never a trap.
    fn fast_ln<I: Isa>(self) -> Self;
    /// NaN is the only value unequal to itself; written as a comparison (not a call) so
    /// that the kernels' loops stay branch-free and vectorise.
    #[inline(always)]
    #[allow(clippy::eq_op)]
    fn is_nan(self) -> bool {
        self != self
    }
    #[inline(always)]
    fn abs(self) -> Self {
        if self < Self::ZERO {
            -self
        } else {
            self
        }
    }
}

/// `y` clamped from below to `EXP_ZERO` (one max instruction), keeping NaN (a comparison
/// with NaN is false): then `exp_clamped` gives exactly 0 for anything below, -inf included.
#[inline(always)]
pub fn clamp_low<T: Real>(y: T) -> T {
    if y < T::EXP_ZERO {
        T::EXP_ZERO
    } else {
        y
    }
}

/// 1.5 · 2^23 + 127: t = z + EXP_F32_MAGIC holds round(z) + 127 in its low mantissa bits.
pub(crate) const EXP_F32_MAGIC: f32 = 12_583_039.0;
/// ln 2 split so that n·LN2_HI_F32 is exact for the |n| of float32's exponents.
const LN2_HI_F32: f32 = 0.693_359_4;
const LN2_LO_F32: f32 = -2.121_944_4e-4;

/// The float32 exp's rounding step: t = xc·log2(e) + EXP_F32_MAGIC (2^n's bits are t's,
/// shifted) and n = round(xc·log2(e)).
#[inline(always)]
fn exp_f32_round<I: Isa>(xc: f32) -> (f32, f32) {
    let t = madd::<I, _>(xc, std::f32::consts::LOG2_E, EXP_F32_MAGIC);
    (t, t - EXP_F32_MAGIC)
}

/// exp(r) ≈ 1 + r·(c0 + r·(c1 + … + r·c4)) on |r| ≤ ln2/2: a minimax fit of the relative
/// error (1.04e-7 in exact arithmetic; within 3 ULP in float32 down to exp(-20), 6 ULP
/// at the bottom of the range where the one-step reduction's ln 2 error grows with n).
/// Degree 5 is what float32 needs; `fast_exp`'s Cephes polynomial has degree 7.
pub(crate) const EXP_F32_NONPOS: [f32; 5] = [0.999_999_9, 0.499_991_48, 0.166_671_83, 0.041_898_176, 0.008_317_857];

/// exp(xc) for xc in [EXP_ZERO, 0] (or NaN): `exp_clamped` for float32. With FMA the
/// reduction r = xc − n·ln2 is one fused step (ln2's float32 error times |n| ≤ 127 is at
/// most 2.4e-7 relative), the polynomial is `EXP_F32_NONPOS` by Horner, and 2^n comes from
/// t's bits as in `exp_f32_in_range`: n = −127 at EXP_ZERO leaves a zero exponent field, a
/// scale of +0. (The AVX2 kernel, `logits_x86`, has its own exp from an 8-entry table.)
#[inline(always)]
fn exp_f32_nonpos<I: Isa>(xc: f32) -> f32 {
    let c = EXP_F32_NONPOS;
    let (t, n) = exp_f32_round::<I>(xc);
    let r = if I::FMA {
        madd::<I, _>(-n, std::f32::consts::LN_2, xc)
    } else {
        madd::<I, _>(-n, LN2_LO_F32, madd::<I, _>(-n, LN2_HI_F32, xc))
    };
    let mut p = c[4];
    p = madd::<I, _>(p, r, c[3]);
    p = madd::<I, _>(p, r, c[2]);
    p = madd::<I, _>(p, r, c[1]);
    p = madd::<I, _>(p, r, c[0]);
    // 2^n · (1 + p·r) as p·(r·2^n) + 2^n: r·2^n is exact and runs beside the polynomial,
    // so the chain after it is one fused step (and no constant 1 to keep in a register).
    let scale = f32::from_bits(t.to_bits() << 23);
    madd::<I, _>(p, r * scale, scale)
}

/// exp(xc) for xc already in [EXP_LOW, EXP_HIGH] (or NaN, which stays NaN).
#[inline(always)]
fn exp_f32_in_range<I: Isa>(xc: f32) -> f32 {
    let (t, n) = exp_f32_round::<I>(xc);
    let r = madd::<I, _>(-n, LN2_LO_F32, madd::<I, _>(-n, LN2_HI_F32, xc));
    let r2 = r * r;
    let mut p = 1.987_569_1e-4_f32;
    p = madd::<I, _>(p, r, 1.398_199_9e-3);
    p = madd::<I, _>(p, r, 8.333_452e-3);
    p = madd::<I, _>(p, r, 4.166_579_6e-2);
    p = madd::<I, _>(p, r, 1.666_666_5e-1);
    p = madd::<I, _>(p, r, 5.000_000_1e-1);
    let e = madd::<I, _>(p, r2, r) + 1.0;
    // Shifting t's bits left by 23 leaves exactly n + 127 in the exponent field: 2^n.
    let scale = f32::from_bits(t.to_bits() << 23);
    e * scale
}

impl Real for f32 {
    const ZERO: f32 = 0.0;
    const ONE: f32 = 1.0;
    const INF: f32 = f32::INFINITY;
    const NEG_INF: f32 = f32::NEG_INFINITY;
    const NAN: f32 = f32::NAN;
    const MAX: f32 = f32::MAX;
    const MIN_POSITIVE: f32 = f32::MIN_POSITIVE;
    const EXP_LOW: f32 = -87.0;
    const EXP_HIGH: f32 = 88.0;
    // -88 · log2 e rounds to n = -127.
    const EXP_ZERO: f32 = -88.0;
    const DTYPE: &'static str = "float32";

    #[inline(always)]
    fn from_f64(v: f64) -> f32 {
        v as f32
    }
    #[inline(always)]
    fn to_f64(self) -> f64 {
        self as f64
    }

    #[inline(always)]
    fn mul_add(self, a: f32, b: f32) -> f32 {
        f32::mul_add(self, a, b)
    }

    #[inline(always)]
    fn fast_exp<I: Isa>(self) -> f32 {
        let x = self;
        let xc = if x < Self::EXP_LOW { Self::EXP_LOW } else { x };
        let xc = if xc > Self::EXP_HIGH { Self::EXP_HIGH } else { xc };
        let v = exp_f32_in_range::<I>(xc);
        let v = if x < Self::EXP_LOW { 0.0 } else { v };
        if x > Self::EXP_HIGH {
            f32::INFINITY
        } else {
            v
        }
    }

    #[inline(always)]
    fn exp_clamped<I: Isa>(self) -> f32 {
        exp_f32_nonpos::<I>(self)
    }

    #[inline(always)]
    fn exp_sums_fma<const SCALE: bool, const EY: bool>(x: &[f32], m: f32, inv_t: f32) -> Option<[f64; 3]> {
        crate::logits_x86::exp_sums_f32::<SCALE, EY>(x, m, inv_t)
    }

    #[inline(always)]
    fn max_fma(x: &[f32]) -> Option<f32> {
        crate::logits_x86::max_f32(x)
    }

    #[inline(always)]
    fn fast_ln<I: Isa>(self) -> f32 {
        // The bits of √½: x = 2^e · m with m ∈ [√½, √2) in four integer operations (as
        // musl's logf): e is the exponent of x / √½, and m keeps x's mantissa bits under
        // the exponent that puts it in range.
        const SQRT_HALF_BITS: u32 = 0x3f35_04f3;
        let bits = self.to_bits();
        let tmp = bits.wrapping_sub(SQRT_HALF_BITS);
        let e = (tmp as i32) >> 23;
        let m = f32::from_bits(bits.wrapping_sub(tmp & 0xff80_0000));
        // Cephes' logf polynomial in t = m − 1 ∈ [√½ − 1, √2 − 1]: no division.
        let t = m - 1.0;
        let z = t * t;
        // Its degree-8 polynomial by Estrin's scheme (pairs, then pairs of pairs in z and
        // z²): 4 multiply-adds deep instead of Horner's 8. The register-transposed groups
        // take one ln per 8 rows at the end of a dependency chain (float32 C = 10: the ln
        // was 15 % of the time).
        let a0 = madd::<I, _>(-2.499_999_4e-1, t, 3.333_333_1e-1);
        let a1 = madd::<I, _>(-1.666_805_8e-1, t, 2.000_071_4e-1);
        let a2 = madd::<I, _>(-1.242_014_1e-1, t, 1.424_932_3e-1);
        let a3 = madd::<I, _>(-1.151_461e-1, t, 1.167_699_9e-1);
        let b0 = madd::<I, _>(a1, z, a0);
        let b1 = madd::<I, _>(a3, z, a2);
        let z2 = z * z;
        let p = madd::<I, _>(madd::<I, _>(7.037_683_6e-2_f32, z2, b1), z2, b0);
        // t·z beside the polynomial, not after it: one multiply less on the chain.
        let y = madd::<I, _>(-0.5, z, p * (t * z));
        let lnm = t + y;
        let ef = e as f32;
        // No NaN pass-through: every caller notices a NaN input another way (a row's sum),
        // and leaving it out saves two of the loop's instructions. 0 gives a finite value.
        if I::FMA {
            // One rounding of e·ln2 + ln m: the error of ln2 in float32 (1.9e-9) times
            // |e| ≤ 150 stays far below an ULP of the result.
            madd::<I, _>(ef, std::f32::consts::LN_2, lnm)
        } else {
            (ef * LN2_LO_F32 + lnm) + ef * LN2_HI_F32
        }
    }
}

/// exp(xc) for xc already in [EXP_LOW, EXP_HIGH] (or NaN, which stays NaN).
#[inline(always)]
fn exp_f64_in_range<I: Isa>(xc: f64) -> f64 {
    // 1.5 · 2^52 + 1023: t = z + MAGIC holds round(z) + 1023 in its low mantissa bits.
    const MAGIC: f64 = 6_755_399_441_056_767.0;
    const LOG2E: f64 = std::f64::consts::LOG2_E;
    const LN2_HI: f64 = 6.931_457_519_531_25e-1;
    const LN2_LO: f64 = 1.428_606_820_309_417_3e-6;
    let t = madd::<I, _>(xc, LOG2E, MAGIC);
    let n = t - MAGIC;
    let r = madd::<I, _>(-n, LN2_LO, madd::<I, _>(-n, LN2_HI, xc));
    // Taylor to r^13: the remainder r^14/14! < 5e-18 for |r| ≤ ln2/2.
    let mut p = 1.0 / 6_227_020_800.0; // 1/13!
    p = madd::<I, _>(p, r, 1.0 / 479_001_600.0);
    p = madd::<I, _>(p, r, 1.0 / 39_916_800.0);
    p = madd::<I, _>(p, r, 1.0 / 3_628_800.0);
    p = madd::<I, _>(p, r, 1.0 / 362_880.0);
    p = madd::<I, _>(p, r, 1.0 / 40_320.0);
    p = madd::<I, _>(p, r, 1.0 / 5_040.0);
    p = madd::<I, _>(p, r, 1.0 / 720.0);
    p = madd::<I, _>(p, r, 1.0 / 120.0);
    p = madd::<I, _>(p, r, 1.0 / 24.0);
    p = madd::<I, _>(p, r, 1.0 / 6.0);
    p = madd::<I, _>(p, r, 0.5);
    let e = madd::<I, _>(p, r * r, r) + 1.0;
    // Shifting t's bits left by 52 leaves exactly n + 1023 in the exponent field: 2^n.
    let scale = f64::from_bits(t.to_bits() << 52);
    e * scale
}

impl Real for f64 {
    const ZERO: f64 = 0.0;
    const ONE: f64 = 1.0;
    const INF: f64 = f64::INFINITY;
    const NEG_INF: f64 = f64::NEG_INFINITY;
    const NAN: f64 = f64::NAN;
    const MAX: f64 = f64::MAX;
    const MIN_POSITIVE: f64 = f64::MIN_POSITIVE;
    const EXP_LOW: f64 = -708.0;
    const EXP_HIGH: f64 = 709.0;
    // -709 · log2 e rounds to n = -1023.
    const EXP_ZERO: f64 = -709.0;
    const DTYPE: &'static str = "float64";

    #[inline(always)]
    fn from_f64(v: f64) -> f64 {
        v
    }
    #[inline(always)]
    fn to_f64(self) -> f64 {
        self
    }

    #[inline(always)]
    fn mul_add(self, a: f64, b: f64) -> f64 {
        f64::mul_add(self, a, b)
    }

    #[inline(always)]
    fn fast_exp<I: Isa>(self) -> f64 {
        let x = self;
        let xc = if x < Self::EXP_LOW { Self::EXP_LOW } else { x };
        let xc = if xc > Self::EXP_HIGH { Self::EXP_HIGH } else { xc };
        let v = exp_f64_in_range::<I>(xc);
        let v = if x < Self::EXP_LOW { 0.0 } else { v };
        if x > Self::EXP_HIGH {
            f64::INFINITY
        } else {
            v
        }
    }

    #[inline(always)]
    fn exp_clamped<I: Isa>(self) -> f64 {
        exp_f64_in_range::<I>(self)
    }

    #[inline(always)]
    fn exp_sums_fma<const SCALE: bool, const EY: bool>(x: &[f64], m: f64, inv_t: f64) -> Option<[f64; 3]> {
        crate::logits_x86_f64::exp_sums_f64::<SCALE, EY>(x, m, inv_t)
    }

    #[inline(always)]
    fn max_fma(x: &[f64]) -> Option<f64> {
        crate::logits_x86_f64::max_f64(x)
    }

    #[inline(always)]
    fn fast_ln<I: Isa>(self) -> f64 {
        const SQRT2_MANT: u64 = 0x6_a09e_667f_3bcd;
        const LN2_HI: f64 = 6.931_457_519_531_25e-1;
        const LN2_LO: f64 = 1.428_606_820_309_417_3e-6;
        let bits = self.to_bits();
        let mant = bits & 0x000f_ffff_ffff_ffff;
        let big = (mant > SQRT2_MANT) as i64;
        let e = ((bits >> 52) & 0x7ff) as i64 - 1023 + big;
        let m = f64::from_bits((mant | 0x3ff0_0000_0000_0000) - ((big as u64) << 52));
        let f = (m - 1.0) / (m + 1.0);
        let s = f * f;
        // atanh series to f^21: the remainder is below 1e-18 relative for |f| ≤ 0.1716.
        // Its polynomial in s by Estrin's scheme, 4 multiply-adds deep instead of Horner's
        // 9 (as the float32 `fast_ln`: one ln per group ends the groups' chain).
        let s2 = s * s;
        let s4 = s2 * s2;
        let a0 = madd::<I, _>(1.0 / 5.0, s, 1.0 / 3.0);
        let a1 = madd::<I, _>(1.0 / 9.0, s, 1.0 / 7.0);
        let a2 = madd::<I, _>(1.0 / 13.0, s, 1.0 / 11.0);
        let a3 = madd::<I, _>(1.0 / 17.0, s, 1.0 / 15.0);
        let a4 = madd::<I, _>(1.0 / 21.0, s, 1.0 / 19.0);
        let b0 = madd::<I, _>(a1, s2, a0);
        let b1 = madd::<I, _>(a3, s2, a2);
        let p = madd::<I, _>(a4, s4 * s4, madd::<I, _>(b1, s4, b0));
        let lnm = madd::<I, _>(2.0 * f * s, p, 2.0 * f);
        let ef = e as f64;
        let v = madd::<I, _>(ef, LN2_HI, madd::<I, _>(ef, LN2_LO, lnm));
        if self.is_nan() {
            self
        } else {
            v
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Distance in units in the last place, measured in f64 against the correctly rounded
    /// f64 `std` result rounded to the type under test.
    fn ulp32(got: f32, want: f64) -> f64 {
        let w = want as f32;
        if got == w {
            return 0.0;
        }
        let ulp = (f32::from_bits(w.abs().to_bits() + 1) - w.abs()) as f64;
        (got as f64 - want).abs() / ulp
    }

    fn ulp64(got: f64, want: f64) -> f64 {
        if got == want {
            return 0.0;
        }
        let ulp = f64::from_bits(want.abs().to_bits() + 1) - want.abs();
        (got - want).abs() / ulp
    }

    fn sweep(lo: f64, hi: f64, n: usize) -> impl Iterator<Item = f64> {
        (0..=n).map(move |i| lo + (hi - lo) * i as f64 / n as f64)
    }

    #[test]
    fn exp_f32_within_2_ulp() {
        exp_f32_within_2_ulp_with::<NoFma>();
        exp_f32_within_2_ulp_with::<Fma>();
    }

    fn exp_f32_within_2_ulp_with<I: Isa>() {
        let mut worst = 0.0f64;
        for x in sweep(-87.0, 88.0, 2_000_000) {
            let x = x as f32;
            worst = worst.max(ulp32(x.fast_exp::<I>(), (x as f64).exp()));
        }
        assert!(worst <= 2.0, "worst f32 exp error {worst} ULP");
    }

    #[test]
    fn exp_clamped_f32_within_6_ulp() {
        for (fma, bound) in [(false, 6.0), (true, 6.0)] {
            let mut worst = 0.0f64;
            let mut worst_near = 0.0f64;
            // Down to where exp is still a normal float32.
            for x in sweep(-87.3, 0.0, 2_000_000) {
                let x = x as f32;
                let got = if fma { x.exp_clamped::<Fma>() } else { x.exp_clamped::<NoFma>() };
                let u = ulp32(got, (x as f64).exp());
                worst = worst.max(u);
                if x > -20.0 {
                    worst_near = worst_near.max(u);
                }
            }
            assert!(worst <= bound, "fma {fma}: worst f32 exp_clamped error {worst} ULP");
            assert!(worst_near <= 3.0, "fma {fma}: worst f32 exp_clamped error above -20: {worst_near} ULP");
        }
    }

    #[test]
    fn exp_clamped_f64_within_2_ulp() {
        let mut worst = 0.0f64;
        for x in sweep(-708.0, 0.0, 2_000_000) {
            worst = worst.max(ulp64(x.exp_clamped::<Fma>(), x.exp()).max(ulp64(x.exp_clamped::<NoFma>(), x.exp())));
        }
        assert!(worst <= 2.0, "worst f64 exp_clamped error {worst} ULP");
    }

    #[test]
    fn exp_nonpos_ends() {
        fn ends<T: Real, I: Isa>() {
            assert_eq!(T::ZERO.fast_exp_nonpos::<I>(), T::ONE);
            assert_eq!(T::EXP_ZERO.exp_clamped::<I>().to_f64().to_bits(), 0);
            for x in [T::NEG_INF, T::EXP_ZERO, T::from_f64(-1e30), T::EXP_ZERO - T::ONE] {
                assert_eq!(x.fast_exp_nonpos::<I>().to_f64().to_bits(), 0, "{x:?}");
            }
            assert!(T::NAN.fast_exp_nonpos::<I>().is_nan());
        }
        ends::<f32, Fma>();
        ends::<f32, NoFma>();
        ends::<f64, Fma>();
        ends::<f64, NoFma>();
    }

    #[test]
    fn exp_f64_within_2_ulp() {
        exp_f64_within_2_ulp_with::<NoFma>();
        exp_f64_within_2_ulp_with::<Fma>();
    }

    fn exp_f64_within_2_ulp_with<I: Isa>() {
        let mut worst = 0.0f64;
        for x in sweep(-708.0, 709.0, 2_000_000) {
            // std's exp is itself within 1 ULP; measure against it.
            worst = worst.max(ulp64(x.fast_exp::<I>(), x.exp()));
        }
        assert!(worst <= 2.0, "worst f64 exp error {worst} ULP");
    }

    #[test]
    fn ln_f32_within_2_ulp() {
        ln_f32_within_2_ulp_with::<NoFma>();
        ln_f32_within_2_ulp_with::<Fma>();
    }

    fn ln_f32_within_2_ulp_with<I: Isa>() {
        let mut worst = 0.0f64;
        let mut x = f32::MIN_POSITIVE;
        while x < 1e30 {
            for k in 0..64 {
                let v = x * (1.0 + k as f32 / 64.0);
                worst = worst.max(ulp32(v.fast_ln::<I>(), (v as f64).ln()));
            }
            x *= 1.37;
        }
        for v in sweep(0.5, 2.0, 1_000_000) {
            let v = v as f32;
            worst = worst.max(ulp32(v.fast_ln::<I>(), (v as f64).ln()));
        }
        assert!(worst <= 2.0, "worst f32 ln error {worst} ULP");
    }

    #[test]
    fn ln_f64_within_2_ulp() {
        ln_f64_within_2_ulp_with::<NoFma>();
        ln_f64_within_2_ulp_with::<Fma>();
    }

    fn ln_f64_within_2_ulp_with<I: Isa>() {
        let mut worst = 0.0f64;
        let mut x = f64::MIN_POSITIVE;
        while x < 1e300 {
            for k in 0..64 {
                let v = x * (1.0 + k as f64 / 64.0);
                worst = worst.max(ulp64(v.fast_ln::<I>(), v.ln()));
            }
            x *= 1.37;
        }
        for v in sweep(0.5, 2.0, 1_000_000) {
            worst = worst.max(ulp64(v.fast_ln::<I>(), v.ln()));
        }
        assert!(worst <= 2.0, "worst f64 ln error {worst} ULP");
    }

    #[test]
    fn special_values() {
        assert_eq!(0.0f32.fast_exp::<NoFma>(), 1.0);
        assert_eq!(0.0f64.fast_exp::<NoFma>(), 1.0);
        assert_eq!(f32::NEG_INFINITY.fast_exp::<NoFma>(), 0.0);
        assert_eq!(f64::NEG_INFINITY.fast_exp::<NoFma>(), 0.0);
        assert!(f32::NAN.fast_exp::<Fma>().is_nan());
        assert!(f64::NAN.fast_exp::<Fma>().is_nan());
        assert_eq!(f32::INFINITY.fast_exp::<NoFma>(), f32::INFINITY);
        assert_eq!(1.0f32.fast_ln::<NoFma>(), 0.0);
        assert_eq!(1.0f64.fast_ln::<NoFma>(), 0.0);
        assert!(f64::NAN.fast_ln::<Fma>().is_nan());
        // prob_stats clamps p ≤ 0 to 0 and relies on 0 · ln 0 being exactly 0.
        for v in [0.0f32, -0.0] {
            assert!(v.fast_ln::<Fma>().is_finite() && v.fast_ln::<NoFma>().is_finite());
            assert_eq!(v * v.fast_ln::<Fma>(), 0.0);
        }
    }
}

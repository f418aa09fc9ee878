//! Run-time choice of the instruction set.
//!
//! The kernels are written once, generically, as loops over lane arrays; each entry point is
//! compiled three times, inside `#[target_feature]` wrappers for AVX-512 and AVX2 and once
//! for the baseline target, and `level()` picks which runs. The level is detected once from
//! the CPU, can be lowered (never raised above what the CPU has) by `set_level` or by the
//! `PICKAXE_SIMD` environment variable, so every path can be tested on one machine.

use std::sync::atomic::{AtomicU8, Ordering};

use crate::error::Error;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum SimdLevel {
    Portable = 1,
    Avx2 = 2,
    Avx512 = 3,
}

impl SimdLevel {
    pub fn name(self) -> &'static str {
        match self {
            SimdLevel::Portable => "portable",
            SimdLevel::Avx2 => "avx2",
            SimdLevel::Avx512 => "avx512",
        }
    }

    pub fn parse(s: &str) -> Option<SimdLevel> {
        match s.trim().to_ascii_lowercase().as_str() {
            "portable" => Some(SimdLevel::Portable),
            "avx2" => Some(SimdLevel::Avx2),
            "avx512" => Some(SimdLevel::Avx512),
            _ => None,
        }
    }
}

impl std::str::FromStr for SimdLevel {
    type Err = Error;

    /// A level by name, as `parse` reads it (`set_simd_level` in Python).
    fn from_str(name: &str) -> Result<SimdLevel, Error> {
        SimdLevel::parse(name).ok_or_else(|| {
            Error::argument("level", format!("SIMD level must be portable, avx2 or avx512; got {name:?}"))
        })
    }
}

/// The best level this CPU supports.
pub fn detected() -> SimdLevel {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512dq")
            && std::arch::is_x86_feature_detected!("avx512vl")
            && std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
        {
            return SimdLevel::Avx512;
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            return SimdLevel::Avx2;
        }
    }
    SimdLevel::Portable
}

// 0 = not decided yet.
static LEVEL: AtomicU8 = AtomicU8::new(0);

/// The level the kernels run at.
pub fn level() -> SimdLevel {
    match LEVEL.load(Ordering::Relaxed) {
        1 => SimdLevel::Portable,
        2 => SimdLevel::Avx2,
        3 => SimdLevel::Avx512,
        _ => {
            let l = detected();
            LEVEL.store(l as u8, Ordering::Relaxed);
            l
        }
    }
}

/// Force a level; refuses one the CPU does not have, since running it would fault.
pub fn set_level(want: SimdLevel) -> Result<(), Error> {
    let have = detected();
    if want > have {
        return Err(Error::argument(
            "simd",
            format!("SIMD level {} is not supported by this CPU (best: {})", want.name(), have.name()),
        ));
    }
    LEVEL.store(want as u8, Ordering::Relaxed);
    Ok(())
}

/// Apply `PICKAXE_SIMD` if set: `portable`, `avx2` or `avx512`.
pub fn configure_from_env() -> Result<(), Error> {
    match std::env::var("PICKAXE_SIMD") {
        Ok(v) if !v.trim().is_empty() => {
            let want = SimdLevel::parse(&v).ok_or_else(|| {
                Error::argument("PICKAXE_SIMD", format!("PICKAXE_SIMD={v:?} is not one of portable, avx2, avx512"))
            })?;
            set_level(want).map_err(|e| Error::argument("PICKAXE_SIMD", format!("PICKAXE_SIMD={v:?}: {e}")))
        }
        _ => Ok(()),
    }
}

/// Defines `$name` that calls the `#[inline(always)]` generic `$body_fn` compiled for the
/// current level; `$body_fn` takes one more type parameter than `$name`, the `Isa`. The body and everything it calls in hot loops must be
/// `#[inline(always)]` so that it is compiled with the wrapper's target features.
macro_rules! multiversion {
    (
        $(#[$meta:meta])*
        $vis:vis fn $name:ident<$($g:ident : $bound:path),*>($($arg:ident : $ty:ty),* $(,)?) -> $ret:ty
        => $body_fn:ident
    ) => {
        $(#[$meta])*
        $vis fn $name<$($g: $bound),*>($($arg: $ty),*) -> $ret {
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,bmi1,bmi2,lzcnt,popcnt")]
            unsafe fn avx512<$($g: $bound),*>($($arg: $ty),*) -> $ret {
                $body_fn::<$($g,)* $crate::math::Fma512>($($arg),*)
            }
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma,bmi1,bmi2,lzcnt,popcnt")]
            unsafe fn avx2<$($g: $bound),*>($($arg: $ty),*) -> $ret {
                $body_fn::<$($g,)* $crate::math::Fma>($($arg),*)
            }
            match $crate::simd::level() {
                // SAFETY: `level()` never reports a level the CPU lacks (see `set_level`).
                #[cfg(target_arch = "x86_64")]
                $crate::simd::SimdLevel::Avx512 => unsafe { avx512($($arg),*) },
                #[cfg(target_arch = "x86_64")]
                $crate::simd::SimdLevel::Avx2 => unsafe { avx2($($arg),*) },
                _ => $body_fn::<$($g,)* $crate::math::NoFma>($($arg),*),
            }
        }
    };
}
pub(crate) use multiversion;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detection_matches_cpuinfo() {
        // On Linux the kernel's view of the CPU flags must agree with the dispatcher's.
        let Ok(info) = std::fs::read_to_string("/proc/cpuinfo") else {
            return;
        };
        let flags: Vec<&str> =
            info.lines().find(|l| l.starts_with("flags")).map(|l| l.split_whitespace().collect()).unwrap_or_default();
        let has = |f: &str| flags.contains(&f);
        let want = if ["avx512f", "avx512bw", "avx512dq", "avx512vl", "avx2", "fma"].iter().all(|f| has(f)) {
            SimdLevel::Avx512
        } else if has("avx2") && has("fma") {
            SimdLevel::Avx2
        } else {
            SimdLevel::Portable
        };
        assert_eq!(detected(), want);
    }

    #[test]
    fn cannot_raise_above_cpu() {
        assert!(set_level(SimdLevel::Portable).is_ok());
        if detected() < SimdLevel::Avx512 {
            assert!(set_level(SimdLevel::Avx512).is_err());
        }
        set_level(detected()).unwrap();
        assert_eq!(SimdLevel::parse("AVX2"), Some(SimdLevel::Avx2));
        assert_eq!(SimdLevel::parse("sse"), None);
    }
}

/// Asks the CPU to bring `bytes` bytes from `p` into L1, a 64-byte line at a time. A hint:
/// it reads nothing the program sees and never faults, whatever the address (the kernels
/// prefetch past the end of their input on the last row). Does nothing off x86-64.
#[inline(always)]
pub(crate) fn prefetch_lines(p: *const u8, bytes: usize) {
    #[cfg(target_arch = "x86_64")]
    for off in (0..bytes).step_by(64) {
        // SAFETY: prefetcht0 is a hint (see above); the address is only computed.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.wrapping_add(off) as *const i8)
        };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (p, bytes);
}

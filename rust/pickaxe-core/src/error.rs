//! One error type for every kernel. The bindings map it to Python exceptions in one place
//! (`pickaxe-py/src/error.rs`); messages are written here so Rust callers get them too.

use std::fmt;

/// The prediction fields of api.md, named as the seed document names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    Confidence,
    Confidences,
    Logits,
    QueryByCommittee,
    McDropout,
    Embeddings,
    /// The labeled set's embeddings (N, D) that exact kNN searches: validated exactly like
    /// `Embeddings`, named apart so an error says which of the two arrays is bad.
    Reference,
}

impl std::str::FromStr for Field {
    type Err = Error;

    /// A field from its name in api.md (the bindings pass the Python keyword).
    fn from_str(name: &str) -> Result<Field, Error> {
        Ok(match name {
            "confidence" => Field::Confidence,
            "confidences" => Field::Confidences,
            "logits" => Field::Logits,
            "query_by_committee" => Field::QueryByCommittee,
            "mc_dropout" => Field::McDropout,
            "embeddings" => Field::Embeddings,
            "reference" => Field::Reference,
            other => return Err(Error::argument("field", format!("unknown field {other:?}"))),
        })
    }
}

impl Field {
    pub fn name(self) -> &'static str {
        match self {
            Field::Confidence => "confidence",
            Field::Confidences => "confidences",
            Field::Logits => "logits",
            Field::QueryByCommittee => "query_by_committee",
            Field::McDropout => "mc_dropout",
            Field::Embeddings => "embeddings",
            Field::Reference => "reference",
        }
    }

    /// `query_by_committee` and `mc_dropout`: a member (or pass) axis before the classes.
    pub fn is_stacked(self) -> bool {
        matches!(self, Field::QueryByCommittee | Field::McDropout)
    }

    /// The number of axes this field's array must have for a `task` (detection, segmentation):
    /// `plain` for a single prediction, `stacked` for a committee or dropout stack, each with
    /// its shape as the message writes it. Returns that number.
    pub(crate) fn check_ndim(
        self, shape: &[usize], plain: (usize, &str), stacked: (usize, &str), task: &str,
    ) -> Result<usize, Error> {
        let (ndim, words) = if self.is_stacked() { stacked } else { plain };
        if shape.len() != ndim {
            return Err(Error::Shape(format!(
                "{} must be {ndim}-D {words} for {task}; got shape {shape:?}",
                self.name()
            )));
        }
        Ok(ndim)
    }

    /// What one entry of the middle axis of a stacked field is called.
    pub fn member_word(self) -> &'static str {
        match self {
            Field::McDropout => "pass",
            _ => "member",
        }
    }

    /// What one entry of the last axis is called in messages.
    pub fn unit_word(self) -> &'static str {
        match self {
            Field::Embeddings | Field::Reference => "dimension",
            _ => "class",
        }
    }
}

/// What is wrong with one row. `index` is the position along the last axis.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Fault {
    Nan {
        index: usize,
    },
    PosInf {
        index: usize,
    },
    /// -inf where only logits may hold it.
    NegInf {
        index: usize,
    },
    /// A logits row (or member) with no finite value.
    AllNegInf,
    Negative {
        index: usize,
        value: f64,
    },
    AboveOne {
        index: usize,
        value: f64,
    },
    SumOff {
        sum: f64,
    },
}

/// A fault located in a row (and, for stacked fields, a member or pass).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RowFault {
    pub member: Option<usize>,
    pub fault: Fault,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Error {
    /// Invalid data in a row under `NanPolicy::Raise` (Python: ValueError).
    InvalidRow { field: Field, row: usize, member: Option<usize>, fault: Fault },
    /// Invalid data at a pixel of a segmentation field under `NanPolicy::Raise`.
    InvalidPixel {
        field: Field,
        image: usize,
        /// Pixel row and column.
        y: usize,
        x: usize,
        member: Option<usize>,
        fault: Fault,
    },
    /// Invalid data in a box of a detection field under `NanPolicy::Raise`: `row` counts
    /// in the stacked boxes, `index` within its image.
    InvalidBox { field: Field, row: usize, image: usize, index: usize, member: Option<usize>, fault: Fault },
    /// Invalid data in one box of the localisation inputs (`localization.rs`): `field` names the
    /// array (boxes, logits, member_boxes, ...), `row` counts in it, `index` within its
    /// image (and member), `fault` is the message.
    InvalidDetectionBox {
        field: &'static str,
        row: usize,
        image: usize,
        member: Option<usize>,
        index: usize,
        fault: String,
    },
    /// An array of the wrong shape (Python: ValueError).
    Shape(String),
    /// An argument out of its domain (Python: ValueError).
    Argument { name: &'static str, message: String },
    /// The caller cancelled the work (`Cancel`) before it finished; the result is
    /// incomplete and was dropped (Python: KeyboardInterrupt).
    Interrupted,
    /// An output or working array the size of the input could not be allocated (Python:
    /// MemoryError). Rust's own allocation failure would abort the process.
    OutOfMemory { bytes: usize },
}

/// `n` copies of `value`, or `Error::OutOfMemory` when the allocation fails (under an
/// address-space cap, `ulimit -v`): used for every allocation whose size follows the
/// input, so that running out of memory is an exception, never an abort.
pub(crate) fn filled<T: Clone>(n: usize, value: T) -> Result<Vec<T>, Error> {
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| Error::OutOfMemory { bytes: n.saturating_mul(std::mem::size_of::<T>()) })?;
    v.resize(n, value);
    Ok(v)
}

/// `n` values from the allocator's zeroed memory (calloc: pages untouched until
/// written), or `Error::OutOfMemory` (see `filled`).
///
/// # Safety
/// The all-zero bit pattern must be a valid `T` (true of the integers and floats).
unsafe fn calloc_vec<T>(n: usize) -> Result<Vec<T>, Error> {
    let oom = || Error::OutOfMemory { bytes: n.saturating_mul(std::mem::size_of::<T>()) };
    let layout = std::alloc::Layout::array::<T>(n).map_err(|_| oom())?;
    if layout.size() == 0 {
        return Ok(Vec::new());
    }
    // SAFETY: a non-zero-sized layout for [T; n] from the global allocator, as Vec needs;
    // the caller vouches that zero bits are a valid T.
    let p = unsafe { std::alloc::alloc_zeroed(layout) } as *mut T;
    if p.is_null() {
        return Err(oom());
    }
    Ok(unsafe { Vec::from_raw_parts(p, n, n) })
}

/// `n` zero ids.
pub(crate) fn zeroed_ids(n: usize) -> Result<Vec<i64>, Error> {
    // SAFETY: zero bits are the i64 0
    unsafe { calloc_vec(n) }
}

/// `n` zeros of the kernels' float type.
pub(crate) fn zeroed_real<T: crate::math::Real>(n: usize) -> Result<Vec<T>, Error> {
    // Real is implemented for f32 and f64 alone, whose zero is all zero bits
    assert!(std::mem::size_of::<T>() == 4 || std::mem::size_of::<T>() == 8);
    // SAFETY: T is f32 or f64
    unsafe { calloc_vec(n) }
}

/// An empty vector with room for `n` items, or `Error::OutOfMemory` (see `filled`).
pub(crate) fn with_room<T>(n: usize) -> Result<Vec<T>, Error> {
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| Error::OutOfMemory { bytes: n.saturating_mul(std::mem::size_of::<T>()) })?;
    Ok(v)
}

impl Error {
    pub(crate) fn argument(name: &'static str, message: impl Into<String>) -> Self {
        Error::Argument { name, message: message.into() }
    }
}

fn fault_text(f: &Fault, field: Field) -> String {
    let unit = field.unit_word();
    match *f {
        Fault::Nan { index } => format!("NaN at {unit} {index}"),
        Fault::PosInf { index } => format!("+inf at {unit} {index}"),
        Fault::NegInf { index } => {
            format!("-inf at {unit} {index} (-inf is allowed only in logits)")
        }
        Fault::AllNegInf => "every logit is -inf".to_string(),
        Fault::Negative { index, value } => {
            format!("probability {value} at {unit} {index} is negative")
        }
        Fault::AboveOne { index, value } => {
            format!("probability {value} at {unit} {index} is above 1")
        }
        Fault::SumOff { sum } => format!(
            "probabilities sum to {sum}, not 1 (tolerance 1e-3): pass logits= for \
             unnormalised scores or normalise each row"
        ),
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidRow { field, row, member, fault } => {
                write!(f, "{} row {}", field.name(), row)?;
                if let Some(m) = member {
                    write!(f, ", {} {}", field.member_word(), m)?;
                }
                write!(f, ": {}", fault_text(fault, *field))
            }
            Error::InvalidPixel { field, image, y, x, member, fault } => {
                write!(f, "{} image {}, pixel (row {}, column {})", field.name(), image, y, x)?;
                if let Some(m) = member {
                    write!(f, ", {} {}", field.member_word(), m)?;
                }
                write!(f, ": {}", fault_text(fault, *field))
            }
            Error::InvalidBox { field, row, image, index, member, fault } => {
                write!(f, "{} box {} (image {}, box {} of the image)", field.name(), row, image, index)?;
                if let Some(m) = member {
                    write!(f, ", {} {}", field.member_word(), m)?;
                }
                write!(f, ": {}", fault_text(fault, *field))
            }
            Error::InvalidDetectionBox { field, row, image, member, index, fault } => match member {
                Some(m) => {
                    write!(f, "{field}[{row}] (image {image}, member {m}, box {index} of the member's): {fault}")
                }
                None => write!(f, "{field}[{row}] (image {image}, box {index} of the image): {fault}"),
            },
            Error::Shape(msg) => f.write_str(msg),
            Error::Argument { message, .. } => f.write_str(message),
            Error::Interrupted => f.write_str("interrupted before the work finished"),
            Error::OutOfMemory { bytes } => write!(f, "could not allocate {bytes} bytes for the result"),
        }
    }
}

impl std::error::Error for Error {}

/// The message of a class-row fault, as the row kernels word it (for `localization.rs`).
pub fn fault_message(f: &Fault, field: Field) -> String {
    fault_text(f, field)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocations_too_large_are_errors_not_aborts() {
        let huge = usize::MAX / 16;
        assert!(matches!(filled(huge, 0u8), Err(Error::OutOfMemory { .. })));
        assert!(matches!(zeroed_real::<f64>(huge), Err(Error::OutOfMemory { .. })));
        assert!(matches!(zeroed_ids(huge), Err(Error::OutOfMemory { .. })));
        assert!(matches!(with_room::<u64>(huge), Err(Error::OutOfMemory { .. })));
        assert_eq!(zeroed_real::<f32>(5).unwrap(), vec![0.0f32; 5]);
        assert_eq!(zeroed_ids(3).unwrap(), vec![0i64; 3]);
        assert!(zeroed_real::<f64>(0).unwrap().is_empty());
    }
}

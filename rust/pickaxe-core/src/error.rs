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
    InvalidRow {
        field: Field,
        row: usize,
        member: Option<usize>,
        fault: Fault,
    },
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
    InvalidBox {
        field: Field,
        row: usize,
        image: usize,
        index: usize,
        member: Option<usize>,
        fault: Fault,
    },
    /// Invalid data in one box of the localisation inputs (`iou.rs`): `field` names the
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
}

impl Error {
    pub(crate) fn argument(name: &'static str, message: impl Into<String>) -> Self {
        Error::Argument {
            name,
            message: message.into(),
        }
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
            Error::InvalidRow {
                field,
                row,
                member,
                fault,
            } => {
                write!(f, "{} row {}", field.name(), row)?;
                if let Some(m) = member {
                    write!(f, ", {} {}", field.member_word(), m)?;
                }
                write!(f, ": {}", fault_text(fault, *field))
            }
            Error::InvalidPixel {
                field,
                image,
                y,
                x,
                member,
                fault,
            } => {
                write!(f, "{} image {}, pixel (row {}, column {})", field.name(), image, y, x)?;
                if let Some(m) = member {
                    write!(f, ", {} {}", field.member_word(), m)?;
                }
                write!(f, ": {}", fault_text(fault, *field))
            }
            Error::InvalidBox {
                field,
                row,
                image,
                index,
                member,
                fault,
            } => {
                write!(f, "{} box {} (image {}, box {} of the image)", field.name(), row, image, index)?;
                if let Some(m) = member {
                    write!(f, ", {} {}", field.member_word(), m)?;
                }
                write!(f, ": {}", fault_text(fault, *field))
            }
            Error::InvalidDetectionBox {
                field,
                row,
                image,
                member,
                index,
                fault,
            } => match member {
                Some(m) => write!(
                    f,
                    "{field}[{row}] (image {image}, member {m}, box {index} of the member's): {fault}"
                ),
                None => write!(f, "{field}[{row}] (image {image}, box {index} of the image): {fault}"),
            },
            Error::Shape(msg) => f.write_str(msg),
            Error::Argument { message, .. } => f.write_str(message),
            Error::Interrupted => f.write_str("interrupted before the work finished"),
        }
    }
}

impl std::error::Error for Error {}

/// The message of a class-row fault, as the row kernels word it (for `iou.rs`).
pub fn fault_message(f: &Fault, field: Field) -> String {
    fault_text(f, field)
}

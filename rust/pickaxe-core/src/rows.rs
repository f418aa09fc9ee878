//! Scores of one row of a 2-D field (confidences, logits, embeddings) or of the 1-D
//! `confidence` field.

use crate::driver::{Kernel, Scratch};
use crate::error::{Error, Field, RowFault};
use crate::math::{Isa, Real};
use crate::passes::{diagnose_finite, diagnose_logits, diagnose_probs, exp_sums, norms, prob_stats, row_max, top2};

/// The per-row scores of api.md.
#[derive(Clone, Debug, PartialEq)]
pub enum RowScore {
    /// 1 − p(1).
    LeastConfidence,
    /// 1 − (p(1) − p(2)).
    Margin,
    /// p(2) / p(1).
    Ratio,
    /// −Σ w_c p_c ln p_c (w = 1 without weights), divided by ln C when `normalize`.
    Entropy { normalize: bool, class_weights: Option<Vec<f64>> },
    /// −T · logsumexp(x / T).
    Energy { temperature: f64 },
    /// −max_c x_c.
    MaxLogit,
    /// −‖z‖_ord of an embedding (ord > 0, or +inf).
    Norm { ord: f64 },
}

/// The options of the row scores, as `pickaxe.scores` passes them (`Default`: its
/// defaults). Each score takes the ones it has and ignores the others.
#[derive(Clone, Debug, PartialEq)]
pub struct RowOptions {
    /// entropy: divide by ln C.
    pub normalize: bool,
    /// entropy: a weight per class.
    pub class_weights: Option<Vec<f64>>,
    /// energy: T.
    pub temperature: f64,
    /// norm: the order of the norm.
    pub ord: f64,
}

impl Default for RowOptions {
    fn default() -> Self {
        RowOptions { normalize: false, class_weights: None, temperature: 1.0, ord: 2.0 }
    }
}

impl RowScore {
    /// The score named as in `pickaxe.scores`, with its options. The options' values are
    /// checked where the score meets its field (`score_rows`).
    pub fn from_name(name: &str, options: RowOptions) -> Result<RowScore, Error> {
        let RowOptions { normalize, class_weights, temperature, ord } = options;
        Ok(match name {
            "least_confidence" => RowScore::LeastConfidence,
            "margin" => RowScore::Margin,
            "ratio" => RowScore::Ratio,
            "entropy" => RowScore::Entropy { normalize, class_weights },
            "energy" => RowScore::Energy { temperature },
            "max_logit" => RowScore::MaxLogit,
            "norm" => RowScore::Norm { ord },
            other => return Err(Error::argument("score", format!("unknown row score {other:?}"))),
        })
    }
}

impl std::str::FromStr for RowScore {
    type Err = Error;

    /// The score with its default options (`RowOptions::default`).
    fn from_str(name: &str) -> Result<RowScore, Error> {
        RowScore::from_name(name, RowOptions::default())
    }
}

pub(crate) struct RowKernel<T: Real> {
    pub field: Field,
    pub score: RowScore,
    /// Class weights converted to the input's type once per call.
    pub weights: Vec<T>,
    /// Number of classes as the score sees them (2 for binary logits).
    pub classes: usize,
}

#[inline(always)]
fn fault(f: Option<crate::error::Fault>) -> Result<(), RowFault> {
    match f {
        Some(fault) => Err(RowFault { member: None, fault }),
        None => Ok(()),
    }
}

impl<T: Real> RowKernel<T> {
    #[inline(always)]
    fn logits<I: Isa>(&self, x: &[T]) -> Result<f64, RowFault> {
        // A single logit is a binary model: p = sigmoid(x) is the softmax of [0, x].
        let pair;
        let row = if x.len() == 1 {
            pair = [T::ZERO, x[0]];
            &pair[..]
        } else {
            x
        };
        let (v, ok) = self.logits_eval::<I>(row);
        if !ok {
            // The fault is named against the caller's columns, not the pair's.
            fault(diagnose_logits(x))?;
        }
        Ok(v)
    }

    /// (score, row looked valid).
    #[inline(always)]
    fn logits_eval<I: Isa>(&self, x: &[T]) -> (f64, bool) {
        let none: &[T] = &[];
        match &self.score {
            RowScore::Ratio => {
                let (m1, m2, nan) = top2::<T, true, true>(x);
                let ok = !nan && m1 > T::NEG_INF && m1 < T::INF;
                ((m2.to_f64() - m1.to_f64()).exp(), ok)
            }
            RowScore::MaxLogit => {
                let (m1, _, nan) = top2::<T, false, true>(x);
                let ok = !nan && m1 > T::NEG_INF && m1 < T::INF;
                (-m1.to_f64(), ok)
            }
            RowScore::LeastConfidence => {
                let m1 = row_max::<I, T>(x);
                let s = exp_sums::<I, T, false, false, false>(x, m1, T::ONE, none);
                let ok = m1 > T::NEG_INF && m1 < T::INF && s.finite();
                (((s.top - 1.0) + s.rest) / s.s(), ok)
            }
            RowScore::Margin => {
                let (m1, m2, _) = top2::<T, true, false>(x);
                let s = exp_sums::<I, T, false, false, false>(x, m1, T::ONE, none);
                let ok = m1 > T::NEG_INF && m1 < T::INF && s.finite();
                let e2 = (m2.to_f64() - m1.to_f64()).exp();
                // 1 − (p1 − p2) = (S − 1 + e2) / S with the max term kept exact.
                (((s.top - 1.0) + s.rest + e2) / s.s(), ok)
            }
            RowScore::Entropy { normalize, .. } => {
                let m1 = row_max::<I, T>(x);
                let ok0 = m1 > T::NEG_INF && m1 < T::INF;
                let (h, ok) = if self.weights.is_empty() {
                    let s = exp_sums::<I, T, false, true, false>(x, m1, T::ONE, none);
                    // H = ln S − Σ eᵢyᵢ / S: both terms ≥ 0, no cancellation.
                    (s.ln_s() - s.ey / s.s(), s.finite())
                } else {
                    let s = exp_sums::<I, T, false, true, true>(x, m1, T::ONE, &self.weights);
                    ((s.ln_s() * (s.w_top + s.w_rest) - s.w_ey) / s.s(), s.finite())
                };
                (self.normalized(h, *normalize), ok0 && ok)
            }
            RowScore::Energy { temperature } => {
                let m1 = row_max::<I, T>(x);
                // 1/T kept finite and nonzero in the input's type: a tiny T must not
                // give 0 · inf for the max logit, nor a huge T -inf · 0 for a -inf logit.
                let inv_t = T::from_f64(1.0 / temperature);
                let inv_t = if inv_t < T::MAX { inv_t } else { T::MAX };
                let inv_t = if inv_t > T::MIN_POSITIVE { inv_t } else { T::MIN_POSITIVE };
                let s = exp_sums::<I, T, true, false, false>(x, m1, inv_t, none);
                let ok = m1 > T::NEG_INF && m1 < T::INF && s.finite();
                (-(m1.to_f64() + temperature * s.ln_s()), ok)
            }
            RowScore::Norm { .. } => (f64::NAN, false),
        }
    }

    #[inline(always)]
    fn normalized(&self, h: f64, normalize: bool) -> f64 {
        if !normalize {
            h
        } else if self.classes > 1 {
            h / (self.classes as f64).ln()
        } else {
            0.0
        }
    }

    #[inline(always)]
    fn confidences<I: Isa>(&self, x: &[T]) -> Result<f64, RowFault> {
        let none: &[T] = &[];
        let (st, v) = match &self.score {
            RowScore::LeastConfidence => {
                let st = prob_stats::<I, T, false, false>(x, none);
                let (p1, _, _) = top2::<T, false, false>(x);
                (st, 1.0 - p1.to_f64())
            }
            RowScore::Margin => {
                let st = prob_stats::<I, T, false, false>(x, none);
                let (p1, p2, _) = top2::<T, true, false>(x);
                let p2 = if x.len() > 1 { p2.to_f64() } else { 0.0 };
                (st, 1.0 - (p1.to_f64() - p2))
            }
            RowScore::Ratio => {
                let st = prob_stats::<I, T, false, false>(x, none);
                let (p1, p2, _) = top2::<T, true, false>(x);
                let p2 = if x.len() > 1 { p2.to_f64() } else { 0.0 };
                let p1 = p1.to_f64();
                (st, if p1 > 0.0 { p2 / p1 } else { f64::NAN })
            }
            RowScore::Entropy { normalize, .. } => {
                let st = if self.weights.is_empty() {
                    prob_stats::<I, T, true, false>(x, none)
                } else {
                    prob_stats::<I, T, true, true>(x, &self.weights)
                };
                // 0 − x, not −x: an entropy of zero is +0, never −0.
                (st, self.normalized(0.0 - st.plogp, *normalize))
            }
            // Other scores never reach confidences (`route_ok` refuses them).
            _ => (prob_stats::<I, T, false, false>(x, none), f64::NAN),
        };
        if st.suspect() || v.is_nan() {
            fault(diagnose_probs(x, true))?;
        }
        Ok(v)
    }

    #[inline(always)]
    fn confidence<I: Isa>(&self, x: &[T]) -> Result<f64, RowFault> {
        let p = x[0].to_f64();
        if !(-1e-6..=1.0 + 1e-6).contains(&p) {
            fault(diagnose_probs(x, false))?;
        }
        Ok(1.0 - p)
    }

    #[inline(always)]
    fn embeddings<I: Isa>(&self, x: &[T], ord: f64) -> Result<f64, RowFault> {
        let v = if ord == 2.0 || ord == 1.0 || ord == f64::INFINITY {
            let (sq, ab, mx) = norms(x);
            if !(sq.is_finite() && ab.is_finite() && mx.is_finite()) {
                fault(diagnose_finite(x))?;
            }
            if ord == 2.0 {
                sq.sqrt()
            } else if ord == 1.0 {
                ab
            } else {
                mx
            }
        } else {
            if let Some(f) = diagnose_finite(x) {
                fault(Some(f))?;
            }
            x.iter().map(|v| v.to_f64().abs().powf(ord)).sum::<f64>().powf(1.0 / ord)
        };
        Ok(-v)
    }
}

impl<T: Real> Kernel<T> for RowKernel<T> {
    #[inline(always)]
    fn score<I: Isa>(&self, row: &[T], _scratch: &mut Scratch<T>) -> Result<f64, RowFault> {
        match (self.field, &self.score) {
            (Field::Logits, _) => self.logits::<I>(row),
            (Field::Embeddings | Field::Reference, RowScore::Norm { ord }) => self.embeddings::<I>(row, *ord),
            (Field::Confidence, _) => self.confidence::<I>(row),
            _ => self.confidences::<I>(row),
        }
    }

    #[inline(always)]
    fn blocked_entropy<I: Isa>(&self, width: usize) -> Option<f64> {
        match (self.field, &self.score) {
            (Field::Logits, RowScore::Entropy { normalize, class_weights: None })
                if self.weights.is_empty()
                    && width >= 2
                    && width == self.classes
                    && width <= blocked_max_c::<T, I>() =>
            {
                Some(if *normalize { (width as f64).ln() } else { 1.0 })
            }
            _ => None,
        }
    }
}

/// Rows of at most this many logits take the row-blocked entropy (`blocked`). Measured
/// (1 thread, CPU time, ns per value, min of 5 rounds, row kernel -> blocked, same thin
/// build, busy machine; session 12): float32 AVX-512 C = 100 1.16 -> 0.45, C = 128 0.75 ->
/// 0.44, C = 200 0.69 -> 0.91; float64 AVX-512 C = 64 2.0 -> 1.7, C = 100 1.8-1.9 ->
/// 2.0-2.5. AVX2 transposes rows in registers (`blocked::groups`; session 14, 80 MB of
/// logits, medians of 9 interleaved rounds, Intel Xeon): float32 C = 100 0.96 -> 0.74,
/// C = 128 0.73 -> 0.53, C = 160 1.06 -> 0.93, C = 256 0.64 -> 0.69; float64 C = 100 1.60
/// -> 1.46, C = 112 1.67 -> 1.75, C = 128 1.43 -> 1.67. AVX-512 takes the same groups for
/// float64 (tiles -> groups, 80 MB: C = 10 2.03 -> 1.69, C = 64 1.59 -> 1.23, C = 100 1.98 ->
/// 1.40; in L3 1.58 -> 1.66, 1.30 -> 1.14, 1.97 -> 1.22). So: float32 up to 128 classes on
/// AVX-512 and 160 on AVX2, float64 up to 100 on both, 64 on the portable path.
fn blocked_max_c<T: Real, I: Isa>() -> usize {
    match (I::WIDE, I::FMA, std::mem::size_of::<T>()) {
        (true, _, 4) => 128,
        (false, true, 4) => 160,
        (_, true, 8) => 100,
        _ => 64,
    }
}

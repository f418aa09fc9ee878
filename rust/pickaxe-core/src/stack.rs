//! Scores of a stack of predictions per row: committee members (`query_by_committee`) or
//! dropout passes (`mc_dropout`), a contiguous (M, C) block per row.
//!
//! Each member row is read from memory once: its validation, entropy and contribution to
//! the mean p̄ (and the shifted sums of the variance) are taken while it is in L1; only
//! `kl_disagreement(reduce="max")` walks the block a second time, from cache, because it
//! needs p̄ before it can compare each member with it.

use crate::driver::{Kernel, Scratch};
use crate::error::RowFault;
use crate::math::Real;
use crate::passes::{
    argmax, diagnose_logits, diagnose_probs, entropy_f64, exp_store, prob_stats, top2,
};

// Every member is first widened to f64 (`member_probs`); `T` appears only there.

/// The committee and dropout scores of api.md.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StackScore {
    /// Entropy of the histogram of the members' argmax votes.
    VoteEntropy,
    /// H(p̄).
    ConsensusEntropy,
    /// Mean (or max) over members of KL(p_m ‖ p̄).
    KlDisagreement { max: bool },
    /// H(p̄) − mean_m H(p_m) (BALD).
    MutualInformation,
    /// H(p̄).
    PredictiveEntropy,
    /// 1 − (votes for the modal class) / M.
    VariationRatio,
    /// Mean over classes of the variance over members (ddof = 0).
    Variance,
}

pub(crate) struct StackKernel {
    pub score: StackScore,
    pub logits: bool,
    pub members: usize,
    /// Values per member in the input; 1 for binary logits, whose members are scored as
    /// the pairs [0, x] (`classes` = 2).
    pub row_classes: usize,
    pub classes: usize,
}

struct Needs {
    votes: bool,
    mean: bool,
    member_entropy: bool,
    variance: bool,
}

impl StackKernel {
    fn needs(&self) -> Needs {
        use StackScore::*;
        let s = self.score;
        Needs {
            votes: matches!(s, VoteEntropy | VariationRatio),
            mean: matches!(
                s,
                ConsensusEntropy | PredictiveEntropy | MutualInformation | KlDisagreement { .. }
            ),
            member_entropy: matches!(s, MutualInformation | KlDisagreement { .. }),
            variance: matches!(s, Variance),
        }
    }

    pub(crate) fn scratch_len(&self) -> (usize, usize) {
        // f64: p̄ (or shifted sum), shifted sum of squares (or ln p̄), member-0 and current
        // member probabilities, the member widened to f64; per-member entropies.
        // u32: vote counts.
        (5 * self.classes + self.members, self.classes)
    }

    #[inline(always)]
    fn bad<T: Real>(&self, x: &[T], member: usize) -> Result<(), RowFault> {
        let f = if self.logits { diagnose_logits(x) } else { diagnose_probs(x, true) };
        match f {
            Some(fault) => Err(RowFault { member: Some(member), fault }),
            None => Ok(()),
        }
    }
}

/// Adds one member's probabilities to p̄ or to the variance's shifted sums.
#[inline(always)]
fn accumulate(p: &[f64], p0: &[f64], acc1: &mut [f64], acc2: &mut [f64], variance: bool) {
    if variance {
        // Shifted by member 0: exact zeros when members agree, no cancellation.
        for (((a1, a2), &v), &v0) in acc1.iter_mut().zip(acc2.iter_mut()).zip(p).zip(p0) {
            let d = v - v0;
            *a1 += d;
            *a2 += d * d;
        }
    } else {
        for (a1, &v) in acc1.iter_mut().zip(p) {
            *a1 += v;
        }
    }
}

impl<T: Real> Kernel<T> for StackKernel {
    #[inline(always)]
    fn score(&self, row: &[T], scratch: &mut Scratch) -> Result<f64, RowFault> {
        let (m, c, rc) = (self.members, self.classes, self.row_classes);
        let need = self.needs();
        let (acc1, rest) = scratch.f.split_at_mut(c);
        let (acc2, rest) = rest.split_at_mut(c);
        let (q0, rest) = rest.split_at_mut(c);
        let (q, rest) = rest.split_at_mut(c);
        let (raw, rest) = rest.split_at_mut(c);
        let hm = &mut rest[..m];
        let counts = &mut scratch.u[..c];
        acc1.fill(0.0);
        acc2.fill(0.0);
        counts.fill(0);
        let mut h_sum = 0.0;

        // Each member is widened to f64 once: the scores below are differences of nearly
        // equal entropies (BALD) or sums of small squares, which float32 cannot carry.
        for j in 0..m {
            let input = &row[j * rc..(j + 1) * rc];
            if self.member_probs(input, raw, q).is_err() {
                self.bad(input, j)?;
            }
            if need.votes {
                // Argmax of the input itself: exp can round two close logits together.
                counts[if rc == c { argmax(input) } else { (input[0] > T::ZERO) as usize }] += 1;
            }
            if need.member_entropy {
                hm[j] = entropy_f64(q);
                h_sum += hm[j];
            }
            if j == 0 {
                q0.copy_from_slice(q);
            }
            if need.mean || need.variance {
                accumulate(q, q0, acc1, acc2, need.variance);
            }
        }

        let mf = m as f64;
        let v = match self.score {
            StackScore::VoteEntropy => {
                let mut h = 0.0;
                for &k in counts.iter() {
                    if k > 0 {
                        let p = k as f64 / mf;
                        h -= p * p.ln();
                    }
                }
                h
            }
            StackScore::VariationRatio => 1.0 - *counts.iter().max().unwrap_or(&0) as f64 / mf,
            StackScore::Variance => {
                let mut tot = 0.0;
                for (a1, a2) in acc1.iter().zip(acc2.iter()) {
                    let mean = a1 / mf;
                    tot += (a2 / mf - mean * mean).max(0.0);
                }
                tot / c as f64
            }
            StackScore::ConsensusEntropy | StackScore::PredictiveEntropy => {
                acc1.iter_mut().for_each(|v| *v /= mf);
                entropy_f64(acc1)
            }
            StackScore::MutualInformation | StackScore::KlDisagreement { max: false } => {
                // mean_m KL(p_m ‖ p̄) = H(p̄) − mean_m H(p_m): the same quantity as BALD.
                acc1.iter_mut().for_each(|v| *v /= mf);
                entropy_f64(acc1) - h_sum / mf
            }
            StackScore::KlDisagreement { max: true } => {
                acc1.iter_mut().for_each(|v| *v /= mf);
                // ln p̄ into acc2 (unused by this score).
                for (l, &p) in acc2.iter_mut().zip(acc1.iter()) {
                    *l = if p > 0.0 { p.ln() } else { 0.0 };
                }
                let mut best = f64::NEG_INFINITY;
                for j in 0..m {
                    let input = &row[j * rc..(j + 1) * rc];
                    // Valid: checked in the first walk.
                    let _ = self.member_probs(input, raw, q);
                    // KL(p_m ‖ p̄) = −H(p_m) − Σ p_mc ln p̄_c; p_mc > 0 implies p̄_c > 0.
                    let cross: f64 = q
                        .iter()
                        .zip(acc2.iter())
                        .map(|(&p, &l)| if p > 0.0 { p * l } else { 0.0 })
                        .sum();
                    best = best.max(-hm[j] - cross);
                }
                best
            }
        };
        Ok(v)
    }
}

impl StackKernel {
    /// One member's probabilities into `q` (f64), through `raw`; Err(()) if it looks
    /// invalid (the caller diagnoses it).
    #[inline(always)]
    fn member_probs<T: Real>(&self, input: &[T], raw: &mut [f64], q: &mut [f64]) -> Result<(), ()> {
        if input.len() == raw.len() {
            for (r, &v) in raw.iter_mut().zip(input) {
                *r = v.to_f64();
            }
        } else {
            // Binary logits: the member is the pair [0, x].
            raw[0] = 0.0;
            raw[1] = input[0].to_f64();
        }
        let none: &[f64] = &[];
        if self.logits {
            let (m1, _, _) = top2::<f64, false, false>(raw);
            let s = exp_store(raw, m1, q);
            if !(m1 > f64::NEG_INFINITY && m1 < f64::INFINITY && s.finite()) {
                return Err(());
            }
            let inv = 1.0 / s.s();
            q.iter_mut().for_each(|v| *v *= inv);
        } else {
            if prob_stats::<f64, false, false>(raw, none).suspect() {
                return Err(());
            }
            q.copy_from_slice(raw);
        }
        Ok(())
    }
}

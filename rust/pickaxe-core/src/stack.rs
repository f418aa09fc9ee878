//! Scores of a stack of predictions per row: committee members (`query_by_committee`) or
//! dropout passes (`mc_dropout`), a contiguous (M, C) block per row.
//!
//! The block is read from memory once. Probabilities: votes take one walk per member;
//! other scores one flat walk that validates the block and sums p ln p, then, with the
//! block in cache, p̄ or the variance's sums by 16-class chunks down the members. Logits: each member is
//! softmaxed into a C-sized scratch row and treated the same way. Only
//! `kl_disagreement(reduce="max")` walks the block a second time, because it needs p̄
//! before it can compare each member with it.

use crate::driver::{Kernel, Scratch, ScratchLen};
use crate::error::{Error, RowFault};
use crate::lanes;
use crate::math::{Isa, Real, LANES};
use crate::passes::{
    argmax, diagnose_logits, diagnose_probs, exp_store, lane_sum, member_mean, prob_member, prob_stats, top2,
    variance_sum, vote_member, ProbStats,
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

impl StackScore {
    /// The score named as in `pickaxe.scores`; `kl_reduce` ("mean" or "max") is read only
    /// for `kl_disagreement`, whose reduction over members it is.
    pub fn from_name(name: &str, kl_reduce: &str) -> Result<StackScore, Error> {
        Ok(match name {
            "vote_entropy" => StackScore::VoteEntropy,
            "consensus_entropy" => StackScore::ConsensusEntropy,
            "kl_disagreement" => match kl_reduce {
                "mean" => StackScore::KlDisagreement { max: false },
                "max" => StackScore::KlDisagreement { max: true },
                other => {
                    return Err(Error::argument("reduce", format!("reduce must be \"mean\" or \"max\"; got {other:?}")))
                }
            },
            "mutual_information" => StackScore::MutualInformation,
            "predictive_entropy" => StackScore::PredictiveEntropy,
            "variation_ratio" => StackScore::VariationRatio,
            "variance" => StackScore::Variance,
            other => return Err(Error::argument("score", format!("unknown stack score {other:?}"))),
        })
    }
}

impl std::str::FromStr for StackScore {
    type Err = Error;

    /// The score, `kl_disagreement` with its default mean over members.
    fn from_str(name: &str) -> Result<StackScore, Error> {
        StackScore::from_name(name, "mean")
    }
}

pub(crate) struct StackKernel {
    pub score: StackScore,
    pub logits: bool,
    pub members: usize,
    /// Values per member in the input; 1 for binary logits, whose members are scored as
    /// the pairs [0, x] (`classes` = 2).
    pub row_classes: usize,
    pub classes: usize,
    /// −(k/M)·ln(k/M) for k = 0..=M: a class's term of the vote entropy given its k votes,
    /// computed once per call instead of a libm ln per voted class per row. Term M is
    /// exactly 0, so a unanimous committee scores exactly 0.
    vote_terms: Vec<f64>,
}

impl StackKernel {
    pub(crate) fn new(score: StackScore, logits: bool, members: usize, row_classes: usize, classes: usize) -> Self {
        let mf = members as f64;
        let vote_terms = if score == StackScore::VoteEntropy {
            (0..=members)
                .map(|k| {
                    let p = k as f64 / mf;
                    if k > 0 {
                        0.0 - p * p.ln()
                    } else {
                        0.0
                    }
                })
                .collect()
        } else {
            Vec::new()
        };
        StackKernel { score, logits, members, row_classes, classes, vote_terms }
    }

    /// Scores computed from the members' argmax votes alone.
    fn votes(&self) -> bool {
        matches!(self.score, StackScore::VoteEntropy | StackScore::VariationRatio)
    }

    /// Scores computed from p̄.
    fn mean(&self) -> bool {
        use StackScore::*;
        matches!(self.score, ConsensusEntropy | PredictiveEntropy | MutualInformation | KlDisagreement { .. })
    }

    pub(crate) fn scratch_len(&self) -> ScratchLen {
        // f64: p̄ (or the shifted sum), the shifted sum of squares. T: the current
        // member's probabilities, member 0's, p̄ (or ln p̄). u32: votes.
        (2 * self.classes, 3 * self.classes, self.classes)
    }

    /// A row of probability members. Votes: one walk per member gives its vote, sum and
    /// range (`vote_member`). Otherwise one flat walk over the (M, C) block validates it
    /// and sums p ln p, each member's sum is checked, and p̄ (`member_mean`) or the
    /// variance (`variance_sum`, in `score`) are summed by class chunks down the members.
    /// Returns −Σ p ln p, the members' summed entropies (0 for votes).
    #[inline(always)]
    fn probs<I: Isa, T: Real>(&self, row: &[T], pbar: &mut [T], counts: &mut [u32]) -> Result<f64, RowFault> {
        use StackScore::*;
        let (m, c) = (self.members, self.classes);
        if self.votes() {
            // No flat walk: each member's one walk gives its vote, its sum and its range.
            let mut lo = [T::INF; LANES];
            let mut hi = [T::NEG_INF; LANES];
            let mut suspect = false;
            for j in 0..m {
                let (vote, sum) = vote_member(&row[j * c..(j + 1) * c], &mut lo, &mut hi);
                counts[vote] += 1;
                // NaN and ±inf make the sum fail this test too.
                suspect |= !((sum - 1.0).abs() <= 1e-3);
            }
            let lo = lanes::min(lo).to_f64();
            let hi = lanes::max(hi).to_f64();
            if suspect || lo < -1e-6 || hi > 1.0 + 1e-6 {
                for j in 0..m {
                    self.bad(&row[j * c..(j + 1) * c], j)?;
                }
            }
            return Ok(0.0);
        }
        let st = match self.score {
            MutualInformation | KlDisagreement { .. } => prob_stats::<I, T, true, false>(row, &[]),
            _ => prob_stats::<I, T, false, false>(row, &[]),
        };
        let mut suspect = !st.sum.is_finite() || st.lo < -1e-6 || st.hi > 1.0 + 1e-6;
        for j in 0..m {
            let x = &row[j * c..(j + 1) * c];
            suspect |= !((lane_sum(x) - 1.0).abs() <= 1e-3);
        }
        // The variance goes by class chunks in `score` (`variance_sum`).
        if self.mean() {
            member_mean(row, m, c, pbar);
        }
        if suspect {
            // Name the first invalid member (a false alarm finds none and goes on).
            for j in 0..m {
                self.bad(&row[j * c..(j + 1) * c], j)?;
            }
        }
        Ok(0.0 - st.plogp)
    }

    #[cold]
    fn bad<T: Real>(&self, x: &[T], member: usize) -> Result<(), RowFault> {
        let f = if self.logits { diagnose_logits(x) } else { diagnose_probs(x, true) };
        match f {
            Some(fault) => Err(RowFault { member: Some(member), fault }),
            None => Ok(()),
        }
    }
}

/// Softmax of one member's logits into `q`; false if the member looks invalid (the
/// caller diagnoses it).
#[inline(always)]
fn softmax_member<I: Isa, T: Real>(x: &[T], q: &mut [T]) -> bool {
    let (m1, _, nan) = top2::<T, false, true>(x);
    let s = exp_store::<I, T>(x, m1, q);
    if nan || !(m1 > T::NEG_INF && m1 < T::INF && s.finite()) {
        return false;
    }
    let inv = T::from_f64(1.0 / s.s());
    for v in q.iter_mut() {
        *v = *v * inv;
    }
    true
}

/// H(p̄) of p̄ in the input's type, by the same routine as the members' entropies, so
/// identical members give an MI of exactly 0.
#[inline(always)]
fn mean_entropy<I: Isa, T: Real>(pbar: &[T]) -> f64 {
    0.0 - prob_stats::<I, T, true, false>(pbar, &[]).plogp
}

/// Adds a member's probabilities into p̄ (`acc1`) or the variance's shifted sums, and
/// returns its validation statistics and Σ p ln p, as far as the score needs them.
#[inline(always)]
fn member_pass<I: Isa, T: Real>(score: StackScore, x: &[T], p0: &[T], acc1: &mut [f64], acc2: &mut [f64]) -> ProbStats {
    use StackScore::*;
    match score {
        VoteEntropy | VariationRatio => prob_member::<I, T, false, false, false>(x, p0, acc1, acc2),
        ConsensusEntropy | PredictiveEntropy => prob_member::<I, T, false, true, false>(x, p0, acc1, acc2),
        MutualInformation | KlDisagreement { .. } => prob_member::<I, T, true, true, false>(x, p0, acc1, acc2),
        Variance => prob_member::<I, T, false, false, true>(x, p0, acc1, acc2),
    }
}

/// Member `j` of a row block as the score sees it: binary logits (one value `x` per
/// member) become the pair [0, x].
#[inline(always)]
fn member<'a, T: Real>(row: &'a [T], j: usize, rc: usize, binary: bool, pair: &'a mut [T; 2]) -> &'a [T] {
    let input = &row[j * rc..(j + 1) * rc];
    if binary {
        pair[1] = input[0];
        &pair[..]
    } else {
        input
    }
}

impl<T: Real> Kernel<T> for StackKernel {
    #[inline(always)]
    fn score<I: Isa>(&self, row: &[T], scratch: &mut Scratch<T>) -> Result<f64, RowFault> {
        let (m, c, rc) = (self.members, self.classes, self.row_classes);
        let votes = self.votes();
        let (acc1, rest) = scratch.f.split_at_mut(c);
        let acc2 = &mut rest[..c];
        let (q, rest) = scratch.t.split_at_mut(c);
        let (q0, rest) = rest.split_at_mut(c);
        let pbar = &mut rest[..c];
        let counts = &mut scratch.u[..c];
        acc1.fill(0.0);
        acc2.fill(0.0);
        counts.fill(0);
        let mut h_sum = 0.0;
        let binary = rc != c;
        let mut pair = [T::ZERO; 2];

        let mf = m as f64;
        if !self.logits {
            h_sum = self.probs::<I, T>(row, pbar, counts)?;
        } else {
            for j in 0..m {
                let input = &row[j * rc..(j + 1) * rc];
                let x = member(row, j, rc, binary, &mut pair);
                if votes {
                    // Argmax of the input itself: exp can round two close logits together.
                    counts[argmax(x)] += 1;
                    let (m1, _, nan) = top2::<T, false, true>(x);
                    if nan || !(m1 > T::NEG_INF && m1 < T::INF) {
                        self.bad(input, j)?;
                    }
                    continue;
                }
                if !softmax_member::<I, T>(x, q) {
                    self.bad(input, j)?;
                    continue;
                }
                if j == 0 {
                    q0.copy_from_slice(q);
                }
                // Member entropies by the same routine as H(p̄) below (not the fused
                // logsumexp form), so their difference cancels exactly when members agree.
                h_sum -= member_pass::<I, T>(self.score, q, q0, acc1, acc2).plogp;
            }
            if self.mean() {
                for (b, &a) in pbar.iter_mut().zip(acc1.iter()) {
                    *b = T::from_f64(a / mf);
                }
            }
        }

        let v = match self.score {
            StackScore::VoteEntropy => {
                // The same terms, in the same class order, as −Σ_c (k_c/M) ln(k_c/M).
                let mut h = 0.0;
                for &k in counts.iter() {
                    h += self.vote_terms[k as usize];
                }
                h
            }
            StackScore::VariationRatio => 1.0 - *counts.iter().max().unwrap_or(&0) as f64 / mf,
            StackScore::Variance if !self.logits => variance_sum::<I, T>(row, m, c) / c as f64,
            StackScore::Variance => {
                let mut tot = 0.0;
                for (a1, a2) in acc1.iter().zip(acc2.iter()) {
                    let mean = a1 / mf;
                    tot += (a2 / mf - mean * mean).max(0.0);
                }
                tot / c as f64
            }
            StackScore::ConsensusEntropy | StackScore::PredictiveEntropy => mean_entropy::<I, T>(pbar),
            StackScore::MutualInformation | StackScore::KlDisagreement { max: false } => {
                // mean_m KL(p_m ‖ p̄) = H(p̄) − mean_m H(p_m): the same quantity as BALD.
                // ≥ 0 by Jensen; a negative value could only be rounding.
                (mean_entropy::<I, T>(pbar) - h_sum / mf).max(0.0)
            }
            StackScore::KlDisagreement { max: true } => {
                // ln p̄ in the input's precision, like ln p below, so that a member equal
                // to p̄ has a divergence of exactly 0.
                for b in pbar.iter_mut() {
                    let p = *b;
                    *b = if p > T::ZERO { p.fast_ln::<I>() } else { T::ZERO };
                }
                let mut best = f64::NEG_INFINITY;
                for j in 0..m {
                    let x = member(row, j, rc, binary, &mut pair);
                    let p: &[T] = if self.logits {
                        // Valid: checked in the first walk.
                        softmax_member::<I, T>(x, q);
                        q
                    } else {
                        x
                    };
                    // KL(p_m ‖ p̄) = Σ p_mc (ln p_mc − ln p̄_c); p_mc > 0 implies p̄_c > 0.
                    let mut kl = 0.0;
                    for (&v, &l) in p.iter().zip(pbar.iter()) {
                        if v > T::ZERO {
                            kl += (v * (v.fast_ln::<I>() - l)).to_f64();
                        }
                    }
                    best = best.max(kl);
                }
                // Each divergence is ≥ 0; a negative value could only be rounding.
                best.max(0.0)
            }
        };
        Ok(v)
    }
}

//! Stopping long work early. The caller (the Python bindings, on Ctrl-C) sets a `Cancel`
//! from another thread; the long kernels read it between chunks of work (one relaxed
//! atomic load per chunk of about 64K values, or per pick, image or row of an image) and
//! then return `Error::Interrupted` instead of their result. A kernel that sees the flag
//! stops handing out work: each parallel task checks it before it starts, so the call
//! returns once the chunks already running are done.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::Error;

/// A cancellation flag shared by the caller and a running kernel.
///
/// ```
/// use pickaxe_core::Cancel;
/// let c = Cancel::new();
/// assert!(c.check().is_ok());
/// c.cancel();
/// assert!(c.is_cancelled());
/// assert!(c.check().is_err());
/// ```
#[derive(Debug, Default)]
pub struct Cancel(AtomicBool);

impl Cancel {
    /// A flag that is not set.
    pub const fn new() -> Self {
        Cancel(AtomicBool::new(false))
    }

    /// Asks the kernel reading this flag to stop; it cannot be unset.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    /// Whether `cancel` was called. Relaxed: the flag guards no data (the caller learns
    /// the kernel's outcome by joining it), it only has to become visible soon.
    #[inline(always)]
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// `Err(Error::Interrupted)` once `cancel` was called.
    #[inline]
    pub fn check(&self) -> Result<(), Error> {
        if self.is_cancelled() {
            Err(Error::Interrupted)
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        knn::Metric,
        localization::{BoxSet, LocOptions},
        seg::{PixelScore, Reduce},
        BoxReduce, Field, NanPolicy, RowScore, StackScore,
    };
    use ndarray::{Array1, Array2, Array3, Array4};

    fn is_interrupted<R: std::fmt::Debug>(r: Result<R, Error>) -> bool {
        matches!(r, Err(Error::Interrupted))
    }

    /// Every long kernel given a set flag returns `Interrupted`, on one thread (the
    /// task-by-task serial path) and on two, on inputs above the parallel threshold.
    #[test]
    fn a_set_flag_interrupts_every_long_kernel() {
        let c = Cancel::new();
        c.cancel();
        let x = Array2::from_shape_fn((4096, 64), |(i, j)| ((i * 7 + j) % 13) as f32 * 0.1);
        let p = Array2::from_elem((4096, 64), 1.0f32 / 64.0);
        let st = Array3::from_elem((2048, 4, 16), 1.0f32 / 16.0);
        let img = Array4::from_shape_fn((8, 5, 64, 64), |(i, b, y, z)| ((i + b + y + z) % 7) as f32);
        let ent = RowScore::Entropy { normalize: false, class_weights: None };
        let boxes = Array2::from_shape_fn((4096, 4), |(i, j)| (i % 50) as f64 + if j >= 2 { 2.0 } else { 0.0 });
        let cls = Array2::from_elem((4096, 3), 1.0 / 3.0);
        let off = Array1::from_iter((0..=64).map(|i| i as i64 * 64));
        let moff = Array1::from_iter((0..=128).map(|i| i as i64 * 32));
        let (reference, members) = [off.view(), moff.view()]
            .map(|offsets| BoxSet { bbox: boxes.view(), classes: cls.view(), logits: false, offsets })
            .into();
        let opts = LocOptions { iou_threshold: 0.5, per_class: false, reduce: Some(BoxReduce::Max) };
        let scores = Array1::from_iter((0..3_000_000).map(|i| (i % 1000) as f64));
        for threads in [1, 2] {
            crate::threads::set_num_threads(threads).unwrap();
            let raise = NanPolicy::Raise;
            assert!(is_interrupted(crate::score_rows(Field::Logits, &ent, x.view(), raise, &c)));
            assert!(is_interrupted(crate::score_rows(Field::Confidences, &ent, p.view(), NanPolicy::Omit, &c)));
            assert!(is_interrupted(crate::least_confidence_1d(x.column(0), raise, &c)));
            let s = StackScore::MutualInformation;
            assert!(is_interrupted(crate::score_stack(Field::McDropout, s, st.view(), false, raise, &c)));
            let px = PixelScore::Row(ent.clone());
            for red in [Reduce::Mean, Reduce::Map] {
                let r = crate::score_pixels(Field::Logits, &px, img.view().into_dyn(), 1, red, None, raise, &c);
                assert!(is_interrupted(r));
            }
            let r = crate::score_boxes(
                Field::Confidences,
                &px,
                p.view().into_dyn(),
                off.view(),
                BoxReduce::Max,
                None,
                raise,
                &c,
            );
            assert!(is_interrupted(r));
            let r = crate::localization_disagreement(reference, members, 2, opts, None, &c);
            assert!(is_interrupted(r));
            let md = Array1::from_elem(4096, f32::INFINITY);
            assert!(is_interrupted(crate::kcenter_greedy(x.view(), 10, md.clone(), Metric::L2, &c)));
            assert!(is_interrupted(crate::kcenter_greedy(x.view(), 10, md, Metric::Cosine, &c)));
            let norms = Array1::from_elem(4096, 1.0f32);
            let mut ids = Array2::from_elem((4096, 5), -1i64);
            let mut d = Array2::from_elem((4096, 5), f32::INFINITY);
            let g = Array2::from_elem((4096, 4096), 0.5f32);
            let r = crate::knn_update(
                g.view(),
                norms.view(),
                norms.view(),
                0,
                Metric::L2,
                ids.view_mut(),
                d.view_mut(),
                &c,
            );
            assert!(is_interrupted(r));
            let ids = Array2::from_elem((4096, 5), 0i64);
            assert!(is_interrupted(crate::pair_distances(x.view(), x.view(), ids.view(), Metric::L2, &c)));
            assert!(is_interrupted(crate::top_k(scores.view(), 10, &c)));
        }
    }

    /// Cancelled from another thread while it runs, k-center greedy stops early (it
    /// would take many seconds to finish) and the pool then runs the next call normally.
    #[test]
    fn cancelled_midway_then_the_pool_still_works() {
        let x = Array2::from_shape_fn((20_000, 32), |(i, j)| ((i * 31 + j * 17) % 101) as f64);
        let md = || Array1::from_elem(20_000, f64::INFINITY);
        let want = crate::kcenter_greedy(x.view(), 50, md(), Metric::L2, &Cancel::new()).unwrap();
        let c = Cancel::new();
        let r = std::thread::scope(|s| {
            let run = s.spawn(|| crate::kcenter_greedy(x.view(), 20_000, md(), Metric::L2, &c));
            std::thread::sleep(std::time::Duration::from_millis(50));
            c.cancel();
            run.join().unwrap()
        });
        assert!(is_interrupted(r));
        let again = crate::kcenter_greedy(x.view(), 50, md(), Metric::L2, &Cancel::new()).unwrap();
        assert_eq!(again, want);
    }
}

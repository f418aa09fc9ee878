"""Benchmark px.detection.localization_disagreement (greedy IoU matching in Rust).

Run::

    python benches/bench_localization.py [--images N] [--members M] [--classes C]

Data: N images with 0 to 29 reference boxes each (uniform), M members per image each
finding ~70 % of the reference boxes (jittered) plus 0 to 2 spurious boxes, logits of C
classes. Prints the median wall time of 3 runs with 1 and 2 threads, and the time of the
plain-Python float64 reference of tests/test_localization.py (the same definition, what a
user would write), extrapolated from its first 100 images, after checking they agree.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

import pickaxe as px

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import test_localization as t  # noqa: E402  (the reference and the data generator)
from _machine import describe  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--members", type=int, default=5)
    ap.add_argument("--classes", type=int, default=20)
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    n, m, c = a.images, a.members, a.classes
    boxes, cls, off, mb, mc, moff = t.random_case(rng, rng.integers(0, 30, size=n), m, c)
    print(f"{n} images, {len(boxes)} reference boxes, {len(mb)} member boxes, M = {m}, C = {c}, "
          f"simd {px.build_info()['simd']}")
    print(describe())
    print("| case | ms |\n|---|---:|")
    before = px.build_info()["threads"]
    s = None
    try:
        for threads in (1, 2):
            px.set_num_threads(threads)
            times = []
            for _ in range(3):
                t0 = time.perf_counter()
                s = t.call(boxes, cls, off, mb, mc, moff, m, reduce="max")
                times.append(time.perf_counter() - t0)
            print(f"| pickaxe, {threads} thread(s) | {statistics.median(times) * 1e3:.1f} |")
    finally:
        px.set_num_threads(before)
    sub = min(100, n)
    t0 = time.perf_counter()
    want = t.loc_ref(boxes, cls, True, off[: sub + 1], mb, mc, True, moff[: sub * m + 1], m, reduce="max")
    ref_ms = (time.perf_counter() - t0) * 1e3 * n / sub
    print(f"| plain Python float64 reference (extrapolated from {sub} images) | {ref_ms:.0f} |")
    assert s is not None
    np.testing.assert_allclose(s[:sub], want, rtol=1e-10, atol=1e-12)
    print("\nresults match the reference (rtol 1e-10): yes")


if __name__ == "__main__":
    main()

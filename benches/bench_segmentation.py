"""Benchmark pickaxe.segmentation against the numpy code a user would write instead.

Run::

    python benches/bench_segmentation.py [--quick] [--repeats R] [--markdown-out PATH]

Case (issue #5): mean per-pixel entropy of N = 32 images of 21 x 512 x 512 float32
logits, class_axis=1 (N, C, H, W), 704 MiB. numpy: per-pixel softmax by max-shift in
float32, entropy ``-(p * log p).sum(axis=1)`` (0 log 0 = 0), then the mean per image,
both on the whole batch at once (what a user writes; several GiB of temporaries) and one
image at a time (a stronger baseline: its temporaries stay at one image's size).

* ``s``: median wall time over R runs (default 5; numpy at most 3), default threads.
* ``peak MiB above input``: peak RSS during one untimed call minus the RSS just before
  (``/proc/self/clear_refs`` then ``VmHWM``; Rust allocations are invisible to
  tracemalloc), result included; ``%``: of the input's nbytes.
* Also: ``reduce=("top", 0.05)`` and a mask of 10 % of pixels, and the (N, C, H, W) ->
  (N, H, W, C) layout (class_axis=-1), for reference.

The results are compared (rtol 1e-4) and targets are printed: >= 20x numpy, peak above
input < 5 % of the input.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import statistics
import sys
import time

import numpy as np

import pickaxe as px
from _machine import describe

MIB = 1024 * 1024


def _status_kib(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            name, _, rest = line.partition(":")
            if name == key:
                return int(rest.split()[0])
    raise KeyError(key)


try:
    _malloc_trim = ctypes.CDLL("libc.so.6").malloc_trim
except (OSError, AttributeError):
    _malloc_trim = None


def peak_above(fn):
    gc.collect()
    if _malloc_trim is not None:
        _malloc_trim(0)
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return fn(), -1
    before = _status_kib("VmRSS")
    out = fn()
    return out, max(_status_kib("VmHWM") - before, 0) * 1024


def timed(fn, repeats):
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def numpy_batch_entropy(x: np.ndarray) -> np.ndarray:
    """What a user writes: softmax over axis 1 of the whole batch, entropy map, mean."""
    z = x - x.max(axis=1, keepdims=True)
    e = np.exp(z)
    p = e / e.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        plogp = np.where(p > 0, p * np.log(p), 0.0)
    return (-plogp.sum(axis=1)).mean(axis=(1, 2))


def numpy_mean_entropy(x: np.ndarray) -> np.ndarray:
    out = np.empty(x.shape[0], dtype=np.float32)
    for i in range(x.shape[0]):
        z = x[i] - x[i].max(axis=0, keepdims=True)
        e = np.exp(z)
        p = e / e.sum(axis=0, keepdims=True)
        with np.errstate(divide="ignore", invalid="ignore"):
            plogp = np.where(p > 0, p * np.log(p), 0.0)
        out[i] = (-plogp.sum(axis=0)).mean()
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="N = 4 images instead of 32")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--markdown-out")
    args = ap.parse_args()
    n, c, h, w = (4 if args.quick else 32), 21, 512, 512
    rng = np.random.default_rng(20240601)
    x = np.empty((n, c, h, w), dtype=np.float32)
    for i in range(n):
        x[i] = rng.standard_normal((c, h, w), dtype=np.float32) * 3
    nbytes = x.nbytes
    rows = []

    def case(name, fn, baseline=None):
        got, peak = peak_above(fn)
        t = timed(fn, args.repeats)
        rows.append((name, t, peak, got))
        return got, t, peak

    px_out, t_px, peak_px = case("pickaxe entropy, mean", lambda: px.segmentation.entropy(logits=x))
    np_out, np_peak = peak_above(lambda: numpy_mean_entropy(x))
    t_np = timed(lambda: numpy_mean_entropy(x), min(args.repeats, 3))
    nb_out, nb_peak = peak_above(lambda: numpy_batch_entropy(x))
    t_nb = timed(lambda: numpy_batch_entropy(x), min(args.repeats, 2))
    del nb_out
    ok = np.allclose(px_out, np_out, rtol=1e-4)
    mask = rng.random((n, h, w)) < 0.1
    case("pickaxe entropy, top 5 %, 10 % masked",
         lambda: px.segmentation.entropy(logits=x, reduce=("top", 0.05), mask=mask))
    case("pickaxe entropy, maps (reduce=None)", lambda: px.segmentation.entropy(logits=x, reduce=None))
    xl = np.ascontiguousarray(np.moveaxis(x, 1, -1))
    x = None  # frees the (N, C, H, W) copy (the lambdas above have run)
    gc.collect()
    case("pickaxe entropy, mean, (N, H, W, C)",
         lambda: px.segmentation.entropy(logits=xl, class_axis=-1))

    info = px.build_info()
    lines = [
        f"Segmentation: {n} x {c} x {h} x {w} float32 logits ({nbytes / MIB:.0f} MiB), "
        f"simd {info['simd']}, {info['threads']} threads, median of {args.repeats} runs",
        describe(),
        "",
        "| case | s | vs numpy batch | vs numpy per image | peak MiB above input | peak / input % |",
        "|---|---:|---:|---:|---:|---:|",
        f"| numpy, whole batch: softmax, -(p log p).sum, mean | {t_nb:.3f} | 1.0x | "
        f"{t_np / t_nb:.1f}x | {nb_peak / MIB:.1f} | {100 * nb_peak / nbytes:.2f} |",
        f"| numpy, one image at a time | {t_np:.3f} | {t_nb / t_np:.1f}x | 1.0x | "
        f"{np_peak / MIB:.1f} | {100 * np_peak / nbytes:.2f} |",
    ]
    for name, t, peak, _ in rows:
        lines.append(f"| {name} | {t:.3f} | {t_nb / t:.1f}x | {t_np / t:.1f}x | {peak / MIB:.1f} | "
                     f"{100 * peak / nbytes:.2f} |")
    speed_nb = t_nb / t_px
    speed = t_np / t_px
    pct = 100 * peak_px / nbytes
    lines += [
        "",
        f"- results match numpy (rtol 1e-4): {'yes' if ok else 'NO'}",
        f"- target >= 20x numpy (whole batch): {speed_nb:.1f}x {'PASS' if speed_nb >= 20 else 'FAIL'}",
        f"- target >= 20x numpy (one image at a time): {speed:.1f}x {'PASS' if speed >= 20 else 'FAIL'}",
        f"- target peak above input < 5 %: {pct:.2f} % {'PASS' if pct < 5 else 'FAIL'}",
    ]
    text = "\n".join(lines)
    print(text)
    if args.markdown_out:
        with open(args.markdown_out, "w") as f:
            f.write(text + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

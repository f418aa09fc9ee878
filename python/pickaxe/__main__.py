"""`python -m pickaxe`: score a generated pool and print the rows worth labeling.

A stand-in model's logits over a pool of 200,000 unlabeled rows and 10 classes: most rows
are confidently one class, a few thousand sit between two classes (confusing, in domain),
and a few hundred have small, flat logits (unlike anything the model has seen). Each score
picks 500 rows; the counts show which kind it found. None picks a clear row; the flat,
unfamiliar rows are also the most uncertain, so entropy and energy rank them first, while
margin, which looks only at the top two classes, reaches more of the confusing ones.
"""

from __future__ import annotations

import time

import numpy as np

import pickaxe as px


def generate_pool(n: int = 200_000, classes: int = 10, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 1.0, size=(n, classes)).astype(np.float32)
    kind = rng.choice(3, size=n, p=[0.97, 0.028, 0.002])  # 0 clear, 1 confusing, 2 unfamiliar
    top = rng.integers(classes, size=n)
    logits[np.arange(n), top] += np.where(kind == 0, 8.0, 3.0)
    confusing = np.flatnonzero(kind == 1)
    second = (top[confusing] + 1 + rng.integers(classes - 1, size=confusing.size)) % classes
    logits[confusing, second] += 3.0
    logits[kind == 2] *= 0.05
    logits[kind == 2] -= 6.0
    return logits, kind


def main() -> None:
    logits, kind = generate_pool()
    info = px.build_info()
    print(f"pickaxe {px.__version__} ({info['simd']}, {info['threads']} threads)")
    print(f"pool: {logits.shape[0]:,} rows x {logits.shape[1]} classes of float32 logits\n")
    names = {0: "clear", 1: "confusing", 2: "unfamiliar"}
    for name, score in [
        ("entropy", px.scores.entropy),
        ("margin", px.scores.margin),
        ("energy", px.scores.energy),
    ]:
        t0 = time.perf_counter()
        s = score(logits=logits)
        picks = px.select.top_k(s, 500)
        dt = time.perf_counter() - t0
        found = np.bincount(kind[picks], minlength=3)
        print(f"{name:8s} top 500 in {dt * 1000:6.1f} ms: " + ", ".join(f"{found[k]} {names[k]}" for k in range(3)))
        shown = ", ".join(f"{i} ({s[i]:.3f})" for i in picks[:5])
        print(f"         first picks (row, score): {shown}")


if __name__ == "__main__":
    main()

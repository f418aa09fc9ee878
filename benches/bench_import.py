"""How long ``import pickaxe`` takes, and how much of it is numpy's own import.

Run::

    python benches/bench_import.py [--runs 11]

Each run is a fresh ``python -X importtime -c "import pickaxe"``; the script prints the
median cumulative time of ``pickaxe`` and of ``numpy`` inside it, and the modules that
must not load at import (pandas, polars, duckdb, pyarrow, hnswlib, matplotlib, ray,
sklearn). Target (issue #7): under 150 ms here.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys

from _machine import describe

HEAVY = ("pandas", "polars", "duckdb", "pyarrow", "hnswlib", "matplotlib", "ray", "sklearn", "scipy", "click", "tqdm")


def one_run() -> tuple[float, float, list[str]]:
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import pickaxe"], capture_output=True, text=True, check=True
    )
    total = numpy = 0.0
    loaded = []
    for line in out.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        _, cumulative, name = (part.strip() for part in line.split("|"))
        if not cumulative.isdigit():
            continue
        if name == "pickaxe":
            total = int(cumulative) / 1000
        elif name == "numpy":
            numpy = int(cumulative) / 1000
        if name.split(".")[0] in HEAVY:
            loaded.append(name)
    return total, numpy, loaded


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=11)
    args = ap.parse_args(argv)
    runs = [one_run() for _ in range(args.runs)]
    total = statistics.median(r[0] for r in runs)
    numpy = statistics.median(r[1] for r in runs)
    heavy = sorted({m for r in runs for m in r[2]})
    print(f"import pickaxe: median {total:.0f} ms over {args.runs} fresh processes "
          f"(min {min(r[0] for r in runs):.0f}, max {max(r[0] for r in runs):.0f}); "
          f"numpy's import inside it: median {numpy:.0f} ms; pickaxe's own: {total - numpy:.0f} ms")
    print(f"heavy modules loaded: {', '.join(heavy) or 'none'}")
    print(f"target < 150 ms: {'PASS' if total < 150 else 'FAIL'}")
    print(describe())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

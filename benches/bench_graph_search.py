"""Graph search: `ReferenceIndex.query` against faiss's IndexHNSWFlat and hnswlib's own
knn_query (issue 18 point 6).

Run::

    python benches/bench_graph_search.py [--quick] [--repeats R] [--hnswlib DIR] [--markdown-out PATH]

benches/bench_diversity.py's clustered data: a 100,000 x 384 reference, 10,000 queries,
k = 10, cosine (quick: 20,000 x 384 and 2,000). Both graphs are built with M = 16 and
efConstruction = 200 (faiss on the normalised rows, inner product). Every search runs on
one thread (``px.set_num_threads(1)``, ``faiss.omp_set_num_threads(1)``,
``num_threads=1``); the three are timed interleaved in one process, CPU time, median and
range of R runs (default 5). Recall@10 is against exact search.

* **same ef**: efSearch = ReferenceIndex's default for k = 10 (100) for all three, hnswlib
  searching the very graph ReferenceIndex searches (its saved bytes loaded into hnswlib).
* **equal recall**: each library at the smallest ef of a sweep whose recall@10 is >= 0.98.

ReferenceIndex.query searches the queries grouped by their nearest of 256 sampled
reference rows (consecutive searches stay in cached parts of the graph); rows with faiss
and hnswlib given that order (for free), and pickaxe's graph search alone in the caller's
order, separate the order's share of the speed from the search's.

Target: ReferenceIndex within 1.2x faiss's time at recall@10 >= 0.98. ``--hnswlib DIR``
imports hnswlib from DIR first (e.g. a portable ``HNSWLIB_NO_NATIVE=1`` build: what the
wheels install); which hnswlib ran, and whether its code uses AVX registers, is printed.
faiss is needed here only (``pip install faiss-cpu``), never by pickaxe.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

SWEEP = (24, 32, 40, 48, 64, 80, 100, 128)
TARGET_RECALL = 0.98


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--hnswlib", help="import hnswlib from this directory first")
    ap.add_argument("--markdown-out", help="also write the results to this file")
    args = ap.parse_args()
    if args.hnswlib:
        sys.path.insert(0, args.hnswlib)
    import faiss
    import hnswlib

    import pickaxe as px
    from bench_diversity import SEED, clustered, recall
    from bench_scores import CpuShare, machine_lines
    from pickaxe._exact import exact_knn

    m, n, d, k = (20_000, 2_000, 384, 10) if args.quick else (100_000, 10_000, 384, 10)
    rng = np.random.default_rng(SEED)
    ref = clustered(rng, m, d)
    q = clustered(rng, n, d)
    start = CpuShare.snapshot()
    truth, _ = exact_knn(q, ref, k, "cosine")
    lines = [f"# Graph search: {m:,} x {d} reference, {n:,} queries, k = {k}, cosine, one thread", ""]

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    build_threads = px.build_info()["threads"]
    log("building the ReferenceIndex graph (hnswlib)")
    t0 = time.perf_counter()
    index = px.ReferenceIndex(ref, metric="cosine", M=16, ef_construction=200)
    t_px_build = time.perf_counter() - t0
    log("building faiss IndexHNSWFlat")
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    rn = ref / np.linalg.norm(ref, axis=1, keepdims=True)
    faiss.omp_set_num_threads(build_threads)
    fi = faiss.IndexHNSWFlat(d, 16, faiss.METRIC_INNER_PRODUCT)
    fi.hnsw.efConstruction = 200
    t0 = time.perf_counter()
    fi.add(rn)
    t_f_build = time.perf_counter() - t0
    del rn
    # hnswlib searching the very graph ReferenceIndex holds.
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "g.hnsw")
        with open(path, "wb") as f:
            index._hnsw.write(f)
        hi = hnswlib.Index(space="cosine", dim=d)
        hi.load_index(path)

    px.set_num_threads(1)
    faiss.omp_set_num_threads(1)

    def run_px(ef):
        index.ef = ef  # the user's call: query checks q, orders it for locality, searches
        return index.query(q, k)[0]

    def run_faiss(ef):
        fi.hnsw.efSearch = ef
        return fi.search(qn, k)[1]

    def run_hnswlib(ef):
        hi.set_ef(ef)
        return hi.knn_query(q, k=k, num_threads=1)[0]

    # ReferenceIndex.query searches in an order that keeps nearby queries together (each
    # query's nearest of 256 sampled reference rows); the same order given to faiss and
    # hnswlib, and pickaxe's graph search in the caller's order, separate the order's share
    # of the speed from the search's. The others get the order for free (not timed).
    order = index._locality_order(q)
    q32 = np.ascontiguousarray(q, dtype=np.float32)
    q_ord, qn_ord = q[order], qn[order]

    def run_graph(ef):
        return index._hnsw.search(q32, k, ef, 1)[0]

    def run_faiss_ord(ef):
        fi.hnsw.efSearch = ef
        ids = np.empty((n, k), dtype=np.int64)
        ids[order] = fi.search(qn_ord, k)[1]
        return ids

    def run_hnswlib_ord(ef):
        hi.set_ef(ef)
        ids = np.empty((n, k), dtype=np.int64)
        ids[order] = hi.knn_query(q_ord, k=k, num_threads=1)[0]
        return ids

    runs = {
        "ReferenceIndex.query": run_px,
        "pickaxe graph search, caller's order": run_graph,
        "faiss IndexHNSWFlat": run_faiss,
        "faiss IndexHNSWFlat, ReferenceIndex's order": run_faiss_ord,
        "hnswlib knn_query": run_hnswlib,
        "hnswlib knn_query, ReferenceIndex's order": run_hnswlib_ord,
    }
    # The sweep picks one ef per library (the same order-blind recall for its two rows).
    library = {name: name.split(",")[0] for name in runs}
    library["pickaxe graph search, caller's order"] = "ReferenceIndex.query"

    def timed(efs, repeats):
        """CPU seconds of each run at its ef, interleaved: {name: [times]}, {name: recall}."""
        times = {name: [] for name in runs}
        rec = {}
        for _ in range(repeats):
            for name, fn in runs.items():
                c0 = time.process_time()
                ids = fn(efs[name])
                times[name].append(time.process_time() - c0)
                rec[name] = recall(ids, truth)
        return times, rec

    def table(title, efs, times, rec):
        out = [f"## {title}", "", "| search | ef | CPU s, median (range) | x faiss | recall@10 |", "|---|---:|---:|---:|---:|"]
        ref_t = float(np.median(times["faiss IndexHNSWFlat"]))
        for name in runs:
            t = np.asarray(times[name])
            med = float(np.median(t))
            out.append(
                f"| {name} | {efs[name]} | {med:.2f} ({t.min():.2f}-{t.max():.2f}) | {med / ref_t:.2f} | {rec[name]:.4f} |"
            )
        return out + [""]

    default_ef = index.ef_for(k)
    log(f"same ef = {default_ef}")
    for fn in runs.values():
        fn(default_ef)  # warm caches and pools
    same = {name: default_ef for name in runs}
    times, rec = timed(same, args.repeats)
    lines += table(f"Same ef ({default_ef}, ReferenceIndex's default for k = {k})", same, times, rec)
    same_ratio = float(np.median(times["ReferenceIndex.query"]) / np.median(times["faiss IndexHNSWFlat"]))

    log("ef sweep")
    libs = ("ReferenceIndex.query", "faiss IndexHNSWFlat", "hnswlib knn_query")
    sweep = {name: {} for name in libs}
    for ef in SWEEP:
        for name in libs:
            sweep[name][ef] = recall(runs[name](ef), truth)
    lines += ["## Recall@10 by ef (one run each)", "", "| ef | " + " | ".join(libs) + " |", "|---:|" + "---:|" * len(libs)]
    for ef in SWEEP:
        lines.append(f"| {ef} | " + " | ".join(f"{sweep[name][ef]:.4f}" for name in libs) + " |")
    lines.append("")
    best = {name: next((ef for ef in SWEEP if sweep[name][ef] >= TARGET_RECALL), SWEEP[-1]) for name in libs}
    equal = {name: best[library[name]] for name in runs}
    log(f"equal recall: {equal}")
    times, rec = timed(equal, args.repeats)
    lines += table(f"Equal recall (smallest ef of the sweep with recall@10 >= {TARGET_RECALL})", equal, times, rec)
    equal_ratio = float(np.median(times["ReferenceIndex.query"]) / np.median(times["faiss IndexHNSWFlat"]))
    fair = float(np.median(times["pickaxe graph search, caller's order"]) / np.median(times["faiss IndexHNSWFlat"]))

    busy = CpuShare.since(start)
    so = hnswlib.__file__
    try:
        from importlib.metadata import version

        hnswlib_version = version("hnswlib")
    except Exception:  # a private build on sys.path has no installed metadata
        hnswlib_version = "?"
    try:
        asm = subprocess.run(["objdump", "-d", so], capture_output=True, text=True, timeout=120).stdout
        wide = "uses AVX/AVX-512 registers (a -march=native build)" if ("%ymm" in asm or "%zmm" in asm) else "SSE only (portable build)"
    except (OSError, subprocess.SubprocessError):
        wide = "instruction set not checked (no objdump)"
    info = px.build_info()
    lines += [
        f"- ReferenceIndex / faiss: {same_ratio:.2f}x at the same ef, {equal_ratio:.2f}x at equal recall "
        f"(target <= 1.2x at recall@10 >= {TARGET_RECALL}); pickaxe's graph search alone, both in the "
        f"caller's order, {fair:.2f}x at equal recall",
        f"- builds ({build_threads} threads, wall): ReferenceIndex (hnswlib + reading its bytes back) "
        f"{t_px_build:.1f} s, faiss {t_f_build:.1f} s",
        f"- searches: one thread each; pickaxe SIMD level {info['simd']} (detected {info['simd_detected']})",
        f"- hnswlib {hnswlib_version} (installed metadata) from {so}: {wide}",
        f"- faiss {faiss.__version__} (SIMD: {faiss.get_compile_options().strip()})",
        f"- command: python benches/bench_graph_search.py {' '.join(sys.argv[1:])}",
    ] + machine_lines(busy)
    text = "\n".join(lines)
    print(text)
    if args.markdown_out:
        with open(args.markdown_out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()

"""px.build_info(), SIMD dispatch and thread-count determinism."""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import pickaxe as px
import reference as R

LEVELS = ("avx512", "avx2", "portable")


def cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def expected_level() -> str:
    flags = cpu_flags()
    if {"avx512f", "avx512bw", "avx512dq", "avx512vl"} <= flags:
        return "avx512"
    if {"avx2", "fma"} <= flags:
        return "avx2"
    return "portable"


def test_build_info_keys_and_values():
    info = px.build_info()
    assert isinstance(info, dict)
    assert {"version", "simd", "threads"} <= set(info), info
    assert info["version"] == px.__version__
    assert isinstance(info["version"], str) and info["version"].count(".") >= 2
    assert info["version"] == importlib.metadata.version("pickaxe")
    assert info["simd"] in LEVELS
    assert isinstance(info["threads"], int) and not isinstance(info["threads"], bool)
    assert info["threads"] >= 1


def test_build_info_returns_a_fresh_dict():
    a = px.build_info()
    a["simd"] = "bogus"
    assert px.build_info()["simd"] in LEVELS


@pytest.mark.skipif(not os.path.exists("/proc/cpuinfo"), reason="needs /proc/cpuinfo")
def test_dispatcher_picks_best_level_for_this_cpu():
    if os.environ.get("PICKAXE_SIMD"):
        pytest.skip("PICKAXE_SIMD is set: dispatch is overridden")
    assert px.build_info()["simd"] == expected_level(), sorted(
        f for f in cpu_flags() if f.startswith(("avx", "fma")))


FORCED_SCRIPT = textwrap.dedent(r'''
    import json, sys
    sys.path.insert(0, sys.argv[1])
    import numpy as np
    import pickaxe as px
    import reference as R
    rng = np.random.default_rng(7)
    failures = []
    RTOL = {np.float32: 1e-5, np.float64: 1e-10}
    K = {np.float32: 1e-6, np.float64: 1e-12}
    for dtype in (np.float32, np.float64):
        for c in (1, 2, 3, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 64, 100, 1000):
            p = R.random_probs(rng, (37, c), dtype)
            x = R.random_logits(rng, (37, c), dtype)
            e = rng.normal(size=(37, c)).astype(dtype)
            cases = [("entropy", dict(confidences=p), 0.0), ("least_confidence", dict(confidences=p), 0.0),
                     ("margin", dict(confidences=p), 1.0), ("ratio", dict(confidences=p), 0.0),
                     ("entropy", dict(logits=x), 0.0), ("least_confidence", dict(logits=x), 1.0),
                     ("margin", dict(logits=x), 1.0), ("ratio", dict(logits=x), 0.0),
                     ("energy", dict(logits=x), 30.0 + np.log(c)), ("max_logit", dict(logits=x), 0.0),
                     ("activation", dict(embeddings=e), 0.0), ("activation", dict(embeddings=e, ord=1), 0.0)]
            if c in (2, 3, 7, 8, 9, 17, 100):
                for m in (1, 2, 5):
                    q = R.random_probs(rng, (21, m, c), dtype)
                    cases += [(n, dict(query_by_committee=q), 1 + np.log(c)) for n in
                              ("vote_entropy", "consensus_entropy", "kl_disagreement", "mutual_information",
                               "variation_ratio")]
                    cases += [("variance", dict(mc_dropout=q), 1.0)]
            for name, kw, scale in cases:
                got = getattr(px.scores, name)(**kw)
                exp = R.score(name, **kw)
                try:
                    assert got.dtype == dtype
                    R.assert_close(got, exp, RTOL[dtype], K[dtype] * scale, what=f"{name} C={c} {np.dtype(dtype).name}")
                except AssertionError as err:
                    failures.append(str(err)[:400])
    s = R.random_probs(rng, (1000,), np.float64).ravel()
    s[::7] = np.nan
    if not np.array_equal(px.select.top_k(s, 100), R.top_k(s, 100)):
        failures.append("top_k differs from the stable sort")
    print(json.dumps({"simd": px.build_info()["simd"], "failures": failures}))
''')


def _available_levels():
    order = list(LEVELS)
    best = expected_level()
    return order[order.index(best):]


@pytest.mark.parametrize("level", LEVELS)
def test_forced_simd_level_matches_reference(level):
    """Run the kernels of every level this CPU can execute (PICKAXE_SIMD=<level>) against the
    reference, so the avx2 / portable paths are tested too on an AVX-512 machine."""
    if level not in _available_levels():
        pytest.skip(f"this CPU cannot run {level}")
    env = dict(os.environ, PICKAXE_SIMD=level)
    p = subprocess.run([sys.executable, "-c", FORCED_SCRIPT, os.path.dirname(__file__)],
                       capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["simd"] == level, f"PICKAXE_SIMD={level} but build_info()['simd'] == {out['simd']!r}"
    assert not out["failures"], "\n".join(out["failures"][:10])


# ---------------------------------------------------------------------------------------------
# threads
# ---------------------------------------------------------------------------------------------


def _big_inputs():
    rng = np.random.default_rng(123)
    return {
        "p32": R.random_probs(rng, (300_000, 16), np.float32),
        "x64": R.random_logits(rng, (300_000, 10), np.float64),
        "q32": R.random_probs(rng, (100_000, 5, 10), np.float32),
        "e64": rng.normal(size=(200_000, 12)),
        "s": np.round(rng.normal(size=2_000_000), 2),
    }


def _run_all(d):
    S = px.scores
    return {
        "entropy": S.entropy(confidences=d["p32"]),
        "margin": S.margin(confidences=d["p32"]),
        "entropy_logits": S.entropy(logits=d["x64"]),
        "energy": S.energy(logits=d["x64"]),
        "ratio": S.ratio(logits=d["x64"]),
        "mi": S.mutual_information(mc_dropout=d["q32"]),
        "kl": S.kl_disagreement(query_by_committee=d["q32"]),
        "vote": S.vote_entropy(query_by_committee=d["q32"]),
        "variance": S.variance(mc_dropout=d["q32"]),
        "act": S.activation(embeddings=d["e64"]),
        "top_k": px.select.top_k(d["s"], 50_000),
    }


def test_thread_count_is_settable_and_reported(restore_threads):
    px.set_num_threads(1)
    assert px.build_info()["threads"] == 1
    px.set_num_threads(2)
    assert px.build_info()["threads"] == 2


def test_one_and_two_threads_bit_identical(restore_threads):
    d = _big_inputs()
    px.set_num_threads(1)
    one = _run_all(d)
    px.set_num_threads(2)
    two = _run_all(d)
    for k in one:
        assert one[k].dtype == two[k].dtype, k
        # bit-identical, NaN included
        assert np.array_equal(one[k].view(np.uint8), two[k].view(np.uint8)), f"{k} differs between 1 and 2 threads"
    np.testing.assert_array_equal(one["top_k"], R.top_k(d["s"], 50_000))


def test_first_bad_row_same_with_one_and_two_threads(restore_threads):
    rng = np.random.default_rng(5)
    x = R.random_probs(rng, (400_000, 4))
    for r in (399_999, 250_001, 200_000, 123_457):
        x[r, 1] = np.nan
    msgs = []
    for t in (1, 2):
        px.set_num_threads(t)
        with pytest.raises(ValueError) as ei:
            px.scores.entropy(confidences=x)
        msgs.append(str(ei.value))
    assert msgs[0] == msgs[1]
    assert "confidences row 123457:" in msgs[0]

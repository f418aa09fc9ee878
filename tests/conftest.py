"""Shared fixtures for the pickaxe test suite (references and data helpers live in reference.py)."""

import os
import sys
import zlib

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))

try:  # hypothesis is only needed by test_properties.py
    from hypothesis import HealthCheck, settings

    settings.register_profile(
        "pickaxe",
        max_examples=150,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        print_blob=True,
    )
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "pickaxe"))
except ImportError:  # pragma: no cover
    pass


@pytest.fixture
def rng(request):
    """A generator seeded from the test id, so every test sees fixed but different data."""
    seed = zlib.crc32(request.node.nodeid.encode())  # stable across runs, unlike hash()
    return np.random.default_rng(seed)


@pytest.fixture
def restore_threads():
    """Restore pickaxe's thread count after a test that changes it."""
    import pickaxe as px

    before = px.build_info()["threads"]
    yield before
    px.set_num_threads(before)


@pytest.fixture
def level(request):
    """The kernels' SIMD level set to the test's parameter (``indirect=True``; values from
    ``reference.SUPPORTED_LEVELS``), the previous level restored after."""
    import pickaxe as px
    from pickaxe import _core

    before = px.build_info()["simd"]
    _core.set_simd_level(request.param)
    assert px.build_info()["simd"] == request.param
    yield request.param
    _core.set_simd_level(before)

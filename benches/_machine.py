"""The machine line every bench prints with its table: CPU model, cores, memory, OS, and
pickaxe's SIMD level and kernel threads (a table measured with AVX-512 says little about an
AVX2 machine, so each says which it used)."""

from __future__ import annotations

import os
import platform

MIB = 1 << 20


def cpu_model() -> str:
    """/proc/cpuinfo's model name (the CPU, not just the architecture), else what
    `platform` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware() -> str:
    """'<cpu>, N logical cores (U usable), M GiB RAM, <OS release>'."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            mem = f", {int(f.readline().split()[1]) / MIB:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    return f"{cpu_model()}, {os.cpu_count()} logical cores ({usable} usable){mem}, {platform.system()} {platform.release()}"


def simd() -> str:
    """pickaxe's SIMD level in use (and the CPU's best) and its kernel threads."""
    import pickaxe as px

    info = px.build_info()
    return f"pickaxe SIMD {info.get('simd')} (detected {info.get('simd_detected')}), {info.get('threads')} kernel threads"


def blas() -> str:
    """numpy's BLAS and the kernels it chose for this CPU (threadpoolctl, when installed):
    numpy's matrix products run OpenBLAS's AVX-512 kernels on an AVX-512 machine whatever
    `PICKAXE_SIMD` says, so a bench emulating an AVX2 machine also sets
    `OPENBLAS_CORETYPE=Haswell`."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "BLAS unknown (no threadpoolctl)"
    for info in threadpool_info():
        if info.get("user_api") == "blas":
            arch = info.get("architecture")
            return (f"BLAS {info.get('internal_api')} {info.get('version')}"
                    + (f" ({arch} kernels)" if arch else "") + f", {info.get('num_threads')} threads")
    return "BLAS not loaded"


def describe() -> str:
    """One line: the hardware, pickaxe's SIMD level and threads, numpy's BLAS."""
    return f"machine: {hardware()}; {simd()}; {blas()}"

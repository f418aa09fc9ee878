"""Output files written whole or not at all.

A selection is written to a temporary file in the target's own folder (so that the final
rename stays on one filesystem, where it is atomic), flushed to disk, and renamed over the
target. A failure at any point (a full disk, an interrupt, an error while writing) removes
the temporary file and leaves whatever was at the target before untouched.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from typing import IO, Any, Iterator, Optional

#: Suffixes a selection can be written to, by kind (json: Label Studio's task import).
SUFFIXES = {"parquet": ("parquet", "pq"), "csv": ("csv",), "json": ("json",)}
#: What the kinds are, for messages.
KINDS_TEXT = ".parquet or .csv, or .json for Label Studio tasks"


def output_kind(path: Any) -> Optional[str]:
    """``"parquet"``, ``"csv"`` or ``"json"`` by the path's suffix; None for any other."""
    suffix = os.fspath(path).lower().rsplit(".", 1)[-1] if "." in os.path.basename(os.fspath(path)) else ""
    for kind, names in SUFFIXES.items():
        if suffix in names:
            return kind
    return None


def check_output(path: Any, who: str) -> str:
    """`path` as a str, checked before any work: a known suffix, not a folder, and a
    folder that exists and can be written to. ValueError saying which does not hold."""
    path = os.fspath(path)
    if output_kind(path) is None:
        raise ValueError(f"{who} {path}: write {KINDS_TEXT}")
    if os.path.isdir(path):
        raise ValueError(f"{who} {path}: is a folder; give a file name ending in .parquet, .csv or .json")
    check_folder(path, who)
    return path


def check_folder(path: str, who: str) -> str:
    """The folder `path` would be written in, checked to exist and to be writable
    (ValueError otherwise)."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ValueError(f"{who} {path}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"{who} {path}: the folder {folder} is not writable")
    return folder


@contextlib.contextmanager
def atomic_output(path: Any, mode: str = "wb", **open_kw: Any) -> Iterator[IO[Any]]:
    """A file object to write `path`'s new content to; renamed over `path` when the
    block ends without an error, removed otherwise."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **open_kw) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _mode_for(path))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def _mode_for(path: str) -> int:
    """The permissions the file would have had: the old file's, or 0o666 less the umask
    (mkstemp creates 0o600)."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return 0o666 & ~_umask()


def _umask() -> int:
    """The process's umask, read without changing it where Linux tells it (os.umask
    can only be read by setting it, which races with other threads)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    umask = os.umask(0o022)
    os.umask(umask)
    return umask

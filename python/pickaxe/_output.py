"""Output files written whole or not at all.

A selection is written to a temporary file in the target's own folder (so that the final
rename stays on one filesystem, where it is atomic), flushed to disk, and renamed over the
target. A failure at any point (a full disk, an interrupt, an error while writing) removes
the temporary file and leaves whatever was at the target before untouched. `ParquetSink`
does the same for rows that arrive a batch at a time (`pickaxe.torch.predict`'s output).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
from typing import IO, Any, Iterator, Optional, Protocol

import numpy as np

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


class RowSink(Protocol):
    """Where rows go, a batch of columns at a time: `close` gives the result, `abort`
    undoes what was written."""

    def write(self, cols: dict[str, np.ndarray]) -> None: ...

    def close(self) -> Any: ...

    def abort(self) -> None: ...


class MemorySink:
    """Rows kept in memory; `close` gives one array per column."""

    def __init__(self) -> None:
        self.parts: dict[str, list[np.ndarray]] = {}

    def write(self, cols: dict[str, np.ndarray]) -> None:
        for k, v in cols.items():
            self.parts.setdefault(k, []).append(v)

    def close(self) -> dict[str, np.ndarray]:
        return {k: np.concatenate(v) for k, v in self.parts.items()}

    def abort(self) -> None:
        self.parts.clear()


class ParquetSink:
    """Rows to a Parquet file or folder, a row group at a time, under a temporary name
    renamed over ``out`` once complete (a folder when ``out`` is one or lacks the
    ``file_suffixes``). A row group is written once ``row_group_rows`` rows or
    ``row_group_bytes`` bytes wait, whichever comes first, so memory stays bounded; a
    folder starts a new ``part-NNNNN.parquet`` after ``file_rows`` rows. ``metadata``
    goes into the schema."""

    def __init__(self, who: str, out: Any, overwrite: bool, metadata: dict[bytes, bytes], *, row_group_rows: int,
                 row_group_bytes: int, file_rows: int, file_suffixes: tuple[str, ...]) -> None:
        path = os.fspath(out) if isinstance(out, (str, os.PathLike)) else None
        if path is None:
            raise TypeError(f"{who}: out must be a path (str or os.PathLike); got {type(out).__name__}")
        self.folder = os.path.isdir(path) or not path.lower().endswith(file_suffixes)
        if os.path.lexists(path) and not overwrite and not (os.path.isdir(path) and not os.listdir(path)):
            raise ValueError(f"{who}: out {path} exists; pass overwrite=True to replace it")
        parent = check_folder(path, f"{who}: out")
        self.path = path
        self.metadata = metadata
        self.row_group_rows, self.row_group_bytes, self.file_rows_max = row_group_rows, row_group_bytes, file_rows
        prefix = f".{os.path.basename(os.path.abspath(path))}."
        if self.folder:
            self.tmp = tempfile.mkdtemp(dir=parent, prefix=prefix, suffix=".tmp")
        else:
            fd, self.tmp = tempfile.mkstemp(dir=parent, prefix=prefix, suffix=".tmp")
            os.close(fd)
        self.waiting: dict[str, list[np.ndarray]] = {}
        self.waiting_rows = 0
        self.waiting_bytes = 0
        self.writer: Any = None
        self.schema: Any = None
        self.file_rows = 0
        self.files = 0

    def write(self, cols: dict[str, np.ndarray]) -> None:
        for k, v in cols.items():
            self.waiting.setdefault(k, []).append(v)
        self.waiting_rows += len(cols["id"])
        self.waiting_bytes += sum(v.nbytes for v in cols.values())
        if self.waiting_rows >= self.row_group_rows or self.waiting_bytes >= self.row_group_bytes:
            self._flush()

    def _flush(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        from .pools.arrow import numpy_to_arrow

        if not self.waiting_rows:
            return
        cols = {k: np.concatenate(v) for k, v in self.waiting.items()}
        self.waiting, self.waiting_rows, self.waiting_bytes = {}, 0, 0
        arrays = {}
        for k, v in cols.items():
            if k == "id":
                arrays[k] = pa.array(v if v.dtype != object else v.tolist(),
                                     type=None if self.schema is None else self.schema.field("id").type)
            else:
                arrays[k] = numpy_to_arrow(v)
        table = pa.table(arrays)
        if self.schema is None:
            self.schema = table.schema.with_metadata(self.metadata)
        table = table.replace_schema_metadata(self.metadata)
        if self.writer is not None and self.folder and self.file_rows >= self.file_rows_max:
            self.writer.close()
            self.writer = None
        if self.writer is None:
            target = os.path.join(self.tmp, f"part-{self.files:05d}.parquet") if self.folder else self.tmp
            self.writer = pq.ParquetWriter(target, self.schema)
            self.files += 1
            self.file_rows = 0
        self.writer.write_table(table, row_group_size=table.num_rows)
        self.file_rows += table.num_rows

    def close(self) -> str:
        self._flush()
        self.writer.close()
        self.writer = None
        if not self.folder:
            os.chmod(self.tmp, _mode_for(self.path))
            os.replace(self.tmp, self.path)
            return self.path
        old = None
        if os.path.lexists(self.path):  # an empty folder, or overwrite=True: moved aside, then removed
            old = self.tmp + ".old"
            os.replace(self.path, old)
        os.replace(self.tmp, self.path)
        if old is not None:
            if os.path.isdir(old) and not os.path.islink(old):
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.remove(old)
        return self.path

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            if self.writer is not None:
                self.writer.close()
        with contextlib.suppress(OSError):
            if os.path.isdir(self.tmp):
                shutil.rmtree(self.tmp)
            else:
                os.remove(self.tmp)

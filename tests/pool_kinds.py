"""One Arrow table as each kind of pool the tests mine: the table itself, pandas, polars,
one Parquet file, or a folder of Parquet files."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import pyarrow.parquet as pq


def table_as(
    kind: str, table: Any, path: Path, *, row_group_size: int,
    parts: Sequence[tuple[str, int, int | None, int | None]] = (),
) -> Any:
    """``table`` as ``kind`` ("arrow", "pandas", "polars", "parquet" or "folder"). The
    file is ``path`` + ".parquet" in row groups of ``row_group_size`` rows; the folder is
    ``path`` holding ``parts``: (file name under it, first row, end row or None for the
    rest, row group size or None for pyarrow's)."""
    if kind == "arrow":
        return table
    if kind == "pandas":
        return table.to_pandas()
    if kind == "polars":
        import polars as pl

        return pl.from_arrow(table)
    if kind == "parquet":
        file = path.with_name(path.name + ".parquet")
        pq.write_table(table, file, row_group_size=row_group_size)
        return str(file)
    if kind == "folder":
        for name, start, stop, group in parts:
            (path / name).parent.mkdir(parents=True, exist_ok=True)
            rows = table.slice(start) if stop is None else table.slice(start, stop - start)
            pq.write_table(rows, path / name, **({"row_group_size": group} if group else {}))
        return path
    raise AssertionError(kind)

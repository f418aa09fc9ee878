"""Row ids: a pool's ``id`` column, kept exact and checked.

The rule (docs/pools.md): an ``id`` column names the rows, so every row has one and no
two rows share one.

- Nulls (Arrow nulls, None, NaN) raise ValueError naming the column and the first rows
  holding them: a null would otherwise turn an integer column into float64 and make
  large ids inexact (2**60 + 1 and 2**60 + 3 both become 1152921504606846976.0).
- Integer ids stay integers of their type, strings stay strings.
- Duplicates raise ValueError naming the id and two rows holding it. A pool held in
  memory (a mapping, a DataFrame, an Arrow table) is checked whole when it is opened; a
  streamed pool (Parquet) is checked batch by batch as it is read, and every selection is
  checked whole, so no selection ever holds one id twice.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from .arrow import RowLabel, as_arrow, plain_label, primitive_values

#: How many offending rows an error lists.
LISTED = 5


def id_array(who: str, data: Any, label: RowLabel = plain_label) -> np.ndarray:
    """The ``id`` column (an Arrow array or chunked array, or a 1-D numpy array) as a
    numpy array of its own type; nulls raise ValueError naming the first rows."""
    if isinstance(data, np.ndarray):
        _check_no_nulls(who, _numpy_nulls(data), label)
        return data
    import pyarrow as pa

    if isinstance(data, pa.ChunkedArray):
        # one array first: ChunkedArray.to_numpy goes through pandas when it is installed
        data = pa.concat_arrays(data.chunks) if data.num_chunks else pa.array([], type=data.type)
    if data.null_count:
        _check_no_nulls(who, data.is_null().to_numpy(zero_copy_only=False), label)
    if pa.types.is_list(data.type) or pa.types.is_struct(data.type) or pa.types.is_fixed_size_list(data.type):
        raise ValueError(f"{who}: the id column holds {data.type} values; an id is one number or string per row")
    return np.asarray(primitive_values(data))


def _numpy_nulls(a: np.ndarray) -> Optional[np.ndarray]:
    if a.dtype.kind in "fc":
        return np.isnan(a)
    if a.dtype.kind == "M" or a.dtype.kind == "m":
        return np.isnat(a)
    if a.dtype == object:
        return np.fromiter((v is None or (isinstance(v, float) and v != v) for v in a), dtype=bool, count=len(a))
    return None


def _check_no_nulls(who: str, nulls: Optional[np.ndarray], label: RowLabel) -> None:
    if nulls is None or not nulls.any():
        return
    where = np.flatnonzero(nulls)
    listed = ", ".join(label(int(p)) for p in where[:LISTED])
    more = f" and {len(where) - LISTED} more" if len(where) > LISTED else ""
    raise ValueError(
        f"{who}: the id column has no value at {listed}{more}; every row needs an id "
        "(drop the id column to name rows by their row numbers)"
    )


def check_unique(who: str, ids: np.ndarray, label: RowLabel = plain_label) -> None:
    """ValueError naming an id that two rows share (and those rows), if any does."""
    n = len(ids)
    if n < 2 or _distinct(ids) == n:
        return
    first, second, value, count = _first_duplicate(ids)
    more = f" ({count} ids are repeated)" if count > 1 else ""
    raise ValueError(
        f"{who}: the id column has duplicates: id {_show(value)} is at {label(first)} and "
        f"{label(second)}{more}; ids name rows and must be unique"
    )


def _distinct(ids: np.ndarray) -> int:
    """How many distinct values. Numbers: Arrow's hash count over the array's own buffer
    (no sort, no copy); strings and objects: a set."""
    if ids.dtype.kind in "iuf" and ids.dtype.isnative:
        if ids.dtype.kind in "iu" and bool(np.all(ids[1:] > ids[:-1])):
            return len(ids)  # increasing, as ids written in order are: one compare a row
        import pyarrow.compute as pc

        return int(pc.count_distinct(as_arrow(ids), mode="all").as_py())
    if ids.dtype.kind in "US":
        return int(np.unique(ids).size)
    try:
        return len(set(ids.tolist()))
    except TypeError:  # unhashable values (lists): never valid ids, but say duplicates plainly
        return len({repr(v) for v in ids.tolist()})


def _first_duplicate(ids: np.ndarray) -> tuple[int, int, Any, int]:
    """(first row, second row, value, how many values repeat) of the earliest repeat."""
    seen: dict[Any, int] = {}
    found: Optional[tuple[int, int, Any]] = None
    repeated: set[Any] = set()
    for i, v in enumerate(ids.tolist()):
        j = seen.setdefault(v, i)
        if j != i:
            repeated.add(v)
            if found is None:
                found = (j, i, v)
    assert found is not None
    return found[0], found[1], found[2], len(repeated)


def _show(v: Any) -> str:
    return repr(v.item() if isinstance(v, np.generic) else v)

"""Arrow columns to numpy arrays, without a per-row Python loop.

Every function here imports pyarrow itself: ``import pickaxe`` never loads it.

A field column (api.md's ``confidence``, ``logits``, ...) converts strictly:

- a primitive numeric column becomes (n,) as stored (float32 stays float32);
- ``fixed_size_list<float>[D]`` becomes (n, D): the child's values buffer reshaped, zero
  copy when the column is one chunk without nulls;
- ``list<float>`` / ``large_list<float>`` becomes (n, D) when every row has the same length
  D, which is checked on the offsets array (vectorised); the child's values are sliced
  from the first offset (a sliced list array's values start before its first row);
- nested lists (any mix of fixed and variable sizes) become (n, M, C), each level checked
  the same way.

Nulls (at any level), ragged lists and non-numeric values raise ValueError naming the
column, the first bad row and what is wrong. Metadata columns convert leniently: numbers
and strings through ``to_numpy``, anything else (lists included) as an object array of
per-row values.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import numpy as np

#: Labels a position in the converted array for error messages ("row 12 (id 'a')").
RowLabel = Callable[[int], str]


def plain_label(pos: int) -> str:
    """A row named by its position alone."""
    return f"row {pos}"


def schema_text(schema: Any) -> str:
    """An Arrow schema as "name type, ..." for messages."""
    return ", ".join(f"{n} {t}" for n, t in zip(schema.names, schema.types))


def is_list_type(t: Any) -> bool:
    import pyarrow as pa

    return bool(
        pa.types.is_list(t)
        or pa.types.is_large_list(t)
        or pa.types.is_fixed_size_list(t)
        or is_list_view(t)
    )


def is_list_view(t: Any) -> bool:
    import pyarrow as pa

    f = getattr(pa.types, "is_list_view", None)
    g = getattr(pa.types, "is_large_list_view", None)
    return bool((f is not None and f(t)) or (g is not None and g(t)))


def _is_number_type(t: Any) -> bool:
    import pyarrow as pa

    return bool(
        pa.types.is_integer(t)
        or pa.types.is_floating(t)
        or pa.types.is_boolean(t)
        or pa.types.is_decimal(t)
    )


def type_dims(t: Any) -> list[Optional[int]]:
    """The trailing dimensions an Arrow type gives a column: [] for a primitive, [D] for
    a fixed-size list, [None] for a variable list (width known only from the data),
    [M, C] for nested lists, and so on."""
    import pyarrow as pa

    if pa.types.is_dictionary(t):
        t = t.value_type
    dims: list[Optional[int]] = []
    while is_list_type(t):
        dims.append(t.list_size if pa.types.is_fixed_size_list(t) else None)
        t = t.value_type
    return dims


def leaf_type(t: Any) -> Any:
    while is_list_type(t):
        t = t.value_type
    return t


def first_invalid(arr: Any) -> int:
    """The position of the first null of an Arrow array that has one."""
    valid = arr.is_valid().to_numpy(zero_copy_only=False)
    return int(np.flatnonzero(~valid)[0])


class ConversionError(ValueError):
    """A field column that is not a rectangular array of numbers."""


def field_to_numpy(name: str, data: Any, label: RowLabel = plain_label) -> np.ndarray:
    """A field column (pa.Array or pa.ChunkedArray) as a numpy array of shape (n, *dims),
    numbers as stored. Raises ConversionError (a ValueError) naming the column, the row
    (through `label`, given the row's position in `data`) and the fault."""
    import pyarrow as pa

    if isinstance(data, pa.ChunkedArray):
        if data.num_chunks == 1:
            return field_to_numpy(name, data.chunk(0), label)
        parts = []
        base = 0
        for chunk in data.chunks:
            b = base
            parts.append(field_to_numpy(name, chunk, lambda p, b=b: label(p + b)))
            base += len(chunk)
        if not parts:
            return _empty_for_type(name, data.type)
        return np.concatenate(parts)
    return array_to_numpy(name, data, label)


def _empty_for_type(name: str, t: Any) -> np.ndarray:
    import pyarrow as pa

    return array_to_numpy(name, pa.array([], type=t), plain_label)


def array_to_numpy(name: str, arr: Any, label: RowLabel) -> np.ndarray:
    import pyarrow as pa

    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    n = len(arr)
    dims: list[int] = []
    group = 1  # elements of `cur` per row
    cur = arr
    while is_list_type(cur.type):
        if is_list_view(cur.type):
            cur = cur.cast(pa.large_list(cur.type.value_type))
        if cur.null_count:
            bad = first_invalid(cur) // group
            what = "is null" if not dims else f"holds a null list at depth {len(dims) + 1}"
            raise ConversionError(f"column {name!r} {label(bad)} {what}: a field has a value in every row")
        m = len(cur)
        if pa.types.is_fixed_size_list(cur.type):
            d = int(cur.type.list_size)
            child = cur.values.slice(cur.offset * d, m * d)
        else:
            offsets = primitive_values(cur.offsets)
            lengths = np.diff(offsets)
            if m == 0:
                d = 0
            else:
                d = int(lengths[0])
                bad_at = np.flatnonzero(lengths != d)
                if bad_at.size:
                    i = int(bad_at[0])
                    depth = "" if not dims else f" at depth {len(dims) + 1}"
                    raise ConversionError(
                        f"column {name!r} {label(i // group)}: ragged lists{depth}: a list "
                        f"of {int(lengths[i])} values where {label(0)} has {d}; a vector "
                        "field needs the same length in every row"
                    )
            start = int(offsets[0]) if offsets.size else 0
            child = cur.values.slice(start, m * d)
        dims.append(d)
        group *= d
        cur = child
    t = cur.type
    if not _is_number_type(t):
        raise ConversionError(
            f"column {name!r} holds {t} values, not numbers: a field is numeric "
            "(vectors as list columns of numbers)"
        )
    if cur.null_count:
        pos = first_invalid(cur)
        bad = pos // group if group else 0
        where = "" if not dims else " inside its vector"
        raise ConversionError(f"column {name!r} {label(bad)} has a null value{where}: a field has a value in every row")
    if pa.types.is_decimal(t):
        cur = cur.cast(pa.float64())
    values = primitive_values(cur)
    return values.reshape((n, *dims))


def as_arrow(x: np.ndarray) -> Any:
    """A 1-D numpy array of numbers or booleans as an Arrow array (numbers without a
    copy), without pyarrow's ``pa.array``, which imports pandas to ask whether `x` is a
    Series."""
    import pyarrow as pa

    x = np.asarray(x)
    if x.ndim != 1:
        raise ValueError(f"as_arrow: a 1-D array is needed; got shape {x.shape}")
    if x.dtype == np.bool_:
        bits = np.packbits(x, bitorder="little")
        return pa.Array.from_buffers(pa.bool_(), len(x), [None, pa.py_buffer(bits)])
    if x.dtype.kind in "iuf" and x.dtype.isnative:
        x = np.ascontiguousarray(x)
        return pa.Array.from_buffers(pa.from_numpy_dtype(x.dtype), len(x), [None, pa.py_buffer(x)])
    return pa.array(x)


def primitive_values(arr: Any) -> np.ndarray:
    """The values of an Arrow array of integers or floats without nulls, read in place
    from its values buffer (read-only). pyarrow's own ``to_numpy`` imports pandas (about
    1 s and 100 MB the first time) even to read in place; other types go through it."""
    import pyarrow as pa

    t = arr.type
    if (pa.types.is_integer(t) or pa.types.is_floating(t)) and not arr.null_count:
        dtype = np.dtype(t.to_pandas_dtype())
        return np.frombuffer(arr.buffers()[1], dtype=dtype, count=len(arr), offset=arr.offset * dtype.itemsize)
    return arr.to_numpy(zero_copy_only=False)


def metadata_to_numpy(data: Any) -> np.ndarray:
    """A metadata (or id) column as a 1-D numpy array: numbers and strings through
    ``to_numpy`` (nulls become NaN or None), lists and structs as object arrays of
    per-row values."""
    import pyarrow as pa

    if isinstance(data, pa.ChunkedArray):
        # one array: ChunkedArray.to_numpy goes through pandas
        data = pa.concat_arrays(data.chunks) if data.num_chunks else pa.array([], type=data.type)
    t = data.type
    if (pa.types.is_integer(t) or pa.types.is_floating(t)) and not data.null_count:
        return primitive_values(data)
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        out = np.empty(len(data), dtype=object)  # as to_numpy gives them, without pandas
        out[:] = data.to_pylist()
        return out
    return np.asarray(data.to_numpy(zero_copy_only=False))


def row_dims(data: Any) -> Optional[list[int]]:
    """The trailing dimensions of a list column read from its first non-null row (the
    width of a variable list is not in its type); None when no row has a value."""
    import pyarrow as pa

    chunks = data.chunks if isinstance(data, pa.ChunkedArray) else [data]
    for chunk in chunks:
        if len(chunk) == 0:
            continue
        valid = chunk.is_valid().to_numpy(zero_copy_only=False)
        hits = np.flatnonzero(valid)
        if hits.size == 0:
            continue
        row = chunk.slice(int(hits[0]), 1)
        try:
            return list(array_to_numpy("?", row, plain_label).shape[1:])
        except ValueError:
            return None
    return None


def numpy_to_arrow(arr: np.ndarray) -> Any:
    """A numpy column as an Arrow array for DuckDB: 1-D as is (zero copy for numbers),
    (n, D) and (n, M, C) as fixed-size lists over the flat values. None when Arrow cannot
    hold it (the column is then not visible to a query)."""
    import pyarrow as pa

    try:
        if arr.ndim == 0 or 0 in arr.shape[1:]:
            return None
        out = _flat_to_arrow(np.ascontiguousarray(arr).reshape(-1))
        for d in reversed(arr.shape[1:]):
            out = pa.FixedSizeListArray.from_arrays(out, int(d))
        return out
    except (pa.ArrowException, TypeError, ValueError):
        return None


def _flat_to_arrow(x: np.ndarray) -> Any:
    """A 1-D numpy array as an Arrow array; numbers, booleans and strings without
    ``pa.array``, which imports pandas (about 1 s the first time)."""
    import pyarrow as pa

    if x.dtype.kind in "iufb" and x.dtype.isnative:
        return as_arrow(x)
    if x.dtype.kind == "U" or (x.dtype == object and all(v is None or type(v) is str for v in x.tolist())):
        return strings_to_arrow(x.tolist())
    return pa.array(x)


def strings_to_arrow(values: list) -> Any:
    """A list of str (None for a null) as an Arrow string array, built from its buffers
    (see `_flat_to_arrow`)."""
    import pyarrow as pa

    n = len(values)
    valid = np.fromiter((v is not None for v in values), dtype=bool, count=n)
    data = [v.encode("utf-8") if v is not None else b"" for v in values]
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.fromiter(map(len, data), dtype=np.int64, count=n), out=offsets[1:])
    large = offsets[-1] >= 2**31
    kind = pa.large_string() if large else pa.string()
    nulls = int(n - valid.sum())
    bitmap = pa.py_buffer(np.packbits(valid, bitorder="little")) if nulls else None
    buffers = [bitmap, pa.py_buffer(offsets if large else offsets.astype(np.int32)), pa.py_buffer(b"".join(data))]
    return pa.Array.from_buffers(kind, n, buffers, null_count=nulls)


def as_fixed_size(arr: Any) -> Any:
    """A variable list array whose rows all have the same length and no nulls, as the
    equivalent fixed-size list array over the same values (zero copy), nested levels
    too; anything else unchanged. Arrow filters and takes fixed-size lists several times
    faster."""
    import pyarrow as pa

    t = arr.type
    if not is_list_type(t) or is_list_view(t) or arr.null_count:
        return arr
    m = len(arr)
    if pa.types.is_fixed_size_list(t):
        d = int(t.list_size)
        child = arr.values.slice(arr.offset * d, m * d)
    else:
        offsets = primitive_values(arr.offsets)
        if m == 0:
            return arr
        lengths = np.diff(offsets)
        d = int(lengths[0])
        if d == 0 or np.any(lengths != d):
            return arr
        child = arr.values.slice(int(offsets[0]), m * d)
    inner = as_fixed_size(child)
    if inner is child and pa.types.is_fixed_size_list(t):
        return arr
    try:
        return pa.FixedSizeListArray.from_arrays(inner, d)
    except (pa.ArrowException, ValueError, TypeError):
        return arr

"""Every check of an argument, with one rule (numpy's and scikit-learn's): the wrong kind
of value is a `TypeError`, a value of the right kind outside its domain a `ValueError`.
Each message names the function (`who`), the argument and what it accepts.

Bad *data* (a row, a pixel, a box) is not an argument: it raises
`pickaxe.errors.InvalidInputError`.
"""

from __future__ import annotations

import numbers
from typing import Any, Optional, Sequence


def integer(who: str, name: str, value: Any, minimum: Optional[int] = None) -> int:
    """`value` as an int (bool is not one): TypeError for another kind, ValueError below
    `minimum`."""
    want = "an int" if minimum is None else f"an int >= {minimum}"
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{who}: {name} must be {want}; got {type(value).__name__} {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{who}: {name} must be {want}; got {value!r}")
    return int(value)


def real(who: str, name: str, value: Any) -> float:
    """`value` as a float (bool is not one): TypeError for another kind."""
    import numpy as np

    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{who}: {name} must be a real number; got {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{who}: {name} must be a real number; got {value!r}") from None


def choice(who: str, name: str, value: Any, options: Sequence[str]) -> str:
    """`value`, one of the strings `options`: TypeError for a non-string, ValueError for a
    string that is not one of them."""
    listed = ", ".join(repr(o) for o in options)
    if not isinstance(value, str):
        raise TypeError(f"{who}: {name} must be one of {listed}; got {type(value).__name__} {value!r}")
    if value not in options:
        raise ValueError(f"{who}: {name} must be one of {listed}; got {value!r}")
    return value


def query(who: str, value: Any) -> Optional[str]:
    """A pool query: None, or a string (blank means none). Its content is checked when
    the pool it runs on is opened (`pickaxe.pools.query_check`)."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"{who}: query must be one SQL condition (str); got {type(value).__name__}")
    return value if value.strip() else None


def class_weights(who: str, value: Any) -> Optional[list[float]]:
    """Per-class weights of an entropy: None, or a 1-D sequence of real numbers (C,)."""
    if value is None:
        return None
    import numpy as np

    try:
        w = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{who}: class_weights must be real numbers ({e})") from None
    if w.ndim != 1:
        raise ValueError(f"{who}: class_weights must be 1-D (C,); got shape {w.shape}")
    return w.tolist()

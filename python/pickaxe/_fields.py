"""Field routing and array conversion shared by every public function.

The Python layer only checks what costs nothing to check (which field was given, its
number of dimensions, its dtype) and converts exotic dtypes; the values themselves are
validated by the Rust kernels in the same pass that scores them.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, TypeVar

import numpy as np

from . import _checks as checks

#: Shape of each field, as api.md writes it.
FIELD_SHAPES: dict[str, str] = {
    "confidence": "(N,)",
    "confidences": "(N, C)",
    "logits": "(N, C)",
    "query_by_committee": "(N, M, C)",
    "mc_dropout": "(N, T, C)",
    "embeddings": "(N, D)",
    # segmentation: per row an image's class scores, (C, H, W) (or (H, W, C), class_axis=-1)
    "pixel_confidences": "(N, C, H, W)",
    "pixel_logits": "(N, C, H, W)",
    # detection: per row a list of box structs (see pickaxe.pools.boxes)
    "boxes": "(N, *) box structs",
    "member_boxes": "(N, M, *) box structs",
}
#: What a box struct holds (`boxes`, `member_boxes`; * is any number of boxes).
BOX_STRUCT = "{bbox: [x1, y1, x2, y2], confidences or logits: [C], objectness: float (optional)}"
FIELD_NDIM: dict[str, int] = {
    name: len([d for d in shape.split(")")[0].strip("(").split(",") if d.strip()])
    for name, shape in FIELD_SHAPES.items()
}

NAN_POLICIES = ("raise", "omit")

F = TypeVar("F", bound=Callable[..., Any])


def field_listing(fields: tuple[str, ...]) -> str:
    return ", ".join(f"{f} {FIELD_SHAPES[f]}" for f in fields)


def takes_fields() -> Callable[[F], F]:
    """Decorate a score function of `pickaxe.scores`: its fields and options are its
    catalogue entry's (`pickaxe._catalog.SCORES`), checked against its signature when the
    module loads, so the two cannot drift apart.

    A call that does not bind (a positional array, an unknown keyword such as a field the
    function does not accept) raises TypeError listing the accepted fields and shapes.
    """

    def wrap(func: F) -> F:
        from ._catalog import score

        spec = score(func.__name__)
        fields = spec.fields
        sig = inspect.signature(func)
        declared = (*spec.fields, *spec.options, "nan_policy")
        if sorted(sig.parameters) != sorted(declared):
            raise AssertionError(
                f"scores.{func.__name__} takes {list(sig.parameters)}; its catalogue entry "
                f"declares {list(declared)}"
            )

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                sig.bind(*args, **kwargs)
            except TypeError as e:
                raise TypeError(
                    f"{func.__name__}() takes exactly one of the fields "
                    f"{field_listing(fields)}, as keywords ({e})"
                ) from None
            return func(*args, **kwargs)

        wrapper.__pickaxe_fields__ = fields  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return wrap


def given_field(func: str, given: dict[str, Any], listing: Callable[[tuple[str, ...]], str] = field_listing) -> str:
    """The name of the one field given (not None) among `given`; TypeError for none or
    several, listing the fields with their shapes."""
    present = [name for name, value in given.items() if value is not None]
    if len(present) != 1:
        got = "none" if not present else f"{len(present)}: {', '.join(present)}"
        raise TypeError(f"{func}() takes exactly one of the fields {listing(tuple(given))}; got {got}")
    return present[0]


def pick_field(func: str, given: dict[str, Any]) -> tuple[str, np.ndarray]:
    """The one field given (not None) among `given`, as a float32/float64 array."""
    name = given_field(func, given)
    return name, as_float_array(func, name, given[name], FIELD_NDIM[name], FIELD_SHAPES[name])


def as_float_array(func: str, name: str, value: Any, ndim: int, shape: str) -> np.ndarray:
    """`value` as an ndarray of float32 or float64, read in place when it already is one.

    float32 and float64 arrays pass through untouched (any strides); other real dtypes and
    nested lists become float64.
    """
    if isinstance(value, np.ndarray):
        arr = value
    else:
        try:
            arr = np.asarray(value)
        except (ValueError, TypeError) as e:
            raise ValueError(f"{func}(): {name} is not a rectangular array: {e}") from None
    dt = arr.dtype
    if dt.kind == "f" and dt.itemsize in (4, 8):
        if not dt.isnative:
            arr = arr.astype(dt.newbyteorder("="))
    elif dt.kind in "biuf":
        arr = arr.astype(np.float64)
    else:
        raise TypeError(f"{func}(): {name} has dtype {dt}; expected real numbers")
    if arr.ndim != ndim:
        raise ValueError(
            f"{func}(): {name} must be {ndim}-D with shape {shape}; got shape {arr.shape}"
        )
    return arr


def real_parameter(func: str, name: str, value: Any) -> float:
    """A real-number parameter (temperature, ord) as a float, or TypeError naming it."""
    return checks.real(f"{func}()", name, value)

def check_nan_policy(func: str, nan_policy: Any) -> str:
    return checks.choice(func if func.endswith(")") else f"{func}()", "nan_policy", nan_policy, NAN_POLICIES)

"""From a PyTorch model to a pool: logits, Monte Carlo dropout passes, a committee's
probabilities and a layer's embeddings, in one pass over the data.

``pip install "pickaxe[torch]"``. ``import pickaxe`` never imports torch, and neither does
``import pickaxe.torch``: torch loads when `predict` is first called.
"""

from __future__ import annotations

import difflib
import json
import os
import sys
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence, Union

import numpy as np

from . import _checks as checks
from ._output import MemorySink, ParquetSink, RowSink

if TYPE_CHECKING:  # for type checkers only: torch is imported when predict runs
    import torch as _torch

__all__ = ["predict"]

WHO = "pickaxe.torch.predict()"

#: A Parquet row group is written once this many bytes of rows are waiting (or
#: ROW_GROUP_ROWS rows, whichever comes first): memory stays bounded whatever the number
#: of rows, while row groups stay large enough to read fast.
ROW_GROUP_BYTES = 64 << 20
ROW_GROUP_ROWS = 65_536
#: When ``out`` is a folder, a new ``part-NNNNN.parquet`` file is started once the current
#: one holds this many rows.
FILE_ROWS = 1 << 20
#: Suffixes that make ``out`` a single Parquet file rather than a folder.
FILE_SUFFIXES = (".parquet", ".pq")


def predict(
    model: "_torch.nn.Module",
    data: Iterable[Any],
    *,
    passes: int = 1,
    dropout: bool = False,
    committee: Optional[Sequence["_torch.nn.Module"]] = None,
    layer: Optional[str] = None,
    ids: Union[None, str, int, Sequence[Any], np.ndarray] = None,
    out: Union[None, str, "os.PathLike[str]"] = None,
    probabilities: bool = True,
    device: Union[None, str, "_torch.device"] = None,
    logits_of: Optional[Callable[[Any], Any]] = None,
    embeddings_of: Optional[Callable[[Any], Any]] = None,
    overwrite: bool = False,
) -> Union[dict[str, np.ndarray], str]:
    """Run `model` over `data` under ``torch.inference_mode()`` and return its pool.

    Every batch is run once in eval mode (``logits``, and the ``layer``'s output as
    ``embeddings``), then ``passes`` times for ``mc_dropout`` when ``dropout=True`` or
    ``passes > 1``, then once by each committee member. The pool's columns:

    ====================== ============ ==================================================
    column                 shape        holds
    ====================== ============ ==================================================
    ``id``                 (N,)         from ``ids``; row positions 0..N-1 by default
    ``logits``             (N, C)       the model's output in eval mode
    ``mc_dropout``         (N, T, C)    T = ``passes`` passes with only the dropout
                                        modules in training mode; softmax probabilities
                                        (``probabilities=False``: logits, which miners
                                        read with ``logits=True``)
    ``query_by_committee`` (N, M, C)    each of the M members' softmax probabilities
                                        in eval mode (logits with ``probabilities=False``)
    ``embeddings``         (N, D)       the ``layer``'s output, pooled to a vector
    ====================== ============ ==================================================

    **Dropout passes.** Only the dropout modules (``nn.Dropout``, ``Dropout1d/2d/3d``,
    ``AlphaDropout``, ``FeatureAlphaDropout`` and their subclasses) are put in training
    mode; every other module, BatchNorm included, stays in eval mode, so running
    statistics are neither used nor updated. The p̂ of pass t is softmax(f_t(x)); BALD's
    mutual information is then H(p̄) − mean_t H(p_t) (Gal, Islam & Ghahramani, "Deep
    Bayesian Active Learning with Image Data", ICML 2017; Gal & Ghahramani, "Dropout as a
    Bayesian Approximation", ICML 2016). Dropout draws from torch's global generator:
    call ``torch.manual_seed`` first for repeatable passes. Functional dropout
    (``F.dropout(x, training=self.training)``) follows its own module's mode and is not
    switched on. With ``dropout=False`` and ``passes > 1`` the T passes run in eval mode
    (equal to ``logits`` unless the model samples in eval mode). Each module's mode is
    restored afterwards, also when an error stops the run, and the forward hook is removed.

    **Binary models** (C = 1, p = sigmoid(x)): the probabilities of ``mc_dropout`` and
    ``query_by_committee`` are [1 − p, p] (C = 2); ``logits`` and ``probabilities=False``
    keep the one logit, which the scores read as binary.

    **Embeddings.** A forward hook on the module named ``layer`` (a path of
    ``model.named_modules()``, e.g. ``"features.3"`` or ``"encoder.layer.11"``) captures its
    output in the eval pass; a tuple or list output gives its first element. A (B, D)
    output is kept; a (B, C, H, W) or (B, C, D, H, W) convolutional map (channels first, as
    torch's convolutions write them) is pooled by the global average over its spatial
    dimensions, z_c = mean_{h,w} a_{c,h,w} (as a ResNet's head pools). A 3-D output is
    ambiguous — (B, C, L) channels first, or (B, L, D) tokens — and raises ValueError:
    give ``embeddings_of``, a function of the layer's output returning (B, D), e.g.
    ``lambda h: h[0].mean(dim=1)`` for a transformer block's tokens.

    **Batches.** ``data`` is a ``DataLoader`` or any iterable of batches. A tensor batch is
    the model's input; of a tuple or list batch (``(x, y)``) the first element is; a mapping
    batch is passed as keyword arguments (Hugging Face style), without the ``ids`` key.
    Tensors are moved to ``device`` (default: the device of each model's first parameter).
    ``logits_of`` takes what the model returns and gives the (B, C) logits, e.g.
    ``lambda out: out.logits``.

    **Ids.** ``ids`` is None (row positions), a key of each mapping batch (``"id"``), the
    index of an element of each tuple batch (``2`` for ``(x, y, id)``), or a sequence of N
    ids in the data's order.

    **Memory.** Without ``out`` the pool is returned as a dict of numpy arrays. With ``out``
    (a path ending in ``.parquet`` or ``.pq``: one file; any other path: a folder of
    ``part-NNNNN.parquet`` files) rows are written in row groups as they are computed —
    memory is bounded by a batch and one row group (64 MiB), whatever N — with vectors as
    fixed-size list columns, and the path is returned; pass it to a miner as a pool. The
    output is written whole or not at all (a temporary name, renamed when complete); an
    existing ``out`` is refused unless ``overwrite=True`` (an empty folder is used). On a
    terminal a progress bar counts the rows.

    Parameters
    ----------
    model : torch.nn.Module
        Returns (B, C) logits (or what ``logits_of`` turns into them).
    data : iterable of batches
    passes : int >= 1
        T, the number of dropout passes.
    dropout : bool
        Dropout modules in training mode for the passes; ValueError when the model has
        none with p > 0.
    committee : sequence of torch.nn.Module, optional
        M members with the model's number of classes.
    layer : str, optional
        The module whose output becomes ``embeddings``.
    ids, out, probabilities, device, logits_of, embeddings_of, overwrite
        As above.

    Returns
    -------
    dict of str to numpy.ndarray, or str
        The pool, or the path written. float32 unless the model computes in float64.

    Raises
    ------
    TypeError, ValueError
        Before any batch runs: ``passes < 1``, ``dropout=True`` without dropout modules, an
        unknown ``layer`` (with the nearest names), an existing ``out``, arguments of the
        wrong kind. At the first batch, before anything is written: an output that is not
        (B, C), committee members whose class counts differ from the model's, a layer
        output that cannot be pooled.

    Examples
    --------
    >>> import torch, pickaxe as px
    >>> from pickaxe.torch import predict
    >>> _ = torch.manual_seed(0)
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(),
    ...                           torch.nn.Dropout(0.5), torch.nn.Linear(8, 3))
    >>> batches = torch.randn(10, 4).split(4)
    >>> pool = predict(net, batches, passes=5, dropout=True, layer="1")
    >>> {k: v.shape for k, v in pool.items()}
    {'id': (10,), 'logits': (10, 3), 'embeddings': (10, 8), 'mc_dropout': (10, 5, 3)}
    >>> len(px.MCDropoutMiner(3).mine(pool))
    3
    """
    torch = _import_torch()
    _check_module(torch, "model", model)
    members = _check_committee(torch, committee)
    passes = checks.integer(WHO, "passes", passes, 1)
    dropout = _flag("dropout", dropout)
    probabilities = _flag("probabilities", probabilities)
    overwrite = _flag("overwrite", overwrite)
    for name, fn in (("logits_of", logits_of), ("embeddings_of", embeddings_of)):
        if fn is not None and not callable(fn):
            raise TypeError(f"{WHO}: {name} must be a function of the output; got {type(fn).__name__}")
    if embeddings_of is not None and layer is None:
        raise ValueError(f"{WHO}: embeddings_of needs layer= (the module whose output it pools)")
    drop = _dropout_modules(torch, model)
    if dropout and not drop:
        raise ValueError(
            f"{WHO}: dropout=True, but {type(model).__name__} has no dropout module with p > 0 "
            "(nn.Dropout, Dropout1d/2d/3d, AlphaDropout, FeatureAlphaDropout): its passes would "
            "all be equal. Add dropout to the model, or use committee= for another source of "
            "disagreement"
        )
    hooked = _find_layer(model, layer)
    ids = _check_ids(ids)
    _check_data(torch, data)
    devices = [_device(torch, m, device) for m in (model, *members)]
    stacked = dropout or passes > 1
    sink: RowSink = MemorySink()
    if out is not None:
        description = _describe(passes, dropout, probabilities, layer, len(members))
        sink = ParquetSink(WHO, out, overwrite, {b"pickaxe.predict": json.dumps(description).encode()},
                           row_group_rows=ROW_GROUP_ROWS, row_group_bytes=ROW_GROUP_BYTES, file_rows=FILE_ROWS,
                           file_suffixes=FILE_SUFFIXES)

    modes = {m: m.training for net in (model, *members) for m in net.modules()}
    capture = _Capture()
    handle = hooked.register_forward_hook(capture) if hooked is not None else None
    shape = _Shape()
    try:
        model.eval()
        for m in members:
            m.eval()
        with torch.inference_mode(), _progress(_total_rows(data)) as bar:
            start = 0
            for number, batch in enumerate(data):
                inputs, batch_ids = _split(batch, ids, number)
                capture.start()
                raw = _call(model, _to(torch, inputs, devices[0]))
                outputs = capture.stop()
                logits = _logits(torch, raw, logits_of, "model", number)
                n = shape.rows(logits, number)
                cols: dict[str, np.ndarray] = {"id": _ids(ids, batch_ids, start, n, number)}
                cols["logits"] = _numpy(logits)
                if hooked is not None:
                    cols["embeddings"] = _numpy(_embeddings(torch, outputs, embeddings_of, layer, n, number))
                if stacked:
                    cols["mc_dropout"] = _passes(torch, model, inputs, devices[0], drop if dropout else [],
                                                 passes, logits_of, probabilities, shape, number)
                if members:
                    stack = []
                    for j, (member, dev) in enumerate(zip(members, devices[1:])):
                        x = _logits(torch, _call(member, _to(torch, inputs, dev)), logits_of, f"committee[{j}]", number)
                        shape.same(x, f"committee[{j}]", number)
                        stack.append(_probabilities(torch, x) if probabilities else x)
                    cols["query_by_committee"] = _numpy(torch.stack(stack, dim=1))
                sink.write(cols)
                bar.update(n)
                start += n
        if start == 0:
            raise ValueError(f"{WHO}: data gave no rows")
        if isinstance(ids, np.ndarray) and start != len(ids):
            raise ValueError(f"{WHO}: ids holds {len(ids)} values but the data gave {start} rows")
        result = sink.close()
    except BaseException:
        sink.abort()
        raise
    finally:
        if handle is not None:
            handle.remove()
        for m, flag in modes.items():
            m.training = flag  # each module's own mode, not model.train(flag) over all of them
    return result


# --- checks made before any batch runs -------------------------------------------------


def _import_torch() -> Any:
    try:
        import torch
    except ImportError:
        raise ImportError(f'{WHO} needs PyTorch: pip install "pickaxe[torch]"') from None
    return torch


def _flag(name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{WHO}: {name} must be True or False; got {type(value).__name__} {value!r}")
    return bool(value)


def _check_module(torch: Any, name: str, value: Any) -> None:
    if not isinstance(value, torch.nn.Module):
        raise TypeError(f"{WHO}: {name} must be a torch.nn.Module; got {type(value).__name__}")


def _check_committee(torch: Any, committee: Any) -> list:
    if committee is None:
        return []
    if isinstance(committee, torch.nn.Module) or not isinstance(committee, Iterable):
        raise TypeError(f"{WHO}: committee must be a list of torch.nn.Module; got {type(committee).__name__}")
    members = list(committee)
    if not members:
        raise ValueError(f"{WHO}: committee is empty; give its members, or leave committee=None")
    for j, m in enumerate(members):
        _check_module(torch, f"committee[{j}]", m)
    return members


def _dropout_modules(torch: Any, model: Any) -> list:
    """The model's dropout modules that drop something (p > 0)."""
    nn = torch.nn
    kinds = tuple(getattr(nn, k) for k in ("Dropout", "Dropout1d", "Dropout2d", "Dropout3d",
                                           "AlphaDropout", "FeatureAlphaDropout") if hasattr(nn, k))
    return [m for m in model.modules() if isinstance(m, kinds) and float(getattr(m, "p", 0.0)) > 0.0]


def _find_layer(model: Any, layer: Any) -> Any:
    if layer is None:
        return None
    if not isinstance(layer, str):
        raise TypeError(f"{WHO}: layer must be a module's name (str), as model.named_modules() gives it; "
                        f"got {type(layer).__name__}")
    modules = dict(model.named_modules())
    if layer in modules and layer != "":
        return modules[layer]
    names = [n for n in modules if n]
    near = difflib.get_close_matches(layer, names, n=5, cutoff=0.5)
    hint = ("nearest: " + ", ".join(repr(n) for n in near)) if near else \
        ("its modules: " + ", ".join(repr(n) for n in names[:20]) + (", ..." if len(names) > 20 else ""))
    raise ValueError(f"{WHO}: layer {layer!r} is not a module of {type(model).__name__}; {hint}")


def _check_ids(ids: Any) -> Any:
    if ids is None or isinstance(ids, str):
        return ids
    if isinstance(ids, bool):
        raise TypeError(f"{WHO}: ids must be None, a batch key (str), a tuple index (int) or a sequence of ids")
    if isinstance(ids, (int, np.integer)):
        return checks.integer(WHO, "ids", int(ids), 0)
    if not hasattr(ids, "__len__"):
        raise TypeError(f"{WHO}: ids must be None, a batch key (str), a tuple index (int) or a sequence of "
                        f"ids; got {type(ids).__name__}")
    arr = np.asarray(ids.cpu() if hasattr(ids, "cpu") else ids)
    if arr.ndim != 1:
        raise ValueError(f"{WHO}: a sequence of ids must be 1-D (N,); got shape {arr.shape}")
    return arr


def _check_data(torch: Any, data: Any) -> None:
    if isinstance(data, (torch.Tensor, np.ndarray)):
        raise TypeError(
            f"{WHO}: data must be a DataLoader or an iterable of batches; got one {type(data).__name__} "
            "(iterating it would give single rows): pass x.split(256) or "
            "DataLoader(TensorDataset(x), batch_size=256)"
        )
    if isinstance(data, (str, bytes, Mapping)) or not isinstance(data, Iterable):
        raise TypeError(f"{WHO}: data must be a DataLoader or an iterable of batches; got {type(data).__name__}")


def _device(torch: Any, model: Any, device: Any) -> Any:
    if device is not None:
        return torch.device(device)
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


def _describe(passes: int, dropout: bool, probabilities: bool, layer: Optional[str], members: int) -> dict:
    """How the pool was made, kept in the Parquet file's metadata."""
    return {"passes": passes, "dropout": dropout, "probabilities": probabilities,
            "layer": layer, "committee": members}


# --- one batch -------------------------------------------------------------------------


def _split(batch: Any, ids: Any, number: int) -> tuple[Any, Any]:
    """The model's input of a batch, and the batch's own ids (None if taken elsewhere)."""
    if isinstance(ids, str):
        if not isinstance(batch, Mapping):
            raise TypeError(f"{WHO}: ids={ids!r} names a key of each batch, but batch {number} is a "
                            f"{type(batch).__name__}; for tuple batches give the index of the ids element")
        if ids not in batch:
            raise ValueError(f"{WHO}: batch {number} has no key {ids!r}; its keys: {', '.join(map(repr, batch))}")
        return {k: v for k, v in batch.items() if k != ids}, batch[ids]
    if isinstance(ids, int):
        if not isinstance(batch, (tuple, list)):
            raise TypeError(f"{WHO}: ids={ids} is the index of the ids in each tuple batch, but batch "
                            f"{number} is a {type(batch).__name__}")
        if not 1 <= ids < len(batch):
            raise ValueError(f"{WHO}: ids={ids}: batch {number} has {len(batch)} elements, and element 0 is "
                             "the model's input")
        return batch, batch[ids]
    return batch, None


def _call(model: Any, inputs: Any) -> Any:
    if isinstance(inputs, Mapping):
        return model(**inputs)
    if isinstance(inputs, (tuple, list)):
        return model(inputs[0])
    return model(inputs)


def _to(torch: Any, x: Any, device: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return x.to(device)
    if isinstance(x, Mapping):
        return {k: _to(torch, v, device) for k, v in x.items()}
    if isinstance(x, list):
        return [_to(torch, v, device) for v in x]
    if isinstance(x, tuple):
        return tuple(_to(torch, v, device) for v in x)
    return x


def _logits(torch: Any, raw: Any, logits_of: Any, who: str, number: int) -> Any:
    x = logits_of(raw) if logits_of is not None else raw
    if not isinstance(x, torch.Tensor):
        hint = ("it has .logits: pass logits_of=lambda out: out.logits" if hasattr(x, "logits")
                else "pass logits_of=, a function of the output returning the (B, C) logits tensor")
        raise TypeError(f"{WHO}: {who} returned {type(x).__name__} for batch {number}, not a tensor; {hint}")
    if x.ndim != 2 or x.shape[1] < 1:
        raise ValueError(f"{WHO}: {who}'s output must be (B, C) logits; batch {number} gave shape "
                         f"{tuple(x.shape)} (pass logits_of= to reshape or pick the logits)")
    if not x.is_floating_point():
        raise TypeError(f"{WHO}: {who}'s logits must be floating point; batch {number} gave {x.dtype}")
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


class _Shape:
    """The pool's number of classes, fixed by the first batch, and each batch's rows."""

    def __init__(self) -> None:
        self.classes: Optional[int] = None
        self.n = 0

    def rows(self, logits: Any, number: int) -> int:
        c = int(logits.shape[1])
        if self.classes is None:
            self.classes = c
        elif c != self.classes:
            raise ValueError(f"{WHO}: batch {number} has {c} classes; the batches before had {self.classes}")
        self.n = int(logits.shape[0])
        return self.n

    def same(self, x: Any, who: str, number: int) -> None:
        if tuple(x.shape) != (self.n, self.classes):
            raise ValueError(f"{WHO}: {who} gave shape {tuple(x.shape)} for batch {number}; the model gave "
                             f"({self.n}, {self.classes}): every committee member needs the model's "
                             f"{self.classes} classes")


def _passes(torch: Any, model: Any, inputs: Any, device: Any, drop: list, passes: int,
            logits_of: Any, probabilities: bool, shape: _Shape, number: int) -> np.ndarray:
    x = _to(torch, inputs, device)
    out = []
    for m in drop:
        m.train()
    try:
        for t in range(passes):
            z = _logits(torch, _call(model, x), logits_of, f"pass {t}", number)
            shape.same(z, f"pass {t}", number)
            out.append(_probabilities(torch, z) if probabilities else z)
    finally:
        for m in drop:
            m.eval()  # the next batch's logits and embeddings are computed in eval mode
    return _numpy(torch.stack(out, dim=1))


def _probabilities(torch: Any, z: Any) -> Any:
    if z.shape[-1] == 1:  # binary: p = sigmoid(x), probabilities [1 - p, p]
        p = torch.sigmoid(z)
        return torch.cat([1 - p, p], dim=-1)
    return torch.softmax(z, dim=-1)


class _Capture:
    """A forward hook keeping a layer's outputs while the eval pass runs (not the dropout
    passes nor the committee, which may share the module)."""

    def __init__(self) -> None:
        self.on = False
        self.outputs: list = []

    def __call__(self, module: Any, args: Any, output: Any) -> None:
        if self.on:
            self.outputs.append(output)

    def start(self) -> None:
        self.outputs = []
        self.on = True

    def stop(self) -> list:
        self.on = False
        return self.outputs


def _embeddings(torch: Any, outputs: list, embeddings_of: Any, layer: Optional[str], n: int, number: int) -> Any:
    if len(outputs) != 1:
        ran = "did not run" if not outputs else f"ran {len(outputs)} times"
        raise ValueError(f"{WHO}: layer {layer!r} {ran} in the forward pass of batch {number}; "
                         "hook a module that runs once per forward pass")
    h = outputs[0]
    if embeddings_of is not None:
        z = embeddings_of(h)
    else:
        z = h[0] if isinstance(h, (tuple, list)) and h else h
    if not isinstance(z, torch.Tensor):
        raise TypeError(f"{WHO}: layer {layer!r} gave {type(z).__name__} for batch {number}, not a tensor; "
                        "pass embeddings_of=, a function of its output returning (B, D)")
    if embeddings_of is None and z.ndim in (4, 5):
        z = z.mean(dim=tuple(range(2, z.ndim)))  # global average over the spatial dimensions
    if z.ndim != 2 or z.shape[0] != n:
        if embeddings_of is None and z.ndim == 3:
            why = ("3-D: (B, C, L) channels first or (B, L, D) tokens cannot be told apart; pass "
                   "embeddings_of=lambda h: h.mean(dim=2) for a 1-D convolution's map, or "
                   "lambda h: h[0].mean(dim=1) (a tuple output) / h.mean(dim=1) for tokens")
        else:
            why = f"it must give ({n}, D) (batch {number} has {n} rows)"
        raise ValueError(f"{WHO}: layer {layer!r} gave shape {tuple(z.shape)} for batch {number}; {why}")
    if not z.is_floating_point():
        z = z.float()
    return z if z.dtype in (torch.float32, torch.float64) else z.float()


def _numpy(x: Any) -> np.ndarray:
    return x.detach().to("cpu").numpy()


def _ids(ids: Any, batch_ids: Any, start: int, n: int, number: int) -> np.ndarray:
    if ids is None:
        return np.arange(start, start + n, dtype=np.int64)
    if isinstance(ids, np.ndarray):
        if start + n > len(ids):
            raise ValueError(f"{WHO}: ids holds {len(ids)} values but the data has more rows "
                             f"(batch {number} ends at row {start + n})")
        return ids[start:start + n]
    v = batch_ids.detach().to("cpu").numpy() if hasattr(batch_ids, "detach") else np.asarray(batch_ids)
    if v.ndim != 1 or len(v) != n:
        raise ValueError(f"{WHO}: batch {number}'s ids have shape {v.shape}; its logits have {n} rows")
    return v


# --- progress --------------------------------------------------------------------------


def _total_rows(data: Any) -> Optional[int]:
    """The rows a DataLoader will give (for the progress bar); None when unknown."""
    try:
        n = len(data.sampler)
        size = data.batch_size
    except (AttributeError, TypeError, NotImplementedError):
        return None
    if size and getattr(data, "drop_last", False):
        return (n // size) * size
    return n


def _progress(total: Optional[int]) -> Any:
    """A tqdm bar of rows on stderr, as the pools show, when stderr is a terminal (a
    disabled bar, whose updates do nothing, otherwise)."""
    from tqdm import tqdm

    from .pools.source import _stderr_is_tty

    return tqdm(total=total, unit="rows", unit_scale=True, file=sys.stderr, dynamic_ncols=True, desc="predict",
                disable=not _stderr_is_tty())

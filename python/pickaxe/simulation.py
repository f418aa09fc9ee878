"""`simulate`: which miner helps this model, measured on the user's own labeled rows.

The protocol (LabelBench's, Zhang et al. 2023: frozen embeddings and a linear probe,
whose picks track the full model's): the labeled rows of a pool are split into a held-out
test set and a simulated pool whose labels are hidden. Each seed starts every strategy from
the same ``start`` random rows; each round fits the probe on the rows labeled so far, gives
the strategy the probe's predictions on the rest, reveals the labels of the ``batch`` rows
it picks and records the probe's held-out accuracy and macro-F1. The report
(`pickaxe.simulation_report.SimulationReport`) compares the learning curves, paired by seed.

scikit-learn and pandas load when `simulate` is called, never on ``import pickaxe``.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import math
import numbers
import sys
from typing import Any, Iterator, Mapping, Optional, Sequence, Union

import numpy as np

from . import _checks as checks
from .simulation_report import SimulationReport

__all__ = ["simulate", "SimulationReport", "PROBE_FIELDS", "COMMITTEE_MEMBERS"]

#: The fields a probe gives the strategies, besides the pool's own metadata columns.
PROBE_FIELDS = ("confidences", "logits", "query_by_committee", "embeddings")
#: Bootstrap members of the committee (``query_by_committee``), fitted when a strategy reads it.
COMMITTEE_MEMBERS = 5
#: Tries at drawing a start set that holds two classes before giving up.
START_DRAWS = 100

WHO = "simulate()"


def simulate(
    pool: Any,
    labels: str,
    strategies: Optional[Union[Sequence[Any], Mapping[str, Any]]] = None,
    batch: int = 20,
    rounds: int = 10,
    start: int = 20,
    seeds: int = 5,
    test_size: float = 0.3,
    model: Any = "logistic",
    *,
    progress: Optional[bool] = None,
) -> SimulationReport:
    """Replay labeling rounds on the labeled rows of `pool`, once per strategy and seed,
    and report which strategy's picks teach a linear probe fastest.

    Per seed ``s``: the labeled rows are split into a test set (``test_size`` of them,
    stratified by label when every class has two rows) and a simulated pool; ``start``
    random rows of that pool (the same for every strategy) are labeled. Each of ``rounds``
    rounds fits the probe on the labeled rows, derives the fields the strategies read
    from it on the rows not yet labeled, lets each strategy pick ``batch`` of them,
    reveals their labels, and records the probe's test accuracy and macro-F1 at
    ``start + r * batch`` labels (r = 0 .. rounds).

    Parameters
    ----------
    pool : mapping, DataFrame, pyarrow Table or Parquet path
        Holds ``embeddings`` (N, D) and the `labels` column. Rows whose label is null
        (None or NaN) are not used. Other non-field columns ride along to the strategies
        (for a ``query`` or a cluster column); the pool's own prediction fields are not
        used: the probe's replace them.
    labels : str
        The label column (any type numpy can sort: ints, strings).
    strategies : list or dict, optional
        Miners (their ``size`` is replaced by `batch`), `combine` results, or command-line
        names (``"margin"``, ``"coreset"``; built with their default options); a dict
        names them. Miners that take a ``reference`` (the labeled set, per the catalogue)
        get the labeled rows' embeddings each round, as does ``combine(...,
        diversity="coreset")``'s cover; a miner's ``seed`` is offset by the
        seed and round. Random (``"random"``) is always included. Default: every catalogued
        miner a probe can feed.
    batch, rounds, start : int
        Labels per round, rounds, labels before the first round.
    seeds : int
        Independent repetitions (split, start set, random choices): seeds 0 .. seeds-1.
    test_size : float
        Share of the labeled rows held out, in (0, 1).
    model : "logistic" or a scikit-learn classifier
        ``"logistic"``: multinomial ``LogisticRegression(max_iter=1000)`` warm-started
        between rounds. Otherwise any classifier with ``predict_proba`` (cloned per run;
        its ``random_state``, if None, set from the seed).
    progress : bool, optional
        A tqdm bar on stderr; default: when stderr is a terminal.

    Returns
    -------
    SimulationReport
        ``.table`` (one row per strategy), ``.rounds`` (every round of every seed),
        ``.recommendation``, ``.summary()``, ``.to_csv(dir)``, ``.plot(path)``.

    Raises
    ------
    ValueError
        Before any work: no `labels` or ``embeddings`` column, fewer than two classes,
        fewer labeled rows than ``start + rounds * batch`` plus the test set, an unknown
        strategy name, or a strategy whose fields a probe cannot give.

    Notes
    -----
    Fields given to the strategies: ``confidences`` = ``predict_proba`` (N, C),
    ``logits`` = ``decision_function`` ((N, 1) for two classes) or, without one,
    ln of the probabilities; ``query_by_committee`` (N, 5, C): the probabilities of 5
    probes fitted on class-stratified bootstrap samples of the labeled rows (only when a
    strategy reads it); ``embeddings``. C counts the classes labeled so far.

    Cost: per seed and strategy, ``rounds`` probe fits on at most
    ``start + rounds * batch`` rows and predictions on the simulated pool, plus the
    strategy itself; committee strategies fit 5 more probes a round.

    Examples
    --------
    >>> import numpy as np, pickaxe as px
    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 3, 400)
    >>> x = rng.normal(size=(400, 8)) + 2.0 * np.eye(8)[y]
    >>> report = px.simulate({"embeddings": x, "label": y}, "label", ["margin"],
    ...                      batch=10, rounds=3, seeds=2, progress=False)
    >>> sorted(report.table.strategy)
    ['margin', 'random']
    """
    sk = _sklearn()
    batch = checks.integer(WHO, "batch", batch, 1)
    rounds = checks.integer(WHO, "rounds", rounds, 1)
    start = checks.integer(WHO, "start", start, 2)
    seeds = checks.integer(WHO, "seeds", seeds, 1)
    test_size = checks.real(WHO, "test_size", test_size)
    if not 0.0 < test_size < 1.0:
        raise ValueError(f"{WHO}: test_size is the held-out share of the labeled rows, in (0, 1); got {test_size!r}")
    if not isinstance(labels, str):
        raise TypeError(f"{WHO}: labels must be the name of the label column (str); got {type(labels).__name__}")
    if progress is not None and not isinstance(progress, bool):
        raise TypeError(f"{WHO}: progress must be True, False or None; got {progress!r}")
    probe = _probe(model, sk)

    data = _read(pool, labels)
    plan = _plan(strategies, data, batch)
    n_test = math.ceil(test_size * len(data.y))
    need = start + rounds * batch
    if len(data.y) - n_test < need:
        raise ValueError(
            f"{WHO}: {len(data.y)} labeled rows; {n_test} are held out (test_size={test_size}), "
            f"which leaves {len(data.y) - n_test}, fewer than start + rounds * batch = "
            f"{start} + {rounds} * {batch} = {need}"
        )

    records: list[tuple] = []
    total = seeds * len(plan) * rounds
    with _bar(total, progress) as bar:
        for seed in range(seeds):
            train, test = _split(data.y, n_test, seed, sk)
            first = _start_rows(data.y, train, start, seed)
            for s_index, (name, strategy) in enumerate(plan):
                run = _Run(data, probe, sk, train, test, first, seed, s_index)
                records.append((seed, name, 0, len(run.labeled), *run.score()))
                for r in range(1, rounds + 1):
                    run.step(strategy, batch, r)
                    records.append((seed, name, r, len(run.labeled), *run.score()))
                    bar.update(1)
    return SimulationReport.from_records(
        records,
        strategies=[name for name, _ in plan],
        setting={
            "rows": len(data.y), "test_rows": n_test, "classes": len(data.classes), "batch": batch,
            "rounds": rounds, "start": start, "seeds": seeds, "model": probe.describe(),
        },
    )


# -- the data --------------------------------------------------------------------------


class _Data:
    """The labeled rows: embeddings (n, D), labels as class indices (n,), their classes,
    row numbers in the pool and the metadata columns that ride along."""

    def __init__(self, x: np.ndarray, y: np.ndarray, classes: np.ndarray, rows: np.ndarray,
                 meta: dict[str, np.ndarray]) -> None:
        self.x, self.y, self.classes, self.rows, self.meta = x, y, classes, rows, meta


def _read(pool: Any, labels: str) -> _Data:
    from ._fields import FIELD_SHAPES
    from .pools import open_pool

    source = open_pool(pool, who=WHO)
    for column, what in ((labels, "the label column"), ("embeddings", "the probe's input (N, D)")):
        if column not in source.column_names:
            raise ValueError(f"{WHO}: the pool has no column {column!r} ({what}); it has {source.describe()}")
    meta_names = [c for c in source.column_names if c not in FIELD_SHAPES and c not in ("id", labels)]
    read = source.read(["embeddings", labels, *meta_names])
    raw = read.columns[labels]
    if raw.ndim != 1:
        raise ValueError(f"{WHO}: the label column {labels!r} must hold one value per row; its shape is {raw.shape}")
    known = ~_nulls(raw)
    rows = np.flatnonzero(known)
    try:
        classes, y = np.unique(raw[rows], return_inverse=True)
    except TypeError as e:
        raise ValueError(f"{WHO}: the labels of {labels!r} cannot be compared ({e}); give one type") from None
    if len(classes) < 2:
        raise ValueError(
            f"{WHO}: the labeled rows of {labels!r} hold {len(classes)} class"
            f"{'' if len(classes) == 1 else 'es'} ({len(rows)} of {read.n_rows} rows labeled); a probe needs two"
        )
    x = np.asarray(read.columns["embeddings"])[rows]
    if x.ndim != 2:
        raise ValueError(f"{WHO}: embeddings must be (N, D); the pool's are {x.shape}")
    if not np.isfinite(x).all():
        bad = int(rows[np.flatnonzero(~np.isfinite(x).all(axis=1))[0]])
        raise ValueError(f"{WHO}: embeddings of row {bad} are not finite; the probe cannot fit them")
    meta = {m: read.columns[m][rows] for m in meta_names}
    return _Data(x, y.astype(np.int64).ravel(), classes, rows.astype(np.int64), meta)


def _nulls(a: np.ndarray) -> np.ndarray:
    if a.dtype.kind == "f":
        return np.isnan(a)
    if a.dtype.kind == "O":
        return np.array([v is None or (isinstance(v, float) and math.isnan(v)) for v in a], dtype=bool)
    return np.zeros(len(a), dtype=bool)


def _split(y: np.ndarray, n_test: int, seed: int, sk: Any) -> tuple[np.ndarray, np.ndarray]:
    """Train and test positions: stratified when every class has two rows and the test
    set can hold one of each."""
    counts = np.bincount(y)
    stratify = y if counts.min() >= 2 and n_test >= len(counts) and len(y) - n_test >= len(counts) else None
    rows = np.arange(len(y))
    train, test = sk.train_test_split(rows, test_size=n_test, random_state=seed, stratify=stratify)
    return np.sort(train), np.sort(test)


def _start_rows(y: np.ndarray, train: np.ndarray, start: int, seed: int) -> np.ndarray:
    """``start`` random rows of the simulated pool, redrawn until they hold two classes."""
    rng = np.random.default_rng([seed, 1])
    for _ in range(START_DRAWS):
        first = rng.choice(train, size=start, replace=False)
        if len(np.unique(y[first])) >= 2:
            return np.sort(first)
    raise ValueError(
        f"{WHO}: {START_DRAWS} random start sets of {start} rows each held one class; "
        "raise start (the probe needs two classes to fit)"
    )


# -- the strategies --------------------------------------------------------------------


class _Strategy:
    """How to build a strategy's miner each round: a template miner (copied), or a class
    and its options (built), with the labeled embeddings as ``reference`` when it takes one."""

    def __init__(self, name: str, template: Any = None, cls: Any = None) -> None:
        self.name = name
        self.template = template
        self.cls = cls if cls is not None else type(template)
        self.parts = [_Strategy(name, m) for m in template.miners] if hasattr(template, "miners") else []
        self.takes_reference = not self.parts and _takes_reference(self.cls)

    def leaves(self) -> list["_Strategy"]:
        return [leaf for p in self.parts for leaf in p.leaves()] if self.parts else [self]

    def field(self, provided: set[str]) -> Optional[str]:
        """The field its miner will read, or ValueError if a probe cannot give it one."""
        fields = getattr(self.template, "field", None)
        wanted = (fields,) if fields else tuple(self.cls.fields)
        for also in getattr(self.cls, "also_reads", ()):
            if also not in provided:
                raise ValueError(f"{WHO}: {self.name} needs {also}, which simulate cannot give")
        if not wanted:
            return None
        for f in wanted:
            if f in provided:
                return f
        raise ValueError(
            f"{WHO}: {self.name} reads {' or '.join(wanted)}; a linear probe gives "
            f"{', '.join(PROBE_FIELDS)} (and the pool's metadata columns)"
        )

    def build(self, batch: int, reference: np.ndarray, salt: int) -> Any:
        if self.parts:
            out = copy.copy(self.template)
            out.miners = [p.build(batch, reference, salt) for p in self.parts]
            if getattr(out, "diversity", None) == "coreset":
                from .miners.diversity import cover_reference

                # combine's k-center re-pick counts the labeled rows as covered
                out.metric, out.cover = cover_reference(f"{WHO} {self.name}", reference, out.metric)
        elif self.template is None:
            out = self.cls(batch, **({"reference": reference} if self.takes_reference else {}))
        elif self.takes_reference:
            out = _rebuild(self.template, batch, reference)
        else:
            out = copy.copy(self.template)
        out.size = batch
        if isinstance(getattr(out, "seed", None), numbers.Integral) and not isinstance(out.seed, bool):
            with contextlib.suppress(AttributeError):  # a read-only seed stays
                out.seed = int(out.seed) + salt  # new random choices each seed and round
        return out


def _takes_reference(cls: type) -> bool:
    """Whether the labeled set is this miner's reference: its catalogue entry lists a
    ``reference`` option, or (a miner outside the catalogue) its constructor requires one."""
    from ._catalog import MINERS

    for spec in MINERS:
        if spec.cls == cls.__name__:
            return "reference" in spec.options
    param = inspect.signature(cls).parameters.get("reference")
    return param is not None and param.default is inspect.Parameter.empty


def _rebuild(template: Any, batch: int, reference: np.ndarray) -> Any:
    """A miner like `template` (its constructor's arguments read back from its attributes
    of the same names) with a new reference."""
    kw: dict[str, Any] = {}
    for name, p in inspect.signature(type(template)).parameters.items():
        if name in ("size", "reference") or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if hasattr(template, name):
            kw[name] = getattr(template, name)
    return type(template)(batch, reference=reference, **kw)


def _plan(strategies: Any, data: _Data, batch: int) -> list[tuple[str, _Strategy]]:
    """The strategies by name, random first, each checked (fields, construction) before
    any work."""
    from ._catalog import MINERS
    from ._catalog import miner as catalog_miner

    import pickaxe as px

    provided = set(PROBE_FIELDS) | set(data.meta)
    default = strategies is None
    if default:
        strategies = [m.cli for m in MINERS]
    if isinstance(strategies, (str, px.Miner)):
        strategies = [strategies]
    items = list(strategies.items()) if isinstance(strategies, Mapping) else [(None, s) for s in strategies]
    plan: list[tuple[str, _Strategy]] = [("random", _Strategy("random", cls=px.RandomMiner))]
    names = {"random"}
    for given, s in items:
        if isinstance(s, str):
            try:
                spec = catalog_miner(s)
            except KeyError:
                known = ", ".join(m.cli for m in MINERS)
                raise ValueError(f"{WHO}: unknown strategy {s!r}; the miners are {known}") from None
            strategy = _Strategy(given or s, cls=getattr(px, spec.cls))
        elif isinstance(s, px.RandomMiner) and given is None:
            continue  # random is in already
        elif not isinstance(s, px.Miner):
            raise TypeError(f"{WHO}: a strategy is a pickaxe miner or a miner's name; got {type(s).__name__}")
        else:
            strategy = _Strategy(given or _name(s), template=s)
        if strategy.name in names:
            if given is None and strategy.template is None:
                continue  # a name given twice
            raise ValueError(f"{WHO}: two strategies are named {strategy.name!r}; give them in a dict to name them")
        try:
            for leaf in strategy.leaves():
                leaf.field(provided)
            strategy.build(batch, data.x[:20], 0)  # the options hold together
        except (TypeError, ValueError):
            if default:
                continue  # a miner a probe cannot feed, or one without defaults: not a default
            raise
        plan.append((strategy.name, strategy))
        names.add(strategy.name)
    return plan


def _name(miner: Any) -> str:
    if hasattr(miner, "miners"):
        return "+".join(_name(m) for m in miner.miners)
    return str(miner.name)


# -- the probe and one run -------------------------------------------------------------


class _Probe:
    """The classifier refitted each round: a fresh clone per run, warm-started while the
    classes it has seen stay the same."""

    def __init__(self, estimator: Any, sk: Any, label: str) -> None:
        self.estimator, self.sk, self.label = estimator, sk, label

    def describe(self) -> str:
        return self.label

    def new(self, seed: int) -> Any:
        est = self.sk.clone(self.estimator)
        params = est.get_params()
        if "random_state" in params and params["random_state"] is None:
            est.set_params(random_state=seed)
        return est


def _probe(model: Any, sk: Any) -> _Probe:
    if isinstance(model, str):
        checks.choice(WHO, "model", model, ("logistic",))
        return _Probe(sk.LogisticRegression(max_iter=1000, warm_start=True), sk,
                      "multinomial logistic regression (lbfgs, C=1, warm-started)")
    for method in ("fit", "predict_proba", "get_params"):
        if not callable(getattr(model, method, None)):
            raise TypeError(
                f"{WHO}: model must be \"logistic\" or a scikit-learn classifier with predict_proba; "
                f"{type(model).__name__} has no {method}()"
            )
    return _Probe(model, sk, type(model).__name__)


class _Run:
    """One strategy on one seed: the rows labeled so far (positions in the labeled data)
    and the probe fitted on them."""

    def __init__(self, data: _Data, probe: _Probe, sk: Any, train: np.ndarray, test: np.ndarray,
                 first: np.ndarray, seed: int, s_index: int) -> None:
        self.data, self.probe, self.sk = data, probe, sk
        self.test, self.seed, self.s_index = test, seed, s_index
        self.pool_mask = np.zeros(len(data.y), dtype=bool)
        self.pool_mask[train] = True
        self.labeled = first.copy()
        self.pool_mask[first] = False
        self.model: Any = None
        self.fit()

    def fit(self) -> None:
        x, y = self.data.x[self.labeled], self.data.y[self.labeled]
        seen = np.unique(y)
        if self.model is None or not np.array_equal(getattr(self.model, "classes_", None), seen):
            self.model = self.probe.new(self.seed)  # a new class: a warm start cannot carry over
        with _quiet_convergence(self.sk), self.sk.small_blas():
            self.model.fit(x, y)

    def score(self) -> tuple[float, float]:
        x, y = self.data.x[self.test], self.data.y[self.test]
        with self.sk.small_blas():
            pred = self.model.predict(x)
        f1 = self.sk.f1_score(y, pred, labels=np.arange(len(self.data.classes)), average="macro", zero_division=0)
        return float(np.mean(pred == y)), float(f1)

    def step(self, strategy: _Strategy, batch: int, round_: int) -> None:
        cand = np.flatnonzero(self.pool_mask)
        salt = 1_000_003 * (self.seed + 1) + round_
        miner = strategy.build(batch, self.data.x[self.labeled], salt)
        columns = self.fields(cand, strategy, round_)
        with _inner_bars_off():
            picked = np.asarray(miner.mine(columns).ids, dtype=np.int64)
        # ids are the rows' numbers in the pool; back to positions among the labeled rows
        picked = np.searchsorted(self.data.rows, picked)
        self.pool_mask[picked] = False
        self.labeled = np.concatenate([self.labeled, picked])
        self.fit()

    def fields(self, cand: np.ndarray, strategy: _Strategy, round_: int) -> dict[str, np.ndarray]:
        x = self.data.x[cand]
        provided = set(PROBE_FIELDS) | set(self.data.meta)
        with self.sk.small_blas():
            proba = np.asarray(self.model.predict_proba(x), dtype=np.float64)
            out = {"id": self.data.rows[cand], "embeddings": x, "confidences": proba, "logits": self.logits(x, proba)}
            if any(leaf.field(provided) == "query_by_committee" for leaf in strategy.leaves()):
                out["query_by_committee"] = self.committee(x, round_)
        out.update({m: v[cand] for m, v in self.data.meta.items()})
        return out

    def logits(self, x: np.ndarray, proba: np.ndarray) -> np.ndarray:
        if callable(getattr(self.model, "decision_function", None)):
            z = np.asarray(self.model.decision_function(x), dtype=np.float64)
            return z.reshape(len(x), -1)  # two classes: (N, 1), p = sigmoid(z)
        return np.log(np.maximum(proba, 1e-300))

    def committee(self, x: np.ndarray, round_: int) -> np.ndarray:
        """(N, M, C): members fitted on bootstrap samples drawn within each class (so each
        sees every class the probe has seen), their probabilities on the probe's classes."""
        rng = np.random.default_rng([self.seed, self.s_index, round_, 2])
        y = self.data.y[self.labeled]
        classes = self.model.classes_
        out = np.zeros((len(x), COMMITTEE_MEMBERS, len(classes)))
        for m in range(COMMITTEE_MEMBERS):
            sample = np.concatenate([rng.choice(np.flatnonzero(y == c), size=int((y == c).sum())) for c in classes])
            member = self.probe.new(self.seed * COMMITTEE_MEMBERS + m)
            with _quiet_convergence(self.sk):
                member.fit(self.data.x[self.labeled[sample]], y[sample])
            out[:, m, np.searchsorted(classes, member.classes_)] = member.predict_proba(x)
        return out


# -- plumbing --------------------------------------------------------------------------


class _SkLearn:
    """The scikit-learn names simulate uses, imported on first call."""

    def __init__(self) -> None:
        from sklearn.base import clone
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.linear_model import LogisticRegression
        from sklearn.metrics import f1_score
        from sklearn.model_selection import train_test_split

        self.clone, self.ConvergenceWarning = clone, ConvergenceWarning
        self.LogisticRegression, self.f1_score, self.train_test_split = LogisticRegression, f1_score, train_test_split

    @staticmethod
    def small_blas() -> Any:
        """One BLAS thread for the probe: its fits are small (a few thousand rows), and a
        BLAS thread pool on them spins more than it computes (a 60-row fit took 0.23 s
        with two busy cores' threads, 0.007 s with one)."""
        from . import _blas

        return _blas.one_thread()


def _sklearn() -> _SkLearn:
    try:
        return _SkLearn()
    except ImportError:
        raise ImportError("simulate() needs scikit-learn and pandas: pip install 'pickaxe[demo]'") from None


@contextlib.contextmanager
def _quiet_convergence(sk: _SkLearn) -> Iterator[None]:
    # a probe on few rows may stop at max_iter; the round's accuracy records the outcome
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sk.ConvergenceWarning)
        yield


class _NotATerminal:
    """stderr as the engine sees it while simulate mines: not a terminal, so each of the
    hundreds of small mining runs draws no bar of its own (simulate draws one)."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def isatty(self) -> bool:
        return False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


@contextlib.contextmanager
def _inner_bars_off() -> Iterator[None]:
    real = sys.stderr
    sys.stderr = _NotATerminal(real)
    try:
        yield
    finally:
        sys.stderr = real


@contextlib.contextmanager
def _bar(total: int, progress: Optional[bool]) -> Iterator[Any]:
    show = progress if progress is not None else bool(getattr(sys.stderr, "isatty", lambda: False)())
    if not show:
        yield _NoBar()
        return
    from tqdm import tqdm

    bar = tqdm(total=total, unit="round", file=sys.stderr, dynamic_ncols=True, desc="simulate")
    try:
        yield bar
    finally:
        bar.close()


class _NoBar:
    def update(self, n: int) -> None:
        pass

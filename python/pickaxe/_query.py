"""The ``query`` of a pool: one condition over its columns, checked, then evaluated on a
DuckDB connection that can reach nothing but the pool.

A query is never run as given. DuckDB's own parser (``json_serialize_sql``, which parses
and does not execute) turns ``SELECT <row> FROM <pool> WHERE (<query>)`` into a syntax
tree; the statement must be exactly that one SELECT, and every node of the condition must
be on an allowlist: column references naming the pool's columns, constants, comparisons,
AND / OR / NOT, IN, BETWEEN, LIKE, IS NULL, CASE, CAST, COLLATE, lambdas, and scalar
functions that compute on their arguments alone. Anything else (a second statement, a
subquery, a table function, an aggregate or window function, a parameter, a function that
reads DuckDB's session or settings or builds values of unbounded size) is a ValueError
that says what is allowed. The text that was checked is the text that runs.

The condition runs on a connection opened for it (`Session`): external access off (no
file, no network), extensions neither installed nor loaded, no spilling to disk, the
progress bar off, a memory limit and a thread count of its own, and its configuration
locked, so that not even a statement could change them. Data reach it only as Arrow
objects that pickaxe registers: the columns the condition names and the row number.

Limits (`set_query_limits`, or the environment variables ``PICKAXE_QUERY_MEMORY``,
``PICKAXE_QUERY_THREADS``, ``PICKAXE_QUERY_TIMEOUT``): DuckDB's memory limit, its threads,
and the seconds a query may run in one pass over a pool (no limit by default). A query
past its time limit is interrupted and raises TimeoutError; Ctrl-C interrupts it too.
See docs/query.md.
"""

from __future__ import annotations

import difflib
import json
import math
import numbers
import os
import queue
import threading
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable, Optional

import numpy as np

__all__ = ["set_query_limits"]

#: The row-number column pickaxe adds to the data it hands DuckDB (the same name as
#: ``pickaxe._pool.ROW``); never one of the pool's columns, never in a message.
ROW = "__pickaxe_row__"
#: The name the pool's data is registered under on the connection.
TABLE = "__pickaxe_pool__"

#: Longest query accepted, in characters (a long IN list of ids fits).
MAX_QUERY_CHARS = 100_000
#: Deepest nesting accepted: brackets before parsing, expression levels in the parser.
MAX_DEPTH = 100
#: Longest query quoted verbatim in an error.
_SHOWN_CHARS = 200

_PREFIX = f'SELECT "{ROW}" FROM "{TABLE}" WHERE (\n'
# the newline ends a trailing -- comment before the closing parenthesis
_SUFFIX = "\n)"

ENV_MEMORY = "PICKAXE_QUERY_MEMORY"
ENV_THREADS = "PICKAXE_QUERY_THREADS"
ENV_TIMEOUT = "PICKAXE_QUERY_TIMEOUT"
_DEFAULT_MEMORY = "1GB"
#: DuckDB's threads by default: one. The condition is a cheap per-row expression on data
#: pickaxe streams to it (a few milliseconds per million rows), and every DuckDB worker
#: thread is one more thread whose first touch of DuckDB's thread-local allocator state
#: glibc cannot fail cleanly under an address-space cap (it exits the process).
_DEFAULT_THREADS = 1

# -- what a condition may hold ----------------------------------------------------------

_NODE_CLASSES = {"CONSTANT", "COLUMN_REF", "COMPARISON", "CONJUNCTION", "BETWEEN", "CASE", "CAST", "COLLATE", "TYPE", "OPERATOR", "FUNCTION", "LAMBDA"}

_OPERATORS = {
    "OPERATOR_NOT",
    "OPERATOR_IS_NULL",
    "OPERATOR_IS_NOT_NULL",
    "COMPARE_IN",
    "COMPARE_NOT_IN",
    "OPERATOR_COALESCE",
    "OPERATOR_NULLIF",
    "OPERATOR_TRY",
    "ARRAY_EXTRACT",
    "ARRAY_SLICE",
    "STRUCT_EXTRACT",
    "ARRAY_CONSTRUCTOR",
}

_REJECTED_CLASSES = {
    "SUBQUERY": "a subquery (SELECT, EXISTS, IN (SELECT ...), = ANY (...)) is not allowed: a query reads only the pool's columns",
    "WINDOW": "a window function (OVER ...) is not allowed: a query is evaluated on each row alone",
    "STAR": "* and COLUMNS(...) are not allowed: name the columns",
    "PARAMETER": "parameters ($1, ?) are not allowed: write the values",
    "POSITIONAL_REFERENCE": "column positions (#1) are not allowed: name the columns",
    "DEFAULT": "DEFAULT is not allowed",
}

#: Column-like names DuckDB binds as the current date and time when no column has them.
_TIME_NAMES = {"current_date", "current_time", "current_timestamp", "localtime", "localtimestamp"}

#: Scalar functions a query may not call: they read DuckDB's session, settings, sequences
#: or variables, change its state, write its log, parse or plan other SQL, sleep, or
#: build a list or string whose size is an argument (memory DuckDB's limit does not
#: bound). Names starting with "__" (DuckDB internals) are refused too.
_DENIED = {
    "getenv", "current_setting", "getvariable", "current_connection_id", "current_database", "current_query",
    "current_query_id", "current_schema", "current_schemas", "current_transaction_id", "txid_current",
    "in_search_path", "version", "stats", "alias",
    "nextval", "currval", "setval", "setseed",
    "write_log", "parse_duckdb_log_message",
    "json_serialize_sql", "json_deserialize_sql", "json_serialize_plan", "json_execute_serialized_sql",
    "sleep_ms",
    "finalize", "combine", "to_aggregate_state",
    "range", "generate_series", "repeat", "list_resize", "array_resize", "lpad", "rpad", "bar",
}

#: DuckDB's built-in macros a query may call: each computes on its arguments only (the
#: others read the catalog, the session or the server: pg_*, current_*, has_*_privilege,
#: inet_*, ...).
_MACROS = {
    "if", "nullif", "split_part", "fdiv", "ago", "date_add", "days_in_month",
    "array_append", "array_prepend", "array_pop_back", "array_pop_front", "array_push_back",
    "array_push_front", "array_reverse", "array_to_string", "array_to_string_comma_default",
    "list_append", "list_prepend", "list_reverse", "list_any_value", "list_approx_count_distinct",
    "list_avg", "list_bit_and", "list_bit_or", "list_bit_xor", "list_bool_and", "list_bool_or",
    "list_count", "list_entropy", "list_first", "list_histogram", "list_kurtosis",
    "list_kurtosis_pop", "list_last", "list_mad", "list_max", "list_median", "list_min",
    "list_mode", "list_product", "list_sem", "list_skewness", "list_stddev_pop",
    "list_stddev_samp", "list_string_agg", "list_sum", "list_var_pop", "list_var_samp",
    "map_contains_entry", "map_contains_value", "md5_number_lower", "md5_number_upper",
}

# -- limits -----------------------------------------------------------------------------

_UNSET: Any = object()
_limits: Optional[dict] = None
_limits_lock = threading.Lock()


def set_query_limits(*, memory_limit: Any = _UNSET, threads: Any = _UNSET, timeout: Any = _UNSET) -> dict:
    """Bound what a pool's ``query`` may use; returns the limits now in force.

    Each query runs on a DuckDB connection of its own with these limits (arguments not
    given keep their value; call with none to read them). The defaults come from the
    environment variables ``PICKAXE_QUERY_MEMORY``, ``PICKAXE_QUERY_THREADS`` and
    ``PICKAXE_QUERY_TIMEOUT`` when set, else 1GB, the number of cores and no time limit.

    Parameters
    ----------
    memory_limit : str or int
        DuckDB's memory limit: a size such as ``"2GB"`` or ``"512MiB"``, or a number of
        bytes (at least 1 MiB).
    threads : int
        Threads DuckDB may use to evaluate a query (>= 1).
    timeout : float or None
        Seconds a query may run in one pass over a pool (over a folder of Parquet
        files, summed over its files); None for no limit. A query past it is
        interrupted and raises TimeoutError.

    Returns
    -------
    dict
        ``{"memory_limit": str, "threads": int, "timeout": float or None}``.

    Raises
    ------
    TypeError, ValueError
        A limit of the wrong type or out of range (named).

    Examples
    --------
    >>> import pickaxe as px
    >>> before = px.set_query_limits(timeout=30.0, threads=2)
    >>> px.set_query_limits()["timeout"]
    30.0
    >>> _ = px.set_query_limits(**before)
    """
    who = "set_query_limits()"
    changes: dict[str, Any] = {}
    if memory_limit is not _UNSET:
        changes["memory_limit"] = _check_memory(memory_limit, f"{who}: memory_limit")
    if threads is not _UNSET:
        changes["threads"] = _check_threads(threads, f"{who}: threads")
    if timeout is not _UNSET:
        changes["timeout"] = _check_timeout(timeout, f"{who}: timeout")
    with _limits_lock:
        current = _load_limits()
        current.update(changes)
        return dict(current)


def limits() -> dict:
    """The limits in force (see `set_query_limits`)."""
    with _limits_lock:
        return dict(_load_limits())


def _load_limits() -> dict:
    global _limits
    if _limits is None:
        memory = os.environ.get(ENV_MEMORY, "").strip()
        threads = os.environ.get(ENV_THREADS, "").strip()
        timeout = os.environ.get(ENV_TIMEOUT, "").strip()
        _limits = {
            "memory_limit": _check_memory(memory, f"{ENV_MEMORY}={memory!r}") if memory else _DEFAULT_MEMORY,
            "threads": _env_threads(threads) if threads else _DEFAULT_THREADS,
            "timeout": _env_timeout(timeout) if timeout and timeout.lower() != "none" else None,
        }
    return _limits


def _env_threads(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{ENV_THREADS}={text!r}: must be an int >= 1") from None
    return _check_threads(value, f"{ENV_THREADS}={text!r}")


def _env_timeout(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{ENV_TIMEOUT}={text!r}: must be a number of seconds > 0, or 'none'") from None
    return _check_timeout(value, f"{ENV_TIMEOUT}={text!r}")  # type: ignore[return-value]


def _check_memory(value: Any, name: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (numbers.Integral, str)):
        raise TypeError(f"{name} must be a size such as '2GB' or a number of bytes; got {type(value).__name__}")
    if isinstance(value, numbers.Integral):
        if value < 1 << 20:
            raise ValueError(f"{name} must be at least 1 MiB (1048576 bytes); got {value}")
        text = f"{int(value)}B"
    else:
        text = value.strip()
    duckdb = load_duckdb()

    try:  # DuckDB's own parser of sizes decides
        duckdb.connect(":memory:", config={"memory_limit": text, "threads": 1, "async_threads": 0}).close()
    except duckdb.Error:
        raise ValueError(f"{name} must be a size such as '2GB', '512MiB' or a number of bytes; got {value!r}") from None
    return text


def _check_threads(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not 1 <= value <= 4096:
        raise ValueError(f"{name} must be an int >= 1; got {value!r}")
    return int(value)


def _check_timeout(value: Any, name: str) -> Optional[float]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number of seconds or None; got {type(value).__name__}")
    value = float(value)
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a number of seconds > 0 (or None for no limit); got {value!r}")
    return value


# -- connections ------------------------------------------------------------------------


def load_duckdb() -> Any:
    """The duckdb module. Loading its 60 MB library can fail for want of address space
    (under ``ulimit -v``): that is a MemoryError, as any other allocation that fails."""
    try:
        import duckdb
    except ImportError as e:
        if "failed to map segment" in str(e) or "cannot allocate memory" in str(e).lower():
            raise MemoryError(f"not enough memory to load DuckDB for the query: {e}") from None
        raise
    return duckdb


def connect(memory_limit: str, threads: int, max_depth: Optional[int] = None) -> Any:
    """A DuckDB connection that can reach nothing outside the process and whose
    configuration is locked."""
    duckdb = load_duckdb()

    con = duckdb.connect(
        database=":memory:",
        config={
            "enable_external_access": False,  # no files, no network, no ATTACH
            "autoload_known_extensions": False,
            "autoinstall_known_extensions": False,
            "allow_community_extensions": False,
            "allow_unsigned_extensions": False,
            "temp_directory": "",  # never spill to disk
            "memory_limit": memory_limit,
            "threads": threads,
            # DuckDB starts 8 I/O threads per database by default; with external access
            # off there is no I/O for them to do
            "async_threads": 0,
        },
    )
    try:
        con.execute("SET enable_progress_bar = false")  # it would print on stdout
        if max_depth is not None:
            con.execute(f"SET max_expression_depth = {int(max_depth)}")
        con.execute("SET lock_configuration = true")
    except BaseException:
        con.close()
        raise
    return con


_parser_lock = threading.Lock()
_parser: Any = None
_catalog: Optional[dict[str, set]] = None
_template: Any = None


def _parser_state() -> tuple[Any, dict[str, set], Any]:
    """The shared parsing connection (used under _parser_lock), the functions DuckDB
    knows by name (name -> its kinds) and the parsed statement a query must match."""
    global _parser, _catalog, _template
    if _parser is None:
        con = connect("256MB", 1, MAX_DEPTH)
        catalog: dict[str, set] = {}
        for name, kind in con.execute("SELECT DISTINCT function_name, function_type FROM duckdb_functions()").fetchall():
            catalog.setdefault(str(name).lower(), set()).add(str(kind))
        text = con.execute("SELECT json_serialize_sql(?)", [_PREFIX + "TRUE" + _SUFFIX]).fetchall()[0][0]
        _template = _outside_condition(json.loads(text)["statements"][0])
        _catalog = catalog
        _parser = con
    assert _catalog is not None
    return _parser, _catalog, _template


def _allowed_function(name: str, kinds: set) -> bool:
    if name.startswith("__") or name in _DENIED:
        return False
    return "scalar" in kinds or ("macro" in kinds and name in _MACROS)


def _outside_condition(statement: dict) -> Any:
    """The statement without its WHERE clause and source positions."""
    node = dict(statement.get("node") or {})
    node.pop("where_clause", None)
    return _strip_positions(dict(statement, node=node))


def _strip_positions(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _strip_positions(v) for k, v in obj.items() if not k.startswith("query_location")}
    if isinstance(obj, list):
        return [_strip_positions(v) for v in obj]
    return obj


# -- checking a query -------------------------------------------------------------------


@dataclass(frozen=True)
class Condition:
    """A checked query: `sql` is what runs, `columns` the pool columns it reads (in the
    pool's order), `schema` the pool's columns a query can see (for messages)."""

    query: str
    sql: str
    columns: tuple
    schema: Any


def compile_query(query: str, who: str, schema: Any) -> Condition:
    """Check `query` against the pool's columns (a pyarrow schema, without the row
    number) and return it ready to run.

    Raises ValueError naming what is wrong and listing the pool's columns with their SQL
    types; nothing is read or run but DuckDB's parser and binder.
    """
    try:
        result = _compile(query, schema)
    except RecursionError:  # cannot happen within MAX_DEPTH; kept a clean error anyway
        result = f"it is nested too deeply (more than {MAX_DEPTH} levels)"
    if isinstance(result, str):
        raise query_error(who, query, schema, result)
    return result


@lru_cache(maxsize=64)
def _compile(query: str, schema: Any) -> Any:
    """A Condition, or the text saying what is wrong (cached: the Ray route checks the
    same query on every batch)."""
    what = _precheck(query)
    if what:
        return what
    sql = _PREFIX + query + _SUFFIX
    with _parser_lock:
        con, catalog, template = _parser_state()
        text = con.execute("SELECT json_serialize_sql(?)", [sql]).fetchall()[0][0]
    tree = json.loads(text)
    if tree.get("error"):
        return _parse_error(query, tree)
    statements = tree.get("statements") or []
    if len(statements) != 1:
        return "it holds more than one statement (a ';' ends the condition); a query is one condition"
    statement = statements[0]
    node = statement.get("node") or {}
    if _outside_condition(statement) != template:
        if node.get("type") == "SET_OPERATION_NODE":
            return "UNION, EXCEPT and INTERSECT are not allowed; a query is one condition"
        return "it goes on past the condition (a ')' that closes more than was opened?); a query is one condition"
    names = list(schema.names)
    columns, what = _walk(node.get("where_clause"), names, catalog)
    if what:
        return what
    cond = Condition(query, sql, tuple(n for n in names if n in columns), schema)
    what = _bind(cond)
    return what if what else cond


def _precheck(query: str) -> str:
    """Bounds checked before the parser sees the text."""
    if len(query) > MAX_QUERY_CHARS:
        return f"it is {len(query)} characters long; at most {MAX_QUERY_CHARS} are allowed"
    if "\x00" in query:
        return "it holds a NUL character"
    depth = deepest = 0
    quote = ""
    for ch in query:
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in ")]}":
            depth -= 1
    if deepest > MAX_DEPTH:
        return f"it is nested too deeply ({deepest} levels of brackets; at most {MAX_DEPTH})"
    return ""


def _parse_error(query: str, tree: dict) -> str:
    msg = str(tree.get("error_message", "")).strip()
    kind = str(tree.get("error_type", ""))
    if "expression depth" in msg:
        return f"it is nested too deeply (more than {MAX_DEPTH} levels)"
    if kind != "parser":
        # json_serialize_sql takes SELECT statements only: the text holds another one
        return ("it holds more than one statement (a ';' ends the condition); a query is one "
                "condition: no COPY, SET, ATTACH, PRAGMA, INSTALL or LOAD")
    try:
        at = int(tree.get("position", -1)) - len(_PREFIX)
    except (TypeError, ValueError):
        at = -1
    if at >= len(query):  # at the parenthesis pickaxe closes the condition with
        return "Parser Error: syntax error at the end of the query"
    if at >= 0:
        return f"Parser Error: {msg} (at character {at + 1} of the query)"
    return f"Parser Error: {msg}"


def _walk(where: Any, names: list, catalog: dict) -> tuple[set, str]:
    """The pool columns the condition reads, and what is wrong ("" when nothing):
    every node checked against the allowlist, without recursion."""
    by_lower: dict[str, list] = {}
    for n in names:
        by_lower.setdefault(n.lower(), []).append(n)
    used: set = set()
    stack: list = [(where, 0, frozenset())]
    while stack:
        node, depth, scope = stack.pop()
        if isinstance(node, list):
            stack.extend((v, depth, scope) for v in node)
            continue
        if not isinstance(node, dict):
            continue
        cls = node.get("class")
        if cls is None:
            if "node" in node or "from_table" in node or str(node.get("type", "")).endswith("_NODE"):
                return used, _REJECTED_CLASSES["SUBQUERY"]
            stack.extend((v, depth, scope) for v in node.values())
            continue
        if depth > MAX_DEPTH:
            return used, f"it is nested too deeply (more than {MAX_DEPTH} levels)"
        if cls in _REJECTED_CLASSES:
            return used, _REJECTED_CLASSES[cls]
        if cls not in _NODE_CLASSES:
            return used, f"{cls.lower().replace('_', ' ')} expressions are not allowed"
        if cls == "CONSTANT":
            continue
        if cls == "COLUMN_REF":
            parts = [str(p) for p in node.get("column_names") or []]
            first = parts[0].lower() if parts else ""
            if first in scope:
                continue
            if first in by_lower:
                used.update(by_lower[first])
                continue
            if len(parts) == 1 and first in _TIME_NAMES:
                continue
            return used, _unknown_column(parts, names, catalog)
        if cls == "OPERATOR" and node.get("type") not in _OPERATORS:
            op = str(node.get("type", "")).replace("OPERATOR_", "").replace("_", " ").lower()
            return used, f"the operator {op} is not allowed"
        if cls == "FUNCTION":
            what = _check_function(node, catalog)
            if what:
                return used, what
        if cls == "LAMBDA":
            scope = scope | _lambda_params(node.get("lhs"))
        stack.extend((v, depth + 1, scope) for v in node.values() if isinstance(v, (dict, list)))
    return used, ""


def _lambda_params(lhs: Any) -> frozenset:
    refs = [lhs]
    if isinstance(lhs, dict) and lhs.get("class") == "FUNCTION":  # (x, y) -> ...: row(x, y)
        refs = [a.get("expression") for a in lhs.get("arguments") or [] if isinstance(a, dict)]
    out = set()
    for r in refs:
        if isinstance(r, dict) and r.get("class") == "COLUMN_REF" and len(r.get("column_names") or []) == 1:
            out.add(str(r["column_names"][0]).lower())
    return frozenset(out)


def _check_function(node: dict, catalog: dict) -> str:
    name = str(node.get("function_name", "")).lower()
    if node.get("schema") or node.get("catalog"):
        return f"qualified function names ({'.'.join(p for p in (node.get('catalog'), node.get('schema'), name) if p)}) are not allowed"
    kinds = catalog.get(name)
    if kinds is None and name in _DENIED:
        kinds = set()
    if kinds is None:
        near = difflib.get_close_matches(name, [n for n, k in catalog.items() if _allowed_function(n, k)], n=1)
        return f"there is no function {name}()" + (f"; did you mean {near[0]}()?" if near else "")
    if not _allowed_function(name, kinds):
        if "table" in kinds or "table_macro" in kinds:
            if "scalar" not in kinds:
                return f"{name}() is a table function; a query reads only the pool's columns (no files, no tables)"
        if "aggregate" in kinds or "window" in kinds:
            if "scalar" not in kinds:
                return f"{name}() is an aggregate function; a query is evaluated on each row alone"
        if "pragma" in kinds and "scalar" not in kinds:
            return f"{name}() is a pragma; a query is one condition"
        return (f"the function {name}() is not allowed (it reads DuckDB's session or settings, "
                "changes its state, or builds values of unbounded size)")
    if node.get("filter") is not None or (node.get("order_bys") or {}).get("orders") or node.get("distinct") or node.get("export_state"):
        return f"FILTER, ORDER BY, DISTINCT and EXPORT_STATE are for aggregates; not allowed in {name}()"
    return ""


def _unknown_column(parts: list, names: list, catalog: dict) -> str:
    first = parts[0] if parts else ""
    if len(parts) == 1 and first.lower() in catalog:
        return f'"{first}" is not one of the pool\'s columns (and DuckDB\'s session values are not allowed)'
    near = difflib.get_close_matches(first, names, n=1)
    hint = f'; did you mean "{near[0]}"?' if near else ""
    return f'Referenced column "{first}" not found{hint}'


def _bind(cond: Condition) -> str:
    """DuckDB's binder on an empty table of the columns the condition reads: type
    errors now, before any data is read (binding runs nothing)."""
    import duckdb

    con = connect("64MB", 1)
    try:
        con.register(TABLE, _empty(cond.schema, cond.columns))
        try:
            con.sql(cond.sql)
        except duckdb.Error as e:
            return clean_message(e)
        return ""
    finally:
        con.close()


def _empty(schema: Any, columns: Any) -> Any:
    import pyarrow as pa

    fields = [schema.field(c) for c in columns] + [pa.field(ROW, pa.int64())]
    return pa.schema(fields).empty_table()


# -- messages ---------------------------------------------------------------------------


def query_error(who: str, query: str, schema: Any, what: str) -> ValueError:
    """The error for a query that cannot run: what is wrong, then the pool's columns with
    their SQL types (never pickaxe's own SQL or row-number column)."""
    from .errors import QueryError

    return QueryError(who, query, what, sql_types(schema))


def shown(query: str) -> str:
    """The query quoted for a message, cut to a readable length."""
    if len(query) > _SHOWN_CHARS:
        return repr(query[:_SHOWN_CHARS]) + f"... ({len(query)} characters)"
    return repr(query)


def sql_types(schema: Any) -> str:
    """"name TYPE, ..." as DuckDB sees the pool's columns (Arrow's types if DuckDB
    cannot say)."""
    if not len(schema.names):
        return "none"
    try:
        con = connect("64MB", 1)
        try:
            con.register(TABLE, schema.empty_table())
            rows = con.execute(f'DESCRIBE "{TABLE}"').fetchall()
        finally:
            con.close()
        return ", ".join(f"{r[0]} {r[1]}" for r in rows)
    except Exception:
        return ", ".join(f"{n} {t}" for n, t in zip(schema.names, schema.types))


def clean_message(e: BaseException) -> str:
    """DuckDB's message without the SQL it quotes (pickaxe's, not the user's) and without
    pickaxe's table and row-number names."""
    lines = []
    for line in str(e).strip().splitlines():
        if line.startswith("LINE "):
            break  # the statement and a caret under it
        if line.startswith("Candidate bindings"):
            names = [c for c in line.split(":", 1)[1].split(",") if ROW not in c]
            if not names:
                continue
            line = "Candidate bindings:" + ",".join(names)
        lines.append(line.replace(f'"{TABLE}"', "the pool").replace(TABLE, "the pool").replace(ROW, "the row number"))
    return "\n".join(lines).strip()


# -- evaluating -------------------------------------------------------------------------


class _Worker:
    """The one thread queries run on, started on first use and kept: a thread's first
    call into DuckDB allocates DuckDB's thread-local state, which glibc cannot fail
    cleanly under an address-space cap (it exits the process), so it happens once, early,
    not once per pass over a pool."""

    def __init__(self) -> None:
        self._jobs: "queue.SimpleQueue[Callable[[], None]]" = queue.SimpleQueue()
        self._thread: Optional[threading.Thread] = None
        self._lock = threading.Lock()

    def submit(self, job: Callable[[], None]) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="pickaxe-query", daemon=True)
                self._thread.start()
        self._jobs.put(job)

    def _loop(self) -> None:
        while True:
            self._jobs.get()()  # each job catches its own errors


_worker = _Worker()


class Session:
    """A hardened connection for one pass over a pool, with that pass's time budget.

    ``run`` evaluates a condition on Arrow data (a Table or a RecordBatchReader holding
    the condition's columns and the row number) and hands the matching row numbers to
    `consume`, batch by batch. The query runs on a worker thread while this thread waits:
    past the time limit, or on Ctrl-C, the connection is interrupted.
    """

    def __init__(self) -> None:
        lim = limits()
        self._limits = lim
        self.timeout: Optional[float] = lim["timeout"]
        self.spent = 0.0
        self._con: Any = None
        self._running: Optional[threading.Event] = None  # set when the worker is done

    @property
    def con(self) -> Any:
        if self._con is None:
            self._con = connect(self._limits["memory_limit"], self._limits["threads"])
        return self._con

    def close(self) -> None:
        if self._running is not None and not self._running.is_set():
            # a second Ctrl-C left the interrupted query on its thread: closing the
            # connection under it is not safe, it goes when the thread is done
            self._con = None
            return
        if self._con is not None:
            self._con.close()
            self._con = None

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def run(self, cond: Condition, who: str, data: Any, consume: Callable[[np.ndarray], None]) -> None:
        import duckdb

        con = self.con
        con.register(TABLE, data)
        try:
            def work() -> None:
                reader = con.sql(cond.sql).to_arrow_reader(1 << 16)
                for b in reader:
                    consume(b.column(0).to_numpy(zero_copy_only=False))

            error = self._bounded(work, cond, who)
        finally:
            try:
                con.unregister(TABLE)
            except Exception:
                pass
        if error is not None:
            if isinstance(error, duckdb.OutOfMemoryException):
                raise MemoryError(
                    f"{who}: the query {shown(cond.query)} ran out of memory ({clean_message(error)}); "
                    f"raise pickaxe.set_query_limits(memory_limit=...) or {ENV_MEMORY}"
                ) from None
            if isinstance(error, duckdb.Error):
                raise query_error(who, cond.query, cond.schema, clean_message(error)) from None
            raise error

    def _bounded(self, work: Callable[[], None], cond: Condition, who: str) -> Optional[BaseException]:
        """Run `work` on a thread within the time left; its error (None when it ran to
        the end). Raises TimeoutError past the limit, KeyboardInterrupt on Ctrl-C, after
        interrupting DuckDB."""
        left = None if self.timeout is None else self.timeout - self.spent
        if left is not None and left <= 0:
            raise self._timeout_error(cond, who)
        done = threading.Event()
        box: list = []

        def target() -> None:
            try:
                work()
            except BaseException as e:  # handed to the waiting thread
                box.append(e)
            finally:
                done.set()

        self._running = done
        start = time.monotonic()
        _worker.submit(target)
        try:
            finished = done.wait(left)
        except KeyboardInterrupt:
            self._stop(done)
            raise
        finally:
            self.spent += time.monotonic() - start
        if not finished:
            self._stop(done)
            if box:  # interrupted (or failed) past the limit
                raise self._timeout_error(cond, who)
        return box[0] if box else None

    def _stop(self, done: threading.Event) -> None:
        # interrupt until the worker is gone: an interrupt that lands before DuckDB
        # has started the query is lost, so it is repeated
        while not done.is_set():
            self._con.interrupt()
            done.wait(0.05)

    def _timeout_error(self, cond: Condition, who: str) -> TimeoutError:
        return TimeoutError(
            f"{who}: the query {shown(cond.query)} ran past its time limit of {self.timeout:g} s "
            f"and was stopped; raise the limit with pickaxe.set_query_limits(timeout=...) or "
            f"{ENV_TIMEOUT}, or narrow the query"
        )

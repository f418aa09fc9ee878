"""Checking a pool's ``query``: one condition over its columns, nothing else.

A query is never run as given. DuckDB's own parser (``json_serialize_sql``, which parses
and does not execute) turns ``SELECT <row> FROM <pool> WHERE (<query>)`` into a syntax
tree; the statement must be exactly that one SELECT, and every node of the condition must
be on an allowlist: column references naming the pool's columns, constants, comparisons,
AND / OR / NOT, IN, BETWEEN, LIKE, IS NULL, CASE, CAST, COLLATE, lambdas, and scalar
functions that compute on their arguments alone. Anything else (a second statement, a
subquery, a table function, an aggregate or window function, a parameter, a function that
reads DuckDB's session or settings or builds values of unbounded size) is a ValueError
that says what is allowed. The text that was checked is the text that runs; DuckDB's
binder then checks the types on an empty table of the columns the condition reads.
See docs/query.md.
"""

from __future__ import annotations

import difflib
import json
import threading
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Optional

from .connection import ROW, TABLE, clean_message, connect, query_error

__all__ = ["Condition", "compile_query", "MAX_QUERY_CHARS", "MAX_DEPTH"]

#: Longest query accepted, in characters (a long IN list of ids fits).
MAX_QUERY_CHARS = 100_000
#: Deepest nesting accepted: brackets before parsing, expression levels in the parser.
MAX_DEPTH = 100

_PREFIX = f'SELECT "{ROW}" FROM "{TABLE}" WHERE (\n'
# the newline ends a trailing -- comment before the closing parenthesis
_SUFFIX = "\n)"

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

# -- the parser --------------------------------------------------------------------------

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
    # not Schema.empty_table, which imports pandas (about 1 s the first time)
    return pa.Table.from_batches([], schema=pa.schema(fields))


"""The DuckDB connection a query runs on, and what its errors say to the user.

The connection can reach nothing outside the process: external access off (no file, no
network, no ATTACH), extensions neither installed nor loaded, no spilling to disk, the
progress bar off, a memory limit and a thread count of its own, and its configuration
locked, so that not even a statement could change them. Data reach it only as Arrow
objects that pickaxe registers under `TABLE`, with the row number as column `ROW`.

Messages name the pool's columns with their SQL types and never show pickaxe's own SQL,
table or row-number column.
"""

from __future__ import annotations

from typing import Any, Optional

#: The row-number column pickaxe adds to the data it hands DuckDB; never one of the
#: pool's columns, never in a message.
ROW = "__pickaxe_row__"
#: The name the pool's data is registered under on the connection.
TABLE = "__pickaxe_pool__"

#: Longest query quoted verbatim in an error.
SHOWN_CHARS = 200


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


def query_error(who: str, query: str, schema: Any, what: str) -> ValueError:
    """The error for a query that cannot run: what is wrong, then the pool's columns with
    their SQL types (never pickaxe's own SQL or row-number column)."""
    from ..errors import QueryError

    return QueryError(who, query, what, sql_types(schema))


def shown(query: str) -> str:
    """The query quoted for a message, cut to a readable length."""
    if len(query) > SHOWN_CHARS:
        return repr(query[:SHOWN_CHARS]) + f"... ({len(query)} characters)"
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
        from .arrow import schema_text

        return schema_text(schema)


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

"""The ``query`` argument is one condition over the pool's columns and nothing else
(issue #13 points 1, 8 and 9): hostile queries are refused before any data is read, by
the library and by the command line, and create no file; allowed queries give the rows
they match; the DuckDB connection is locked down; a time limit and Ctrl-C stop a query."""

from __future__ import annotations

import doctest
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import pickaxe as px
from pickaxe.pools import ROW, match_rows, open_pool
from pickaxe.pools import query as _query

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
duckdb = pytest.importorskip("duckdb")

N = 60


def columns():
    rng = np.random.default_rng(7)
    return {
        "logits": rng.normal(size=(N, 3)).astype(np.float32),
        "split": np.where(np.arange(N) % 3 == 0, "train", "unlabeled"),
        "score": np.round(rng.random(N), 3),
    }


def arrow_table(extra=True):
    c = columns()
    t = pa.table(
        {
            "logits": pa.FixedSizeListArray.from_arrays(pa.array(c["logits"].ravel()), 3),
            "split": c["split"],
            "score": c["score"],
        }
    )
    if extra:
        t = t.append_column("tags", pa.array([["a", "b"][: i % 3] for i in range(N)], pa.list_(pa.string())))
        t = t.append_column("meta", pa.array([{"src": f"cam{i % 2}", "w": i} for i in range(N)]))
    return t


@pytest.fixture
def work(tmp_path):
    """A folder holding the Parquet pool; every hostile query aims its writes at it."""
    pq.write_table(arrow_table(), tmp_path / "pool.parquet", row_group_size=16)
    return tmp_path


def files_under(path):
    return sorted(os.path.relpath(os.path.join(d, f), path) for d, _, fs in os.walk(path) for f in fs)


# -- hostile queries -------------------------------------------------------------------
# {out} is a file in the test's folder, {pool} the Parquet pool, {tmp} the folder.

HOSTILE = {
    "read_text subquery": "(SELECT content FROM read_text('/etc/hostname')) LIKE 'a%'",
    "environ": "(SELECT content FROM read_text('/proc/self/environ')) LIKE '%PATH%'",
    "read_csv": "score > (SELECT count(*) FROM read_csv('/etc/passwd'))",
    "read_parquet": "score IN (SELECT score FROM read_parquet('{pool}'))",
    "glob": "EXISTS (SELECT * FROM glob('/etc/*'))",
    "table function in expression": "read_text('/etc/hostname') IS NOT NULL",
    "copy alone": "COPY (SELECT 1) TO '{out}'",
    "copy after balanced parens": "1=1); COPY (SELECT 42) TO '{out}'; SELECT 1 WHERE (1=1",
    "copy hidden by comment": "1=1); /* harmless */ COPY (SELECT 1) TO '{out}' --",
    "copy after line comment": "score > 0 --\n); COPY (SELECT 1) TO '{out}'; SELECT 1 WHERE (1=1",
    "export database": "1=1); EXPORT DATABASE '{tmp}/dump'; SELECT 1 WHERE (1=1",
    "two statements": "score > 0; SELECT 1",
    "attach": "1=1); ATTACH '{tmp}/x.duckdb' AS x; SELECT 1 WHERE (1=1",
    "set": "1=1); SET threads = 1; SELECT 1 WHERE (1=1",
    "set external access": "1=1); SET enable_external_access = true; SELECT 1 WHERE (1=1",
    "reset lock": "1=1); RESET lock_configuration; SELECT 1 WHERE (1=1",
    "pragma": "1=1); PRAGMA version; SELECT 1 WHERE (1=1",
    "install": "1=1); INSTALL httpfs; SELECT 1 WHERE (1=1",
    "load": "1=1); LOAD httpfs; SELECT 1 WHERE (1=1",
    "union after balanced parens": "1=1) UNION ALL SELECT -1 WHERE (1=1",
    "union inside": "1=1 UNION ALL SELECT -1",
    "group by": "1=1) GROUP BY split HAVING (count(*) > 0",
    "limit": "1=1) LIMIT (1",
    "getenv": "getenv('HOME') LIKE '/%'",
    "current_setting": "current_setting('threads') > 0",
    "session value": "current_user = 'duckdb'",
    "setseed": "setseed(0.5) IS NULL",
    "nextval": "nextval('s') > 0",
    "write_log": "write_log('x') IS NULL",
    "json_serialize_plan": "json_serialize_plan('SELECT * FROM read_text(''/etc/hostname'')') LIKE '%'",
    "aggregate": "count(*) > 0",
    "window": "sum(score) OVER () > 1",
    "range table": "(SELECT count(*) FROM range(2e10)) > 0",
    "range list": "len(range(20000000000)) > 0",
    "repeat": "length(repeat('a', 2000000000)) > 0",
    "parameter": "$1 = 1",
    "star": "COLUMNS(*) IS NOT NULL",
    "hidden row column": "__pickaxe_row__ < 5",
    "qualified table": "__pickaxe_pool__.score > 0",
    "qualified function": "main.abs(score) > 0",
    "huge paren nesting": "(" * 5000 + "score > 0" + ")" * 5000,
    "huge NOT nesting": "NOT " * 5000 + "score > 0",
    "huge operator chain": "score" + " + 1" * 3000 + " > 0",
    "too long": " OR ".join(["score > 0.5"] * 7000),
}


def hostile(name, work):
    return HOSTILE[name].format(out=work / "pwned.csv", pool=work / "pool.parquet", tmp=work)


def assert_refused(err, query):
    msg = str(err)
    assert "A query is one condition over the pool's columns (SQL types): logits FLOAT[3], split VARCHAR, score DOUBLE" in msg
    columns_line = msg.splitlines()[-1]
    assert ROW not in columns_line  # no hidden column among the pool's columns
    if ROW not in query and _query.TABLE not in query:  # else the message quotes the user
        assert ROW not in msg and _query.TABLE not in msg  # no pickaxe SQL or names
    assert 'SELECT "' not in msg
    if len(query) > 200:
        assert query not in msg and "characters)" in msg  # quoted, cut


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_query_is_refused_by_the_library(name, work):
    q = hostile(name, work)
    before = files_under(work)
    pools = {
        "mapping": {k: v for k, v in columns().items()},
        "table": arrow_table(),
        "parquet": work / "pool.parquet",
    }
    for kind, pool in pools.items():
        with pytest.raises(ValueError) as e:
            px.EntropyMiner(5, query=q).mine(pool)
        if kind != "table":  # the table has two more columns (tags, meta) in its list
            assert_refused(e.value, q)
        if ROW not in q:
            assert ROW not in str(e.value)
    assert files_under(work) == before


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_query_is_refused_by_the_command_line(name, work):
    q = hostile(name, work)
    before = files_under(work)
    out = subprocess.run(
        [sys.executable, "-m", "pickaxe", "mine", "pool.parquet", "--miner", "entropy", "--size", "5", "--query", q, "--out", "x.csv"],
        cwd=work, capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 1, out.stderr
    assert out.stderr.startswith("Error: --query ") and len(out.stderr.strip().splitlines()) == 1
    assert "--query takes one condition over the pool's columns (SQL types): logits FLOAT[3], split VARCHAR" in out.stderr
    if ROW not in q:
        assert ROW not in out.stderr
    assert out.stdout == ""
    assert files_under(work) == before  # neither x.csv nor any file the query aimed at


def test_the_hostile_table_covers_the_issue():
    # file reads, writes, ATTACH, SET, PRAGMA, INSTALL/LOAD, multi-statement, UNION,
    # comments, huge nesting: each kind at least once
    text = "\n".join(HOSTILE.values())
    for needle in ("read_text", "read_csv", "read_parquet", "glob", "COPY", "ATTACH", "SET ", "PRAGMA",
                   "INSTALL", "LOAD", "; SELECT", "UNION", "/*", "--", "range(2e10)", "getenv", "current_setting"):
        assert needle in text
    assert len(HOSTILE) >= 20


def test_refusals_say_what_is_wrong(work):
    pool = columns()
    cases = {
        HOSTILE["copy after balanced parens"]: "more than one statement",
        HOSTILE["union after balanced parens"]: "UNION, EXCEPT and INTERSECT are not allowed",
        HOSTILE["group by"]: "goes on past the condition",
        HOSTILE["read_text subquery"]: "a subquery",
        HOSTILE["table function in expression"]: "read_text() is a table function",
        HOSTILE["aggregate"]: "count_star() is an aggregate function",
        HOSTILE["window"]: "window function",
        HOSTILE["current_setting"]: "current_setting() is not allowed",
        HOSTILE["getenv"]: "getenv() is not allowed",
        HOSTILE["range list"]: "range() is not allowed",
        HOSTILE["hidden row column"]: 'Referenced column "__pickaxe_row__" not found',
        HOSTILE["huge paren nesting"]: "nested too deeply",
        HOSTILE["huge operator chain"]: "nested too deeply",
        HOSTILE["too long"]: "at most 100000 are allowed",
        "splt = 'unlabeled'": 'Referenced column "splt" not found; did you mean "split"?',
        "split = ": "Parser Error: syntax error at the end of the query",
        "split > 1": "Binder Error: Cannot compare values of type VARCHAR",
        "nosuchfn(score) > 0": "there is no function nosuchfn()",
    }
    for q, what in cases.items():
        with pytest.raises(ValueError) as e:
            open_pool(pool, query=q, who="EntropyMiner.mine()")
        msg = str(e.value)
        assert msg.startswith(f"EntropyMiner.mine(): the query {_query.shown(q)} failed: "), msg
        assert what in msg.replace(_query.TABLE, "<table>"), msg


def test_a_query_is_checked_before_any_data_is_read(work, monkeypatch):
    read = []
    real = pq.ParquetFile.iter_batches
    monkeypatch.setattr(pq.ParquetFile, "iter_batches", lambda self, *a, **k: read.append(1) or real(self, *a, **k))
    with pytest.raises(ValueError, match="a subquery"):
        open_pool(work / "pool.parquet", query=HOSTILE["read_text subquery"])
    with pytest.raises(ValueError, match="Binder Error"):
        open_pool(work / "pool.parquet", query="split > 1")
    assert read == []


# -- allowed queries -------------------------------------------------------------------

GOOD = {
    "split = 'unlabeled' AND score > 0.5": lambda c: (c["split"] == "unlabeled") & (c["score"] > 0.5),
    "score IN (0.5, 0.25) OR split IN ('train')": lambda c: np.isin(c["score"], [0.5, 0.25]) | (c["split"] == "train"),
    "split LIKE 'un%' AND NOT score < 0.2": lambda c: (c["split"] == "unlabeled") & ~(c["score"] < 0.2),
    "score BETWEEN 0.25 AND 0.75": lambda c: (c["score"] >= 0.25) & (c["score"] <= 0.75),
    "score * 10 - 1 > 4 AND score IS NOT NULL": lambda c: c["score"] * 10 - 1 > 4,
    "CASE WHEN split = 'train' THEN score > 0.9 ELSE score < 0.1 END":
        lambda c: np.where(c["split"] == "train", c["score"] > 0.9, c["score"] < 0.1),
    "CAST(score * 10 AS INTEGER) % 2 = 1": lambda c: np.round(c["score"] * 10).astype(int) % 2 == 1,
    "SCORE > 0.5 -- a comment": lambda c: c["score"] > 0.5,
    "abs(score - 0.5) < 0.1 AND length(split) = 9": lambda c: (np.abs(c["score"] - 0.5) < 0.1) & (c["split"] == "unlabeled"),
    "current_date > DATE '2000-01-01' AND score > 0.8": lambda c: c["score"] > 0.8,
    "score IS NULL": lambda c: np.zeros(N, bool),
}


@pytest.mark.parametrize("query", list(GOOD))
@pytest.mark.parametrize("kind", ["mapping", "table", "parquet", "folder"])
def test_allowed_queries_give_the_rows_they_match(query, kind, tmp_path):
    c = columns()
    want = np.flatnonzero(GOOD[query](c))
    if kind == "mapping":
        pool = c
    elif kind == "table":
        pool = arrow_table()
    elif kind == "parquet":
        pool = tmp_path / "p.parquet"
        pq.write_table(arrow_table(), pool, row_group_size=7)
    else:
        pool = tmp_path / "f"
        pool.mkdir()
        t = arrow_table()
        for i, lo in enumerate(range(0, N, 25)):
            pq.write_table(t.slice(lo, 25), pool / f"part-{i}.parquet", row_group_size=10)
    p = open_pool(pool, query=query).read()
    np.testing.assert_array_equal(p.source_rows(np.arange(p.n_rows)), want)
    np.testing.assert_array_equal(p.columns["score"], c["score"][want])


@pytest.mark.parametrize("kind", ["table", "parquet"])
def test_list_and_struct_metadata_in_a_query(kind, tmp_path):
    t = arrow_table()
    pool = t
    if kind == "parquet":
        pool = tmp_path / "m.parquet"
        pq.write_table(t, pool, row_group_size=9)
    i = np.arange(N)
    cases = {
        "list_contains(tags, 'b')": i % 3 == 2,
        "len(tags) = 1": i % 3 == 1,
        "tags[1] = 'a'": i % 3 >= 1,
        "len(list_filter(tags, lambda t: t = 'b')) = 1": i % 3 == 2,
        "meta.src = 'cam1' AND meta['w'] > 40": (i % 2 == 1) & (i > 40),
    }
    for q, want in cases.items():
        p = open_pool(pool, query=q).read(["score"])
        np.testing.assert_array_equal(p.source_rows(np.arange(p.n_rows)), np.flatnonzero(want), err_msg=q)


def test_columns_duckdb_used_to_reserve_now_work(tmp_path):
    # the query no longer runs on DuckDB's read_parquet: a column named file_row_number
    # is a column like any other, and odd names are quoted as usual
    path = tmp_path / "it's [1].parquet"
    pq.write_table(pa.table({"file_row_number": [5, 6, 7], "my col": [1.0, 2.0, 3.0], "confidence": [0.1, 0.2, 0.3]}), path)
    p = open_pool(path, query='file_row_number > 5 AND "my col" < 3').read()
    assert p.source_rows(np.arange(p.n_rows)).tolist() == [1]


def test_only_the_columns_the_query_names_reach_duckdb(work, monkeypatch):
    seen = []
    real = _query.Session.run

    def spy(self, cond, who, data, consume):
        seen.append(list(data.schema.names))
        return real(self, cond, who, data, consume)

    monkeypatch.setattr(_query.Session, "run", spy)
    open_pool(work / "pool.parquet", query="score > 0.5").read(["logits"])
    open_pool(arrow_table(), query="split = 'train' AND score > 0.1")
    open_pool(columns(), query="random() < 2")
    assert seen[0] == ["score", ROW]
    assert seen[-2] == ["split", "score", ROW]
    assert seen[-1] == [ROW]


def test_a_query_is_evaluated_per_row_not_when_it_is_bound(tmp_path):
    # error() fires only on a row that takes its branch: never when the query is checked
    # and bound, and not at all when no row does
    q = "CASE WHEN score > 2 THEN error('row-level failure at ' || score::VARCHAR) ELSE true END"
    path = tmp_path / "e.parquet"
    pq.write_table(pa.table({"score": [0.5, 1.0, 3.0]}), path, row_group_size=1)
    mapping = {"score": np.array([0.5, 1.0, 3.0])}
    with pytest.raises(ValueError, match=r"(?s)row-level failure at 3.0.*score DOUBLE"):
        open_pool(mapping, query=q)  # an in-memory pool is filtered when opened
    src = open_pool(path, query=q)  # a Parquet pool: checked and bound, nothing evaluated
    with pytest.raises(ValueError, match=r"(?s)row-level failure at 3.0.*score DOUBLE"):
        src.read()
    for pool in (mapping, path):
        assert open_pool(pool, query=q.replace("> 2", "> 5")).read().n_rows == 3


# -- the connection --------------------------------------------------------------------


def test_the_query_connection_is_locked_down(tmp_path):
    lim = px.set_query_limits()
    with _query.Session() as s:
        con = s.con
        settings = dict(con.execute(
            "SELECT name, value FROM duckdb_settings() WHERE name IN ('enable_external_access', "
            "'autoload_known_extensions', 'autoinstall_known_extensions', 'enable_progress_bar', "
            "'lock_configuration', 'threads', 'temp_directory', 'allow_community_extensions')"
        ).fetchall())
        assert settings["enable_external_access"] == "false"
        assert settings["autoload_known_extensions"] == "false"
        assert settings["autoinstall_known_extensions"] == "false"
        assert settings["allow_community_extensions"] == "false"
        assert settings["enable_progress_bar"] == "false"
        assert settings["lock_configuration"] == "true"
        assert settings["temp_directory"] == ""
        assert int(settings["threads"]) == lim["threads"]
        for stmt in ("SET threads = 1", "SET enable_external_access = true", "RESET lock_configuration",
                     "SET lock_configuration = false", "PRAGMA threads = 1", "SET memory_limit = '100GB'"):
            with pytest.raises(duckdb.Error, match="locked"):
                con.execute(stmt)
        target = tmp_path / "x.csv"
        for stmt in (f"COPY (SELECT 1) TO '{target}'", "SELECT * FROM read_text('/etc/hostname')",
                     f"ATTACH '{tmp_path / 'x.duckdb'}' AS x"):
            with pytest.raises(duckdb.Error, match="disabled by configuration|Permission"):
                con.execute(stmt)
        with pytest.raises(duckdb.Error):
            con.execute("LOAD httpfs")
    assert files_under(tmp_path) == []


def test_limits_reach_the_connection_and_are_checked():
    before = px.set_query_limits()
    try:
        got = px.set_query_limits(memory_limit="256MiB", threads=1, timeout=12.5)
        assert got == {"memory_limit": "256MiB", "threads": 1, "timeout": 12.5}
        assert px.set_query_limits(memory_limit=300 << 20)["memory_limit"] == f"{300 << 20}B"
        with _query.Session() as s:
            assert s.con.execute("SELECT current_setting('threads')").fetchall()[0][0] == 1
            assert s.con.execute("SELECT current_setting('memory_limit')").fetchall()[0][0] == "300.0 MiB"
        for kw, match in (({"threads": 0}, "threads must be an int >= 1"),
                          ({"threads": 1.5}, "threads must be an int >= 1"),
                          ({"timeout": -1}, "timeout must be a number of seconds > 0"),
                          ({"timeout": float("nan")}, "timeout must be a number of seconds > 0"),
                          ({"memory_limit": "lots"}, "memory_limit must be a size"),
                          ({"memory_limit": 1000}, "at least 1 MiB")):
            with pytest.raises(ValueError, match=match):
                px.set_query_limits(**kw)
        with pytest.raises(TypeError, match="timeout must be a number of seconds or None"):
            px.set_query_limits(timeout="10")
        assert px.set_query_limits() == {"memory_limit": f"{300 << 20}B", "threads": 1, "timeout": 12.5}
    finally:
        px.set_query_limits(**before)
    assert "set_query_limits" in px.__all__ and "set_query_limits" in dir(px)


def test_limits_from_the_environment():
    code = "import pickaxe as px; print(px.set_query_limits())"
    env = dict(os.environ, PICKAXE_QUERY_MEMORY="512MB", PICKAXE_QUERY_THREADS="1", PICKAXE_QUERY_TIMEOUT="2.5")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "{'memory_limit': '512MB', 'threads': 1, 'timeout': 2.5}"
    for var, value in (("PICKAXE_QUERY_THREADS", "many"), ("PICKAXE_QUERY_TIMEOUT", "-3"), ("PICKAXE_QUERY_MEMORY", "lots")):
        env = dict(os.environ, **{var: value})
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
        assert out.returncode == 1 and f"{var}={value!r}" in out.stderr, out.stderr


def test_set_query_limits_docstring_example_runs():
    result = doctest.testmod(_query, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


# -- time limit, Ctrl-C, stdout ----------------------------------------------------------

SLOW_QUERY = "levenshtein(s, reverse(s)) > 1000"
# each row's levenshtein over 300-character strings: minutes for the whole pool


def slow_pool_code(kind):
    return textwrap.dedent(f"""
        import numpy as np, sys, time
        import pickaxe as px
        from pickaxe.pools import open_pool
        rng = np.random.default_rng(0)
        words = np.array(["".join(rng.choice(list("abcdefgh"), 300)) for _ in range(500)])
        n = 300_000
        pool = {{"s": words[np.arange(n) % 500], "score": np.arange(n, dtype=float)}}
        if "{kind}" == "parquet":
            import pyarrow as pa, pyarrow.parquet as pq
            pq.write_table(pa.table(pool), sys.argv[1], row_group_size=50_000)
            pool = sys.argv[1]
    """)


@pytest.mark.parametrize("kind", ["mapping", "parquet"])
def test_the_time_limit_stops_a_query(kind, tmp_path):
    code = slow_pool_code(kind) + textwrap.dedent(f"""
        px.set_query_limits(timeout=2.5)  # past the 2 s after which DuckDB may draw its bar
        start = time.monotonic()
        try:
            open_pool(pool, query={SLOW_QUERY!r}).read()
        except TimeoutError as e:
            print("stopped after", round(time.monotonic() - start, 2), file=sys.stderr)
            print(e, file=sys.stderr)
            sys.exit(3)
    """)
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "slow.parquet")], capture_output=True, text=True, timeout=120)
    assert out.returncode == 3, out.stderr
    took = float(out.stderr.split("stopped after ")[1].split()[0])
    assert 2.5 <= took < 12  # the query alone runs for minutes
    assert "ran past its time limit of 2.5 s" in out.stderr and "set_query_limits(timeout=...)" in out.stderr
    assert out.stdout == ""  # nothing (no progress bar) on stdout over the 2 s DuckDB waits


def test_the_time_limit_is_a_budget_for_the_pass(tmp_path):
    # over a folder, the limit is the time summed over its files
    root = tmp_path / "f"
    root.mkdir()
    for i in range(3):
        pq.write_table(pa.table({"score": np.arange(10.0)}), root / f"{i}.parquet")
    before = px.set_query_limits()
    try:
        px.set_query_limits(timeout=30.0)
        src = open_pool(root, query="score > 4")
        with _query.Session() as s:
            masks = [src._match_mask(s, i) for i in range(3)]
            assert 0 < s.spent < 30
        assert [m.sum() for m in masks] == [5, 5, 5]
        with _query.Session() as s:
            s.spent = 30.0  # the budget used up: the next file is not started
            with pytest.raises(TimeoutError, match="time limit of 30 s"):
                src._match_mask(s, 0)
    finally:
        px.set_query_limits(**before)


@pytest.mark.parametrize("kind", ["mapping", "parquet"])
def test_ctrl_c_interrupts_a_running_query(kind, tmp_path):
    code = slow_pool_code(kind) + textwrap.dedent(f"""
        print("ready", flush=True)
        start = time.monotonic()
        try:
            open_pool(pool, query={SLOW_QUERY!r}).read()
        except KeyboardInterrupt:
            print("interrupted after", round(time.monotonic() - start, 2), flush=True)
            sys.exit(4)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "slow.parquet")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(1.5)  # into the query
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        latency = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 4, err
    assert "interrupted after" in out
    # The query alone runs for minutes. Measured from the signal to the child's exit (its
    # interpreter shutting down included), so a loaded machine's slow start does not count.
    assert latency < 10, latency


def test_ray_route_match_rows_is_checked_the_same_way():
    t = arrow_table(extra=False)
    t = t.append_column(ROW, pa.array(np.arange(N, dtype=np.int64)))
    rows = match_rows("pickaxe.ray.mine()", t, "score > 0.5")
    np.testing.assert_array_equal(rows, np.flatnonzero(columns()["score"] > 0.5))
    with pytest.raises(ValueError, match="a subquery") as e:
        match_rows("pickaxe.ray.mine()", t, HOSTILE["read_text subquery"])
    assert_refused(e.value, HOSTILE["read_text subquery"])

"""Several read-model writes as one SQL statement: one round trip, atomic without a
transaction.

A consumer writes its rows and its position after every poll. As separate statements
in a transaction that is six round trips (BEGIN, four writes, COMMIT), and on a busy
service each waits for the event loop as well as for PostgreSQL: they took 13.6 ms
(p50) of the 45 ms from a POS sale to the stock query, five times what PostgreSQL
needs for them. PostgreSQL runs the data-modifying CTEs of one statement atomically,
and ``jsonb_to_recordset`` takes any number of rows as one parameter, so the same
writes go as one statement, in one round trip, under autocommit.

The column lists and types come from the tables' SQLAlchemy definitions, so a
statement cannot drift from its table.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from sqlalchemy import Table, TextClause, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncEngine

_DIALECT = postgresql.dialect()  # type: ignore[no-untyped-call]
_quote = _DIALECT.identifier_preparer.quote


def upsert(
    table: Table,
    *,
    key: Sequence[str] = (),
    update: Sequence[str] | Mapping[str, str] = (),
) -> str:
    """An INSERT of the rows passed as a JSON array in the parameter named after
    ``table``. On a conflict over ``key`` it sets ``update`` (column names, taken from
    the new row; or column → SQL expression, where ``excluded`` is the new row); with no
    ``key``, a conflicting row is left as it is."""
    columns = ", ".join(_quote(c.name) for c in table.columns)
    record = ", ".join(
        f"{_quote(c.name)} {c.type.compile(dialect=_DIALECT)}" for c in table.columns
    )
    statement = (
        # Names and types from the table definition only; the rows are a bound parameter.
        f"INSERT INTO {_quote(table.name)} ({columns}) SELECT {columns} "  # noqa: S608
        f"FROM jsonb_to_recordset(CAST(:{table.name} AS jsonb)) AS r({record}) ON CONFLICT"
    )
    if not key:
        return f"{statement} DO NOTHING"
    sets = update if isinstance(update, Mapping) else {c: f"excluded.{_quote(c)}" for c in update}
    assignments = ", ".join(f"{_quote(c)} = {expression}" for c, expression in sets.items())
    return f"{statement} ({', '.join(_quote(c) for c in key)}) DO UPDATE SET {assignments}"


def one_statement(*writes: str) -> TextClause:
    """``writes`` (from :func:`upsert`, of different tables) as one statement."""
    *first, last = writes
    ctes = ", ".join(f"w{n} AS ({write})" for n, write in enumerate(first))
    return text(f"WITH {ctes} {last}" if first else last)


def rows(tables: Mapping[Table, Sequence[Mapping[str, Any]]]) -> dict[str, str]:
    """The statement's parameters: each table's rows, as JSON (datetimes in ISO 8601; a
    naive one is taken as UTC, as asyncpg takes it, not in the session's time zone)."""
    return {
        table.name: orjson.dumps(list(values), option=orjson.OPT_NAIVE_UTC).decode()
        for table, values in tables.items()
    }


def autocommit(engine: AsyncEngine) -> AsyncEngine:
    """``engine`` for statements that are atomic by themselves: no BEGIN or COMMIT round
    trip around them (the pool is shared)."""
    return engine.execution_options(isolation_level="AUTOCOMMIT")

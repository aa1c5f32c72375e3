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
statement cannot drift from its table. One statement may not update a row twice:
the rows of one table must have distinct keys.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import orjson
from sqlalchemy import Row, Table, TextClause, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

_DIALECT = postgresql.dialect()  # type: ignore[no-untyped-call]
_quote = _DIALECT.identifier_preparer.quote

Rows = Sequence[Mapping[str, Any]]


@dataclass(frozen=True, slots=True)
class Write:
    """An INSERT of one table's rows, given as a JSON array (see :func:`upsert`)."""

    table: Table
    #: What to do with a row whose key is taken: ``ON CONFLICT ...``.
    on_conflict: str

    def sql(self, only_if: str = "") -> str:
        columns = ", ".join(_quote(c.name) for c in self.table.columns)
        where = f" WHERE {only_if}" if only_if else ""
        # Names and types from the table definition only; the rows are a bound parameter.
        return (
            f"INSERT INTO {_quote(self.table.name)} ({columns}) "  # noqa: S608
            f"SELECT {columns} FROM {recordset(self.table)}{where} {self.on_conflict}"
        )


def recordset(table: Table, alias: str = "r") -> str:
    """The rows of ``table`` passed as the JSON array parameter named after it, as a
    relation of ``table``'s columns."""
    record = ", ".join(
        f"{_quote(c.name)} {c.type.compile(dialect=_DIALECT)}" for c in table.columns
    )
    return f"jsonb_to_recordset(CAST(:{table.name} AS jsonb)) AS {alias}({record})"


def upsert(
    table: Table,
    *,
    key: Sequence[str] = (),
    update: Sequence[str] | Mapping[str, str] = (),
    only_if: str = "",
) -> Write:
    """Insert the rows; on a conflict over ``key`` set ``update`` (column names, taken
    from the new row; or column → SQL expression, where ``excluded`` is the new row),
    where the stored row meets ``only_if``. With no ``key``, a conflicting row is left
    as it is."""
    if not key:
        return Write(table, "ON CONFLICT DO NOTHING")
    sets = update if isinstance(update, Mapping) else {c: f"excluded.{_quote(c)}" for c in update}
    assignments = ", ".join(f"{_quote(c)} = {expression}" for c, expression in sets.items())
    keys = ", ".join(_quote(c) for c in key)
    where = f" WHERE {only_if}" if only_if else ""
    return Write(table, f"ON CONFLICT ({keys}) DO UPDATE SET {assignments}{where}")


def replace_all(table: Table) -> Write:
    """:func:`upsert` on the primary key, setting every other column from the new row."""
    key = [c.name for c in table.primary_key.columns]
    return upsert(table, key=key, update=[c.name for c in table.columns if c.name not in key])


@dataclass(frozen=True, slots=True)
class Batch:
    """Writes of different tables as one statement."""

    statement: TextClause
    tables: tuple[Table, ...]

    async def execute(
        self, connection: AsyncConnection, rows: Mapping[Table, Rows]
    ) -> list[Row[Any]]:
        """Write ``rows`` (a table left out writes nothing) and return what the
        statement's query returns. Atomic on its own: run it under autocommit
        (:func:`autocommit`)."""
        unknown = [t.name for t in rows if t not in self.tables]
        if unknown:
            raise ValueError(f"no write for table(s) {unknown} in this batch")
        result = await connection.execute(
            self.statement,
            {
                table.name: orjson.dumps(
                    list(rows.get(table, ())), default=_json, option=orjson.OPT_NAIVE_UTC
                ).decode()
                for table in self.tables
            },
        )
        return list(result) if result.returns_rows else []


def one_statement(
    *writes: Write, before: str = "", only_if: str = "", returning: str = ""
) -> Batch:
    """``writes`` as one statement. ``before`` adds common table expressions
    (``name AS (...), ...``) that ``only_if`` and ``returning`` may use; ``only_if`` is a
    condition every write is subject to (all rows are written, or none); ``returning``
    is the query whose rows :meth:`Batch.execute` returns."""
    tables = tuple(w.table for w in writes)
    if len(set(tables)) != len(tables):
        raise ValueError("one write per table: the rows of a table are one parameter")
    parts = [before] if before else []
    ctes = list(writes) if returning else list(writes[:-1])
    main = returning or writes[-1].sql(only_if)
    parts += [f"w{n} AS ({w.sql(only_if)})" for n, w in enumerate(ctes)]
    return Batch(text(f"WITH {', '.join(parts)} {main}" if parts else main), tables)


def _json(value: object) -> object:
    # Exact: numeric columns take the decimal's text as it is.
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


def autocommit(engine: AsyncEngine) -> AsyncEngine:
    """``engine`` for statements that are atomic by themselves: no BEGIN or COMMIT round
    trip around them (the pool is shared)."""
    return engine.execution_options(isolation_level="AUTOCOMMIT")

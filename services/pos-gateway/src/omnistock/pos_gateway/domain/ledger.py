"""The ledger of recorded POS transactions: the fold of ``pos.transactions``.

Every gateway replica folds the whole topic and reaches the same ledger, so
"was this transaction id recorded before?" is answered by the log, not by a
process's memory (rules 2 and 5). A transaction is identified by
``(store_id, transaction_id)``; the topic is keyed by store, so every copy of
one transaction lands in one partition and *the first copy in the log wins*.
A later copy changes nothing: that is how two replicas accepting the same
transaction at once still record it once, and how each tells its caller
honestly whether its copy was the one that counted.

The ledger also keeps which sequence numbers each terminal sent (gaps are lost
transactions) and yields the sales figures each counted transaction adds.
Like every fold here, it depends only on the order of records within a partition.

Memory is bounded by the resend window: the gateway refuses transactions that occurred
longer ago than the window, so a transaction the log has carried past the window (by
the log's own clock, the records' write times, plus a margin for clock skew) can never
come again and is forgotten. Without that, every replica would hold every transaction
ever sold (about 0.5-1 KB each).
"""

from __future__ import annotations

import hashlib
import heapq
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

import orjson

from omnistock.events.catalogue import PosLine, PosTransactionRecorded
from omnistock.events.envelope import Envelope, Event
from omnistock.pos_gateway.domain.sequences import Sequences

TransactionType = Literal["sale", "return", "void"]
#: ``(store_id, transaction_id)``.
TransactionKey = tuple[str, str]

#: How old a transaction a terminal may still send (an outage queue of days, not weeks).
DEFAULT_RESEND_WINDOW = timedelta(days=7)
#: Kept this much longer than the window: the gateway's clock and the writers' clocks
#: (which stamp the records the ledger forgets by) may disagree.
FORGET_MARGIN = timedelta(hours=1)
_BEGINNING = datetime.min.replace(tzinfo=UTC)


def fingerprint(event: PosTransactionRecorded) -> str:
    """Equal for the same transaction sent twice (a terminal's resend), whatever the JSON
    spelling of its prices or time zone."""
    lines = [
        [line.sku, line.quantity, str(line.unit_price.normalize()), line.currency]
        for line in event.lines
    ]
    facts = [
        event.store_id,
        event.transaction_id,
        event.terminal_id,
        event.sequence,
        event.occurred_at.astimezone(UTC).isoformat(),
        event.type,
        lines,
        event.voids_transaction_id,
    ]
    return hashlib.sha256(orjson.dumps(facts)).hexdigest()[:32]


def minute_of(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(second=0, microsecond=0)


@dataclass(frozen=True, slots=True)
class Recorded:
    """What the ledger remembers of one transaction."""

    type: TransactionType
    terminal_id: str
    fingerprint: str
    occurred_at: datetime
    lines: tuple[PosLine, ...]
    #: CloudEvents id of the copy that counted: each write has its own, so a writer knows
    #: whether its copy won (a producer's retried send repeats the id and is dropped).
    event_id: str
    voids_transaction_id: str | None = None


@dataclass(frozen=True, slots=True)
class SalesChange:
    """What one counted transaction adds to one store's figures for one minute."""

    store_id: str
    minute: datetime
    currency: str
    transactions: int
    units: int
    revenue: Decimal


@dataclass(slots=True)
class PosLedger:
    resend_window: timedelta = DEFAULT_RESEND_WINDOW
    transactions: dict[TransactionKey, Recorded] = field(default_factory=dict)
    #: Voided transaction → the void that counted for it (a transaction is voided once).
    voided_by: dict[TransactionKey, str] = field(default_factory=dict)
    terminals: dict[tuple[str, str], Sequences] = field(default_factory=dict)
    #: Which store recorded each transaction id: only to warn a caller reusing an id
    #: across stores (partitions), never to decide what counts.
    stores_of: dict[str, str] = field(default_factory=dict)
    missing_total: int = 0
    terminals_with_gaps: int = 0
    #: (occurred_at, store_id, transaction_id) of every remembered transaction, oldest first.
    _by_age: list[tuple[datetime, str, str]] = field(default_factory=list)
    #: Transactions that occurred before this are forgotten (it only moves forward).
    horizon: datetime = _BEGINNING

    def recorded(self, store_id: str, transaction_id: str) -> Recorded | None:
        return self.transactions.get((store_id, transaction_id))

    def apply(self, envelope: Envelope[Event]) -> list[SalesChange] | None:
        """Fold one record; None when it does not count (not a transaction, or a later copy
        of one already recorded), else what it adds to the sales figures."""
        event = envelope.event
        if not isinstance(event, PosTransactionRecorded):
            return None
        self._forget_before(envelope.time - self.resend_window - FORGET_MARGIN)
        key = (event.store_id, event.transaction_id)
        if key in self.transactions or event.occurred_at < self.horizon:
            # A later copy, or one older than anything the gateway still accepts (written
            # by a replica whose clock was far off): neither counts, on every replica.
            return None
        heapq.heappush(self._by_age, (event.occurred_at, event.store_id, event.transaction_id))
        self.transactions[key] = Recorded(
            type=event.type,
            terminal_id=event.terminal_id,
            fingerprint=fingerprint(event),
            occurred_at=event.occurred_at,
            lines=tuple(event.lines),
            event_id=envelope.id,
            voids_transaction_id=event.voids_transaction_id,
        )
        self.stores_of.setdefault(event.transaction_id, event.store_id)
        self._sequence(event.store_id, event.terminal_id, event.sequence)
        if event.type != "void":
            sign = 1 if event.type == "sale" else -1
            return _sales(event.store_id, event.occurred_at, event.lines, sign, count=1)
        assert event.voids_transaction_id is not None
        target_key = (event.store_id, event.voids_transaction_id)
        target = self.transactions.get(target_key)
        if target is None or target.type == "void" or target_key in self.voided_by:
            # The gateway refuses such voids before writing them; one can still reach the log
            # when two replicas void the same sale at once. It is recorded (its id is taken)
            # but reverses nothing, here and in inventory, which dedupes by voided transaction.
            return []
        self.voided_by[target_key] = event.transaction_id
        sign = -1 if target.type == "sale" else 1
        # The reversal lands in the voided sale's minute: a void says the sale never happened.
        return _sales(event.store_id, target.occurred_at, target.lines, sign, count=-1)

    def _forget_before(self, horizon: datetime) -> None:
        if horizon <= self.horizon:
            return
        self.horizon = horizon
        while self._by_age and self._by_age[0][0] < horizon:
            _, store_id, transaction_id = heapq.heappop(self._by_age)
            key = (store_id, transaction_id)
            del self.transactions[key]
            self.voided_by.pop(key, None)
            if self.stores_of.get(transaction_id) == store_id:
                del self.stores_of[transaction_id]

    def _sequence(self, store_id: str, terminal_id: str, sequence: int) -> None:
        numbers = self.terminals.setdefault((store_id, terminal_id), Sequences())
        before = numbers.missing
        numbers.add(sequence)
        after = numbers.missing
        self.missing_total += after - before
        self.terminals_with_gaps += (after > 0) - (before > 0)

    def canonical(self) -> Any:
        return {
            "transactions": sorted(
                [store, tid, r.type, r.fingerprint, r.event_id, self.voided_by.get((store, tid))]
                for (store, tid), r in self.transactions.items()
            ),
            "terminals": sorted(
                [store, terminal, numbers.ranges]
                for (store, terminal), numbers in self.terminals.items()
            ),
        }


def _sales(
    store_id: str,
    occurred_at: datetime,
    lines: tuple[PosLine, ...] | list[PosLine],
    sign: int,
    *,
    count: int,
) -> list[SalesChange]:
    """``sign`` is the direction of units and money; ``count`` how the transaction count
    moves (a return is one more transaction, a void one fewer)."""
    units: dict[str, int] = defaultdict(int)
    revenue: dict[str, Decimal] = defaultdict(Decimal)
    for line in lines:
        units[line.currency] += sign * line.quantity
        revenue[line.currency] += sign * line.quantity * line.unit_price
    minute = minute_of(occurred_at)
    return [
        SalesChange(store_id, minute, currency, count, units[currency], revenue[currency])
        for currency in sorted(units)
    ]

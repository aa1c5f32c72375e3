"""How one submitted transaction is judged against the ledger, before anything is written.

Pure: the caller passes the clock reading and the ledger. A batch is judged in
order, so a void may cancel a sale sent earlier in the same batch (a terminal
replaying its outage queue sends both).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from omnistock.events.catalogue import Identifier, PosLine, PosTransactionRecorded
from omnistock.pos_gateway.domain.ledger import PosLedger, TransactionKey, fingerprint

#: Lines of one transaction; a longer receipt is split by the terminal.
MAX_LINES = 500
MAX_SEQUENCE = 2**53 - 1


class Submission(BaseModel):
    """One transaction as a terminal sends it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    transaction_id: Identifier
    store_id: Identifier
    terminal_id: Identifier
    sequence: Annotated[
        # Bounded so every JSON reader keeps it exact (2**53 - 1).
        int, Field(ge=0, le=MAX_SEQUENCE, description="The terminal's own transaction number.")
    ]
    occurred_at: AwareDatetime
    type: Literal["sale", "return", "void"]
    lines: Annotated[
        list[PosLine],
        Field(
            max_length=MAX_LINES,
            description="Required for sales and returns; for a void, omit them or repeat the "
            "voided transaction's lines (partial voids are not supported).",
        ),
    ] = []
    voids_transaction_id: Identifier | None = None


@dataclass(frozen=True, slots=True)
class Accept:
    event: PosTransactionRecorded
    fingerprint: str


@dataclass(frozen=True, slots=True)
class Duplicate:
    """Recorded before with the same content: not written again."""


@dataclass(frozen=True, slots=True)
class Reject:
    reason: Literal[
        "future_timestamp",
        "too_old",
        "invalid",
        "unknown_void_target",
        "already_voided",
        "conflict",
    ]
    field: str
    message: str


Verdict = Accept | Duplicate | Reject


@dataclass(slots=True)
class _Written:
    type: str
    fingerprint: str
    lines: list[PosLine]


@dataclass(slots=True)
class BatchJudge:
    """Judges the items of one request in order against ``ledger``."""

    ledger: PosLedger
    now: datetime
    max_skew: timedelta
    _accepted: dict[TransactionKey, _Written] = field(default_factory=dict)
    _voided: set[TransactionKey] = field(default_factory=set)

    def judge(self, item: Submission) -> Verdict:
        problem = self._precheck(item)
        if problem is not None:
            return problem
        event = self._event(item)
        if isinstance(event, Reject):
            return event
        return self._admit(event)

    def _precheck(self, item: Submission) -> Reject | None:
        if item.occurred_at > self.now + self.max_skew:
            ahead = (item.occurred_at - self.now).total_seconds()
            return Reject(
                "future_timestamp",
                "occurred_at",
                f"is {ahead:.0f} s in the future; the gateway allows "
                f"{self.max_skew.total_seconds():.0f} s of clock skew",
            )
        window = self.ledger.resend_window
        if item.occurred_at < self.now - window:
            return Reject(
                "too_old",
                "occurred_at",
                f"is older than the resend window ({window.total_seconds() / 3600:g} h): the "
                "gateway no longer knows whether it was recorded; correct the stock with an "
                "adjustment instead",
            )
        other_store = self.ledger.stores_of.get(item.transaction_id, item.store_id)
        if other_store != item.store_id:
            return Reject(
                "conflict",
                "transaction_id",
                f"already recorded by store {other_store!r}; transaction ids are unique "
                "across stores",
            )
        return _shape_error(item)

    def _admit(self, event: PosTransactionRecorded) -> Verdict:
        key = (event.store_id, event.transaction_id)
        mark = fingerprint(event)
        earlier = self.ledger.recorded(*key) or self._accepted.get(key)
        if earlier is not None:
            if earlier.fingerprint == mark:
                return Duplicate()
            return Reject(
                "conflict",
                "transaction_id",
                "already recorded with different content; a correction is a new transaction",
            )
        if event.voids_transaction_id is not None:
            target_key = (event.store_id, event.voids_transaction_id)
            if target_key in self.ledger.voided_by or target_key in self._voided:
                return Reject(
                    "already_voided",
                    "voids_transaction_id",
                    f"{event.voids_transaction_id!r} is already voided",
                )
            self._voided.add(target_key)
        self._accepted[key] = _Written(event.type, mark, event.lines)
        return Accept(event, mark)

    def _event(self, item: Submission) -> PosTransactionRecorded | Reject:
        lines = item.lines
        voided_type: Literal["sale", "return"] | None = None
        if item.type == "void":
            assert item.voids_transaction_id is not None
            target_key = (item.store_id, item.voids_transaction_id)
            target = self.ledger.recorded(*target_key) or self._accepted.get(target_key)
            if target is None:
                return Reject(
                    "unknown_void_target",
                    "voids_transaction_id",
                    f"no transaction {item.voids_transaction_id!r} was recorded for store "
                    f"{item.store_id!r}",
                )
            if target.type == "void":
                return Reject("invalid", "voids_transaction_id", "a void cannot be voided")
            if lines and list(lines) != list(target.lines):
                return Reject(
                    "invalid",
                    "lines",
                    "a void's lines must be omitted or equal the voided transaction's",
                )
            lines = list(target.lines)
            voided_type = "sale" if target.type == "sale" else "return"
        return PosTransactionRecorded(
            transaction_id=item.transaction_id,
            store_id=item.store_id,
            terminal_id=item.terminal_id,
            sequence=item.sequence,
            occurred_at=item.occurred_at,
            type=item.type,
            lines=lines,
            voids_transaction_id=item.voids_transaction_id,
            voided_type=voided_type,
        )


def _shape_error(item: Submission) -> Reject | None:
    field = "voids_transaction_id"
    if item.type == "void":
        if item.voids_transaction_id is None:
            return Reject("invalid", field, "a void names the transaction it voids")
        if item.voids_transaction_id == item.transaction_id:
            return Reject("invalid", field, "a transaction cannot void itself")
        return None
    if item.voids_transaction_id is not None:
        return Reject("invalid", field, f"only a void names one, not a {item.type}")
    if not item.lines:
        return Reject("invalid", "lines", f"a {item.type} has at least one line")
    return None

"""Audit the inventory log against the invariants I1-I4, from offset 0.

:class:`LogAudit` is pure: it takes envelopes read from ``inventory.stock`` and
``inventory.reservations`` (in log order per partition, partitions interleaved
in any way) and accumulates findings. It runs the domain's own folds: one
:class:`Fold` over a :class:`StockBook` per stock partition and over a
:class:`SagaBook` per reservation partition, exactly as the service does; and
checks what they decide against what the rest of the log says. It never decides
anything itself: a second implementation of the fold could only agree or
disagree with the first, and would then need its own audit.

:func:`run_audit` is the I/O around it: it reads the service's read model (one
consistent snapshot) when asked, replays the log twice with
:func:`omnistock.events.replay.replay`, and compares.

Findings come in four kinds: *violations* (an invariant is broken; the audit
fails), *discrepancies* (the shelf and the books disagree, e.g. a POS sale drove
on_hand below what is promised: a physical fact to investigate, not a bug),
*in flight* (work the log shows as started and not yet finished, which is normal
when the log simply ends mid-saga) and *notes*.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
from aiokafka import TopicPartition
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from omnistock.events.admin import cluster_id
from omnistock.events.catalogue import (
    HoldOutcome,
    OwnershipClaimed,
    PosLineApplied,
    ReservationCommitted,
    ReservationHeld,
    ReservationRejected,
    StockAdjusted,
    StockDiscrepancyRecorded,
    StockReceived,
    StockShipped,
    TransferDispatched,
)
from omnistock.events.envelope import Envelope, Event, Position
from omnistock.events.fold import Fold, state_hash
from omnistock.events.positions import consumer_positions
from omnistock.events.replay import replay
from omnistock.events.settings import KafkaSettings
from omnistock.events.topics import INVENTORY_RESERVATIONS, INVENTORY_STOCK
from omnistock.inventory import projections as rm
from omnistock.inventory.domain.reservations import Saga, SagaBook
from omnistock.inventory.domain.stock import Decision, Effects, Hold, Level, StockBook
from omnistock.inventory.handlers import RESERVATIONS_GROUP, STOCK_GROUP

Invariant = Literal["I1", "I2", "I3", "I4"]
Kind = Literal["violation", "discrepancy", "in_flight", "note"]

INVARIANTS: dict[Invariant, str] = {
    "I1": "no oversell",
    "I2": "atomic reservations",
    "I3": "exactly-once effects",
    "I4": "deterministic replay",
}

#: The read model's stock_levels columns the fold determines.
LEVEL_FIGURES = ("on_hand", "held", "committed", "unsellable", "incoming", "safety_stock")
_ZERO = Level().figures()

PartitionKey = tuple[str, int]


@dataclass(frozen=True, slots=True)
class Finding:
    invariant: Invariant
    kind: Kind
    message: str
    #: Where in the log, as ``topic:partition:offset``, when one record is to blame.
    position: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "invariant": self.invariant,
            "kind": self.kind,
            "message": self.message,
            "position": self.position,
        }


@dataclass(frozen=True, slots=True)
class ReadModel:
    """The service's database as one consistent snapshot: plain rows, no connection."""

    #: (consumer, topic, partition, next_offset, log_id) rows of ``consumer_positions``.
    positions: list[tuple[str, str, int, int, str]] = field(default_factory=list)
    #: ``stock_levels`` rows as dicts (column name → value).
    levels: list[dict[str, Any]] = field(default_factory=list)
    #: ``reservations`` rows as dicts.
    reservations: list[dict[str, Any]] = field(default_factory=list)
    #: False when the service never created its tables in this database.
    exists: bool = True

    def checkpoints(self, consumer: str, topic: str) -> dict[PartitionKey, int]:
        return {
            (t, p): offset for c, t, p, offset, _ in self.positions if c == consumer and t == topic
        }

    def log_ids(self) -> set[str]:
        return {log_id for *_, log_id in self.positions}


@dataclass
class AuditReport:
    checked: dict[Invariant, int] = field(default_factory=lambda: dict.fromkeys(INVARIANTS, 0))
    findings: list[Finding] = field(default_factory=list)
    events: int = 0
    applied: int = 0
    fenced: int = 0
    duplicates: int = 0
    poison: int = 0
    claims: int = 0
    state_hash: str = ""
    #: Hash of each partition's fold (``topic[partition]`` → hash), to compare with a service.
    partition_hashes: dict[str, str] = field(default_factory=dict)
    #: Where the audit stopped reading (``topic[partition]`` → next offset).
    end_offsets: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    read_model_compared: bool = False

    def of_kind(self, kind: Kind, invariant: Invariant | None = None) -> list[Finding]:
        return [
            f
            for f in self.findings
            if f.kind == kind and (invariant is None or f.invariant == invariant)
        ]

    @property
    def violations(self) -> list[Finding]:
        return self.of_kind("violation")

    @property
    def ok(self) -> bool:
        return not self.violations

    def compare_replay(self, second_hash: str) -> None:
        """I4: another replay of the same records must reach the same state."""
        self.checked["I4"] += 1
        if second_hash != self.state_hash:
            self.findings.append(
                Finding(
                    "I4",
                    "violation",
                    f"replaying the same records again gave state {second_hash[:16]}, "
                    f"not {self.state_hash[:16]}",
                )
            )

    def as_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "state_hash": self.state_hash,
            "events": self.events,
            "seconds": round(self.seconds, 3),
            "stats": {
                "applied": self.applied,
                "fenced": self.fenced,
                "duplicates": self.duplicates,
                "poison": self.poison,
                "claims": self.claims,
            },
            "read_model_compared": self.read_model_compared,
            "invariants": {
                name: {
                    "title": title,
                    "checked": self.checked[name],
                    "violations": [f.as_json() for f in self.of_kind("violation", name)],
                }
                for name, title in INVARIANTS.items()
            },
            "discrepancies": [f.as_json() for f in self.of_kind("discrepancy")],
            "in_flight": [f.as_json() for f in self.of_kind("in_flight")],
            "notes": [f.as_json() for f in self.of_kind("note")],
            "partition_hashes": self.partition_hashes,
            "end_offsets": self.end_offsets,
        }

    def to_json(self) -> bytes:
        return orjson.dumps(self.as_json(), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)


@dataclass(slots=True)
class _Document:
    """One business document line (a receipt line, a POS line, ...) as the log carried it."""

    seen: int = 0
    applied: int = 0
    first: dict[str, Any] = field(default_factory=dict)
    position: str = ""


@dataclass(frozen=True, slots=True)
class _Decision:
    reservation_id: str
    sku: str
    request: str
    outcome: str
    position: Position


@dataclass(frozen=True, slots=True)
class _Grant:
    allocations: dict[str, int]
    position: Position


@dataclass(frozen=True, slots=True)
class _HeldClaim:
    reservation_id: str
    lines: dict[str, dict[str, int]]
    position: Position


def _document(event: Event) -> tuple[tuple[str, ...], dict[str, Any]] | None:
    """The audit's own notion of "the same document" (independent of the fold's keys, so
    that a key the fold got wrong would show up), and the content that should not vary."""
    key: tuple[str, ...]
    if isinstance(event, StockReceived):
        key = ("receipt", event.receipt_id, event.sku, event.location_id)
    elif isinstance(event, StockAdjusted):
        key = ("adjustment", event.adjustment_id, event.sku, event.location_id)
    elif isinstance(event, PosLineApplied):
        # A void names the transaction it voids: the kind tells the two documents apart.
        key = ("pos line", event.transaction_id, str(event.line_number), event.kind)
    elif isinstance(event, StockShipped):
        key = ("shipment", event.shipment_id, event.sku, event.location_id)
    elif isinstance(event, TransferDispatched):
        key = ("transfer", event.replenishment_id, event.sku, event.location_id)
    else:
        return None
    return key, event.model_dump(mode="json")


def _by_location(lines: Iterable[Any]) -> dict[str, dict[str, int]]:
    """LocatedLines as sku → location → quantity."""
    out: dict[str, dict[str, int]] = defaultdict(dict)
    for line in lines:
        out[line.sku][line.location_id] = out[line.sku].get(line.location_id, 0) + line.quantity
    return dict(out)


def _where(position: Position | None) -> str | None:
    return position.token() if position is not None else None


class LogAudit:
    """Consumes the inventory log envelope by envelope; :meth:`finish` says what it found.

    ``read_model`` (optional) is compared with the folds as they were at the read
    model's own stored positions, so a service that is behind is not blamed for it.
    ``log_id`` is the cluster id of the log being read, to check the read model's.
    ``book`` makes each stock partition's projection (the domain's :class:`StockBook`).
    """

    def __init__(
        self,
        *,
        stock_topic: str = INVENTORY_STOCK.name,
        reservations_topic: str = INVENTORY_RESERVATIONS.name,
        read_model: ReadModel | None = None,
        log_id: str | None = None,
        book: Callable[[], StockBook] = StockBook,
    ) -> None:
        self.stock_topic = stock_topic
        self.reservations_topic = reservations_topic
        self.read_model = read_model
        self.log_id = log_id
        # Replaceable so that the audit itself can be tested against a fold with a bug.
        self._new_book = book
        self.stock: dict[int, Fold[StockBook]] = {}
        self.sagas: dict[int, Fold[SagaBook]] = {}
        self.report = AuditReport()
        self.poison = 0
        self._events = 0
        self._next: dict[PartitionKey, int] = {}
        # I1
        self._discrepancy_causes: list[tuple[str, str, str, Position]] = []
        self._recorded_discrepancies: set[tuple[str, str, str]] = set()
        self._claims_at: dict[int, list[int]] = defaultdict(list)
        # I2
        self._decisions: dict[str, _Decision] = {}
        self._decided_for: dict[str, list[str]] = defaultdict(list)
        self._relayed: set[str] = set()
        self._accepted: dict[tuple[str, str], HoldOutcome] = {}
        self._held_claims: list[_HeldClaim] = []
        self._hold_partition: dict[tuple[str, str], int] = {}
        self._hold_skus: dict[str, set[str]] = defaultdict(set)
        # I3
        self._documents: dict[tuple[str, ...], _Document] = {}
        self._grants: dict[tuple[str, str], list[_Grant]] = defaultdict(list)
        self._commits: dict[tuple[str, str], list[tuple[str, Position]]] = defaultdict(list)
        self._committed_orders: dict[str, dict[str, Position]] = defaultdict(dict)
        # I4: the folds as they were at the read model's positions.
        self._checkpoints: dict[PartitionKey, int] = {}
        self._captured_levels: dict[int, dict[tuple[str, str], dict[str, int]]] = {}
        self._captured_sagas: dict[int, dict[str, dict[str, Any]]] = {}
        if read_model is not None:
            self._checkpoints = {
                **read_model.checkpoints(STOCK_GROUP, stock_topic),
                **read_model.checkpoints(RESERVATIONS_GROUP, reservations_topic),
            }

    # -- the Projection protocol, so a Fold subclass can drive the audit from replay() --

    def apply(self, envelope: Envelope[Event]) -> None:
        self.observe(envelope)

    def canonical(self) -> dict[str, Any]:
        return {
            "stock": {p: fold.canonical() for p, fold in sorted(self.stock.items())},
            "reservations": {p: fold.canonical() for p, fold in sorted(self.sagas.items())},
        }

    def state_hash(self, partition_hashes: Mapping[str, str] | None = None) -> str:
        """One hash over every partition's fold state (each partition hashed on its own, so
        the state is hashed once even when both are wanted)."""
        return state_hash(partition_hashes or self.partition_hashes())

    def partition_hashes(self) -> dict[str, str]:
        hashes = {f"{self.stock_topic}[{p}]": f.state_hash() for p, f in self.stock.items()}
        hashes.update(
            {f"{self.reservations_topic}[{p}]": f.state_hash() for p, f in self.sagas.items()}
        )
        return dict(sorted(hashes.items()))

    # -- consuming ------------------------------------------------------------------------

    def observe(self, envelope: Envelope[Event]) -> None:
        """Take in one envelope read from the log (its position set)."""
        position = envelope.position
        if position is None:
            raise ValueError("only envelopes read from the log can be audited")
        key = (position.topic, position.partition)
        checkpoint = self._checkpoints.get(key)
        if checkpoint is not None and position.offset >= checkpoint:
            self._capture(key)
        self._events += 1
        self._next[key] = max(self._next.get(key, 0), position.offset + 1)
        if position.topic == self.stock_topic:
            self._observe_stock(envelope, position)
        elif position.topic == self.reservations_topic:
            self._observe_reservation(envelope, position)

    def _observe_stock(self, envelope: Envelope[Event], position: Position) -> None:
        fold = self.stock.get(position.partition)
        if fold is None:
            fold = self.stock[position.partition] = Fold(self._new_book())
        event = envelope.event
        if isinstance(event, StockDiscrepancyRecorded):
            # Counted even when fenced: the owner did record it, whatever readers make of it.
            self._recorded_discrepancies.add((event.cause_event_id, event.sku, event.location_id))
        if isinstance(event, OwnershipClaimed):
            claims = fold.stats.claims
            fold.admit(envelope)
            if fold.stats.claims > claims:
                self._claims_at[position.partition].append(position.offset)
            return
        if not fold.admit(envelope):
            return
        # Admission and application as StockOwner.handle does it, to see the effects.
        book = fold.projection
        effects = book.apply(envelope)
        fold.stats.applied += 1
        document = _document(event)
        if document is not None:
            self._count_document(document, applied=bool(effects.movements), position=position)
        decision = effects.decision
        if decision is not None:
            self._decisions[envelope.id] = _Decision(
                decision.reservation_id, decision.sku, decision.request, decision.outcome, position
            )
            self._decided_for[decision.reservation_id].append(envelope.id)
            if decision.request == "hold":
                self._hold_partition.setdefault(
                    (decision.reservation_id, decision.sku), position.partition
                )
                self._hold_skus[decision.reservation_id].add(decision.sku)
            self._holds_moved(book, decision, effects, position)
        for sku, location_id in effects.discrepancies:
            level = book.level(sku, location_id)
            self.report.findings.append(
                Finding(
                    "I1",
                    "discrepancy",
                    f"{sku} at {location_id} went short with {envelope.type.rsplit('.', 1)[-1]}: "
                    f"on_hand {level.on_hand} < held {level.held} + committed {level.committed}",
                    position.token(),
                )
            )
            self._discrepancy_causes.append((envelope.id, sku, location_id, position))

    def _holds_moved(
        self, book: StockBook, decision: Decision, effects: Effects, position: Position
    ) -> None:
        """Record grants and commits (I3) and check each grant (I1)."""
        rid, sku = decision.reservation_id, decision.sku
        granted = {m.location_id: m.held_change for m in effects.movements if m.kind == "hold"}
        if any(m.kind == "commit" for m in effects.movements):
            self._commits[rid, sku].append((decision.order_id or "", position))
        if not granted:
            return
        self._grants[rid, sku].append(_Grant(granted, position))
        for location_id in sorted(granted):
            level = book.level(sku, location_id)
            self.report.checked["I1"] += 1
            if level.held + level.committed > level.on_hand:
                self._violation(
                    "I1",
                    f"hold {rid}/{sku} granted at {location_id} oversells: held {level.held} + "
                    f"committed {level.committed} > on_hand {level.on_hand}",
                    position,
                )
            elif level.sellable < 0:
                self._violation(
                    "I1",
                    f"hold {rid}/{sku} granted at {location_id} takes unsellable or safety "
                    f"stock: {level.figures()}",
                    position,
                )

    def _count_document(
        self, document: tuple[tuple[str, ...], dict[str, Any]], *, applied: bool, position: Position
    ) -> None:
        key, content = document
        seen = self._documents.get(key)
        if seen is None:
            seen = self._documents[key] = _Document(first=content, position=position.token())
        elif content != seen.first:
            changed = sorted(k for k in content if content[k] != seen.first.get(k))
            self.report.findings.append(
                Finding(
                    "I3",
                    "note",
                    f"{' '.join(key)} came again with other content ({', '.join(changed)}); "
                    f"the first, at {seen.position}, stands",
                    position.token(),
                )
            )
        seen.seen += 1
        seen.applied += applied

    def _observe_reservation(self, envelope: Envelope[Event], position: Position) -> None:
        fold = self.sagas.get(position.partition)
        if fold is None:
            fold = self.sagas[position.partition] = Fold(SagaBook())
        if not fold.admit(envelope):
            return
        event = envelope.event
        book = fold.projection
        rid: str | None = getattr(event, "reservation_id", None)
        before = book.sagas.get(rid) if rid is not None else None
        if isinstance(event, HoldOutcome):
            self._relayed.add(event.decided_event_id)
            # As the saga takes them: the first answer per SKU to its own request.
            taken = before is None or (
                event.sku not in before.holds
                and event.request_fingerprint in (None, before.fingerprint)
            )
            if event.request == "hold" and event.outcome in ("held", "rejected") and taken:
                self._accepted[event.reservation_id, event.sku] = event
        elif isinstance(event, ReservationHeld):
            self._reservation_held(before, event, position)
        elif isinstance(event, ReservationRejected):
            if before is not None and before.status in ("held", "committed"):
                self._violation(
                    "I2",
                    f"reservation {event.reservation_id} rejected after it was {before.status}",
                    position,
                )
        elif isinstance(event, ReservationCommitted):
            self._reservation_committed(before, event, position)
        book.apply(envelope)
        fold.stats.applied += 1

    def _reservation_held(
        self, saga: Saga | None, event: ReservationHeld, position: Position
    ) -> None:
        rid = event.reservation_id
        self.report.checked["I2"] += 1
        named = _by_location(event.lines)
        self._held_claims.append(_HeldClaim(rid, named, position))
        if saga is None or saga.request is None:
            self._violation("I2", f"reservation {rid} reported held but never requested", position)
            return
        if saga.status not in ("pending", "held"):
            self._violation(
                "I2", f"reservation {rid} reported held after it was {saga.status}", position
            )
        for sku in saga.skus:
            outcome = saga.holds.get(sku)
            if outcome is None or outcome.outcome != "held":
                said = outcome.outcome if outcome is not None else "no outcome yet"
                self._violation(
                    "I2",
                    f"reservation {rid} reported held, but {sku} was not held at that point "
                    f"({said})",
                    position,
                )
            elif sku in saga.let_go:
                self._violation(
                    "I2",
                    f"reservation {rid} reported held, but {sku} was already {saga.let_go[sku]}",
                    position,
                )
        held_lines = _by_location(saga.lines())
        if named != held_lines:
            self._violation(
                "I2",
                f"reservation {rid} reported held with lines {named}, "
                f"the outcomes hold {held_lines}",
                position,
            )

    def _reservation_committed(
        self, saga: Saga | None, event: ReservationCommitted, position: Position
    ) -> None:
        rid = event.reservation_id
        self._committed_orders[rid].setdefault(event.order_id, position)
        if saga is None:
            self._violation("I2", f"reservation {rid} committed but never requested", position)
            return
        if saga.status == "committed":
            return  # an answer repeated for a retried commit; I3 checks the order
        failed = {
            sku: saga.committed_skus.get(sku, "not asked")
            for sku in saga.skus
            if saga.committed_skus.get(sku) != "committed"
        }
        if saga.status != "held" or failed:
            self._violation(
                "I2",
                f"reservation {rid} committed to {event.order_id} while {saga.status}"
                + (f", SKUs not committed: {failed}" if failed else ""),
                position,
            )

    def _violation(self, invariant: Invariant, message: str, position: Position | None) -> None:
        self.report.findings.append(Finding(invariant, "violation", message, _where(position)))

    # -- read model checkpoints ---------------------------------------------------------

    def _capture(self, key: PartitionKey) -> None:
        topic, partition = key
        del self._checkpoints[key]
        if topic == self.stock_topic:
            fold = self.stock.get(partition)
            levels = fold.projection.levels if fold is not None else {}
            self._captured_levels[partition] = {k: v.figures() for k, v in levels.items()}
        else:
            sagas = self.sagas.get(partition)
            self._captured_sagas[partition] = {
                rid: {
                    "status": saga.status,
                    "order_id": saga.order_id,
                    "expires_at": saga.expires_at,
                    "lines": sorted(
                        (line.sku, line.location_id, line.quantity) for line in saga.lines()
                    ),
                }
                for rid, saga in (sagas.projection.sagas.items() if sagas is not None else ())
                if saga.request is not None
            }

    # -- the verdict ----------------------------------------------------------------------

    def finish(self, ends: Mapping[PartitionKey, int] | None = None) -> AuditReport:
        """Everything found. ``ends``: where the reading stopped per partition (the log end
        at the start of a replay); without it, one past the last offset seen."""
        report = self.report
        horizon = dict(self._next)
        if ends is not None:
            horizon.update(ends)
        self._read_model_positions(horizon)
        self._books_balance()
        self._hidden_discrepancies()
        self._holds_match_outcomes(horizon)
        self._sagas_settle()
        self._exactly_once()
        if self.read_model is not None:
            self._compare_read_model()
        stats = [f.stats for f in self.stock.values()] + [f.stats for f in self.sagas.values()]
        report.events = self._events
        report.applied = sum(s.applied for s in stats)
        report.fenced = sum(s.fenced for s in stats)
        report.duplicates = sum(s.duplicates for s in stats)
        report.claims = sum(s.claims for s in stats)
        report.poison = self.poison
        report.partition_hashes = self.partition_hashes()
        report.state_hash = self.state_hash(report.partition_hashes)
        report.end_offsets = {f"{t}[{p}]": o for (t, p), o in sorted(horizon.items())}
        if report.fenced:
            report.findings.append(
                Finding("I4", "note", f"{report.fenced} records fenced (stale or rival owners)")
            )
        if report.poison:
            report.findings.append(
                Finding("I4", "note", f"{report.poison} undecodable records skipped (as the DLQ)")
            )
        return report

    def _read_model_positions(self, horizon: Mapping[PartitionKey, int]) -> None:
        """Capture the folds at the read model's positions not reached by a record."""
        for key, checkpoint in sorted(self._checkpoints.items()):
            end = horizon.get(key, 0)
            if checkpoint > end:
                self.report.checked["I4"] += 1
                self._violation(
                    "I4",
                    f"read model position {key[0]}[{key[1]}] {checkpoint} is ahead of the log "
                    f"(it ends at {end}): rows the log does not back",
                    None,
                )
            self._capture(key)

    def _books_balance(self) -> None:
        for fold in self.stock.values():
            book = fold.projection
            held: dict[tuple[str, str], int] = defaultdict(int)
            committed: dict[tuple[str, str], int] = defaultdict(int)
            for hold in book.holds.values():
                for location_id, quantity in hold.allocations.items():
                    if hold.status == "held":
                        held[hold.sku, location_id] += quantity
                    elif hold.status in ("committed", "shipped"):
                        open_ = quantity - hold.shipped.get(location_id, 0)
                        committed[hold.sku, location_id] += open_
            for key in sorted(set(book.levels) | set(held) | set(committed)):
                level = book.level(*key)
                self.report.checked["I1"] += 1
                if (level.held, level.committed) != (held[key], committed[key]):
                    self._violation(
                        "I1",
                        f"{key[0]} at {key[1]}: books say held {level.held}, committed "
                        f"{level.committed}; the holds say held {held[key]}, committed "
                        f"{committed[key]}",
                        None,
                    )
                if level.short:
                    self.report.findings.append(
                        Finding(
                            "I1",
                            "discrepancy",
                            f"{key[0]} at {key[1]} is short at the end of the log: on_hand "
                            f"{level.on_hand} < held {level.held} + committed {level.committed}",
                        )
                    )

    def _hidden_discrepancies(self) -> None:
        """I1 also says a shortfall is recorded, never hidden: the partition owner writes a
        StockDiscrepancyRecorded for every one the fold detects."""
        for cause_id, sku, location_id, position in self._discrepancy_causes:
            if (cause_id, sku, location_id) in self._recorded_discrepancies:
                continue
            later_claims = [o for o in self._claims_at[position.partition] if o > position.offset]
            if later_claims:
                # An owner took the partition over after the cause and still nobody wrote it.
                self._violation(
                    "I1",
                    f"shortfall of {sku} at {location_id} never recorded "
                    f"(no StockDiscrepancyRecorded; owner claims since at {later_claims})",
                    position,
                )
            else:
                self.report.findings.append(
                    Finding(
                        "I1",
                        "in_flight",
                        f"shortfall of {sku} at {location_id} not recorded yet",
                        position.token(),
                    )
                )

    def _stock_hold(self, rid: str, sku: str) -> Hold | None:
        partition = self._hold_partition.get((rid, sku))
        if partition is None:
            return None
        return self.stock[partition].projection.holds.get((rid, sku))

    def _beyond(self, token: str, horizon: Mapping[PartitionKey, int]) -> bool:
        """Whether a stock position lies past where this audit read (a live log)."""
        try:
            position = Position.from_token(token)
        except ValueError:
            return False
        return position.offset >= horizon.get((position.topic, position.partition), 0)

    def _holds_match_outcomes(self, horizon: Mapping[PartitionKey, int]) -> None:
        """What the sagas were told (outcomes) and reported (ReservationHeld) against what
        the stock folds decided."""
        for (rid, sku), outcome in sorted(self._accepted.items()):
            if self._beyond(outcome.stock_position, horizon):
                continue
            self.report.checked["I2"] += 1
            grants = self._grants.get((rid, sku))
            told = _by_location(outcome.allocations).get(sku, {})
            if outcome.outcome == "held" and not grants:
                hold = self._stock_hold(rid, sku)
                status = hold.status if hold is not None else "never requested"
                self._violation(
                    "I2",
                    f"{rid}/{sku}: the saga was told held, the stock fold did not grant it "
                    f"({status})",
                    Position.from_token(outcome.stock_position),
                )
            elif outcome.outcome == "held" and grants and grants[0].allocations != told:
                self._violation(
                    "I2",
                    f"{rid}/{sku}: the saga was told {told}, the stock fold granted "
                    f"{grants[0].allocations}",
                    grants[0].position,
                )
            elif outcome.outcome == "rejected" and grants:
                self._violation(
                    "I2",
                    f"{rid}/{sku}: the saga was told rejected, the stock fold granted "
                    f"{grants[0].allocations}",
                    grants[0].position,
                )
        for claim in self._held_claims:
            for sku, named in sorted(claim.lines.items()):
                accepted = self._accepted.get((claim.reservation_id, sku))
                if accepted is not None and self._beyond(accepted.stock_position, horizon):
                    continue
                grants = self._grants.get((claim.reservation_id, sku))
                if not grants:
                    hold = self._stock_hold(claim.reservation_id, sku)
                    status = hold.status if hold is not None else "never requested"
                    self._violation(
                        "I2",
                        f"reservation {claim.reservation_id} reported held names {sku} {named}, "
                        f"whose hold the stock fold never granted ({status})",
                        claim.position,
                    )
                elif grants[0].allocations != named:
                    self._violation(
                        "I2",
                        f"reservation {claim.reservation_id} reported held names {sku} {named}, "
                        f"the stock fold granted {grants[0].allocations}",
                        claim.position,
                    )

    def _sagas_settle(self) -> None:
        """Settled sagas agree with the stock folds; unsettled ones are listed as in flight."""
        with_saga: set[str] = set()
        for fold in self.sagas.values():
            for rid, saga in sorted(fold.projection.sagas.items()):
                with_saga.add(rid)
                self._saga_settles(rid, saga)
        for (rid, sku), partition in sorted(self._hold_partition.items()):
            hold = self.stock[partition].projection.holds.get((rid, sku))
            if rid not in with_saga and hold is not None and hold.status in ("held", "committed"):
                self.report.findings.append(
                    Finding(
                        "I2",
                        "in_flight",
                        f"{rid}/{sku} is {hold.status} in the stock log, no outcome relayed yet",
                    )
                )

    def _to_write(self, saga: Saga) -> list[str]:
        return sorted({type(e).__name__ for e in saga.next_events()})

    def _saga_settles(self, rid: str, saga: Saga) -> None:
        to_write = self._to_write(saga)
        decided = self._decided_for.get(rid, [])
        unrelayed = [d for d in decided if d not in self._relayed and d in self._decisions]
        if to_write or unrelayed:
            parts = []
            if to_write:
                parts.append(f"still to write {', '.join(to_write)}")
            if unrelayed:
                what = sorted(
                    f"{self._decisions[d].request} {self._decisions[d].sku}" for d in unrelayed
                )
                parts.append(f"outcomes not relayed yet: {', '.join(what)}")
            self.report.findings.append(
                Finding("I2", "in_flight", f"reservation {rid} ({saga.status}): {'; '.join(parts)}")
            )
            return
        if saga.request is None:
            return  # commands for an unknown reservation, all answered
        if saga.status == "pending":
            awaited = [sku for sku in saga.skus if sku not in saga.holds]
            self.report.findings.append(
                Finding(
                    "I2",
                    "in_flight",
                    f"reservation {rid} pending: awaiting hold requests or outcomes for "
                    f"{', '.join(awaited) or 'nothing (all in)'}",
                )
            )
            return
        self.report.checked["I2"] += 1
        skus = sorted(set(saga.skus) | self._hold_skus.get(rid, set()))
        for sku in skus:
            hold = self._stock_hold(rid, sku)
            status = hold.status if hold is not None else None
            if saga.status in ("rejected", "released", "expired"):
                bad = status in ("held", "committed")
                want = "nothing held"
            elif saga.status == "committed":
                bad = hold is None or (
                    status not in ("committed", "shipped", "cancelled")
                    or hold.order_id != saga.order_id
                )
                want = f"committed to {saga.order_id}"
            else:  # held
                bad = status != "held"
                want = "held"
            if bad:
                where = f" ({hold.allocations}, order {hold.order_id})" if hold else ""
                self._violation(
                    "I2",
                    f"reservation {rid} settled {saga.status}, but {sku} is "
                    f"{status or 'not in the stock log'}{where}; expected {want}",
                    None,
                )

    def _exactly_once(self) -> None:
        checked = 0
        duplicates = 0
        for key, document in sorted(self._documents.items()):
            checked += 1
            duplicates += document.seen - 1
            if document.applied > 1:
                self._violation(
                    "I3",
                    f"{' '.join(key)} applied {document.applied} times (seen {document.seen})",
                    None,
                )
        for (rid, sku), grants in sorted(self._grants.items()):
            checked += 1
            if len(grants) > 1:
                self._violation(
                    "I3",
                    f"hold {rid}/{sku} granted {len(grants)} times "
                    f"(at {', '.join(g.position.token() for g in grants)})",
                    grants[1].position,
                )
        for (rid, sku), commits in sorted(self._commits.items()):
            checked += 1
            if len(commits) > 1:
                self._violation(
                    "I3",
                    f"hold {rid}/{sku} committed {len(commits)} times, to orders "
                    f"{', '.join(order for order, _ in commits)}",
                    commits[1][1],
                )
        for rid, orders in sorted(self._committed_orders.items()):
            checked += 1
            if len(orders) > 1:
                self._violation(
                    "I3",
                    f"reservation {rid} committed to {len(orders)} orders: {', '.join(orders)}",
                    list(orders.values())[1],
                )
        self.report.checked["I3"] += checked
        if duplicates:
            self.report.findings.append(
                Finding(
                    "I3",
                    "note",
                    f"{duplicates} repeated document lines suppressed by the fold",
                )
            )

    def _compare_read_model(self) -> None:
        read_model = self.read_model
        assert read_model is not None
        report = self.report
        report.read_model_compared = True
        if not read_model.exists:
            report.findings.append(Finding("I4", "note", "no read model tables in the database"))
            return
        foreign = read_model.log_ids() - {self.log_id} if self.log_id else set()
        if foreign:
            report.checked["I4"] += 1
            self._violation(
                "I4",
                f"read model positions belong to log {sorted(foreign)}, this log is "
                f"{self.log_id!r}: rows the log does not back (the service rebuilds at start)",
                None,
            )
            return
        self._compare_levels(read_model)
        self._compare_reservations(read_model)

    def _compare_levels(self, read_model: ReadModel) -> None:
        rows: dict[int, dict[tuple[str, str], dict[str, Any]]] = defaultdict(dict)
        for level_row in read_model.levels:
            key = (level_row["sku"], level_row["location_id"])
            rows[level_row["partition"]][key] = level_row
        for partition in sorted(set(rows) | set(self._captured_levels)):
            captured = self._captured_levels.get(partition)
            stored = rows.get(partition, {})
            if captured is None:
                for sku, location_id in sorted(stored):
                    self.report.checked["I4"] += 1
                    self._violation(
                        "I4",
                        f"stock_levels {sku}@{location_id} in partition {partition}, which "
                        "the read model has no position for",
                        None,
                    )
                continue
            for key in sorted(set(captured) | set(stored)):
                self.report.checked["I4"] += 1
                want = captured.get(key, _ZERO)
                row = stored.get(key)
                name = f"stock_levels {key[0]}@{key[1]}"
                if row is None:
                    if want != _ZERO:
                        self._violation("I4", f"{name} missing; the log says {want}", None)
                    continue
                diffs = [
                    f"{column} {row[column]} (log: {want[column]})"
                    for column in (*LEVEL_FIGURES, "available")
                    if row[column] != want[column]
                ]
                if diffs:
                    self._violation("I4", f"{name} differs: {', '.join(diffs)}", None)

    def _compare_reservations(self, read_model: ReadModel) -> None:
        captured: dict[str, dict[str, Any]] = {}
        for sagas in self._captured_sagas.values():
            captured.update(sagas)
        rows = {row["reservation_id"]: row for row in read_model.reservations}
        for rid in sorted(set(captured) | set(rows)):
            self.report.checked["I4"] += 1
            expected = captured.get(rid)
            row = rows.get(rid)
            name = f"reservations {rid}"
            if expected is None:
                self._violation("I4", f"{name} is not in the log up to the stored positions", None)
                continue
            if row is None:
                self._violation("I4", f"{name} missing; the log says {expected['status']}", None)
                continue
            want: dict[str, Any] = expected
            got = {
                "status": row["status"],
                "order_id": row["order_id"],
                "expires_at": row["expires_at"],
                "lines": sorted(
                    (line["sku"], line["location_id"], line["quantity"]) for line in row["lines"]
                ),
            }
            diffs = [f"{k} {got[k]!s} (log: {want[k]!s})" for k in want if got[k] != want[k]]
            if diffs:
                self._violation("I4", f"{name} differs: {', '.join(diffs)}", None)


# --- I/O: the read model, the replays -----------------------------------------------------


class AuditTap(Fold[LogAudit]):
    """Lets :func:`replay` drive a :class:`LogAudit`: every decoded record goes to the audit,
    which runs its own per-partition folds (fencing and all) inside."""

    def __init__(self, audit: LogAudit, *, stop_at: Mapping[TopicPartition, int] | None = None):
        super().__init__(audit)
        self.stop_at = dict(stop_at or {})

    def apply(self, envelope: Envelope[Event]) -> bool:
        position = envelope.position
        assert position is not None
        stop = self.stop_at.get(TopicPartition(position.topic, position.partition))
        if stop is not None and position.offset >= stop:
            return False  # written after the first replay began: not part of this comparison
        self.projection.observe(envelope)
        return True

    def state_hash(self) -> str:
        return self.projection.state_hash()


async def load_read_model(database_url: str) -> ReadModel:
    """Positions and rows in one REPEATABLE READ transaction, so they agree with each other
    even while the service keeps writing."""
    engine = create_async_engine(database_url, poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            await connection.execution_options(isolation_level="REPEATABLE READ")
            async with connection.begin():
                exists = (
                    await connection.execute(text("SELECT to_regclass('stock_levels') IS NOT NULL"))
                ).scalar_one()
                if not exists:
                    return ReadModel(exists=False)
                c = consumer_positions.c
                positions = [
                    (r.consumer, r.topic, r.partition, r.next_offset, r.log_id)
                    for r in await connection.execute(
                        select(c.consumer, c.topic, c.partition, c.next_offset, c.log_id)
                    )
                ]
                levels = [
                    dict(r._mapping) for r in await connection.execute(select(rm.stock_levels))
                ]
                reservations = [
                    dict(r._mapping) for r in await connection.execute(select(rm.reservations))
                ]
    finally:
        await engine.dispose()
    return ReadModel(positions=positions, levels=levels, reservations=reservations)


async def run_audit(
    kafka: KafkaSettings,
    *,
    database_url: str | None = None,
    progress: bool | None = None,
) -> AuditReport:
    """Replay ``inventory.stock`` and ``inventory.reservations`` from offset 0 through the
    audit, compare with the read model at ``database_url`` if given, and replay again."""
    topics = [INVENTORY_STOCK, INVENTORY_RESERVATIONS]
    stock_topic = INVENTORY_STOCK.physical(kafka.topic_prefix)
    reservations_topic = INVENTORY_RESERVATIONS.physical(kafka.topic_prefix)
    started = time.perf_counter()
    # The read model first: it can then only be behind the log the replay reads, never ahead
    # of it, unless it really is ahead.
    read_model = await load_read_model(database_url) if database_url else None
    log_id = await cluster_id(kafka)
    audit = LogAudit(
        stock_topic=stock_topic,
        reservations_topic=reservations_topic,
        read_model=read_model,
        log_id=log_id,
    )
    tap = AuditTap(audit)
    first = await replay(kafka, topics, tap, name="audit", progress=progress)
    audit.poison = tap.stats.poison
    report = audit.finish({(tp.topic, tp.partition): end for tp, end in first.end_offsets.items()})
    again = AuditTap(
        LogAudit(stock_topic=stock_topic, reservations_topic=reservations_topic),
        stop_at=first.end_offsets,
    )
    await replay(kafka, topics, again, name="audit, second replay", progress=progress)
    report.compare_replay(again.state_hash())
    report.seconds = time.perf_counter() - started
    return report

"""The log audit: pure checks on hand-built logs, and the CLI against the real service."""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from inventory_support import Clock, receive, register_demo_locations
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool
from typer.testing import CliRunner

from omnistock.devstack.waiting import eventually
from omnistock.events.catalogue import (
    HoldExpired,
    HoldLine,
    HoldOutcome,
    HoldRequested,
    LocatedLine,
    OwnershipClaimed,
    PosLine,
    PosLineApplied,
    PosTransactionRecorded,
    RequestedLine,
    ReservationCommitRequested,
    ReservationCommitted,
    ReservationHeld,
    ReservationRejected,
    ReservationReleaseRequested,
    ReservationRequested,
    StockDiscrepancyRecorded,
    StockReceived,
    StockShipped,
)
from omnistock.events.envelope import Envelope, Event, Position, derived_id, new_id
from omnistock.events.fold import Fold
from omnistock.events.producer import EventProducer
from omnistock.events.settings import KafkaSettings
from omnistock.events.topics import INVENTORY_RESERVATIONS, INVENTORY_STOCK
from omnistock.inventory.audit import AuditReport, LogAudit, ReadModel
from omnistock.inventory.cli import app
from omnistock.inventory.domain.reservations import SagaCoordinator
from omnistock.inventory.domain.stock import Hold, StockBook
from omnistock.inventory.handlers import RESERVATIONS_GROUP, STOCK_GROUP
from omnistock.inventory.settings import InventorySettings

T0 = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
STOCK = INVENTORY_STOCK.name
RESERVATIONS = INVENTORY_RESERVATIONS.name
API = "/omnistock/inventory/api"
OWNER = "/omnistock/inventory/owner-1"
COORDINATOR = "/omnistock/inventory/coordinator"
TTL = timedelta(minutes=15)


# --- a hand-built log, written by the real domain code -----------------------------------


@dataclass
class Shop:
    """The service's loop in miniature, with the real domain code: the stock owner folds
    its partition and relays each decision as a HoldOutcome, the coordinator folds the
    sagas and writes their follow-ups. One partition per topic; the audit does not care.

    The knobs make it misbehave the ways the audit must notice.
    """

    #: Rewrites each follow-up the coordinator writes (a coordinator with a bug).
    follow_ups: Callable[[Event], list[Event]] = lambda event: [event]
    record_discrepancies: bool = True
    log: list[Envelope[Event]] = field(default_factory=list)
    offsets: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    owner: Fold[StockBook] = field(default_factory=lambda: Fold(StockBook()))
    coordinator: SagaCoordinator = field(default_factory=SagaCoordinator)
    pending: deque[Envelope[Event]] = field(default_factory=deque)
    epoch: int = 0

    def __post_init__(self) -> None:
        self.sagas = Fold(self.coordinator.book)
        self.claim()

    def write(
        self,
        event: Event,
        *,
        source: str = API,
        time: datetime = T0,
        id: str | None = None,
        epoch: int | None = None,
        topic: str | None = None,
    ) -> Envelope[Event]:
        assert event.topic is not None or topic is not None
        name = topic or event.topic.name  # type: ignore[union-attr]
        position = Position(name, 0, self.offsets[name])
        self.offsets[name] += 1
        envelope = Envelope(
            event=event, source=source, id=id or new_id(), time=time, epoch=epoch
        ).at(position)
        self.log.append(envelope)
        self.pending.append(envelope)
        return envelope

    def claim(self, source: str = OWNER) -> None:
        self.epoch += 1
        self.write(
            OwnershipClaimed(partition=0, epoch=self.epoch, owner=source, claimed_at=T0),
            source=source,
            topic=STOCK,
        )

    def settle(self, *, reservations: bool = True) -> None:
        """Deliver everything written, and whatever that causes, in log order."""
        held_back: list[Envelope[Event]] = []
        while self.pending:
            envelope = self.pending.popleft()
            assert envelope.position is not None
            if envelope.position.topic == STOCK:
                self._stock(envelope)
            elif reservations:
                self._reservation(envelope)
            else:
                held_back.append(envelope)
        self.pending.extend(held_back)

    def _stock(self, envelope: Envelope[Event]) -> None:
        if isinstance(envelope.event, OwnershipClaimed):
            self.owner.admit(envelope)
            return
        if not self.owner.admit(envelope):
            return
        assert envelope.position is not None
        effects = self.owner.projection.apply(envelope)
        decision = effects.decision
        if decision is not None:
            self.write(
                HoldOutcome(
                    reservation_id=decision.reservation_id,
                    sku=decision.sku,
                    request=decision.request,
                    outcome=decision.outcome,
                    allocations=[
                        LocatedLine(sku=decision.sku, quantity=q, location_id=loc)
                        for loc, q in decision.allocations
                    ],
                    requested=decision.requested,
                    available=decision.available,
                    expires_at=decision.expires_at,
                    order_id=decision.order_id,
                    stock_position=envelope.position.token(),
                    decided_event_id=envelope.id,
                ),
                source=OWNER,
                id=derived_id(envelope.id, "outcome"),
            )
        for sku, location_id in effects.discrepancies if self.record_discrepancies else ():
            level = self.owner.projection.level(sku, location_id)
            self.write(
                StockDiscrepancyRecorded(
                    sku=sku,
                    location_id=location_id,
                    cause_event_id=envelope.id,
                    on_hand=level.on_hand,
                    held=level.held,
                    committed=level.committed,
                ),
                source=OWNER,
                epoch=self.epoch,
            )

    def _reservation(self, envelope: Envelope[Event]) -> None:
        if not self.sagas.admit(envelope):
            return
        saga = self.coordinator.fold(envelope)
        if saga is None:
            return
        follow_ups = self.coordinator.to_write(saga, envelope.time)
        for event, event_id in follow_ups:
            for n, rewritten in enumerate(self.follow_ups(event)):
                self.write(rewritten, source=COORDINATOR, id=derived_id(event_id, n))
        self.coordinator.written(saga, [event for event, _ in follow_ups])

    # -- what the API and the other contexts write --------------------------------------

    def receive(self, receipt_id: str, location_id: str, **skus: int) -> None:
        for sku, quantity in skus.items():
            self.write(
                StockReceived(
                    receipt_id=receipt_id, sku=sku, location_id=location_id, quantity=quantity
                ),
                id=derived_id(receipt_id, sku),
            )

    def reserve(self, rid: str, *, ttl: timedelta = TTL, **skus: int) -> None:
        lines = [RequestedLine(sku=sku, quantity=q) for sku, q in sorted(skus.items())]
        self.write(
            ReservationRequested(
                reservation_id=rid,
                lines=lines,
                ttl_seconds=int(ttl.total_seconds()),
                channel="web",
                expires_at=T0 + ttl,
                request_fingerprint=rid,
            )
        )
        for line in lines:
            self.write(
                HoldRequested(
                    reservation_id=rid,
                    sku=line.sku,
                    lines=[HoldLine(quantity=line.quantity)],
                    online_locations=["wh", "s1"],
                    expires_at=T0 + ttl,
                    requested_at=T0,
                    request_fingerprint=rid,
                )
            )

    def commit(self, rid: str, order_id: str) -> None:
        self.write(
            ReservationCommitRequested(reservation_id=rid, order_id=order_id, requested_at=T0)
        )

    def release(self, rid: str) -> None:
        self.write(ReservationReleaseRequested(reservation_id=rid))

    def expire(self, rid: str, sku: str, *, at: datetime, epoch: int | None = None) -> None:
        self.write(
            HoldExpired(reservation_id=rid, sku=sku),
            source=OWNER,
            time=at,
            epoch=self.epoch if epoch is None else epoch,
        )

    def pos_sale(
        self, transaction_id: str, location_id: str, sku: str, quantity: int, *, void: bool = False
    ) -> None:
        """A till's sale, or its void (which names the sale's transaction, as translated)."""
        self.write(
            PosLineApplied(
                transaction_id=transaction_id,
                line_number=0,
                kind="void_sale" if void else "sale",
                sku=sku,
                location_id=location_id,
                quantity_change=quantity if void else -quantity,
            ),
            id=new_id() if void else derived_id(transaction_id, 0),
        )


def audit(
    log: Iterable[Envelope[Event]], *, book: Callable[[], StockBook] = StockBook, **options: Any
) -> AuditReport:
    checker = LogAudit(book=book, **options)
    for envelope in log:
        checker.observe(envelope)
    return checker.finish()


def messages(report: AuditReport, kind: str = "violation", invariant: str | None = None) -> str:
    return "\n".join(
        f.message
        for f in report.findings
        if f.kind == kind and (invariant is None or f.invariant == invariant)
    )


def busy_day(shop: Shop) -> Shop:
    """Receipts, a sale, a rejection, a release, an expiry, a shipment, retries and repeats."""
    shop.receive("rc-1", "wh", A=5, B=4)
    shop.receive("rc-2", "s1", A=2)
    shop.settle()
    shop.reserve("r-sold", A=6, B=1)  # A is split: 5 at wh, 1 at s1
    shop.reserve("r-short", B=1, A=2)  # A: 1 left; B's hold is given back
    shop.reserve("r-gone", B=1)
    shop.reserve("r-late", B=1, ttl=timedelta(minutes=1))
    shop.settle()
    shop.commit("r-sold", "ord-1")
    shop.commit("r-sold", "ord-1")  # a retried commit
    shop.release("r-gone")
    shop.expire("r-late", "B", at=T0 + timedelta(minutes=1, seconds=1))
    shop.settle()
    shop.write(
        StockShipped(
            reservation_id="r-sold",
            order_id="ord-1",
            shipment_id="sh-1",
            sku="A",
            location_id="wh",
            quantity=5,
        )
    )
    shop.receive("rc-1", "wh", A=5, B=4)  # a receipt posted twice: same ids
    shop.write(  # the same receipt line under another event id: the document key catches it
        StockReceived(receipt_id="rc-2", sku="A", location_id="s1", quantity=2)
    )
    shop.pos_sale("pos-1", "s1", "A", 2)  # s1 had 2, 1 of them committed to ord-1
    shop.pos_sale("pos-1", "s1", "A", 2)  # the POS replays after an outage
    shop.settle()
    return shop


# --- a clean log --------------------------------------------------------------------------


def test_a_clean_log_passes_with_its_discrepancy_reported_not_failed() -> None:
    shop = busy_day(Shop())
    report = audit(shop.log)

    assert report.ok, messages(report)
    assert not report.of_kind("in_flight"), messages(report, "in_flight")
    assert all(report.checked[name] > 0 for name in ("I1", "I2", "I3")), report.checked
    short = messages(report, "discrepancy")
    assert "A at s1 went short with PosLineApplied: on_hand 0 < held 0 + committed 1" in short
    assert "A at s1 is short at the end of the log" in short
    # rc-1 (A, B) and pos-1 came again with their event ids: the fold's duplicate window.
    assert report.duplicates == 3
    # rc-2 came again under another event id: the fold's document keys.
    assert "1 repeated document lines suppressed" in messages(report, "note")
    book = shop.owner.projection
    assert book.holds["r-sold", "A"].status == "committed"
    assert {book.holds[r, "B"].status for r in ("r-short", "r-gone", "r-late")} == {
        "released",
        "expired",
    }


def test_the_verdict_depends_only_on_the_order_within_each_partition() -> None:
    log = busy_day(Shop()).log
    stock_first = sorted(log, key=lambda e: e.position is not None and e.position.topic != STOCK)
    first, second = audit(log), audit(stock_first)
    assert first.state_hash == second.state_hash
    assert first.partition_hashes == second.partition_hashes
    assert sorted(first.findings, key=str) == sorted(second.findings, key=str)


def test_a_stale_owner_is_fenced_and_changes_nothing() -> None:
    shop = Shop()
    shop.receive("rc-1", "wh", A=1)
    shop.reserve("r-1", A=1)
    shop.settle()
    shop.claim("/omnistock/inventory/owner-2")
    # The old owner wakes up, believes the hold is due and expires it under its old epoch.
    shop.expire("r-1", "A", at=T0 + TTL + timedelta(seconds=1), epoch=1)
    shop.settle()
    report = audit(shop.log)
    assert report.ok, messages(report)
    assert report.fenced == 1
    assert shop.owner.projection.holds["r-1", "A"].status == "held"


def test_a_log_that_ends_mid_saga_lists_what_is_in_flight() -> None:
    shop = Shop()
    shop.receive("rc-1", "wh", A=3, B=1)
    shop.settle()
    shop.reserve("r-1", A=1, B=2)
    shop.settle(reservations=False)  # the stock owners decided; the coordinator did not run
    shop.reserve("r-2", A=1)
    report = audit(shop.log)
    assert report.ok, messages(report)
    in_flight = messages(report, "in_flight")
    assert (
        "reservation r-1 (pending): still to write HoldReleaseRequested, ReservationRejected"
        in (in_flight)
    )
    assert "reservation r-2 (pending): outcomes not relayed yet: hold A" in in_flight


# --- each check, broken on purpose -----------------------------------------------------------


def test_a_reservation_reported_held_with_a_rejected_sku_is_caught() -> None:
    def held_instead_of_rejected(event: Event) -> list[Event]:
        # A coordinator that reports every reservation held, naming every SKU requested.
        if isinstance(event, ReservationRejected):
            lines = [LocatedLine(sku="A", quantity=1, location_id="wh")]
            lines += [
                LocatedLine(sku=x.sku, quantity=x.requested, location_id="wh") for x in event.lines
            ]
            return [
                ReservationHeld(
                    reservation_id=event.reservation_id, lines=lines, expires_at=T0 + TTL
                )
            ]
        return [] if "Release" in type(event).__name__ else [event]

    shop = Shop(follow_ups=held_instead_of_rejected)
    shop.receive("rc-1", "wh", A=3, B=1)
    shop.settle()
    shop.reserve("r-1", A=1, B=2)
    shop.settle()
    report = audit(shop.log)

    assert not report.ok
    found = messages(report, invariant="I2")
    assert "reservation r-1 reported held, but B was not held at that point (rejected)" in found
    assert (
        "reservation r-1 reported held names B {'wh': 2}, "
        "whose hold the stock fold never granted (rejected)"
    ) in found


def test_a_forged_outcome_is_caught() -> None:
    """A relay that says "held" for a hold the fold rejected, and "released" for one it
    never released: the sagas believe it, the stock fold does not."""
    shop = Shop()
    shop.receive("rc-1", "wh", A=1, B=5)
    shop.reserve("r-2", A=1, B=1)
    shop.settle()

    def forge(rid: str, sku: str, request: str, outcome: str, decided: Envelope[Event]) -> None:
        assert decided.position is not None
        shop.write(
            HoldOutcome(
                reservation_id=rid,
                sku=sku,
                request=request,
                outcome=outcome,
                allocations=[LocatedLine(sku=sku, quantity=2, location_id="wh")],
                stock_position=decided.position.token(),
                decided_event_id=new_id(),
            ),
            source="/rogue",
        )

    shop.reserve("r-1", A=2)  # more than there is: the fold rejects it
    forge("r-1", "A", "hold", "held", shop.log[-1])  # ...and the saga hears "held" first
    forge("r-2", "B", "release", "released", shop.log[-1])
    shop.release("r-2")  # the coordinator only asks to release what it believes held: A
    shop.settle()
    report = audit(shop.log)

    found = messages(report, invariant="I2")
    assert "r-1/A: the saga was told held, the stock fold did not grant it (rejected)" in found
    assert (
        "reservation r-2 settled released, but B is held ({'wh': 1}, order None); "
        "expected nothing held"
    ) in found


class Oversells(StockBook):
    """A fold that forgets what is already held when it allocates."""

    def _allocate(self, e: HoldRequested) -> dict[str, int] | None:
        return {"wh": sum(line.quantity for line in e.lines)}


class KeepsReleasedUnits(StockBook):
    """A fold that marks holds released but leaves the units held."""

    def _release(self, hold: Hold, status: Any, effects: Any, kind: str) -> None:
        hold.status = status


class Forgetful(StockBook):
    """A fold that forgets which documents it applied."""

    def _first_time(self, key: str) -> bool:
        return True


def test_an_oversell_by_the_fold_is_caught() -> None:
    shop = Shop()
    shop.receive("rc-1", "wh", A=2)
    shop.reserve("r-1", A=2)
    shop.reserve("r-2", A=1)  # the real fold rejects it
    shop.settle()
    report = audit(shop.log, book=Oversells)
    found = messages(report, invariant="I1")
    assert "hold r-2/A granted at wh oversells: held 3 + committed 0 > on_hand 2" in found
    # The log's own outcome (rejected) disagrees with the faulty replay, which is I2's finding.
    assert "r-2/A: the saga was told rejected, the stock fold granted {'wh': 1}" in messages(
        report, invariant="I2"
    )


def test_books_that_do_not_balance_are_caught() -> None:
    shop = Shop()
    shop.receive("rc-1", "wh", A=2)
    shop.reserve("r-1", A=2)
    shop.settle()
    shop.release("r-1")
    shop.settle()
    found = messages(audit(shop.log, book=KeepsReleasedUnits), invariant="I1")
    assert "A at wh: books say held 2, committed 0; the holds say held 0, committed 0" in found


def test_a_document_applied_twice_is_caught() -> None:
    shop = busy_day(Shop())
    found = messages(audit(shop.log, book=Forgetful), invariant="I3")
    assert "receipt rc-2 A s1 applied 2 times (seen 2)" in found
    assert "pos line pos-1 0 sale applied" not in found  # its repeat was the same event id


def test_a_sale_and_its_void_are_two_documents_and_a_second_void_is_one_too_many() -> None:
    shop = Shop()
    shop.receive("rc-1", "s1", A=2)
    shop.pos_sale("pos-1", "s1", "A", 1)
    shop.pos_sale("pos-1", "s1", "A", 1, void=True)
    shop.pos_sale("pos-1", "s1", "A", 1, void=True)  # voided again through another gateway
    shop.settle()
    report = audit(shop.log)
    assert report.ok, messages(report)
    assert shop.owner.projection.level("A", "s1").on_hand == 2
    assert "1 repeated document lines suppressed" in messages(report, "note")


def test_a_reservation_committed_to_two_orders_is_caught() -> None:
    shop = Shop()
    shop.receive("rc-1", "wh", A=1)
    shop.reserve("r-1", A=1)
    shop.settle()
    shop.commit("r-1", "ord-1")
    shop.settle()
    shop.write(ReservationCommitted(reservation_id="r-1", order_id="ord-2"), source="/rogue")
    report = audit(shop.log)
    assert "reservation r-1 committed to 2 orders: ord-1, ord-2" in messages(report, invariant="I3")


def test_a_shortfall_never_recorded_is_caught() -> None:
    shop = Shop(record_discrepancies=False)
    shop.receive("rc-1", "wh", A=1)
    shop.reserve("r-1", A=1)
    shop.pos_sale("pos-1", "wh", "A", 1)
    shop.settle()
    unrecorded = audit(shop.log)
    assert unrecorded.ok  # the owner may still write it
    assert "shortfall of A at wh not recorded yet" in messages(unrecorded, "in_flight")

    shop.claim("/omnistock/inventory/owner-2")  # a new owner took over, and never wrote it
    shop.settle()
    hidden = audit(shop.log)
    assert "shortfall of A at wh never recorded" in messages(hidden, invariant="I1")


# --- the read model --------------------------------------------------------------------------


def small_log() -> tuple[Shop, int, int]:
    """A log with a receipt, then a held reservation; returns the ends before the hold."""
    shop = Shop()
    shop.receive("rc-1", "wh", A=5)
    shop.settle()
    before = (shop.offsets[STOCK], shop.offsets[RESERVATIONS])
    shop.reserve("r-1", A=2)
    shop.settle()
    return shop, *before


def read_model(
    stock_at: int,
    reservations_at: int,
    *,
    held: int,
    status: str | None,
    log_id: str = "log-1",
    **changes: Any,
) -> ReadModel:
    level = {
        "sku": "A",
        "location_id": "wh",
        "partition": 0,
        "on_hand": 5,
        "held": held,
        "committed": 0,
        "unsellable": 0,
        "incoming": 0,
        "safety_stock": 0,
        "available": 5 - held,
    }
    reservation = {
        "reservation_id": "r-1",
        "status": status,
        "order_id": None,
        "expires_at": T0 + TTL,
        "lines": [{"sku": "A", "location_id": "wh", "quantity": 2}],
    }
    return ReadModel(
        positions=[
            (STOCK_GROUP, STOCK, 0, stock_at, log_id),
            (RESERVATIONS_GROUP, RESERVATIONS, 0, reservations_at, log_id),
        ],
        levels=[{**level, **changes}],
        reservations=[reservation] if status else [],
    )


def test_a_read_model_that_matches_the_log_passes_even_when_behind() -> None:
    shop, stock_before, reservations_before = small_log()
    current = read_model(shop.offsets[STOCK], shop.offsets[RESERVATIONS], held=2, status="held")
    behind = read_model(stock_before, reservations_before, held=0, status=None)
    for model in (current, behind):
        report = audit(shop.log, read_model=model, log_id="log-1")
        assert report.ok, messages(report)
        assert report.checked["I4"] >= 1


def test_a_read_model_row_that_differs_is_named() -> None:
    shop, *_ = small_log()
    ends = (shop.offsets[STOCK], shop.offsets[RESERVATIONS])
    wrong = read_model(*ends, held=2, status="released", on_hand=6)
    found = messages(audit(shop.log, read_model=wrong, log_id="log-1"), invariant="I4")
    assert "stock_levels A@wh differs: on_hand 6 (log: 5)" in found
    assert "reservations r-1 differs: status released (log: held)" in found


def test_a_read_model_ahead_of_its_log_or_from_another_log_is_caught() -> None:
    shop, *_ = small_log()
    ends = (shop.offsets[STOCK], shop.offsets[RESERVATIONS])
    ahead = read_model(ends[0] + 3, ends[1], held=2, status="held")
    found = messages(audit(shop.log, read_model=ahead, log_id="log-1"), invariant="I4")
    assert f"read model position {STOCK}[0] {ends[0] + 3} is ahead of the log" in found

    foreign = read_model(*ends, held=2, status="held", log_id="log-0")
    found = messages(audit(shop.log, read_model=foreign, log_id="log-1"), invariant="I4")
    assert "read model positions belong to log ['log-0'], this log is 'log-1'" in found


def test_two_replays_that_disagree_are_a_violation() -> None:
    report = audit(small_log()[0].log)
    report.compare_replay(report.state_hash)
    assert report.ok
    report.compare_replay("0" * 64)
    assert "replaying the same records again gave state" in messages(report, invariant="I4")


# --- against the real service ------------------------------------------------------------------


def cli_env(kafka: KafkaSettings, database_url: str) -> dict[str, str]:
    return {
        "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
        "KAFKA_FETCH_MAX_WAIT_MS": str(kafka.fetch_max_wait_ms),
        "DATABASE_URL": database_url,
        "COLUMNS": "200",
    }


async def run_cli(*args: str, env: dict[str, str]) -> tuple[int, str]:
    # In a thread: the command runs its own event loop (asyncio.run), as from a shell.
    result = await asyncio.to_thread(CliRunner().invoke, app, list(args), env=env)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


async def status_of(client: httpx.AsyncClient, rid: str) -> str | None:
    response = await client.get(f"/v1/reservations/{rid}")
    return response.json()["status"] if response.status_code == 200 else None


async def sell_at_the_till(kafka: KafkaSettings, store: str, sku: str, quantity: int) -> None:
    """What pos-gateway writes for a sale at a store's till."""
    async with EventProducer(kafka, source="/omnistock/pos-gateway/test") as producer:
        await producer.publish(
            PosTransactionRecorded(
                transaction_id="pos-1",
                store_id=store,
                terminal_id="till-1",
                sequence=1,
                occurred_at=datetime.now(UTC),
                type="sale",
                lines=[
                    PosLine(sku=sku, quantity=quantity, unit_price=Decimal("9.99"), currency="EUR")
                ],
            )
        )


async def run_scenario(client: httpx.AsyncClient, kafka: KafkaSettings, clock: Clock) -> None:
    """Receipts, a sold cart, a rejected cart, a release, an expiry, a POS sale, repeats;
    returns once every saga has settled and the read model shows it."""
    await register_demo_locations(client)
    await receive(client, "rc-1", "wh-kassel", SKU_1=5, SKU_2=3)
    await receive(client, "rc-1", "wh-kassel", SKU_1=5, SKU_2=3)  # a retried POST
    await receive(client, "rc-2", "store-hamburg", SKU_3=2)

    async def reserve(rid: str, ttl: int = 900, **skus: int) -> int:
        lines = [{"sku": sku.replace("_", "-"), "quantity": q} for sku, q in skus.items()]
        body = {"reservation_id": rid, "lines": lines, "ttl_seconds": ttl}
        return (await client.post("/v1/reservations", json=body)).status_code

    assert await reserve("r-sold", SKU_1=4, SKU_2=1) == 201
    assert await reserve("r-short", SKU_2=1, SKU_1=5) == 409
    assert await reserve("r-gone", SKU_2=1) == 201
    assert await reserve("r-late", ttl=30, SKU_1=1) == 201
    commit = await client.post("/v1/reservations/r-sold/commit", json={"order_id": "ord-1"})
    assert commit.status_code == 200, commit.text
    assert (await client.post("/v1/reservations/r-gone/release")).status_code == 200
    adjusted = await client.post(
        "/v1/adjustments",
        json={
            "adjustment_id": "adj-1",
            "location_id": "wh-kassel",
            "sku": "SKU-2",
            "delta": -1,
            "reason": "damage",
        },
    )
    assert adjusted.status_code == 201, adjusted.text
    await sell_at_the_till(kafka, "store-hamburg", "SKU-3", 3)
    clock.offset = timedelta(seconds=31)  # r-late's hold is due

    async def settled() -> bool:
        statuses = [
            await status_of(client, rid) for rid in ("r-sold", "r-short", "r-gone", "r-late")
        ]
        sku2 = (await client.get("/v1/stock/SKU-2")).json()["totals"]
        sku3 = (await client.get("/v1/stock/SKU-3")).json()["totals"]
        return statuses == ["committed", "rejected", "released", "expired"] and (
            sku2["held"] == 0 and sku3["on_hand"] == -1
        )

    await eventually(settled, timeout=20, message="every saga settled, visible in the read model")


@pytest.mark.integration
async def test_the_audit_of_a_real_log_is_clean_and_catches_a_corrupted_row(
    inventory: httpx.AsyncClient,
    provisioned: KafkaSettings,
    make_settings: Callable[..., InventorySettings],
    clock: Clock,
    tmp_path: Path,
) -> None:
    await run_scenario(inventory, provisioned, clock)
    database_url = make_settings().database_url.get_secret_value()
    env = cli_env(provisioned, database_url)

    code, output = await run_cli("audit", "--database", "--json", str(tmp_path / "a.json"), env=env)
    report = json.loads((tmp_path / "a.json").read_text())
    assert code == 0, output
    assert report["ok"]
    assert report["read_model_compared"]
    assert all(not i["violations"] for i in report["invariants"].values())
    assert all(i["checked"] > 0 for i in report["invariants"].values()), report["invariants"]
    assert report["in_flight"] == []
    assert [d["message"] for d in report["discrepancies"]] == [
        "SKU-3 at store-hamburg went short with PosLineApplied: on_hand -1 < held 0 + committed 0",
        "SKU-3 at store-hamburg is short at the end of the log: on_hand -1 < held 0 + committed 0",
    ]
    assert "verdict: clean" in output

    engine = create_async_engine(database_url, poolclass=NullPool)
    async with engine.begin() as connection:
        await connection.execute(
            text(
                "UPDATE stock_levels SET on_hand = on_hand + 7 "
                "WHERE sku = 'SKU-1' AND location_id = 'wh-kassel'"
            )
        )
    await engine.dispose()

    code, output = await run_cli("audit", "--database", "--json", str(tmp_path / "b.json"), env=env)
    report = json.loads((tmp_path / "b.json").read_text())
    assert code == 1, output
    [violation] = report["invariants"]["I4"]["violations"]
    assert violation["message"] == "stock_levels SKU-1@wh-kassel differs: on_hand 12 (log: 5)"
    assert "stock_levels SKU-1@wh-kassel differs" in output

    code, output = await run_cli("audit", "--no-database", env=env)
    assert code == 0, output  # the log itself is still clean

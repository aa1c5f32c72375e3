"""Reservations across SKU partitions, simulated message by message.

Stock partitions (one per SKU), reservation partitions and the saga coordinator
exchange events through FIFO queues, as Kafka partitions do; Hypothesis picks
which queue delivers next, so every interleaving of owners, coordinator, expiries
and commits gets its chance. The code under test is the real domain code.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from omnistock.events.catalogue import (
    HoldExpired,
    HoldLine,
    HoldOutcome,
    HoldRequested,
    Line,
    LocatedLine,
    RequestedLine,
    ReservationCommitRejected,
    ReservationCommitRequested,
    ReservationCommitted,
    ReservationExtended,
    ReservationExtensionRequested,
    ReservationHeld,
    ReservationRejected,
    ReservationReleased,
    ReservationReleaseRequested,
    ReservationRequested,
    StockReceived,
)
from omnistock.events.envelope import Envelope, Event, Position
from omnistock.inventory.domain.reservations import SagaCoordinator
from omnistock.inventory.domain.stock import StockBook

T0 = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
#: Later than every hold's expiry in these tests.
DUE = T0 + timedelta(hours=1)
SKUS = ["A", "B", "C"]
LOCATIONS = ["wh", "s1"]


class World:
    def __init__(self) -> None:
        self.books = {sku: StockBook() for sku in SKUS}
        self.stock_queues: dict[str, deque[Event]] = {sku: deque() for sku in SKUS}
        self.reservation_queue: deque[Event] = deque()
        self.coordinator = SagaCoordinator()
        self.written: list[Event] = []
        self.offsets = 0
        #: Reservations whose time is up: their owners' timers fire, and the coordinator's
        #: clock is past their expiry too.
        self.due: set[str] = set()

    def envelope(self, event: Event, time: datetime = T0) -> Envelope[Event]:
        self.offsets += 1
        return Envelope(event=event, source="/sim", time=time).at(Position("x", 0, self.offsets))

    def write(self, event: Event) -> None:
        self.written.append(event)
        sku = getattr(event, "sku", None)
        if event.topic is not None and event.topic.name == "inventory.stock":
            assert sku is not None
            self.stock_queues[sku].append(event)
        else:
            self.reservation_queue.append(event)

    def overtake(self, event: Event) -> None:
        """Write a hold request ahead of those still queued for its stock partition: two
        APIs write concurrently, so a later request's hold can reach a SKU first."""
        sku = getattr(event, "sku", None)
        assert sku is not None
        self.written.append(event)
        self.stock_queues[sku].appendleft(event)

    def deliver_stock(self, sku: str) -> None:
        event = self.stock_queues[sku].popleft()
        # The owner's expiry timer writes HoldExpired once the hold is due by its clock.
        envelope = self.envelope(event, DUE if isinstance(event, HoldExpired) else T0)
        decision = self.books[sku].apply(envelope).decision
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
                    stock_position=envelope.position.token() if envelope.position else "",
                    decided_event_id=envelope.id,
                    request_fingerprint=decision.request_fingerprint,
                )
            )

    def deliver_reservation(self) -> None:
        envelope = self.envelope(self.reservation_queue.popleft())
        saga = self.coordinator.fold(envelope)
        if isinstance(envelope.event, ReservationHeld):
            # I2 at the moment it is reported: no hold of it was let go before (in log
            # order), and every line is held or was only just let go by its owner.
            assert saga is not None
            assert not [sku for sku in saga.let_go if sku in saga.skus], saga
            for sku in {line.sku for line in envelope.event.lines}:
                assert self.books[sku].holds[saga.reservation_id, sku].status in (
                    "held",
                    "committed",
                    "expired",
                    "released",
                )
        if isinstance(envelope.event, ReservationExtended):
            # Reported only once every line still held holds at least that long.
            assert saga is not None
            for sku in saga.skus:
                hold = self.books[sku].holds[saga.reservation_id, sku]
                if hold.status == "held":
                    assert hold.expires_at >= envelope.event.expires_at, (hold, envelope.event)
        if isinstance(envelope.event, ReservationCommitted):
            # I2 at the moment it is reported: every SKU was committed to this very order.
            assert saga is not None
            assert saga.commit is not None, saga
            assert saga.commit.order_id == envelope.event.order_id, saga
            assert all(saga.committed_skus.get(s) == "committed" for s in saga.skus), saga
        if saga is not None:
            now = DUE if saga.reservation_id in self.due else T0
            follow_ups = [event for event, _ in self.coordinator.to_write(saga, now)]
            for event in follow_ups:
                self.write(event)
            self.coordinator.written(saga, follow_ups)

    def settle(self, choices: list[int], *, drain: bool = True) -> None:
        for choice in choices:
            ready = [
                q
                for q in [*SKUS, "res"]
                if (self.reservation_queue if q == "res" else self.stock_queues[q])
            ]
            if not ready:
                return
            pick = ready[choice % len(ready)]
            if pick == "res":
                self.deliver_reservation()
            else:
                self.deliver_stock(pick)
        if not drain:
            return
        # Then drain in a fixed order until quiet (liveness: everything settles).
        for _ in range(10_000):
            if self.reservation_queue:
                self.deliver_reservation()
            elif any(self.stock_queues.values()):
                self.deliver_stock(next(s for s in SKUS if self.stock_queues[s]))
            else:
                return
        raise AssertionError("the sagas never settled")


@st.composite
def scenario(draw: st.DrawFn) -> tuple[list[tuple[str, object]], list[int], list[bool]]:
    steps: list[tuple[str, object]] = []
    for sku in SKUS:
        for loc in LOCATIONS:
            steps.append(("receive", (sku, loc, draw(st.integers(0, 3)))))
    for n in range(draw(st.integers(1, 8))):
        lines = draw(
            st.lists(st.tuples(st.sampled_from(SKUS), st.integers(1, 3)), min_size=1, max_size=3)
        )
        # Sometimes another cart under the same id races the first through the log.
        racing = draw(
            st.one_of(
                st.none(),
                st.lists(
                    st.tuples(st.sampled_from(SKUS), st.integers(1, 3)), min_size=1, max_size=3
                ),
            )
        )
        steps.append(("reserve", (f"r{n}", lines, racing)))
        # What happens to it next; a twin is a second order naming the same reservation.
        extras = st.sampled_from(
            [
                "commit",
                "commit_twin",
                "release",
                "expire",
                "commit_mismatch",
                "extend_long",
                "extend_short",
            ]
        )
        steps += [(extra, f"r{n}") for extra in draw(st.lists(extras, max_size=3))]
    # Receipts first; each reservation before what is done to it.
    ordered = sorted(range(len(steps)), key=lambda i: (steps[i][0] != "receive", i))
    choices = draw(st.lists(st.integers(0, 10), max_size=200))
    # Whether all in flight settles before the next step, or the next lands among it.
    drains = draw(st.lists(st.booleans(), min_size=len(steps), max_size=len(steps)))
    return [steps[i] for i in ordered], choices, drains


def request(
    world: World,
    rid: str,
    lines: list[tuple[str, int]],
    fingerprint: str,
    write_hold: Callable[[Event], None],
) -> None:
    """What the API writes for a reservation request: the saga's record, then the holds."""
    expires = T0 + timedelta(minutes=15)
    world.write(
        ReservationRequested(
            reservation_id=rid,
            lines=[RequestedLine(sku=s, quantity=q) for s, q in lines],
            ttl_seconds=900,
            channel="web",
            expires_at=expires,
            request_fingerprint=fingerprint,
        )
    )
    for sku in sorted({s for s, _ in lines}):
        write_hold(
            HoldRequested(
                reservation_id=rid,
                sku=sku,
                lines=[HoldLine(quantity=q) for s, q in lines if s == sku],
                online_locations=LOCATIONS,
                expires_at=expires,
                requested_at=T0,
                request_fingerprint=fingerprint,
            )
        )


def act(world: World, requested: dict[str, list[tuple[str, int]]], kind: str, arg: object) -> None:
    """What the API, an order or an owner's timer does at one step of the scenario."""
    if kind == "receive":
        sku, loc, qty = arg  # type: ignore[misc]
        if qty:
            world.write(
                StockReceived(receipt_id=f"rc-{sku}-{loc}", sku=sku, location_id=loc, quantity=qty)
            )
    elif kind == "reserve":
        rid, lines, racing = arg  # type: ignore[misc]
        requested[rid] = lines
        request(world, rid, lines, rid, world.write)
        if racing is not None:
            # Written after the first request, yet its holds reach each SKU first: two
            # APIs write concurrently.
            request(world, rid, racing, f"{rid}-racing", world.overtake)
    elif kind in ("commit", "commit_mismatch", "commit_twin"):
        rid = str(arg)
        lines = requested[rid] if kind != "commit_mismatch" else [("A", 99)]
        world.write(
            ReservationCommitRequested(
                reservation_id=rid,
                order_id=f"twin-o-{rid}" if kind == "commit_twin" else f"o-{rid}",
                lines=[Line(sku=s, quantity=q) for s, q in lines],
                requested_at=T0,
            )
        )
    elif kind == "release":
        world.write(ReservationReleaseRequested(reservation_id=str(arg)))
    elif kind in ("extend_long", "extend_short"):
        minutes = 40 if kind == "extend_long" else 20
        world.write(
            ReservationExtensionRequested(
                reservation_id=str(arg),
                expires_at=T0 + timedelta(minutes=minutes),
                requested_at=T0,
            )
        )
    elif kind == "expire":
        rid = str(arg)
        world.due.add(rid)
        for sku in sorted({s for s, _ in requested[rid]}):
            world.stock_queues[sku].append(HoldExpired(reservation_id=rid, sku=sku))


def only_first_requests_decided(
    world: World, requested: dict[str, list[tuple[str, int]]]
) -> dict[str, Event]:
    """Every verdict is on the first request under its id, for exactly what it asked; a
    racing cart is never held. Returns the last verdict per id."""
    verdicts = [
        e
        for e in world.written
        if isinstance(e, ReservationHeld | ReservationRejected | ReservationReleased)
    ]
    assert all(e.request_fingerprint == e.reservation_id for e in verdicts)
    for e in verdicts:
        if isinstance(e, ReservationHeld):
            held: dict[str, int] = {}
            for line in e.lines:
                held[line.sku] = held.get(line.sku, 0) + line.quantity
            asked: dict[str, int] = {}
            for sku, quantity in requested[e.reservation_id]:
                asked[sku] = asked.get(sku, 0) + quantity
            assert held == asked, (e, requested[e.reservation_id])
    for sku in SKUS:
        for (rid, _), hold in world.books[sku].holds.items():
            if hold.status in ("held", "committed"):
                assert hold.fingerprint == rid, (rid, sku, hold)
                assert sku in {s for s, _ in requested[rid]}, (rid, sku)
    return {e.reservation_id: e for e in verdicts}


@settings(max_examples=300, deadline=None)
@given(scenario())
def test_every_reservation_is_all_or_nothing_once_settled(
    data: tuple[list[tuple[str, object]], list[int], list[bool]],
) -> None:
    steps, choices, drains = data
    world = World()
    requested: dict[str, list[tuple[str, int]]] = {}
    chunks = [choices[i :: len(steps)] for i in range(len(steps))]
    for (kind, arg), chunk, drain in zip(steps, chunks, drains, strict=True):
        act(world, requested, kind, arg)
        world.settle(chunk, drain=drain)
    world.settle([])

    summaries = only_first_requests_decided(world, requested)
    sold_to = {
        (e.reservation_id, e.order_id) for e in world.written if isinstance(e, ReservationCommitted)
    }
    for rid, lines in requested.items():
        saga = world.coordinator.book.sagas[rid]
        assert saga.status != "pending", f"{rid} never settled"
        assert not saga.unanswered_commits, f"{rid} left orders unanswered: {saga}"
        assert len([o for r, o in sold_to if r == rid]) <= 1, f"{rid} sold twice"
        assert rid in summaries
        holds = [world.books[s].holds.get((rid, s)) for s in {s for s, _ in lines}]
        if saga.status == "rejected":
            # I2: a rejected reservation holds nothing once it settles.
            assert all(h is None or h.status != "held" for h in holds), rid
        if saga.status in ("released", "expired"):
            assert all(h is None or h.status not in ("held", "committed") for h in holds), rid
        if saga.status == "committed":
            assert all(
                h is not None and h.status == "committed" and h.order_id == saga.order_id
                for h in holds
            ), rid
        if saga.status == "held":
            assert all(h is not None and h.status == "held" for h in holds), rid
            # The expiry reported is one every line holds to.
            assert saga.expires_at is not None
            assert all(h is not None and h.expires_at >= saga.expires_at for h in holds), rid
        assert saga.extension is None or saga.status != "held", f"{rid} extension unanswered"
    for sku in SKUS:
        for level in world.books[sku].levels.values():
            assert level.held >= 0
            assert level.committed >= 0
            assert level.held + level.committed <= level.on_hand


def test_a_hold_that_runs_out_before_the_last_sku_is_decided_ends_the_reservation_expired() -> None:
    """A's owner expires its hold before B's (slow) owner has decided: the reservation was
    never wholly held, so it is not reported held (I2); B's hold is given back."""
    world = World()
    for sku in ("A", "B"):
        world.books[sku].apply(
            world.envelope(
                StockReceived(receipt_id=f"rc-{sku}", sku=sku, location_id="wh", quantity=5)
            )
        )
    expires = T0 + timedelta(seconds=3)
    world.write(
        ReservationRequested(
            reservation_id="cart-1",
            lines=[RequestedLine(sku="A", quantity=1), RequestedLine(sku="B", quantity=1)],
            ttl_seconds=3,
            channel="web",
            expires_at=expires,
            request_fingerprint="f",
        )
    )
    for sku in ("A", "B"):
        world.write(
            HoldRequested(
                reservation_id="cart-1",
                sku=sku,
                lines=[HoldLine(quantity=1, location_id="wh")],
                online_locations=LOCATIONS,
                expires_at=expires,
                requested_at=T0,
                request_fingerprint="f",
            )
        )
    world.deliver_reservation()  # the request
    world.deliver_stock("A")  # A held
    world.stock_queues["A"].append(HoldExpired(reservation_id="cart-1", sku="A"))
    world.deliver_stock("A")  # A's timer: expired
    world.deliver_stock("B")  # B held, late
    world.settle([])

    assert not any(isinstance(e, ReservationHeld) for e in world.written)
    assert (
        ReservationReleased(reservation_id="cart-1", reason="expired", request_fingerprint="f")
        in world.written
    )
    assert world.coordinator.book.sagas["cart-1"].status == "expired"
    for sku in ("A", "B"):
        assert world.books[sku].holds["cart-1", sku].status != "held"
        assert world.books[sku].levels[sku, "wh"].held == 0


def test_a_reservation_about_to_expire_is_left_to_run_out_not_reported_held() -> None:
    """Its verdict could land behind an owner's expiry of a line: "held" would be reported of
    what no longer holds every line (I2). Reported held only while it holds past the margin."""
    world = World()
    world.books["A"].apply(
        world.envelope(StockReceived(receipt_id="rc-A", sku="A", location_id="wh", quantity=5))
    )
    request(world, "cart-1", [("A", 1)], "f", world.write)
    world.deliver_reservation()
    world.deliver_stock("A")
    world.reservation_queue.popleft()  # the held outcome, folded by hand
    saga = world.coordinator.book.sagas["cart-1"]
    expires_at = T0 + timedelta(minutes=15)
    outcome = world.written[-1]
    world.coordinator.fold(world.envelope(outcome))

    assert [type(e) for e in saga.next_events(held_until=expires_at - timedelta(seconds=1))] == [
        ReservationHeld
    ]
    assert saga.next_events(held_until=expires_at) == []


def held_world(*lines: tuple[str, int]) -> World:
    """A world where reservation r0 holds ``lines`` and nothing is in flight."""
    world = World()
    requested: dict[str, list[tuple[str, int]]] = {}
    for sku in {sku for sku, _ in lines}:
        act(world, requested, "receive", (sku, "wh", 5))
    act(world, requested, "reserve", ("r0", list(lines), None))
    world.settle([])
    assert world.coordinator.book.sagas["r0"].status == "held"
    return world


def test_a_second_order_lands_while_the_first_is_committing_and_waits_its_turn() -> None:
    world = held_world(("A", 1))
    requested = {"r0": [("A", 1)]}
    act(world, requested, "commit", "r0")
    world.deliver_reservation()  # the first order's request: the commit of A is asked
    act(world, requested, "commit_twin", "r0")
    world.settle([])

    answers = [
        (type(e).__name__, e.order_id)
        for e in world.written
        if isinstance(e, ReservationCommitted | ReservationCommitRejected)
    ]
    assert answers == [
        ("ReservationCommitted", "o-r0"),
        ("ReservationCommitRejected", "twin-o-r0"),
    ]
    assert world.books["A"].holds["r0", "A"].order_id == "o-r0"


def test_an_extension_is_answered_once_every_hold_reaches_it() -> None:
    """A longer extension lands while a shorter one is in flight: the shorter one's outcome
    does not answer the longer, and the expiry reported is one every hold reaches."""
    world = held_world(("A", 1))
    requested = {"r0": [("A", 1)]}
    act(world, requested, "extend_short", "r0")
    world.deliver_reservation()  # asks A for 20 min
    act(world, requested, "extend_long", "r0")
    world.deliver_reservation()  # asks A for 40 min
    world.deliver_stock("A")  # A holds 20 min
    world.deliver_reservation()  # not 40 min yet: no answer
    world.settle([])

    extended = [e.expires_at for e in world.written if isinstance(e, ReservationExtended)]
    assert extended == [T0 + timedelta(minutes=40)]
    assert world.coordinator.book.sagas["r0"].expires_at == T0 + timedelta(minutes=40)
    assert world.books["A"].holds["r0", "A"].expires_at == T0 + timedelta(minutes=40)

"""The deterministic fold: fencing of stale owners, duplicate suppression, state hashing."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from omnistock.events.catalogue import OwnershipClaimed, StockReceived
from omnistock.events.envelope import Envelope, Event, Position
from omnistock.events.fold import Fold, state_hash


class OnHand:
    """A minimal projection: on_hand per (sku, location) from receipts."""

    def __init__(self) -> None:
        self.on_hand: Counter[tuple[str, str]] = Counter()

    def apply(self, envelope: Envelope[Event]) -> None:
        event = envelope.event
        if isinstance(event, StockReceived):
            self.on_hand[event.sku, event.location_id] += event.quantity

    def canonical(self) -> Any:
        return sorted([sku, loc, qty] for (sku, loc), qty in self.on_hand.items())


def receipt(
    n: int, offset: int, epoch: int | None = None, event_id: str | None = None, writer: str = "a"
) -> Envelope:
    envelope: Envelope[Event] = Envelope(
        event=StockReceived(receipt_id=f"r{n}", sku="A", location_id="s1", quantity=n),
        source=f"/inventory/{writer}",
        epoch=epoch,
        **({"id": event_id} if event_id else {}),
    )
    return envelope.at(Position("inventory.stock", 0, offset))


def claim(epoch: int, offset: int, writer: str = "a", partition: int = 0) -> Envelope:
    event = OwnershipClaimed(
        partition=partition, epoch=epoch, owner=writer, claimed_at=datetime.now(UTC)
    )
    return Envelope(event=event, source=f"/inventory/{writer}").at(
        Position("inventory.stock", 0, offset)
    )


def test_stale_owner_decisions_after_a_newer_claim_are_ignored() -> None:
    fold = Fold(OnHand())
    fold.apply(claim(1, 0, "a"))
    assert fold.apply(receipt(5, 1, epoch=1, writer="a"))
    fold.apply(claim(2, 2, "b"))
    # The paused epoch-1 owner wakes up and writes again: void.
    assert not fold.apply(receipt(7, 3, epoch=1, writer="a"))
    assert fold.apply(receipt(11, 4, epoch=2, writer="b"))
    assert fold.projection.on_hand["A", "s1"] == 16
    assert fold.stats.fenced == 1
    assert fold.current_epoch("inventory.stock", 0) == 2


def test_rivals_racing_for_one_epoch_the_first_claim_in_the_log_wins() -> None:
    fold = Fold(OnHand())
    fold.apply(claim(2, 0, "b"))
    fold.apply(claim(2, 1, "c"))
    assert fold.apply(receipt(1, 2, epoch=2, writer="b"))
    assert not fold.apply(receipt(100, 3, epoch=2, writer="c"))
    assert fold.projection.on_hand["A", "s1"] == 1
    assert fold.owners["inventory.stock", 0] == "/inventory/b"


def test_claims_that_do_not_raise_the_epoch_are_ignored() -> None:
    fold = Fold(OnHand())
    fold.apply(claim(3, 0))
    fold.apply(claim(3, 1))
    fold.apply(claim(2, 2))
    fold.apply(claim(9, 3, partition=5))  # names another partition
    assert fold.current_epoch("inventory.stock", 0) == 3
    assert (fold.stats.claims, fold.stats.fenced) == (1, 3)


def test_decision_stamped_with_an_epoch_never_claimed_is_ignored() -> None:
    fold = Fold(OnHand())
    assert not fold.apply(receipt(4, 0, epoch=1))
    assert fold.apply(receipt(4, 1))  # unfenced facts (no epoch) always count


def test_a_retried_send_that_landed_twice_counts_once() -> None:
    fold = Fold(OnHand())
    assert fold.apply(receipt(5, 0, event_id="same"))
    assert not fold.apply(receipt(5, 1, event_id="same"))
    assert fold.projection.on_hand["A", "s1"] == 5


def test_state_hash_is_independent_of_dict_order() -> None:
    assert state_hash({"b": 1, "a": [1, 2]}) == state_hash({"a": [1, 2], "b": 1})
    assert state_hash({"a": 1}) != state_hash({"a": 2})


@given(st.lists(st.tuples(st.booleans(), st.integers(1, 50), st.integers(1, 4)), max_size=60))
def test_same_log_same_hash(ops: list[tuple[bool, int, int]]) -> None:
    """Folding one log twice (as live and as replay) gives one hash, whatever the log holds."""
    log = []
    for offset, (is_claim, quantity, epoch) in enumerate(ops):
        log.append(
            claim(epoch, offset, writer=str(epoch))
            if is_claim
            else receipt(quantity, offset, epoch=epoch, writer=str(epoch))
        )
    live, rebuilt = Fold(OnHand()), Fold(OnHand())
    for envelope in log:
        live.apply(envelope)
    for envelope in log:
        rebuilt.apply(envelope)
    assert live.state_hash() == rebuilt.state_hash()

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


def receipt(n: int, offset: int, epoch: int | None = None, event_id: str | None = None) -> Envelope:
    envelope: Envelope[Event] = Envelope(
        event=StockReceived(receipt_id=f"r{n}", sku="A", location_id="s1", quantity=n),
        source="/test",
        epoch=epoch,
        **({"id": event_id} if event_id else {}),
    )
    return envelope.at(Position("inventory.stock", 0, offset))


def claim(epoch: int, offset: int, partition: int = 0) -> Envelope:
    event = OwnershipClaimed(
        partition=partition, epoch=epoch, owner=f"o{epoch}", claimed_at=datetime.now(UTC)
    )
    return Envelope(event=event, source="/test").at(Position("inventory.stock", 0, offset))


def test_stale_owner_decisions_after_a_newer_claim_are_ignored() -> None:
    fold = Fold(OnHand())
    assert fold.apply(claim(1, 0))
    assert fold.apply(receipt(5, 1, epoch=1))
    assert fold.apply(claim(2, 2))
    # The paused epoch-1 owner wakes up and writes again: void.
    assert not fold.apply(receipt(7, 3, epoch=1))
    assert fold.apply(receipt(11, 4, epoch=2))
    assert fold.projection.on_hand["A", "s1"] == 16
    assert fold.stats.fenced == 1
    assert fold.current_epoch("inventory.stock", 0) == 2


def test_claims_that_do_not_raise_the_epoch_are_ignored() -> None:
    fold = Fold(OnHand())
    assert fold.apply(claim(3, 0))
    assert not fold.apply(claim(3, 1))
    assert not fold.apply(claim(2, 2))
    assert not fold.apply(claim(9, 3, partition=5))  # names another partition
    assert fold.current_epoch("inventory.stock", 0) == 3


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
        log.append(claim(epoch, offset) if is_claim else receipt(quantity, offset, epoch=epoch))
    live, rebuilt = Fold(OnHand()), Fold(OnHand())
    for envelope in log:
        live.apply(envelope)
    for envelope in log:
        rebuilt.apply(envelope)
    assert live.state_hash() == rebuilt.state_hash()

"""The ledger and the judging of submissions, without I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from omnistock.events.catalogue import PosLine, PosTransactionRecorded
from omnistock.events.envelope import Envelope, Position
from omnistock.events.fold import Fold
from omnistock.pos_gateway.domain.judging import Accept, BatchJudge, Duplicate, Reject, Submission
from omnistock.pos_gateway.domain.ledger import PosLedger
from omnistock.pos_gateway.domain.sequences import Sequences

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
LINE = PosLine(sku="SKU-1", quantity=2, unit_price=Decimal("5.00"), currency="EUR")


@given(st.lists(st.integers(min_value=0, max_value=200), max_size=80))
def test_sequences_match_a_plain_set(numbers: list[int]) -> None:
    kept = Sequences()
    for n in numbers:
        kept.add(n)
    seen = set(numbers)
    assert kept.received == len(seen)
    if seen:
        expected = set(range(min(seen), max(seen) + 1)) - seen
        assert kept.missing == len(expected)
        assert {n for lo, hi in kept.gaps() for n in range(lo, hi + 1)} == expected
    else:
        assert kept.missing == 0


def sub(tid: str, **fields: object) -> Submission:
    values: dict[str, object] = {
        "transaction_id": tid,
        "store_id": "s1",
        "terminal_id": "t1",
        "sequence": 1,
        "occurred_at": NOW - timedelta(hours=3),
        "type": "sale",
        "lines": [LINE],
        **fields,
    }
    return Submission.model_validate(values)


def fold_in(fold: Fold[PosLedger], event: PosTransactionRecorded, offset: int) -> None:
    envelope = Envelope(event=event, source="test", id=f"{event.transaction_id}@{offset}", time=NOW)
    fold.apply(envelope.at(Position("pos.transactions", 0, offset)))


def judge(ledger: PosLedger, *items: Submission) -> list[Accept | Duplicate | Reject]:
    j = BatchJudge(ledger, NOW, timedelta(minutes=5))
    return [j.judge(item) for item in items]


def test_first_copy_in_the_log_counts_and_later_copies_change_nothing() -> None:
    fold = Fold(PosLedger())
    (verdict,) = judge(fold.projection, sub("a"))
    assert isinstance(verdict, Accept)
    fold_in(fold, verdict.event, 0)
    fold_in(fold, verdict.event, 1)  # a second replica's copy, written a moment later
    recorded = fold.projection.recorded("s1", "a")
    assert recorded is not None
    assert recorded.event_id == "a@0"
    assert judge(fold.projection, sub("a")) == [Duplicate()]
    changed = judge(fold.projection, sub("a", sequence=7))
    assert isinstance(changed[0], Reject)
    assert changed[0].reason == "conflict"


def test_a_void_in_the_same_batch_reverses_its_sale_and_only_once() -> None:
    ledger = PosLedger()
    sale, void, again = judge(
        ledger,
        sub("a"),
        sub("v", type="void", lines=[], voids_transaction_id="a", sequence=2),
        sub("v2", type="void", lines=[], voids_transaction_id="a", sequence=3),
    )
    assert isinstance(sale, Accept)
    assert isinstance(void, Accept)
    assert void.event.voided_type == "sale"
    assert void.event.lines == [LINE]
    assert isinstance(again, Reject)
    assert again.reason == "already_voided"
    fold = Fold(ledger)
    fold_in(fold, sale.event, 0)
    fold_in(fold, void.event, 1)
    second = void.event.model_copy(update={"transaction_id": "v3"})
    fold_in(fold, second, 2)  # a racing second void: recorded, reverses nothing
    assert ledger.voided_by[("s1", "a")] == "v"


def test_sales_changes_net_out_a_void() -> None:
    ledger = PosLedger()
    sale, void = judge(ledger, sub("a"), sub("v", type="void", voids_transaction_id="a"))
    assert isinstance(sale, Accept)
    assert isinstance(void, Accept)
    at = Position("pos.transactions", 0, 0)
    added = ledger.apply(Envelope(event=sale.event, source="x", time=NOW).at(at))
    removed = ledger.apply(Envelope(event=void.event, source="x", time=NOW).at(at))
    assert added
    assert removed
    assert added[0].units + removed[0].units == 0
    assert added[0].revenue + removed[0].revenue == 0
    assert added[0].minute == removed[0].minute


def test_refusals_name_their_reason() -> None:
    ledger = PosLedger()
    future, unknown, no_lines, other_store = judge(
        ledger,
        sub("f", occurred_at=NOW + timedelta(hours=1)),
        sub("u", type="void", lines=[], voids_transaction_id="missing"),
        sub("e", lines=[]),
        sub("x"),
    )
    assert isinstance(future, Reject)
    assert future.reason == "future_timestamp"
    assert isinstance(unknown, Reject)
    assert unknown.reason == "unknown_void_target"
    assert isinstance(no_lines, Reject)
    assert no_lines.field == "lines"
    assert isinstance(other_store, Accept)
    fold_in(Fold(ledger), other_store.event, 0)
    (clash,) = judge(ledger, sub("x", store_id="s2"))
    assert isinstance(clash, Reject)
    assert clash.reason == "conflict"


def test_replay_reaches_the_same_state_hash() -> None:
    events = [
        v.event
        for v in judge(PosLedger(), sub("a"), sub("b", sequence=4), sub("c", type="return"))
        if isinstance(v, Accept)
    ]
    hashes = set()
    for _ in range(2):
        fold = Fold(PosLedger())
        for offset, event in enumerate(events):
            fold_in(fold, event, offset)
        hashes.add(fold.state_hash())
    assert len(hashes) == 1


def test_the_ledger_forgets_what_is_past_the_resend_window_and_the_judge_refuses_it() -> None:
    window = timedelta(days=2)
    ledger = PosLedger(window)
    fold = Fold(ledger)
    (old,) = judge(ledger, sub("old", occurred_at=NOW - timedelta(days=1)))
    assert isinstance(old, Accept)
    fold_in(fold, old.event, 0)

    # Three days later (by the log's clock) a new sale arrives: "old" is past the window
    # plus the margin, forgotten; and a resend of it is refused, not counted twice.
    later = NOW + timedelta(days=3)
    new = BatchJudge(ledger, later, timedelta(minutes=5)).judge(
        sub("new", occurred_at=later - timedelta(minutes=1), sequence=2)
    )
    assert isinstance(new, Accept)
    fold.apply(
        Envelope(event=new.event, source="test", id="new@1", time=later).at(
            Position("pos.transactions", 0, 1)
        )
    )
    assert ledger.recorded("s1", "old") is None
    assert ledger.recorded("s1", "new") is not None
    assert "old" not in ledger.stores_of
    resent = BatchJudge(ledger, later, timedelta(minutes=5)).judge(
        sub("old", occurred_at=NOW - timedelta(days=1))
    )
    assert isinstance(resent, Reject)
    assert (resent.reason, resent.field) == ("too_old", "occurred_at")
    # A copy that still reaches the log (a replica with a clock far behind) counts nowhere.
    assert (
        fold.projection.apply(
            Envelope(event=old.event, source="test", id="old@2", time=later).at(
                Position("pos.transactions", 0, 2)
            )
        )
        is None
    )


def test_the_window_keeps_memory_bounded_by_its_own_traffic() -> None:
    ledger = PosLedger(timedelta(hours=1))
    fold = Fold(ledger)
    for n in range(500):
        at = NOW + timedelta(minutes=n)
        event = PosTransactionRecorded(
            transaction_id=f"t{n}",
            store_id="s1",
            terminal_id="t1",
            sequence=n,
            occurred_at=at,
            type="sale",
            lines=[LINE],
        )
        fold.apply(
            Envelope(event=event, source="test", id=f"t{n}", time=at).at(
                Position("pos.transactions", 0, n)
            )
        )
    # The window (1 h) plus the margin (1 h) of one-a-minute sales, not all 500.
    assert len(ledger.transactions) == 121
    assert ledger.terminals["s1", "t1"].received == 500

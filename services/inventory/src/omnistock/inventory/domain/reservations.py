"""The reservation saga: one reservation's progress across SKU partitions, kept in the log.

Each SKU of a reservation is decided in its own stock partition; the outcomes
come back here as :class:`HoldOutcome` events. What the coordinator must write
next is *derived from the state* (:meth:`Saga.next_events`), never remembered
in a process, so a coordinator that crashed anywhere resumes by folding the log
(rule 6). A follow-up it writes twice is harmless: every reader dedupes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from omnistock.events.catalogue import (
    CommitmentCancelled,
    HoldCommitRequested,
    HoldExtensionRequested,
    HoldOutcome,
    HoldReleaseRequested,
    LocatedLine,
    RejectedLine,
    ReservationChangeRefused,
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
)
from omnistock.events.envelope import Envelope, Event, derived_id

SagaStatus = Literal["pending", "held", "rejected", "committed", "released", "expired"]
_GONE = ("released", "expired", "not_held", "unknown")


@dataclass(slots=True)
class Saga:
    reservation_id: str
    request: ReservationRequested | None = None
    status: SagaStatus = "pending"
    expires_at: datetime | None = None
    order_id: str | None = None
    #: The fold's answer to each SKU's hold request (conflicting retries excluded).
    holds: dict[str, HoldOutcome] = field(default_factory=dict)
    #: SKUs held under this id for another request than the first (two carts raced under
    #: one id): given back, never counted as this reservation's.
    foreign_holds: set[str] = field(default_factory=set)
    #: SKUs of this reservation whose hold another request under the id took first.
    conflicted: set[str] = field(default_factory=set)
    #: SKUs the stock fold says are no longer held (released, aborted or expired).
    let_go: dict[str, str] = field(default_factory=dict)
    #: The order whose commit is in flight: the first to ask wins the stock, so what the
    #: coordinator decided for it still stands when another order's request lands meanwhile.
    commit: ReservationCommitRequested | None = None
    committed_skus: dict[str, str] = field(default_factory=dict)
    extension: ReservationExtensionRequested | None = None
    extended_skus: set[str] = field(default_factory=set)
    release_requested: bool = False
    #: Commit requests still needing an answer, first request per order, in log order.
    unanswered_commits: dict[str, ReservationCommitRequested] = field(default_factory=dict)
    unanswered_release: bool = False

    @property
    def skus(self) -> list[str]:
        return sorted({line.sku for line in self.request.lines}) if self.request else []

    def held_skus(self) -> list[str]:
        return [
            sku
            for sku, outcome in sorted(self.holds.items())
            if outcome.outcome == "held"
            and sku not in self.let_go
            and self.committed_skus.get(sku) != "committed"
        ]

    # -- folding --------------------------------------------------------------------------

    def apply(self, envelope: Envelope[Event]) -> None:  # noqa: PLR0912 - one branch per event
        e = envelope.event
        if isinstance(e, ReservationRequested):
            if self.request is None:
                self.request = e
                self.expires_at = e.expires_at
        elif isinstance(e, HoldOutcome):
            self._outcome(e)
        elif isinstance(e, ReservationHeld):
            self.status = "held"
            self.expires_at = e.expires_at
        elif isinstance(e, ReservationRejected):
            self.status = "rejected"
        elif isinstance(e, ReservationCommitRequested):
            self.unanswered_commits.setdefault(e.order_id, e)
            if self.commit is None:
                self._take_commit(e)
        elif isinstance(e, ReservationCommitted):
            self.status = "committed"
            self.order_id = e.order_id
            self.unanswered_commits.pop(e.order_id, None)
        elif isinstance(e, ReservationCommitRejected):
            self.unanswered_commits.pop(e.order_id, None)
            if e.reason in ("expired", "released") and self.status == "held":
                self.status = e.reason
            if self.commit is not None and self.commit.order_id == e.order_id:
                # The next order waiting (if any) gets its turn.
                self._take_commit(next(iter(self.unanswered_commits.values()), None))
        elif isinstance(e, ReservationReleaseRequested):
            self.release_requested = True
            self.unanswered_release = True
        elif isinstance(e, ReservationReleased):
            self.unanswered_release = False
            if self.status in ("pending", "held"):
                self.status = "expired" if e.reason == "expired" else "released"
        elif isinstance(e, ReservationExtensionRequested):
            self.extension = e
            self.extended_skus = set()
        elif isinstance(e, ReservationExtended):
            # Holds only ever lengthen. An answer to an earlier, shorter extension leaves a
            # later one in flight.
            if self.expires_at is None or e.expires_at > self.expires_at:
                self.expires_at = e.expires_at
            if self.extension is not None and e.expires_at >= self.extension.expires_at:
                self.extension = None
        elif isinstance(e, ReservationChangeRefused):
            if e.request == "release":
                self.unanswered_release = False
            else:
                self.extension = None

    def _take_commit(self, request: ReservationCommitRequested | None) -> None:
        self.commit = request
        self.committed_skus = {}

    @property
    def fingerprint(self) -> str | None:
        return self.request.request_fingerprint if self.request else None

    def _hold_outcome(self, e: HoldOutcome) -> None:
        # Outcomes written before they named their request count as this request's.
        if e.request_fingerprint not in (None, self.fingerprint):
            if e.outcome == "held":
                self.foreign_holds.add(e.sku)
        elif e.outcome in ("held", "rejected") and e.sku not in self.holds:
            self.holds[e.sku] = e
        elif e.outcome == "conflict":
            self.conflicted.add(e.sku)

    def _outcome(self, e: HoldOutcome) -> None:
        if e.request == "hold":
            self._hold_outcome(e)
        elif e.request in ("release", "expire"):
            if e.outcome in ("released", "expired", "not_held", "unknown"):
                self.let_go.setdefault(e.sku, e.outcome)
        elif e.request == "commit":
            if self.commit is not None and e.order_id == self.commit.order_id:
                self.committed_skus[e.sku] = e.outcome
                if e.outcome in ("expired", "released"):
                    self.let_go.setdefault(e.sku, e.outcome)
        elif e.request == "extend" and self.extension is not None:
            # Counted only when the hold reaches this extension's expiry: the outcome may
            # answer an earlier, shorter one.
            if (
                e.outcome == "extended"
                and e.expires_at is not None
                and e.expires_at >= self.extension.expires_at
            ):
                self.extended_skus.add(e.sku)
            elif e.outcome in _GONE:
                self.let_go.setdefault(e.sku, e.outcome)

    # -- what to write next -----------------------------------------------------------------

    def next_events(self, held_until: datetime | None = None) -> list[Event]:
        """Everything this saga still needs written, given what the log says so far.

        A reservation is reported held only if it holds until at least ``held_until``
        (the coordinator's clock plus a margin): a verdict written closer to its expiry
        could land behind an owner's expiry of one of its lines, reporting held what no
        longer holds every line (I2). Such a reservation is left to run out instead."""
        rid = self.reservation_id
        if self.request is None:
            return self._unknown()
        out: list[Event] = self._stray_holds()
        if self.status == "pending":
            out += self._decide(held_until)
        elif self.status == "rejected":
            out += self._release_all("aborted")
        elif self.status == "held":
            out += self._while_held()
        out += self._answer_commits()
        if self.unanswered_release and self.status != "held":
            if self.status in ("released", "expired", "rejected"):
                reason = "expired" if self.status == "expired" else "released"
                out.append(
                    ReservationReleased(
                        reservation_id=rid, reason=reason, request_fingerprint=self.fingerprint
                    )
                )
            elif self.status == "committed":
                out.append(
                    ReservationChangeRefused(
                        reservation_id=rid, request="release", status="committed"
                    )
                )
        if self.extension is not None and self.status not in ("pending", "held"):
            out.append(
                ReservationChangeRefused(reservation_id=rid, request="extend", status=self.status)
            )
        return out

    def _unknown(self) -> list[Event]:
        """No reservation was ever requested under this id: refuse what is asked of it, and
        give back holds that arrived without one (a conflicting retry)."""
        rid = self.reservation_id
        out: list[Event] = self._stray_holds()
        out += [
            ReservationCommitRejected(
                reservation_id=rid, order_id=order, reason="unknown_reservation"
            )
            for order in sorted(self.unanswered_commits)
        ]
        if self.unanswered_release:
            out.append(
                ReservationChangeRefused(reservation_id=rid, request="release", status="unknown")
            )
        if self.extension is not None:
            out.append(
                ReservationChangeRefused(reservation_id=rid, request="extend", status="unknown")
            )
        return out

    def _stray_holds(self) -> list[Event]:
        """Releases of the holds under this id that are not this reservation's."""
        wanted = set(self.skus)
        stray = {sku for sku in self.held_skus() if sku not in wanted}
        stray.update(sku for sku in self.foreign_holds if sku not in self.let_go)
        return [
            HoldReleaseRequested(reservation_id=self.reservation_id, sku=sku, reason="aborted")
            for sku in sorted(stray)
        ]

    def _decide(self, held_until: datetime | None) -> list[Event]:  # noqa: PLR0911 - one per verdict
        if any(sku not in self.holds and sku not in self.conflicted for sku in self.skus):
            return []
        if self.conflicted:
            # Another request under this id took a SKU first: this one cannot be whole.
            return [
                ReservationRejected(
                    reservation_id=self.reservation_id,
                    reason="conflict",
                    lines=[],
                    request_fingerprint=self.fingerprint,
                ),
                *self._release_all("aborted"),
            ]
        outcomes = [self.holds[sku] for sku in self.skus]
        rejected = [o for o in outcomes if o.outcome == "rejected"]
        if rejected:
            return [
                ReservationRejected(
                    reservation_id=self.reservation_id,
                    reason="insufficient_stock",
                    lines=[
                        RejectedLine(sku=o.sku, requested=o.requested, available=o.available)
                        for o in rejected
                    ],
                    request_fingerprint=self.fingerprint,
                ),
                *self._release_all("aborted"),
            ]
        gone = {sku: why for sku, why in self.let_go.items() if sku in self.skus}
        if gone:
            # A hold ran out (or was let go) before the last SKU was decided: the reservation
            # was never wholly held at any moment, so it is not reported held (I2).
            releases = self._release_all("aborted")
            if releases:
                return releases
            reason = "expired" if "expired" in gone.values() else "released"
            return [
                ReservationReleased(
                    reservation_id=self.reservation_id,
                    reason=reason,
                    request_fingerprint=self.fingerprint,
                )
            ]
        assert self.request is not None
        if held_until is not None and self.request.expires_at <= held_until:
            return []  # the owners' expiry of the holds settles it (released, expired)
        return [
            ReservationHeld(
                reservation_id=self.reservation_id,
                lines=[line for o in outcomes for line in o.allocations],
                expires_at=self.request.expires_at,
                request_fingerprint=self.fingerprint,
            )
        ]

    def _release_all(self, reason: Literal["released", "aborted"]) -> list[Event]:
        return [
            HoldReleaseRequested(reservation_id=self.reservation_id, sku=sku, reason=reason)
            for sku in self.held_skus()
            if sku in self.skus
        ]

    def _holding(self) -> dict[str, int]:
        return {
            sku: sum(line.quantity for line in outcome.allocations)
            for sku, outcome in self.holds.items()
            if sku in self.skus
        }

    def _while_held(self) -> list[Event]:  # noqa: PLR0911 - one return per saga phase
        rid = self.reservation_id
        # Holds given back that were never this reservation's (strays) change nothing.
        gone = [why for sku, why in self.let_go.items() if sku in self.skus]
        if gone:
            # A part expired or was released: the reservation cannot stand any more.
            reason = "expired" if "expired" in gone else "released"
            if self.commit is not None:
                # The order in flight gets its answer first: the commit path compensates.
                return self._committing(self.commit)
            releases = self._release_all("aborted")
            if releases:
                return releases
            return [
                ReservationReleased(
                    reservation_id=rid, reason=reason, request_fingerprint=self.fingerprint
                )
            ]
        if self.commit is not None and self.commit.order_id in self.unanswered_commits:
            return self._committing(self.commit)
        out: list[Event] = []
        if self.release_requested:
            out += self._release_all("released")
            if not out:
                out.append(
                    ReservationReleased(
                        reservation_id=rid,
                        reason="released",
                        request_fingerprint=self.fingerprint,
                    )
                )
            return out
        if self.extension is not None:
            x = self.extension
            pending = [s for s in self.skus if s not in self.extended_skus]
            if not pending:
                return [ReservationExtended(reservation_id=rid, expires_at=x.expires_at)]
            return [
                HoldExtensionRequested(
                    reservation_id=rid,
                    sku=sku,
                    expires_at=x.expires_at,
                    requested_at=x.requested_at,
                )
                for sku in pending
            ]
        return out

    def _committing(self, commit: ReservationCommitRequested) -> list[Event]:
        rid = self.reservation_id
        holding = self._holding()
        if commit.lines is not None:
            asked: dict[str, int] = {}
            for line in commit.lines:
                asked[line.sku] = asked.get(line.sku, 0) + line.quantity
            if asked != holding:
                return [
                    ReservationCommitRejected(
                        reservation_id=rid, order_id=commit.order_id, reason="mismatch"
                    )
                ]
        missing = [sku for sku in self.skus if sku not in self.committed_skus]
        if missing:
            return [
                HoldCommitRequested(
                    reservation_id=rid,
                    sku=sku,
                    order_id=commit.order_id,
                    quantity=holding[sku],
                    requested_at=commit.requested_at,
                )
                for sku in missing
            ]
        failed = {o for o in self.committed_skus.values() if o != "committed"}
        if not failed:
            return [ReservationCommitted(reservation_id=rid, order_id=commit.order_id)]
        # Some SKUs could not be sold: undo the ones that were, let go of the rest.
        out: list[Event] = [
            CommitmentCancelled(reservation_id=rid, sku=sku, order_id=commit.order_id)
            for sku, outcome in sorted(self.committed_skus.items())
            if outcome == "committed"
        ]
        out += self._release_all("aborted")
        reason: Literal["expired", "released"] = "expired" if "expired" in failed else "released"
        out.append(
            ReservationCommitRejected(reservation_id=rid, order_id=commit.order_id, reason=reason)
        )
        return out

    def _answer_commits(self) -> list[Event]:
        if self.status in ("pending", "held"):
            return []
        answers: list[Event] = []
        for order_id in sorted(self.unanswered_commits):
            if self.status == "committed" and order_id == self.order_id:
                answers.append(
                    ReservationCommitted(reservation_id=self.reservation_id, order_id=order_id)
                )
            else:
                reason: Literal["expired", "released", "not_held"] = (
                    self.status if self.status in ("expired", "released") else "not_held"
                )
                answers.append(
                    ReservationCommitRejected(
                        reservation_id=self.reservation_id, order_id=order_id, reason=reason
                    )
                )
        return answers

    def lines(self) -> list[LocatedLine]:
        return [
            line for sku in self.skus if sku in self.holds for line in self.holds[sku].allocations
        ]

    def canonical(self) -> list[Any]:
        return [
            self.reservation_id,
            self.status,
            self.expires_at.isoformat() if self.expires_at else None,
            self.order_id,
            self.request.model_dump(mode="json") if self.request else None,
            sorted([sku, o.model_dump(mode="json")] for sku, o in self.holds.items()),
            sorted(self.foreign_holds),
            sorted(self.conflicted),
            sorted(self.let_go.items()),
            self.commit.model_dump(mode="json") if self.commit else None,
            sorted(self.committed_skus.items()),
            self.extension.model_dump(mode="json") if self.extension else None,
            sorted(self.extended_skus),
            self.release_requested,
            list(self.unanswered_commits),
            self.unanswered_release,
        ]


class SagaBook:
    """Every saga of the reservation partitions a coordinator owns."""

    def __init__(self) -> None:
        self.sagas: dict[str, Saga] = {}

    def apply(self, envelope: Envelope[Event]) -> Saga | None:
        reservation_id = getattr(envelope.event, "reservation_id", None)
        if reservation_id is None:
            return None
        saga = self.sagas.get(reservation_id)
        if saga is None:
            saga = self.sagas[reservation_id] = Saga(reservation_id)
        saga.apply(envelope)
        return saga

    def canonical(self) -> list[Any]:
        return sorted(saga.canonical() for saga in self.sagas.values())


def _emission_key(event: Event, generation: int) -> tuple[Any, ...]:
    # Deterministic, so the same follow-up written again after a restart has the same id.
    return (
        event.event_type,
        getattr(event, "sku", None),
        getattr(event, "order_id", None),
        getattr(event, "reason", None),
        generation,
    )


class SagaCoordinator:
    """Folds reservation events and says what to write next, at most once per process for
    each follow-up. After a restart the set of written follow-ups is empty, so anything
    still pending is written again: at-least-once, deduplicated by every reader."""

    def __init__(self) -> None:
        self.book = SagaBook()
        self._written: dict[str, set[tuple[Any, ...]]] = {}
        self._generation: dict[str, int] = {}

    def fold(self, envelope: Envelope[Event]) -> Saga | None:
        saga = self.book.apply(envelope)
        if saga is not None and isinstance(
            envelope.event,
            ReservationCommitRequested
            | ReservationReleaseRequested
            | ReservationExtensionRequested,
        ):
            # A new request may need the same answer again: a new generation of follow-ups.
            self._generation[saga.reservation_id] = self._generation.get(saga.reservation_id, 0) + 1
        return saga

    def to_write(self, saga: Saga, held_until: datetime) -> list[tuple[Event, str]]:
        """Follow-ups not yet written by this process, each with its deterministic event id."""
        written = self._written.get(saga.reservation_id, set())
        generation = self._generation.get(saga.reservation_id, 0)
        return [
            (e, derived_id(saga.reservation_id, *_emission_key(e, generation)))
            for e in saga.next_events(held_until)
            if _emission_key(e, generation) not in written
        ]

    def written(self, saga: Saga, events: list[Event]) -> None:
        generation = self._generation.get(saga.reservation_id, 0)
        self._written.setdefault(saga.reservation_id, set()).update(
            _emission_key(e, generation) for e in events
        )

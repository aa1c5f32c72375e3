"""The one door the system tests (and bench/system.py) use into the platform: public HTTP.

Every request carries :func:`request_headers`, the single place where credentials go
once the services require them. A write is repeated with the same idempotency key
until the platform gives a definitive answer (2xx or a 4xx other than a timeout), as a
well-behaved client does through crashes and outages; every definitive answer is
recorded in a :class:`Ledger`, so the tests can prove that nothing acknowledged was lost.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from omnistock.devstack.credentials import admin_headers

#: Answers that mean "not decided, ask again with the same key".
RETRYABLE = frozenset({502, 503, 504})
#: How long one write keeps being retried before the test gives up on the platform.
WRITE_DEADLINE_S = 120.0
#: Pause between two tries of one write (a client's backoff, not synchronisation).
RETRY_PAUSE_S = 0.2


def request_headers() -> dict[str, str]:
    """Headers of every request the harness sends: the test session's admin credential
    (the scope rules have tests of their own; here every user's writes must land)."""
    return {"user-agent": "omnistock-system-tests", **admin_headers()}


class PlatformError(AssertionError):
    """The platform answered something a correct platform never answers."""


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: Any
    headers: httpx.Headers
    #: Seconds from the first try to the definitive answer (retries included).
    seconds: float
    tries: int


@dataclass
class Ledger:
    """Every definitive answer the harness got, and what went wrong on the way."""

    #: (what, id) -> status, for each 2xx write.
    acknowledged: dict[tuple[str, str], int] = field(default_factory=dict)
    #: Answers per (endpoint, status), retries included.
    answers: Counter[tuple[str, int]] = field(default_factory=Counter)
    #: Transport failures by (endpoint, exception): a refused connection means a service
    #: was down, a reset or a timeout on a quiet platform is a defect.
    transport_error_kinds: Counter[tuple[str, str]] = field(default_factory=Counter)
    #: Seconds to the definitive answer, per endpoint.
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    #: Every 503 seen: (endpoint, seconds the answer took, its Retry-After).
    unavailable: list[tuple[str, float, str | None]] = field(default_factory=list)

    @property
    def transport_errors(self) -> Counter[str]:
        """Transport failures per endpoint."""
        per_endpoint: Counter[str] = Counter()
        for (endpoint, _), count in self.transport_error_kinds.items():
            per_endpoint[endpoint] += count
        return per_endpoint

    def acknowledge(self, what: str, key: str, status: int) -> None:
        self.acknowledged[what, key] = status

    def count(self, what: str | None = None) -> int:
        return sum(1 for w, _ in self.acknowledged if what is None or w == what)


class Api:
    """One service's public HTTP API, across however many replicas run right now."""

    def __init__(
        self,
        name: str,
        urls: Callable[[], Sequence[str]],
        ledger: Ledger,
        *,
        max_connections: int = 64,
        timeout_s: float = 30.0,
    ) -> None:
        self.name = name
        self._urls = urls
        self._turn = itertools.count()
        self.ledger = ledger
        self._client = httpx.AsyncClient(
            headers=request_headers(),
            timeout=timeout_s,
            limits=httpx.Limits(max_connections=max_connections),
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    def _url(self) -> str:
        urls = self._urls()
        if not urls:
            raise httpx.ConnectError(f"no {self.name} replica is running")
        return urls[next(self._turn) % len(urls)]

    async def once(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One request to one replica, as it comes (transport errors raise)."""
        return await self._client.request(method, self._url() + path, **kwargs)

    async def get(self, path: str, **params: Any) -> Any:
        """A read, repeated while the service is down or answers 5xx; the body of its 200."""
        answer = await self.call("GET", path, params=params or None)
        if answer.status != 200:
            raise PlatformError(f"GET {self.name}{path}: {answer.status} {answer.body}")
        return answer.body

    async def write(self, what: str, key: str, method: str, path: str, body: Any = None) -> Answer:
        """A write with idempotency key ``key``, repeated until definitive; 2xx is recorded."""
        answer = await self.call(method, path, json=body, endpoint=what)
        if 200 <= answer.status < 300:
            self.ledger.acknowledge(what, key, answer.status)
        return answer

    async def call(
        self, method: str, path: str, *, endpoint: str | None = None, **kwargs: Any
    ) -> Answer:
        endpoint = endpoint or f"{method} {self.name}"
        started = time.perf_counter()
        deadline = started + WRITE_DEADLINE_S
        for tries in itertools.count(1):
            try:
                sent = time.perf_counter()
                response = await self.once(method, path, **kwargs)
            except httpx.TransportError as error:
                self.ledger.transport_error_kinds[endpoint, type(error).__name__] += 1
            else:
                took = time.perf_counter() - sent
                self.ledger.answers[endpoint, response.status_code] += 1
                if response.status_code == 503:
                    self.ledger.unavailable.append(
                        (endpoint, took, response.headers.get("retry-after"))
                    )
                if response.status_code == 500:
                    raise PlatformError(f"{method} {self.name}{path}: 500 {response.text}")
                if response.status_code not in RETRYABLE:
                    seconds = time.perf_counter() - started
                    self.ledger.latencies[endpoint].append(seconds)
                    body = response.json() if response.content else None
                    return Answer(response.status_code, body, response.headers, seconds, tries)
            if time.perf_counter() > deadline:
                raise PlatformError(
                    f"{method} {self.name}{path}: no definitive answer in {WRITE_DEADLINE_S:g}s"
                )
            await asyncio.sleep(RETRY_PAUSE_S)  # a client's backoff before the same request
        raise AssertionError("unreachable")


@dataclass
class Apis:
    """Every service's API, by service name, sharing one ledger."""

    ledger: Ledger
    by_name: dict[str, Api]

    def __getitem__(self, name: str) -> Api:
        return self.by_name[name]

    def fresh_ledger(self) -> Ledger:
        """Start recording into a new ledger (one per trading day)."""
        self.ledger = Ledger()
        for api in self.by_name.values():
            api.ledger = self.ledger
        return self.ledger

    async def aclose(self) -> None:
        await asyncio.gather(*(api.aclose() for api in self.by_name.values()))

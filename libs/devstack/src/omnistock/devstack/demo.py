"""Demo data for the dev stack, loaded through the services' public HTTP APIs.

Never written to Kafka directly: the data takes the path a client's would, so the
demo exercises the same validation and events. Every id is derived from the data
(location ids, ``SKU-000001``.., receipt ids), so loading again into a stack that
has it changes nothing: the services deduplicate by id.

Each service contributes :class:`Step` s to :data:`STEPS`, run in order; a step
whose service is not running is skipped with a message.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import httpx

SKU_COUNT = 1_000
#: The inventory API's limit of lines per receipt.
MAX_RECEIPT_LINES = 1_000
# A 1,000-line receipt is 1,000 events acknowledged by the log before the API answers.
_REQUEST_TIMEOUT_S = 60.0
_POLL_INTERVAL_S = 0.05


class DemoDataError(Exception):
    """A service refused demo data or did not show it in time."""


@dataclass(frozen=True, slots=True)
class Location:
    location_id: str
    name: str
    kind: Literal["store", "warehouse"]
    region: str
    latitude: float
    longitude: float
    fulfils_online: bool

    def body(self) -> dict[str, Any]:
        """The ``PUT /v1/locations/{location_id}`` request body."""
        return {
            "name": self.name,
            "kind": self.kind,
            "region": self.region,
            "latitude": self.latitude,
            "longitude": self.longitude,
            "fulfils_online": self.fulfils_online,
        }


LOCATIONS: tuple[Location, ...] = (
    Location("store-berlin", "Berlin Alexanderplatz", "store", "DE-BE", 52.5219, 13.4132, True),
    Location("store-hamburg", "Hamburg Mönckebergstraße", "store", "DE-HH", 53.5507, 9.9985, True),
    Location("store-munich", "München Marienplatz", "store", "DE-BY", 48.1372, 11.5755, False),
    Location("store-cologne", "Köln Hohe Straße", "store", "DE-NW", 50.9380, 6.9567, False),
    Location("dc-kassel", "DC Kassel-Lohfelden", "warehouse", "DE-HE", 51.2717, 9.5360, True),
)


def skus() -> list[str]:
    return [f"SKU-{n:06d}" for n in range(1, SKU_COUNT + 1)]


def quantity(sku: str, location: Location) -> int:
    """Units of ``sku`` received at ``location``: varied, positive, the same on every run."""
    low, high = (100, 600) if location.kind == "warehouse" else (1, 40)
    digest = hashlib.blake2b(f"{location.location_id}/{sku}".encode(), digest_size=4).digest()
    return low + int.from_bytes(digest, "big") % (high - low + 1)


def receipts(location: Location) -> Iterator[dict[str, Any]]:
    """The ``POST /v1/receipts`` bodies that stock every SKU at ``location``."""
    all_skus = skus()
    for part, first in enumerate(range(0, len(all_skus), MAX_RECEIPT_LINES), start=1):
        chunk = all_skus[first : first + MAX_RECEIPT_LINES]
        yield {
            "receipt_id": f"demo-{location.location_id}-{part:03d}",
            "location_id": location.location_id,
            "lines": [{"sku": sku, "quantity": quantity(sku, location)} for sku in chunk],
            "replenishment_id": None,
        }


@dataclass(frozen=True, slots=True)
class Context:
    """What a step gets: an HTTP client, each running service's base URL, and a deadline."""

    client: httpx.AsyncClient
    urls: Mapping[str, str]
    #: In the event loop's clock: waits for data to show must end by then.
    deadline: float

    def url(self, service: str, path: str) -> str:
        return f"{self.urls[service]}{path}"

    async def send(
        self, service: str, method: str, path: str, body: dict[str, Any] | None = None
    ) -> Any:
        """The JSON answer to a request that must succeed. A 503 (the log or the database
        is briefly unavailable, e.g. on a busy machine) is asked again after its
        ``Retry-After``, until the deadline: every demo write is idempotent on its id."""
        loop = asyncio.get_running_loop()
        while True:
            response = await self.client.request(method, self.url(service, path), json=body)
            if response.status_code != 503:
                return _check(response).json()
            pause = float(response.headers.get("retry-after", "1"))
            if loop.time() + pause > self.deadline:
                return _check(response).json()
            # The service's own backoff, not a wait for a condition.
            await asyncio.sleep(pause)

    async def until(self, missing: Callable[[], Awaitable[set[str]]], what: str) -> None:
        """Poll until ``missing`` returns nothing; fail at the deadline naming what is left."""
        loop = asyncio.get_running_loop()
        while left := await missing():
            if loop.time() > self.deadline:
                raise DemoDataError(f"{what}: still missing {', '.join(sorted(left))}")
            await asyncio.sleep(_POLL_INTERVAL_S)


@dataclass(frozen=True, slots=True)
class Step:
    service: str
    title: str
    #: Loads its part of the data and returns a one-line summary.
    run: Callable[[Context], Awaitable[str]]


async def register_locations(ctx: Context) -> str:
    await asyncio.gather(
        *(
            ctx.send("inventory", "PUT", f"/v1/locations/{loc.location_id}", loc.body())
            for loc in LOCATIONS
        )
    )
    # Receipts name their location, and the API accepts only locations its view knows.
    wanted = {loc.location_id for loc in LOCATIONS}

    async def missing() -> set[str]:
        listed = await ctx.send("inventory", "GET", "/v1/locations")
        return wanted - {entry["location_id"] for entry in listed}

    await ctx.until(missing, "locations listed by GET /v1/locations")
    return f"{len(LOCATIONS)} locations ({', '.join(loc.location_id for loc in LOCATIONS)})"


async def receive_stock(ctx: Context) -> str:
    bodies = [body for location in LOCATIONS for body in receipts(location)]
    written = await asyncio.gather(
        *(ctx.send("inventory", "POST", "/v1/receipts", body) for body in bodies)
    )
    # Accepted means in the log; the demo is ready once the stock query shows every
    # receipt, which ``consistent_with`` (the receipt's log position) makes it wait for.
    pending = {
        body["receipt_id"]: (body, answer["position"])
        for body, answer in zip(bodies, written, strict=True)
    }

    async def not_visible() -> set[str]:
        for receipt_id, (body, position) in list(pending.items()):
            path = f"/v1/stock/{body['lines'][-1]['sku']}"
            response = await ctx.client.get(
                ctx.url("inventory", path), params={"consistent_with": position}
            )
            if response.status_code == 504:  # the view has not caught up yet
                continue
            _check(response)
            del pending[receipt_id]
        return set(pending)

    await ctx.until(not_visible, "receipts shown by GET /v1/stock")
    return f"{SKU_COUNT} SKUs at every location ({len(bodies)} receipts)"


#: SKUs of every store that get a demo reorder rule, supplied by the warehouse.
RULED_SKUS = 100


def reorder_rules() -> list[dict[str, Any]]:
    """The ``PUT /v1/rules`` body: the first :data:`RULED_SKUS` SKUs of every store, reordered
    from the warehouse at 5 units up to 30 in packs of 6. Store stock is 1 to 40 units, so
    some stores start below the point and show requests at once."""
    warehouse = next(loc for loc in LOCATIONS if loc.kind == "warehouse")
    return [
        {
            "location_id": store.location_id,
            "sku": sku,
            "reorder_point": 5,
            "order_up_to": 30,
            "lead_time_hours": 48,
            "source_location_id": warehouse.location_id,
            "pack_size": 6,
        }
        for store in LOCATIONS
        if store.kind == "store"
        for sku in skus()[:RULED_SKUS]
    ]


async def load_reorder_rules(ctx: Context) -> str:
    rules = reorder_rules()
    report = await ctx.send("replenishment", "PUT", "/v1/rules", {"rules": rules})
    if report["rejected"]:
        raise DemoDataError(f"reorder rules refused: {report['rejected'][:3]}")
    wanted = {f"{r['location_id']}/{r['sku']}" for r in rules}

    async def missing() -> set[str]:
        listed = await ctx.send("replenishment", "GET", "/v1/rules?limit=10000")
        return wanted - {f"{r['location_id']}/{r['sku']}" for r in listed}

    await ctx.until(missing, "rules listed by GET /v1/rules")
    return f"{len(rules)} reorder rules ({RULED_SKUS} SKUs per store, from the warehouse)"


STEPS: tuple[Step, ...] = (
    Step("inventory", "stores and warehouse", register_locations),
    Step("inventory", "stock", receive_stock),
    Step("replenishment", "reorder rules", load_reorder_rules),
)


async def load(
    urls: Mapping[str, str],
    *,
    report: Callable[[str], None],
    timeout: float,  # noqa: ASYNC109 - the deadline of the whole load, by design
    steps: Sequence[Step] = STEPS,
    headers: Mapping[str, str] | None = None,
) -> list[str]:
    """Run ``steps`` against the services at ``urls`` (name → base URL); returns what each
    step loaded, or why it was skipped. ``headers`` carry the credential (the stack's
    admin)."""
    loop = asyncio.get_running_loop()
    summaries = []
    async with httpx.AsyncClient(timeout=_REQUEST_TIMEOUT_S, headers=headers) as client:
        ctx = Context(client, urls, loop.time() + timeout)
        for step in steps:
            outcome = (
                await step.run(ctx)
                if step.service in urls
                else f"skipped, {step.service} is not installed"
            )
            summary = f"{step.service} {step.title}: {outcome}"
            report(f"demo data: {summary}")
            summaries.append(summary)
    return summaries


def _check(response: httpx.Response) -> httpx.Response:
    if not response.is_success:
        request = response.request
        raise DemoDataError(
            f"{request.method} {request.url} answered {response.status_code}: "
            f"{response.text.strip()[:500]}"
        )
    return response

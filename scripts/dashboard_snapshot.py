"""A picture of the Grafana dashboard drawn from real data, without Grafana.

Grafana does not run on our machines (it is neither on PyPI nor in Debian), so this
script does what Grafana would do with ``helm/omnistock/files/grafana/omnistock-overview.json``:
it starts the dev stack (``omnistock dev up``) on free ports with the demo's locations and a
400-SKU catalogue, a real
Prometheus server (Debian's ``prometheus``) scraping every service with the real alert rules,
drives scripted traffic (POS sales in every store, checkouts that are committed, released or
left to expire, one store selling out a range of SKUs, one malformed record for the DLQ),
then evaluates every panel's PromQL over the run with ``query_range`` and draws the panels
with matplotlib in the dashboard's own grid layout. It is a rendering of the dashboard's
queries on real data, not a Grafana screenshot.

    uv run python scripts/dashboard_snapshot.py --minutes 4 --out docs/images/omnistock-overview.png
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import os
import random
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaProducer

from omnistock.devstack import demo
from omnistock.devstack._support import free_port
from omnistock.devstack.prometheus import PrometheusServer, scrape_job
from omnistock.events.topics import POS_TRANSACTIONS

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "helm/omnistock/files/grafana/omnistock-overview.json"
RULES = ROOT / "helm/omnistock/files/prometheus/omnistock.rules.yaml"
STORES = ["store-berlin", "store-hamburg", "store-munich", "store-cologne"]
SELL_OUT_STORE = "store-munich"
SELL_OUT_SKUS = [f"SKU-{n:06d}" for n in range(300, 330)]
#: A smaller catalogue than the dev stack's demo (1,000 SKUs): it loads in seconds even on
#: a busy machine, in receipts small enough to be acknowledged quickly.
CATALOGUE = [f"SKU-{n:06d}" for n in range(1, 401)]
RECEIPT_LINES = 100
SCRAPE = "2s"


# --- the stack ----------------------------------------------------------------------------


def dev(state_dir: Path, *args: str) -> None:
    subprocess.run(  # noqa: S603 - our own CLI
        [
            sys.executable,
            "-m",
            "omnistock.devstack.cli",
            "dev",
            *args,
            "--state-dir",
            str(state_dir),
        ],
        check=True,
        cwd=ROOT,
    )


def start_stack(state_dir: Path) -> dict[str, Any]:
    ports = {"inventory": free_port("127.0.0.1"), "orders": free_port("127.0.0.1")}
    ports["pos-gateway"] = free_port("127.0.0.1")
    os.environ["OMNISTOCK_BROKER_PORT"] = str(free_port("127.0.0.1"))
    os.environ["OMNISTOCK_POSTGRES_PORT"] = str(free_port("127.0.0.1"))
    os.environ.setdefault("INVENTORY_STOCK_GAUGES_INTERVAL_S", "2")
    port_args = [arg for name, port in ports.items() for arg in ("--port", f"{name}={port}")]
    dev(state_dir, "up", "--detach", "--no-demo", "--timeout", "600", *port_args)
    state: dict[str, Any] = json.loads((state_dir / "dev.json").read_text())
    return state


async def stock_up(inventory: str) -> None:
    """The demo's stores and warehouse, each stocked with :data:`CATALOGUE`."""
    async with httpx.AsyncClient(base_url=inventory, timeout=60) as client:
        for location in demo.LOCATIONS:
            answer = await client.put(f"/v1/locations/{location.location_id}", json=location.body())
            answer.raise_for_status()
            for first in range(0, len(CATALOGUE), RECEIPT_LINES):
                chunk = CATALOGUE[first : first + RECEIPT_LINES]
                body = {
                    "receipt_id": f"snapshot-{location.location_id}-{first}",
                    "location_id": location.location_id,
                    "lines": [
                        {"sku": sku, "quantity": demo.quantity(sku, location)} for sku in chunk
                    ],
                }
                # Receipts are idempotent by id: a 503 (log busy) is simply sent again.
                for _ in range(5):
                    answer = await client.post("/v1/receipts", json=body)
                    if answer.status_code != 503:
                        break
                answer.raise_for_status()


# --- traffic ------------------------------------------------------------------------------


class Traffic:
    def __init__(self, urls: dict[str, str], bootstrap: str) -> None:
        self.urls = urls
        self.bootstrap = bootstrap
        self.client = httpx.AsyncClient(timeout=30)
        self.sequence = itertools.count(1)
        self.random = random.Random(42)

    async def pos_sales(self, until: float, per_second: float) -> None:
        while time.monotonic() < until:
            n = next(self.sequence)
            store = self.random.choices(STORES, weights=[4, 3, 2, 1])[0]
            lines = [
                {
                    "sku": self.random.choice(CATALOGUE),
                    "quantity": self.random.randint(1, 2),
                    "unit_price": f"{self.random.choice([4.99, 9.99, 19.99, 49.0])}",
                    "currency": "EUR",
                }
                for _ in range(self.random.randint(1, 3))
            ]
            await self.sale(store, f"demo-sale-{n}", lines, terminal=f"t{n % 3}", sequence=n)
            await asyncio.sleep(1 / per_second)  # pacing the load, not synchronisation

    async def sale(
        self,
        store: str,
        transaction_id: str,
        lines: list[dict[str, Any]],
        terminal: str,
        sequence: int,
    ) -> None:
        body = {
            "transaction_id": transaction_id,
            "store_id": store,
            "terminal_id": terminal,
            "sequence": sequence,
            "occurred_at": (datetime.now(UTC) - timedelta(seconds=1)).isoformat(),
            "type": "sale",
            "lines": lines,
        }
        await self.client.post(f"{self.urls['pos-gateway']}/v1/pos/transactions", json=body)

    async def checkouts(self, until: float, per_second: float) -> None:
        inventory = self.urls["inventory"]
        for n in itertools.count(1):
            if time.monotonic() >= until:
                return
            rid = f"demo-cart-{n}"
            hot = self.random.random() < 0.15
            lines = [
                {
                    "sku": "SKU-000001" if hot else self.random.choice(CATALOGUE),
                    "quantity": 40 if hot else self.random.randint(1, 3),
                }
            ]
            answer = await self.client.post(
                f"{inventory}/v1/reservations",
                json={"reservation_id": rid, "lines": lines, "ttl_seconds": 30},
            )
            if answer.status_code == 201:
                fate = self.random.random()
                if fate < 0.5:
                    await self.client.post(
                        f"{inventory}/v1/reservations/{rid}/commit", json={"order_id": f"o-{n}"}
                    )
                elif fate < 0.8:
                    await self.client.post(f"{inventory}/v1/reservations/{rid}/release", json={})
            await asyncio.sleep(1 / per_second)  # pacing the load, not synchronisation

    async def sell_out(self) -> None:
        """One store sells every unit of 30 SKUs: the stock-out panel and alert."""
        lines = []
        for sku in SELL_OUT_SKUS:
            stock = (await self.client.get(f"{self.urls['inventory']}/v1/stock/{sku}")).json()
            here = [loc for loc in stock["locations"] if loc["location_id"] == SELL_OUT_STORE]
            if here and here[0]["available"] > 0:
                lines.append(
                    {
                        "sku": sku,
                        "quantity": here[0]["available"],
                        "unit_price": "9.99",
                        "currency": "EUR",
                    }
                )
        await self.sale(SELL_OUT_STORE, "demo-sell-out", lines, terminal="t-sellout", sequence=1)

    async def poison(self) -> None:
        """A record without CloudEvents headers: dead-lettered by every group reading it."""
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap)
        await producer.start()
        try:
            await producer.send_and_wait(POS_TRANSACTIONS.name, b"{not an event", key=b"store-x")
        finally:
            await producer.stop()


async def drive(urls: dict[str, str], bootstrap: str, minutes: float) -> None:
    traffic = Traffic(urls, bootstrap)
    start = time.monotonic()
    until = start + minutes * 60
    tasks = [
        asyncio.create_task(traffic.pos_sales(until, per_second=4)),
        asyncio.create_task(traffic.checkouts(until, per_second=3)),
    ]
    await asyncio.sleep(minutes * 60 / 3)  # a scripted timeline, not synchronisation
    await traffic.sell_out()
    await asyncio.sleep(minutes * 60 / 6)
    await traffic.poison()
    await asyncio.gather(*tasks)
    await traffic.client.aclose()


# --- rendering ----------------------------------------------------------------------------


async def panel_data(
    prometheus: PrometheusServer, panel: dict[str, Any], start: float, end: float, step: float
) -> list[tuple[str, list[float], list[float]]]:
    series = []
    for target in panel.get("targets", []):
        expr = target["expr"].replace("$__rate_interval", "1m")
        for result in await prometheus.query_range(expr, start, end, step):
            legend = target.get("legendFormat") or expr
            for key, label in result["metric"].items():
                legend = legend.replace("{{" + key + "}}", label)
            times = [float(t) - start for t, _ in result["values"]]
            values = [float(v) for _, v in result["values"]]
            series.append((legend, times, values))
    return series


def render(dashboard: dict[str, Any], data: dict[int, Any], out: Path, caption: str) -> None:
    import matplotlib as mpl  # noqa: PLC0415 - only this script draws

    mpl.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    plt.style.use("dark_background")
    units = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in dashboard["panels"])
    width, unit_h = 20.0, 0.42
    height = units * unit_h + 1.2
    fig = plt.figure(figsize=(width, height), facecolor="#111217")
    fig.text(0.01, 1 - 0.35 / height, dashboard["title"], fontsize=18, weight="bold", va="top")
    fig.text(0.01, 0.25 / height, caption, fontsize=9, color="#aaaaaa", va="bottom")
    top = height - 0.9  # inches: where the grid starts, below the title

    def box(grid: dict[str, int]) -> list[float]:
        """The panel's axes in figure fractions: its grid cell less room for the title above
        and the tick labels below."""
        x = grid["x"] / 24 + 0.03
        w = grid["w"] / 24 - 0.04
        bottom = top - (grid["y"] + grid["h"]) * unit_h + 0.55
        return [x, bottom / height, w, (grid["h"] * unit_h - 0.95) / height]

    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        if panel["type"] == "row":
            y = (top - grid["y"] * unit_h - 0.3) / height
            fig.text(0.005, y, panel["title"], fontsize=13, weight="bold", color="#d8d9da")
            continue
        ax = fig.add_axes(box(grid), facecolor="#181b1f")
        ax.set_title(panel["title"], loc="left", fontsize=11, color="#d8d9da")
        series = data[panel["id"]]
        unit = panel["fieldConfig"]["defaults"].get("unit", "short")
        if not series:
            ax.text(0.5, 0.5, "No data", ha="center", va="center", color="#888888", fontsize=12)
            ax.set_xticks([])
            ax.set_yticks([])
        elif panel["type"] == "stat":
            _draw_stat(ax, series)
        else:
            _draw_timeseries(ax, series, unit)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80, facecolor=fig.get_facecolor())


Series = list[tuple[str, list[float], list[float]]]


def _draw_stat(ax: Any, series: Series) -> None:
    """One box per series, green UP or red DOWN by its last value (the panel's thresholds)."""
    from matplotlib.patches import Rectangle  # noqa: PLC0415

    ax.set_axis_off()
    width = 1 / len(series)
    for i, (legend, _, values) in enumerate(series):
        up = values[-1] >= 1
        ax.add_patch(
            Rectangle(
                (i * width + 0.01, 0.1), width - 0.02, 0.8, color="#73bf69" if up else "#f2495c"
            )
        )
        ax.text((i + 0.5) * width, 0.6, legend, ha="center", fontsize=10)
        ax.text(
            (i + 0.5) * width, 0.3, "UP" if up else "DOWN", ha="center", fontsize=16, weight="bold"
        )


def _draw_timeseries(ax: Any, series: Series, unit: str) -> None:
    scale, suffix = 1.0, ""
    if unit == "s":
        scale, suffix = (1000.0, "ms") if _max(series) < 1 else (1.0, "s")
    elif unit == "percentunit":
        scale, suffix = 100.0, "%"
    for legend, times, values in series:
        ax.plot([t / 60 for t in times], [v * scale for v in values], lw=1.6, label=legend)
    ax.set_xlabel("minutes into the run", fontsize=8, color="#999999")
    if suffix:
        ax.set_ylabel(suffix, fontsize=8, color="#999999")
    ax.grid(alpha=0.15)
    ax.tick_params(labelsize=8, colors="#bbbbbb")
    ax.legend(fontsize=7, loc="upper left", framealpha=0.3, ncol=2)


def _max(series: Series) -> float:
    return max((v for _, _, values in series for v in values if not math.isnan(v)), default=0.0)


async def main(minutes: float, out: Path) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    with tempfile.TemporaryDirectory(prefix="omnistock-snapshot-") as tmp:
        state_dir = Path(tmp) / "stack"
        state = start_stack(state_dir)
        prometheus: PrometheusServer | None = None
        try:
            urls = {name: s["url"] for name, s in state["services"].items()}
            jobs = {scrape_job(name): [u.removeprefix("http://")] for name, u in urls.items()}
            prometheus = PrometheusServer(
                Path(tmp) / "prometheus", jobs, rule_files=[RULES], interval=SCRAPE
            )
            await prometheus.start()
            await stock_up(urls["inventory"])
            started = time.time()
            await drive(urls, state["broker"]["bootstrap_servers"], minutes)
            ended = time.time()
            data = {
                panel["id"]: await panel_data(prometheus, panel, started, ended, 5)
                for panel in dashboard["panels"]
                if panel["type"] != "row"
            }
            caption = (
                f"Rendered by scripts/dashboard_snapshot.py, not by Grafana: every panel's PromQL "
                f"from omnistock-overview.json evaluated by a real Prometheus over a "
                f"{minutes:g}-minute run of the dev stack with scripted traffic "
                f"({datetime.now(UTC):%Y-%m-%d %H:%M} UTC). Replenishment panels are empty: "
                f"that service is not built yet."
            )
            render(dashboard, data, out, caption)
            print(f"wrote {out}")
        finally:
            if prometheus is not None:
                prometheus.stop()
            dev(state_dir, "down")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=4.0)
    parser.add_argument("--out", type=Path, default=ROOT / "docs/images/omnistock-overview.png")
    args = parser.parse_args()
    asyncio.run(main(args.minutes, args.out))

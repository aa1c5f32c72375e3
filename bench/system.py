"""The compressed trading day on the whole platform at rising load, until reserve p99 breaks.

    uv run python bench/system.py [--steps 8] [--start 4] [--quick] [--json-out PATH]
        [--chart PATH]

Starts an embedded broker and PostgreSQL and every installed service as processes
(the system tests' harness, tests/system/), measures the raw broker baseline first,
then runs one trading day per load step (receipts, POS sales in every store, web
checkouts with reservations, orders, releases, cancellations, fulfilments, returns and
voids) with twice the shoppers in flight at each step. Each day's invariants are
checked afterwards (stock as booked, orders and reservations agree, every acknowledged
write present, the inventory audit clean): a step that breaks them fails the run.

Printed and written to JSON: per step the achieved request rate and p50/p99 per
endpoint (client-side, retries included), the POS sale -> stock-query visibility p99
measured during the step, and the highest rate at which reserve p99 stayed within the
25 ms target ("sustainable"); at the end the replay rate of the inventory log and the
peak RSS of every service process. A PNG chart plots latency against load.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Final

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "system"))

import psutil
import typer
from matplotlib.figure import Figure
from system_invariants import check_day
from system_scenario import DaySize, TradingDay
from system_stack import Platform

from bench._common import (
    RESULTS_DIR,
    JsonOutOption,
    Row,
    baseline_rows,
    bench_issuer,
    broker_baseline,
    latency_summary_ms,
    machine_caption,
    make_console,
    print_table,
    write_result,
)
from omnistock.devstack.broker import EmbeddedBroker
from omnistock.devstack.credentials import use_session_issuer
from omnistock.devstack.postgres import EmbeddedPostgres
from omnistock.devstack.waiting import eventually
from omnistock.events.envelope import utcnow
from omnistock.events.fold import Fold
from omnistock.events.replay import replay
from omnistock.events.topics import INVENTORY_STOCK
from omnistock.inventory.domain.stock import StockBook

NAME: Final = "system"
TARGET_RESERVE_P99_MS: Final = 25.0
#: Endpoints the chart draws (the ledger's names for them).
CHARTED: Final = ("reservation", "order", "pos", "shipment")


def size_at(parallel: int, quick: bool) -> DaySize:
    if quick:
        return DaySize(skus=4, stores=2, carts=12, sales_per_store=4, parallel=parallel)
    return DaySize(
        skus=20, stores=4, carts=20 * parallel, sales_per_store=6 * parallel, parallel=parallel
    )


class MemoryWatch:
    """Peak RSS per service process (and the broker), sampled while the run goes on."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self.peak_kb: dict[str, int] = {}

    def sample(self) -> None:
        pids = {
            f"{name}[{n}]": pid
            for name, replicas in self.platform.service_pids().items()
            for n, pid in enumerate(replicas)
        }
        pids["broker (tansu)"] = self.platform.broker.pid
        pids["postgresql (postmaster)"] = self.platform.postgres.pid
        for name, pid in pids.items():
            with contextlib.suppress(psutil.Error):
                rss = psutil.Process(pid).memory_info().rss // 1024
                self.peak_kb[name] = max(self.peak_kb.get(name, 0), rss)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.sample()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)


async def visibility_probe(platform: Platform, day: TradingDay, stop: asyncio.Event) -> list[float]:
    """POS sale accepted -> visible in the cross-store stock query, one sale at a time, on a
    SKU of its own (the day's returns and voids would blur the figure it waits for)."""
    inventory, pos = platform.apis["inventory"], platform.apis["pos-gateway"]
    sku = f"{day.tag}-PROBE"
    store = day.stores[-1]
    await inventory.write(
        "receipt",
        f"{day.tag}-rc-probe",
        "POST",
        "/v1/receipts",
        {
            "receipt_id": f"{day.tag}-rc-probe",
            "location_id": store,
            "lines": [{"sku": sku, "quantity": 100_000}],
        },
    )

    async def on_hand() -> int:
        body = await inventory.get(f"/v1/stock/{sku}")
        return int({r["location_id"]: r["on_hand"] for r in body["locations"]}.get(store, -1))

    samples: list[float] = []
    n = 0
    shown = -1  # the store's row is absent (-1) until the receipt is applied

    async def received() -> bool:
        nonlocal shown
        shown = await on_hand()
        return shown > 0

    await eventually(received, timeout=60, message="probe stock received")
    while not stop.is_set():
        n += 1
        answer = await pos.write(
            "probe",
            f"{day.tag}-probe-{n}",
            "POST",
            "/v1/pos/transactions",
            {
                "transaction_id": f"{day.tag}-probe-{n}",
                "store_id": store,
                "terminal_id": f"{day.tag}-probe",
                "sequence": n,
                "occurred_at": (utcnow() - timedelta(seconds=1)).isoformat(),
                "type": "sale",
                "lines": [{"sku": sku, "quantity": 1, "unit_price": "1", "currency": "EUR"}],
            },
        )
        if answer.status != 201:
            continue
        accepted = time.perf_counter()
        shown -= 1

        async def visible(expected: int = shown) -> bool:
            return await on_hand() <= expected

        await eventually(visible, timeout=60, interval=0.002, message="sale visible")
        samples.append(time.perf_counter() - accepted)
    return samples


async def one_step(platform: Platform, step: int, parallel: int, quick: bool) -> dict[str, Any]:
    ledger = platform.apis.fresh_ledger()
    day = TradingDay(platform.apis, size_at(parallel, quick), tag=f"s{step}", seed=step)
    stop = asyncio.Event()
    await day.open()
    probe = asyncio.create_task(visibility_probe(platform, day, stop))
    started = time.perf_counter()
    for phase in ("morning", "midday", "afternoon", "evening"):
        await getattr(day, phase)()
    seconds = time.perf_counter() - started
    stop.set()
    visibility = await probe
    await check_day(platform, day, f"step {step}")
    requests = sum(len(v) for k, v in ledger.latencies.items() if not k.startswith("GET"))
    endpoints = {
        name: latency_summary_ms(samples)
        for name, samples in sorted(ledger.latencies.items())
        if samples
    }
    return {
        "step": step,
        "parallel": parallel,
        "size": vars(day.size) if hasattr(day.size, "__dict__") else str(day.size),
        "seconds": seconds,
        "writes": requests,
        "writes_per_s": requests / seconds if seconds else 0.0,
        "endpoints_ms": endpoints,
        "visibility_ms": latency_summary_ms(visibility) if visibility else None,
        "retries": {
            "transport_errors": dict(ledger.transport_errors),
            "answers": {f"{k[0]} {k[1]}": v for k, v in ledger.answers.items()},
        },
    }


async def replay_rate(platform: Platform) -> dict[str, Any]:
    report = await replay(
        platform.kafka, [INVENTORY_STOCK], Fold(StockBook()), name="bench", progress=False
    )
    return {
        "events": report.events,
        "seconds": report.seconds,
        "events_per_s": report.events_per_second,
    }


async def measure(
    steps: int, start: int, quick: bool, root: Path, *, past_target: bool = False
) -> dict[str, Any]:
    with (
        EmbeddedBroker(log_path=root / "tansu.log") as broker,
        EmbeddedPostgres(root / "pgdata") as postgres,
    ):
        # The services check credentials as in production; the harness sends an admin token.
        issuer = bench_issuer()
        os.environ.update(issuer.env)
        os.environ.setdefault("AUTH_RATE_PER_S", "1000000")
        os.environ.setdefault("AUTH_RATE_BURST", "1000000")
        use_session_issuer(issuer)
        platform = Platform(broker, postgres, root)
        kafka = platform.kafka
        baseline = await broker_baseline(
            kafka, messages=300 if quick else 3_000, payload_bytes=512, broker="embedded-tansu"
        )
        await platform.start()
        watch = MemoryWatch(platform)
        stop = asyncio.Event()
        watcher = asyncio.create_task(watch.run(stop))
        results: list[dict[str, Any]] = []
        try:
            parallel = start
            for step in range(1, steps + 1):
                result = await one_step(platform, step, parallel, quick)
                results.append(result)
                reserve = result["endpoints_ms"].get("reservation")
                broke = reserve is not None and reserve["p99"] > TARGET_RESERVE_P99_MS
                if broke and not (quick or past_target):
                    break  # the target broke at this load: no need to push further
                parallel *= 2
            replayed = await replay_rate(platform)
        finally:
            stop.set()
            await watcher
            await platform.stop()
    within = [
        r
        for r in results
        if r["endpoints_ms"].get("reservation", {}).get("p99", float("inf"))
        <= TARGET_RESERVE_P99_MS
    ]
    best = max(within, key=lambda r: r["writes_per_s"]) if within else None
    return {
        "quick": quick,
        "target_reserve_p99_ms": TARGET_RESERVE_P99_MS,
        "steps": results,
        "sustainable": None
        if best is None
        else {
            "step": best["step"],
            "writes_per_s": best["writes_per_s"],
            "parallel": best["parallel"],
        },
        "replay": replayed,
        "peak_rss_mib": {name: kb / 1024 for name, kb in sorted(watch.peak_kb.items())},
        "services": sorted(platform.specs),
        "baseline": baseline,
    }


def chart(figures: Mapping[str, Any], path: Path) -> Path:
    steps = figures["steps"]
    # Offered load on x: past saturation the achieved rate stops growing (or falls), so
    # plotting against it would fold the curve back on itself.
    x = [s["parallel"] for s in steps]
    # The object API renders without pyplot's global state or a display backend.
    fig = Figure(figsize=(8, 5))
    ax = fig.subplots()
    for endpoint in CHARTED:
        for pct, style in (("p50", "--"), ("p99", "-")):
            ys = [s["endpoints_ms"].get(endpoint, {}).get(pct, math.nan) for s in steps]
            if not all(math.isnan(y) for y in ys):
                ax.plot(x, ys, style, marker="o", label=f"{endpoint} {pct}")
    vis = [s["visibility_ms"]["p99"] if s["visibility_ms"] else math.nan for s in steps]
    if not all(math.isnan(v) for v in vis):
        ax.plot(x, vis, ":", marker="s", label="POS -> stock query p99")
    ax.axhline(TARGET_RESERVE_P99_MS, color="red", linewidth=0.8, label="reserve p99 target")
    ax.set_xscale("log", base=2)
    ax.set_xticks(x, [f"{s['parallel']}\n{s['writes_per_s']:.0f}/s" for s in steps])
    ax.set_xlabel("requests in flight (writes/s achieved, all endpoints)")
    ax.set_ylabel("latency, ms (client side, retries included)")
    ax.set_yscale("log")
    ax.set_title("omnistock trading day: latency vs load")
    ax.legend(fontsize=7)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def rows(figures: Mapping[str, Any]) -> dict[str, list[Row]]:
    sections: dict[str, list[Row]] = {}
    for step in figures["steps"]:
        title = f"step {step['step']}: {step['parallel']} in flight"
        section = [
            Row("writes/s", f"{step['writes_per_s']:,.0f}", str(step["writes"])),
        ]
        for name, ms in step["endpoints_ms"].items():
            section.append(
                Row(name, f"p50 {ms['p50']:.1f} · p99 {ms['p99']:.1f} ms", str(ms["count"]))
            )
        if step["visibility_ms"]:
            vis = step["visibility_ms"]
            section.append(
                Row(
                    "POS sale -> stock query",
                    f"p50 {vis['p50']:.1f} · p99 {vis['p99']:.1f} ms",
                    str(vis["count"]),
                )
            )
        sections[title] = section
    sustainable = figures["sustainable"]
    sections["summary"] = [
        Row(
            "sustainable (reserve p99 <= 25 ms)",
            "none" if sustainable is None else f"{sustainable['writes_per_s']:,.0f} writes/s",
            "" if sustainable is None else f"step {sustainable['step']}",
        ),
        Row(
            "replay (inventory.stock into StockBook)",
            f"{figures['replay']['events_per_s']:,.0f} events/s",
            str(figures["replay"]["events"]),
        ),
        *(
            Row(f"peak RSS {n}", f"{mib:,.0f} MiB", "")
            for n, mib in figures["peak_rss_mib"].items()
        ),
    ]
    sections["broker baseline (same run)"] = baseline_rows(figures["baseline"])
    return sections


app = typer.Typer(add_completion=False)


@app.command()
def main(
    *,
    steps: Annotated[int, typer.Option(min=1, help="Load steps at most.")] = 8,
    start: Annotated[int, typer.Option(min=1, help="Requests in flight at the first step.")] = 4,
    quick: Annotated[bool, typer.Option("--quick", help="Two tiny steps (smoke tests).")] = False,
    past_target: Annotated[
        bool,
        typer.Option(
            "--past-target",
            help="Run every step even after the reserve p99 target broke (the whole curve).",
        ),
    ] = False,
    json_out: JsonOutOption = None,
    chart_out: Annotated[
        Path | None, typer.Option("--chart", dir_okay=False, help="Where the PNG goes.")
    ] = None,
) -> None:
    """Run the trading day at rising load; print and write the figures and the chart."""
    logging.basicConfig(level=logging.WARNING)
    if quick:
        steps = min(steps, 2)
    root = Path(tempfile.mkdtemp(prefix="omnistock-bench-system-"))
    try:
        figures = asyncio.run(measure(steps, start, quick, root, past_target=past_target))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    console = make_console()
    print_table(
        "trading day at rising load",
        rows(figures),
        caption=machine_caption(figures["baseline"]),
        console=console,
    )
    path = write_result(NAME, figures, json_out)
    png = chart_out or path.with_suffix(".png")
    if json_out is None:
        png = RESULTS_DIR / png.name
    chart(figures, png)
    console.print(f"figures: {path}\nchart: {png}")


if __name__ == "__main__":
    app()

"""The floor under any reservation endpoint on this stack: what the least one can do costs.

    uv run python -m bench.floor [--rates 250,500,1000] [--duration 15] [--json-out PATH]

ARCHITECTURE asks for p99 ≤ 25 ms at 500 req/s and ≥ 1,000 reservations/s on 2 cores
with everything running. Before blaming the inventory service for missing that, this
measures the least any design may do for one reservation under the architecture's own
rules: FastAPI validates the request body (the inventory API's own ``ReservationIn``),
writes **one** event with acks=all (rule 3: no 2xx before the log has it) and answers
201. No database, no consumers, no auth, no metrics, no saga, no stock decision. The
same open-loop generator and carts as ``bench/reserve.py`` drive it, beside the raw
broker baseline of the same run.

If this floor cannot hold a rate, no reservation service built on FastAPI, aiokafka and
this broker can, on this machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Annotated, Any, Final

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import typer
from aiokafka import TopicPartition
from fastapi import FastAPI

from bench._common import (
    LOCALHOST,
    Broker,
    CpuMeter,
    JsonOutOption,
    PayloadBytesOption,
    Row,
    baseline_rows,
    broker_baseline,
    cpu_per_answer,
    cpu_rows,
    http_client,
    latency_text,
    machine_caption,
    machine_facts,
    make_console,
    print_table,
    resolve_broker,
    write_result,
)
from bench._common import _stop_service as stop_process
from bench._common import _wait_ready as wait_ready
from bench.reserve import make_catalogue, open_loop, parse_rates, plan, summarise
from omnistock.devstack._support import free_port
from omnistock.events.admin import ensure_topics
from omnistock.events.catalogue import ReservationRequested
from omnistock.events.envelope import utcnow
from omnistock.events.positions import log_end_offsets
from omnistock.events.producer import EventProducer
from omnistock.events.settings import KafkaSettings
from omnistock.events.topics import INVENTORY_RESERVATIONS
from omnistock.inventory.api import ReservationIn

NAME: Final = "floor"
#: How the CPU figures name the endpoint under load.
FLOOR_APP: Final = "floor app"
QUICK_RATES: Final = (20,)
QUICK_DURATION_S: Final = 2.0
READY_TIMEOUT_S: Final = 60.0


def create_floor_app() -> FastAPI:
    """Validate, write one event (acks=all), answer 201: nothing else."""
    kafka = KafkaSettings()
    producer = EventProducer(kafka, source="/omnistock/bench/floor")

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await producer.start()
        yield
        await producer.stop()

    app = FastAPI(lifespan=lifespan)

    @app.get("/readyz")
    async def ready() -> dict[str, str]:
        return {"status": "ready"}

    @app.post("/v1/reservations", status_code=201)
    async def reserve(body: ReservationIn) -> dict[str, Any]:
        written = await producer.publish(
            ReservationRequested(
                reservation_id=body.reservation_id,
                lines=body.lines,
                ttl_seconds=body.ttl_seconds,
                channel=body.channel,
                expires_at=utcnow(),
                request_fingerprint="floor",
            )
        )
        assert written.position is not None
        return {
            "reservation_id": body.reservation_id,
            "status": "held",
            "lines": [
                {"sku": line.sku, "quantity": line.quantity, "location_id": "floor"}
                for line in body.lines
            ],
            "position": written.position.token(),
        }

    return app


@contextlib.contextmanager
def run_floor(kafka: KafkaSettings) -> Iterator[tuple[str, int]]:
    """The floor app in its own process (its CPU apart from the generator's), writing to
    ``kafka``'s topics."""
    asyncio.run(ensure_topics(kafka, [INVENTORY_RESERVATIONS]))
    port = free_port(LOCALHOST)
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
    }
    with tempfile.TemporaryDirectory(prefix="omnistock-floor-") as folder:
        log_path = Path(folder) / "floor.log"
        with log_path.open("wb") as output:
            process = subprocess.Popen(
                [
                    *(sys.executable, "-m", "uvicorn", "--factory", "bench.floor:create_floor_app"),
                    *("--host", LOCALHOST, "--port", str(port), "--log-level", "warning"),
                ],
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=Path(__file__).resolve().parent.parent,
                start_new_session=True,
            )
        try:
            url = f"http://{LOCALHOST}:{port}"
            wait_ready(process, url, log_path, READY_TIMEOUT_S)
            yield url, process.pid
        finally:
            stop_process(process, log_path)


async def in_the_log(kafka: KafkaSettings) -> int:
    """Records in the floor's topic: every 201 must have written one."""
    name = INVENTORY_RESERVATIONS.physical(kafka.topic_prefix)
    partitions = [TopicPartition(name, p) for p in range(INVENTORY_RESERVATIONS.partitions)]
    return sum((await log_end_offsets(kafka, partitions)).values())


async def sweep(
    broker: Broker, url: str, pid: int, *, rates: list[int], duration_s: float
) -> tuple[list[dict[str, Any]], int]:
    """Figures per rate, and the 201 answers of the whole run (warm-up included)."""
    rng = random.Random(1)
    catalogue = make_catalogue(1000, uuid.uuid4().hex[:6])
    results = []
    async with http_client("lean", url, max_connections=512, timeout_s=10.0) as client:
        # Connections and the producer's metadata warmed up before anything is measured.
        warm = plan(rng, client, catalogue, "warm", 50)
        await open_loop(client, warm, 50)
        everything = list(warm)
        for rate in rates:
            requests = plan(rng, client, catalogue, f"r{rate}", max(1, int(rate * duration_s)))
            meter = CpuMeter(
                {
                    "load generator (this process)": os.getpid(),
                    FLOOR_APP: pid,
                    "broker": broker.pid,
                }
            )
            meter.start()
            await open_loop(client, requests, rate)
            everything += requests
            figures = summarise(requests, rate)
            figures["cpu"] = meter.read()
            results.append(figures)
    return results, sum(1 for sent in everything if sent.status == 201)


def rate_rows(figures: dict[str, Any]) -> list[Row]:
    return [
        Row("latency from schedule (every answer)", latency_text(figures["latency_ms"])),
        Row(
            "achieved",
            f"{figures['answers_per_s']:,.0f} answers/s · "
            f"{figures['reservations_per_s']:,.0f} written/s",
        ),
        Row("errors (5xx, timeouts)", f"{figures['error_rate']:.1%}"),
        *cpu_rows(figures["cpu"]),
        cpu_per_answer(figures["cpu"], FLOOR_APP, figures["answers_per_s"]),
    ]


app = typer.Typer(add_completion=False)


@app.command()
def main(
    *,
    rates: Annotated[
        str, typer.Option(help="Offered request rates (req/s), comma-separated, in order.")
    ] = "250,500,1000",
    duration: Annotated[float, typer.Option(min=0.5, help="Seconds of load per rate.")] = 15.0,
    messages: Annotated[int, typer.Option(min=1, help="Broker baseline messages.")] = 1000,
    payload_bytes: PayloadBytesOption = 700,
    quick: Annotated[
        bool, typer.Option("--quick", help="A few seconds of everything (smoke tests).")
    ] = False,
    json_out: JsonOutOption = None,
) -> None:
    """Drive the least possible reservation endpoint at fixed rates."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    rate_list = list(QUICK_RATES) if quick else parse_rates(rates)
    duration = QUICK_DURATION_S if quick else duration
    console = make_console()
    with resolve_broker() as broker:
        baseline = asyncio.run(
            broker_baseline(
                broker.kafka,
                messages=100 if quick else messages,
                payload_bytes=payload_bytes,
                round_trip_budget_s=2.0 if quick else 10.0,
                broker=broker.kind,
            )
        )
        kafka = broker.kafka.model_copy(
            update={"topic_prefix": f"{broker.kafka.topic_prefix}floor-{uuid.uuid4().hex[:8]}."}
        )
        with run_floor(kafka) as (url, pid):
            results, answered = asyncio.run(
                sweep(broker, url, pid, rates=rate_list, duration_s=duration)
            )
        written = asyncio.run(in_the_log(kafka))
    figures = {
        "benchmark": NAME,
        "parameters": {"rates": rate_list, "duration_s": duration, "quick": quick},
        "machine": machine_facts(),
        "broker_baseline": baseline,
        "rates": results,
        "check": {"answered_201": answered, "in_the_log": written, "ok": answered == written},
    }
    sections = {f"{r['offered_per_s']} req/s offered": rate_rows(r) for r in results}
    sections["check"] = [Row("201 answers · records in the log", f"{answered:,} · {written:,}")]
    sections["broker baseline (same run, before the floor app started)"] = baseline_rows(baseline)
    print_table(
        "the floor: validate, write one event (acks=all), answer",
        sections,
        caption=machine_caption(baseline),
        console=console,
    )
    console.print(f"wrote {write_result(NAME, figures, json_out)}")
    if answered != written:
        console.print("[bold red]201 answers and records in the log differ: see the JSON[/]")
        raise typer.Exit(1)


if __name__ == "__main__":
    app()

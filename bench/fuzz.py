"""A long schemathesis run against every service's OpenAPI document.

    uv run python bench/fuzz.py [--examples 200] [--service orders] [--json-out PATH]

Starts each service as the dev stack does (its own topics and database), then runs
schemathesis with an admin credential, valid and invalid inputs, ``--examples`` per
operation and mode, checking for no 5xx and responses as documented (status, content
type, headers, body schema). The test suite runs the same with 3 examples; this is the
deep version. Prints the failures and writes them, with the time each service took, as
JSON; exits 1 if any.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Annotated, Final

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
# The schemathesis driver is shared with the suite's security tests.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import httpx
import typer
from security_support import schemathesis_failures

from bench._common import (
    JsonOutOption,
    bench_headers,
    machine_facts,
    make_console,
    resolve_broker,
    run_service,
    write_result,
)

NAME: Final = "fuzz"
SERVICES: Final = ("inventory", "orders", "pos-gateway")

app = typer.Typer(add_completion=False)


@app.command()
def main(
    *,
    examples: Annotated[int, typer.Option(min=1, help="Examples per operation and mode.")] = 200,
    service: Annotated[list[str] | None, typer.Option(help="Only these services.")] = None,
    json_out: JsonOutOption = None,
) -> None:
    """Fuzz every service's API from its OpenAPI document."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    console = make_console()
    results: dict[str, dict[str, object]] = {}
    with resolve_broker() as broker:
        for name in service or SERVICES:
            with run_service(broker, name) as running:
                schema = httpx.get(f"{running.url}/openapi.json", timeout=30).json()
                began = time.monotonic()
                failures = schemathesis_failures(
                    schema, running.url, bench_headers(), max_examples=examples
                )
                took = round(time.monotonic() - began, 1)
            results[name] = {"failures": failures, "seconds": took}
            console.print(f"{name}: {len(failures)} failing operation(s) in {took} s")
            for failure in failures:
                console.print(failure, markup=False)
    figures = {
        "benchmark": NAME,
        "parameters": {"examples": examples},
        "machine": machine_facts(),
        "services": results,
    }
    console.print(f"wrote {write_result(NAME, figures, json_out)}")
    if any(result["failures"] for result in results.values()):
        raise typer.Exit(1)


if __name__ == "__main__":
    app()

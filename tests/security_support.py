"""What every service's security tests share: module-scoped service plumbing, the
credential matrix, hostile payloads, and a bounded schemathesis run."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import hypothesis
import schemathesis
from aiokafka import TopicPartition
from hypothesis import HealthCheck, Phase
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Err
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from omnistock.devstack.broker import EMBEDDED_FETCH_MAX_WAIT_MS
from omnistock.devstack.credentials import ROLES, LocalIssuer, admin_headers, bearer
from omnistock.devstack.postgres import drop_database, ensure_database
from omnistock.events.admin import ensure_topics
from omnistock.events.positions import log_end_offsets
from omnistock.events.settings import KafkaSettings
from omnistock.events.topics import TOPICS

PROBLEM_JSON = "application/problem+json"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Service:
    """A service shared by a test module: a client (admin by default) and its topics."""

    client: httpx.AsyncClient
    kafka: KafkaSettings


@asynccontextmanager
async def service_resources(
    kafka_bootstrap: str, postgres_url: str, name: str
) -> AsyncIterator[tuple[KafkaSettings, str]]:
    """Topics under a prefix of the module's own and a database dropped afterwards, for one
    service the module starts."""
    kafka = module_kafka(kafka_bootstrap)
    await ensure_topics(kafka, TOPICS)
    database_name = f"{name}_sec_{uuid.uuid4().hex[:10]}"
    database = await ensure_database(postgres_url, database_name)
    try:
        yield kafka, database
    finally:
        await drop_database(postgres_url, database_name)


def module_kafka(bootstrap: str) -> KafkaSettings:
    """Like the ``kafka_settings`` fixture, for a service shared by a test module."""
    return KafkaSettings(
        bootstrap_servers=bootstrap,
        topic_prefix=f"t{uuid.uuid4().hex[:8]}.",
        session_timeout_ms=2_000,
        heartbeat_interval_ms=300,
        fetch_max_wait_ms=EMBEDDED_FETCH_MAX_WAIT_MS,
    )


async def log_size(kafka: KafkaSettings) -> int:
    """Records in every topic of the registry: unchanged means nothing was written."""
    partitions = [
        TopicPartition(topic.physical(kafka.topic_prefix), p)
        for topic in TOPICS
        for p in range(topic.partitions)
    ]
    return sum((await log_end_offsets(kafka, partitions)).values())


async def send_as(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    headers: Mapping[str, str],
    **kwargs: Any,
) -> httpx.Response:
    """A request with exactly the credential in ``headers`` (none if empty), not the
    client's default one."""
    request = client.build_request(method, url, **kwargs)
    request.headers.pop("authorization", None)
    request.headers.update(headers)
    return await client.send(request)


def concrete(path: str, value: str = "probe-1") -> str:
    return re.sub(r"\{[^}]+\}", value, path)


def bad_credentials(issuer: LocalIssuer, other: LocalIssuer) -> dict[str, dict[str, str]]:
    """Every way a bearer credential can be wrong, by name (admin scope, so only the
    credential itself is at fault)."""
    admin = ROLES["admin"]
    forged = other.jwt(admin, subject="mallory")
    # Same key id as the real issuer's, so only the signature gives it away.
    forged_same_kid = other.jwt(admin, subject="mallory")
    header, _, rest = forged_same_kid.partition(".")
    decoded = json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))
    decoded["kid"] = issuer.kid
    header = base64.urlsafe_b64encode(json.dumps(decoded).encode()).rstrip(b"=").decode()
    unsigned_header = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=")
    valid = issuer.jwt(admin, subject="alice")
    payload = valid.split(".")[1]
    return {
        "missing": {},
        "not bearer": {"Authorization": "Basic YWRtaW46YWRtaW4="},
        "garbage": bearer("not-a-token"),
        "expired": bearer(issuer.jwt(admin, subject="alice", exp=1_000_000_000)),
        "not yet valid": bearer(
            issuer.jwt(admin, subject="alice", nbf=4_000_000_000, exp=4_000_000_600)
        ),
        "wrong audience": bearer(issuer.jwt(admin, subject="alice", aud="someone-else")),
        "wrong issuer": bearer(issuer.jwt(admin, subject="alice", iss="https://evil.example")),
        "no expiry": bearer(issuer.jwt(admin, subject="alice", exp=None)),
        "forged": bearer(forged),
        "forged, real kid": bearer(f"{header}.{rest}"),
        "alg none": bearer(f"{unsigned_header.decode()}.{payload}."),
        "unknown api key": bearer("osk_" + "A" * 43),
    }


def without(scopes: tuple[str, ...]) -> tuple[str, ...]:
    """Every scope a caller can hold except ``scopes`` (and admin)."""
    return tuple(sorted({s for role in ROLES.values() for s in role} - set(scopes) - {"admin"}))


async def check_refusals(
    client: httpx.AsyncClient,
    table: Mapping[tuple[str, str], tuple[str, ...]],
    issuer: LocalIssuer,
    other: LocalIssuer,
) -> None:
    """Every route: 401 (problem+json, the same body whatever is wrong, WWW-Authenticate)
    for each bad credential, 403 for a valid one lacking its scopes."""
    bad = bad_credentials(issuer, other)
    for (method, path), scopes in sorted(table.items()):
        url = concrete(path)
        bodies = set()
        for name, headers in bad.items():
            response = await send_as(client, method, url, headers, json={})
            assert response.status_code == 401, (method, path, name, response.text)
            assert response.headers["content-type"] == PROBLEM_JSON
            assert response.headers["www-authenticate"].startswith("Bearer ")
            bodies.add(response.content)
        assert len(bodies) <= 2, "401s differ by more than missing vs invalid"
        lacking = issuer.jwt(without(scopes), subject="bob")
        response = await send_as(client, method, url, bearer(lacking), json={})
        assert response.status_code == 403, (method, path, response.text)
        assert response.headers["content-type"] == PROBLEM_JSON


async def check_refusals_write_nothing(
    service: Service,
    table: Mapping[tuple[str, str], tuple[str, ...]],
    issuer: LocalIssuer,
    tmp_path: Path,
) -> None:
    """:func:`check_refusals` on every route of ``table`` (the other issuer's keys under
    ``tmp_path``), and not one record written by any of those requests."""
    before = await log_size(service.kafka)
    await check_refusals(service.client, table, issuer, LocalIssuer(tmp_path))
    assert await log_size(service.kafka) == before


async def check_schemathesis(service: Service, *, max_examples: int = 3) -> None:
    """The service's own OpenAPI schema, fuzzed with an admin credential: no 5xx, no
    answer that breaks the schema, and the service still ready afterwards."""
    client = service.client
    schema = (await client.get("/openapi.json")).json()
    failures = await asyncio.to_thread(
        schemathesis_failures,
        schema,
        str(client.base_url),
        admin_headers(),
        max_examples=max_examples,
    )
    assert not failures, "\n\n".join(failures)
    assert (await client.get("/readyz")).status_code == 200


def schemathesis_failures(
    schema: dict[str, Any],
    base_url: str,
    headers: Mapping[str, str],
    *,
    max_examples: int,
    skip: Callable[[str], bool] = lambda label: False,
) -> list[str]:
    """Run schemathesis against every operation, valid and invalid inputs: what fails
    the checks (no 5xx; status, content type, headers and body as documented)."""
    loaded = schemathesis.openapi.from_dict(schema)
    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
        response_headers_conformance,
    ]
    failures: list[str] = []
    for result in loaded.get_all_operations():
        if isinstance(result, Err):
            failures.append(f"invalid schema: {result.err()}")
            continue
        operation = result.ok()
        if skip(operation.label):
            continue
        has_inputs = bool(
            operation.path_parameters or operation.query or operation.headers or operation.body
        )
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            if mode is GenerationMode.NEGATIVE and not has_inputs:
                continue  # nothing to get wrong
            started = time.monotonic()

            @hypothesis.settings(
                max_examples=max_examples,
                deadline=None,
                database=None,
                derandomize=True,
                suppress_health_check=list(HealthCheck),
                phases=[Phase.explicit, Phase.generate],
            )
            @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
            def run(case: Any) -> None:
                response = case.call(base_url=base_url, headers=dict(headers), timeout=30)
                case.validate_response(response, checks=checks, headers=dict(headers))

            try:
                run()
            except Exception as error:  # collected and reported together
                failures.append(f"{operation.label} ({mode.value}): {error}"[:2000])
            log.info("%s (%s): %.1f s", operation.label, mode.value, time.monotonic() - started)
    return failures


#: Identifiers that must never reach the log: emoji, bidi override, NUL, trailing newline
#: (``$`` in Python regexes matches before it), zero-width space, full-width and
#: decomposed letters, a lone surrogate, path traversal, too long, empty, blank.
HOSTILE_IDS: tuple[str, ...] = (
    "💥",
    "store\u202eevil",
    "a\u0000b",
    "abc\n",
    "a\u200bb",
    "\uff33\uff2b\uff35-1",
    "e\u0301",
    "\ud800",
    "../../etc/passwd",
    "a/b",
    "x" * 65,
    "",
    " ",
    "İ",
)


ABSURD_QUANTITIES: tuple[object, ...] = (0, -1, 10**30, 1.5, "many", None, [])


def json_bytes(body: Any) -> bytes:
    """JSON with every non-ASCII character escaped, so lone surrogates can be sent."""
    return json.dumps(body, ensure_ascii=True).encode()


def deep_json(depth: int = 100_000) -> bytes:
    return b'{"x":' + b"[" * depth + b"]" * depth + b"}"


async def send_json(client: httpx.AsyncClient, method: str, path: str, body: Any) -> httpx.Response:
    return await client.request(
        method, path, content=json_bytes(body), headers={"content-type": "application/json"}
    )


async def check_body_limits(client: httpx.AsyncClient, method: str, path: str, limit: int) -> None:
    """Oversized bodies, declared or chunked, and deeply nested JSON: 4xx problems."""
    oversized = b'{"x":"' + b"a" * limit + b'"}'
    declared = await client.request(
        method, path, content=oversized, headers={"content-type": "application/json"}
    )
    assert declared.status_code == 413, declared.text
    assert declared.headers["content-type"] == PROBLEM_JSON

    async def chunks() -> Any:
        for start in range(0, len(oversized), 65_536):
            yield oversized[start : start + 65_536]

    chunked = await client.request(
        method, path, content=chunks(), headers={"content-type": "application/json"}
    )
    assert chunked.status_code == 413, chunked.text
    deep = await client.request(
        method, path, content=deep_json(), headers={"content-type": "application/json"}
    )
    assert 400 <= deep.status_code < 500, deep.text
    assert deep.headers["content-type"] == PROBLEM_JSON


def with_field(body: Any, dotted: str, value: Any) -> Any:
    """A deep copy of ``body`` with ``a.0.b`` set to ``value``."""
    copy = json.loads(json.dumps(body))
    *parents, last = dotted.split(".")
    target = copy
    for part in parents:
        target = target[int(part)] if isinstance(target, list) else target[part]
    if isinstance(target, list):
        target[int(last)] = value
    else:
        target[last] = value
    return copy


async def check_hostile_fields(
    client: httpx.AsyncClient,
    method: str,
    path: str,
    valid: dict[str, Any],
    *,
    id_fields: tuple[str, ...],
    quantity_fields: tuple[str, ...] = (),
    lists: Mapping[str, int] | None = None,
    expect: Callable[[httpx.Response], bool] = lambda r: r.status_code == 422,
) -> None:
    """Each hostile id in each id field, absurd quantities, and one item more than each
    list allows: refused (``expect``) as problem details, the service unaffected."""
    cases: list[tuple[str, Any]] = [
        (f"{field}={value!r}", with_field(valid, field, value))
        for field in id_fields
        for value in HOSTILE_IDS
    ]
    cases += [
        (f"{field}={value!r}", with_field(valid, field, value))
        for field in quantity_fields
        for value in ABSURD_QUANTITIES
    ]
    for field, most in (lists or {}).items():
        item = valid[field][0]
        cases.append((f"{field} x{most + 1}", {**valid, field: [item] * (most + 1)}))
    for name, body in cases:
        response = await send_json(client, method, path, body)
        assert expect(response), (name, response.status_code, response.text[:500])
    healthy = await client.get("/healthz")
    assert healthy.status_code == 200

"""What every omnistock HTTP API shares: RFC 9457 problem details, health, metrics, traces."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

from asyncpg.exceptions import (
    OperatorInterventionError,
    PostgresConnectionError,
    TooManyConnectionsError,
)
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from omnistock.events import metrics, tracing
from omnistock.events.producer import BrokerUnavailable
from omnistock.events.settings import AuthSettings

log = logging.getLogger(__name__)


def app_state(attribute: str) -> Any:
    """A route dependency: what the app's lifespan put in ``app.state.<attribute>``.

    Annotate its type where it is used: ``Annotated[Inventory, app_state("inventory")]``.
    It is ``async`` because FastAPI runs a plain ``def`` dependency in its thread pool:
    a thread hop on every request, for one attribute lookup.
    """

    async def dependency(request: Request) -> Any:
        return getattr(request.app.state, attribute)

    return Depends(dependency)


PROBLEM_JSON = "application/problem+json"
PROBLEM_BASE = "https://omnistock.io/problems/"


class FieldError(BaseModel):
    field: str
    message: str


class ProblemDetails(BaseModel):
    """RFC 9457 problem details, with ``errors`` naming each field at fault."""

    type: str
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    errors: list[FieldError] | None = None


class Problem(Exception):
    """Raise from a route to answer with problem details."""

    def __init__(
        self,
        status: int,
        slug: str,
        title: str,
        detail: str | None = None,
        *,
        errors: Sequence[FieldError] | None = None,
        headers: dict[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(detail or title)
        self.status = status
        self.slug = slug
        self.title = title
        self.detail = detail
        self.errors = list(errors) if errors else None
        self.headers = headers
        self.extensions = extensions


def problem_response(problem: Problem, instance: str | None = None) -> JSONResponse:
    body: dict[str, Any] = {
        "type": PROBLEM_BASE + problem.slug,
        "title": problem.title,
        "status": problem.status,
    }
    if problem.detail:
        body["detail"] = problem.detail
    if instance:
        body["instance"] = instance
    if problem.errors:
        body["errors"] = [error.model_dump() for error in problem.errors]
    body.update(problem.extensions)
    return JSONResponse(
        body, status_code=problem.status, media_type=PROBLEM_JSON, headers=problem.headers
    )


def _field_path(location: Sequence[int | str]) -> str:
    # FastAPI prefixes "body"/"query"/"path"; clients think in their own field names.
    parts = [str(p) for p in location]
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:] or parts
    return ".".join(parts) or "body"


def validation_problem(exc: RequestValidationError) -> Problem:
    errors = exc.errors()
    if any(error.get("type") == "json_invalid" for error in errors):
        return Problem(
            400,
            "malformed-json",
            "Malformed JSON",
            "The request body is not valid JSON.",
            errors=[FieldError(field="body", message=str(errors[0].get("msg", "invalid JSON")))],
        )
    return Problem(
        422,
        "validation-error",
        "Invalid request",
        f"{len(errors)} field(s) failed validation.",
        errors=[
            FieldError(field=_field_path(error.get("loc", ())), message=str(error.get("msg")))
            for error in errors
        ],
    )


def install_problem_handlers(app: FastAPI) -> None:
    async def on_problem(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, Problem)
        return problem_response(exc, request.url.path)

    async def on_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return problem_response(validation_problem(exc), request.url.path)

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        slug = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "http-error")
        title = str(exc.detail) if isinstance(exc.detail, str) else "HTTP error"
        return problem_response(
            Problem(exc.status_code, slug, title, headers=getattr(exc, "headers", None)),
            request.url.path,
        )

    async def on_broker_unavailable(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, BrokerUnavailable)
        log.warning("answering 503: %s", exc)
        return problem_response(
            Problem(
                503,
                "log-unavailable",
                "Event log unavailable",
                "The write was not confirmed by the event log; nothing was acknowledged. "
                "Retry with the same idempotency key.",
                headers={"Retry-After": str(exc.retry_after_seconds)},
            ),
            request.url.path,
        )

    async def on_database_error(request: Request, exc: Exception) -> JSONResponse:
        if not database_unreachable(exc):
            return await on_unexpected(request, exc)
        log.warning("answering 503: database unreachable: %r", exc)
        return problem_response(
            Problem(
                503,
                "read-model-unavailable",
                "Database unavailable",
                "This service's database did not answer; nothing was acknowledged. "
                "Retry with the same idempotency key.",
                headers={"Retry-After": "1"},
            ),
            request.url.path,
        )

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return problem_response(Problem(500, "internal-error", "Internal error"), request.url.path)

    app.add_exception_handler(Problem, on_problem)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(BrokerUnavailable, on_broker_unavailable)
    for database_error in _DATABASE_ERRORS:
        app.add_exception_handler(database_error, on_database_error)
    app.add_exception_handler(Exception, on_unexpected)


#: What a route sees while PostgreSQL is down, restarting or refusing connections, raw
#: (asyncpg, the socket) or wrapped by SQLAlchemy.
_DATABASE_ERRORS: tuple[type[Exception], ...] = (
    DBAPIError,
    ConnectionError,
    PostgresConnectionError,
    OperatorInterventionError,
    TooManyConnectionsError,
)


def database_unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` means "the database cannot be reached now" (retry later) rather than
    a bug in a statement (a 500). SQLAlchemy wraps asyncpg's error in its own, sometimes
    twice and generically (DBAPIError), so the whole chain of causes is looked at."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, DBAPIError) and (
            seen.connection_invalidated or isinstance(seen, OperationalError | InterfaceError)
        ):
            return True
        if isinstance(seen, _DATABASE_ERRORS) and not isinstance(seen, DBAPIError):
            return True
        seen = seen.__cause__ or (seen.orig if isinstance(seen, DBAPIError) else None)
    return False


@dataclass
class Health:
    """Liveness is "the event loop answers"; readiness is "state is caught up with the log"."""

    not_ready: dict[str, str] = field(default_factory=lambda: {"starting": "service starting"})

    def block(self, reason: str, detail: str) -> None:
        self.not_ready[reason] = detail
        metrics.SERVICE_READY.set(0)

    def unblock(self, reason: str) -> None:
        self.not_ready.pop(reason, None)
        metrics.SERVICE_READY.set(1 if self.ready else 0)

    @property
    def ready(self) -> bool:
        return not self.not_ready


class Instrumented:
    """Pure ASGI middleware: request count and latency by route template, and an HTTP
    SERVER span when tracing is on. The template (``/v1/reservations/{reservation_id}``),
    never the path, is the label; a path no route matched counts as ``unmatched``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method: str = scope["method"]
        status = 500
        started = time.perf_counter()

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        with tracing.server_span(method, scope["path"], scope["headers"]) as span:
            try:
                await self.app(scope, receive, send_status)
            finally:
                route = getattr(scope.get("route"), "path", None) or "unmatched"
                metrics.HTTP_REQUESTS.labels(method, route, str(status)).inc()
                metrics.HTTP_SECONDS.labels(method, route).observe(time.perf_counter() - started)
                if span is not None:
                    span.update_name(f"{method} {route}")
                    span.set_attribute("http.route", route)
                    span.set_attribute("http.response.status_code", status)


class Lifespan(Protocol):
    def __call__(self, app: FastAPI) -> AbstractAsyncContextManager[None]: ...


def create_app(
    *,
    title: str,
    description: str,
    version: str,
    health: Health,
    auth: AuthSettings,
    lifespan: Lifespan | None = None,
) -> FastAPI:
    """A service's app: problem details, health, metrics, and every other path behind
    :class:`omnistock.events.auth.Gate` (routes add ``require(scope)``)."""
    # Imported here: auth builds on this module's problem details.
    from omnistock.events.auth import Authenticator, Gate  # noqa: PLC0415

    authenticator = Authenticator(auth)
    app = FastAPI(
        title=title,
        description=description,
        version=version,
        lifespan=lifespan,
        responses={
            400: {"model": ProblemDetails, "description": "Malformed request"},
            401: {"model": ProblemDetails, "description": "No valid credential"},
            403: {"model": ProblemDetails, "description": "The credential may not do this"},
            413: {"model": ProblemDetails, "description": "Request body too large"},
            422: {"model": ProblemDetails, "description": "Invalid request"},
            429: {"model": ProblemDetails, "description": "Rate limit of the credential"},
            503: {"model": ProblemDetails, "description": "Event log unavailable; retry"},
        },
    )
    install_problem_handlers(app)

    @app.get("/healthz", tags=["health"], summary="Liveness")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/readyz",
        tags=["health"],
        summary="Readiness: false while replaying or while the log is unreachable",
        responses={503: {"description": "Not ready, with the reasons"}},
    )
    async def readyz() -> JSONResponse:
        if health.ready:
            return JSONResponse({"status": "ready"})
        return JSONResponse({"status": "not_ready", "reasons": health.not_ready}, status_code=503)

    @app.get("/metrics", tags=["health"], summary="Prometheus metrics", include_in_schema=False)
    async def prometheus_metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(Gate, authenticator=authenticator)
    # Outermost (added last), so refused requests (401, 413, 429) are counted too.
    app.add_middleware(Instrumented)
    _document_problems_as_problem_json(app)
    return app


def _document_problems_as_problem_json(app: FastAPI) -> None:
    """FastAPI documents every response model as application/json; errors are answered
    as application/problem+json, and the document must say so (clients and schemathesis
    check the content type)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            for operations in schema.get("paths", {}).values():
                for operation in operations.values():
                    for status, response in operation.get("responses", {}).items():
                        content = response.get("content", {})
                        if status[:1] in ("4", "5") and "application/json" in content:
                            content[PROBLEM_JSON] = content.pop("application/json")
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

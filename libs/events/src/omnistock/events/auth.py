"""Who may call an omnistock API, and what they may do.

Every request except health, metrics and the API description must carry
``Authorization: Bearer <credential>``, one of:

* a JWT signed by the configured issuer (``AUTH_JWKS_FILE`` or ``AUTH_JWKS_URL``;
  RS256 or ES256; ``iss``, ``aud``, ``exp`` and ``nbf`` checked) for staff apps and
  partner systems. Its scopes are the ``scope`` claim (space separated) or ``scp``
  (a list); a ``store_id`` claim binds it to one store.
* a static API key for devices (POS terminals): ``osk_`` and a random secret. The
  service knows only SHA-256 digests of keys (``AUTH_API_KEYS_FILE``), each with its
  scopes and, for a POS key, its store. A plain digest is enough because keys are
  256-bit random strings, not passwords: there is nothing to guess by brute force.

:class:`Gate` authenticates (401) and rate-limits (429) every request and bounds its
body (413) before any route runs; :func:`require` then authorizes (403) per route.
Both answer RFC 9457 problem details that say what is wrong in general terms only.
Credentials and tokens are never logged.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import httpx
import jwt
import orjson
from fastapi import Depends, FastAPI, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from omnistock.events.catalogue import Identifier
from omnistock.events.http import Problem, problem_response
from omnistock.events.settings import AuthSettings

log = logging.getLogger(__name__)

#: Every scope an omnistock API checks. ``admin`` passes every check.
SCOPES: dict[str, str] = {
    "reservations:write": "reserve, commit, release and extend stock holds (EC checkout)",
    "orders:write": "place, cancel, fulfil and read orders (EC, order management)",
    "stock:read": "stock queries, locations, movements, POS figures (staff app, EC)",
    "pos:write": "post POS transactions for the one store the credential is bound to",
    "stock:adjust": "counts and corrections (warehouse)",
    "receipts:write": "goods received (warehouse)",
    "rules:write": "reorder rules (merchandisers)",
    "admin": "everything, including registering locations",
}
ADMIN = "admin"
API_KEY_PREFIX = "osk_"
#: Paths anyone may call: probes, scrapes, and the description of the API itself.
OPEN_PATHS = frozenset(
    {"/healthz", "/readyz", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}
)
OPEN_PREFIXES = ("/metrics",)


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller."""

    #: Who, for rate limits and audit logs: never the credential itself.
    subject: str
    scopes: frozenset[str]
    #: The one store a POS credential may act for.
    store_id: str | None = None

    def has(self, scope: str) -> bool:
        return ADMIN in self.scopes or scope in self.scopes

    def acts_for_store(self, store_id: str, scope: str = "pos:write") -> bool:
        """Whether it may do ``scope`` for ``store_id``: admin, or the scope bound to it."""
        return ADMIN in self.scopes or (scope in self.scopes and self.store_id == store_id)


class ApiKey(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    #: A name for logs and rate limits (e.g. the terminal), never the key.
    id: Identifier
    #: Hex SHA-256 of the whole key as presented (``osk_...``).
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    scopes: Annotated[list[str], Field(min_length=1)]
    store_id: Identifier | None = None
    role: str | None = None


class ApiKeysFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    keys: list[ApiKey] = []


def api_key_digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class Unauthenticated(Exception):
    """The credential is missing or not valid; the reason is for the log, not the caller."""


class _WatchedFile:
    """A mounted file re-read when it changes (Kubernetes updates Secret mounts in place)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen: tuple[int, int] | None = None
        self._checked = -math.inf

    def changed(self, *, at_most_every_s: float) -> bool:
        now = time.monotonic()
        if now - self._checked < at_most_every_s:
            return False
        self._checked = now
        stat = self.path.stat()
        seen = (stat.st_mtime_ns, stat.st_size)
        if seen == self._seen:
            return False
        self._seen = seen
        return True


class _Keys:
    """The issuer's public keys by ``kid``, from a file or a URL, refreshed."""

    def __init__(self, settings: AuthSettings) -> None:
        self._settings = settings
        self._file = _WatchedFile(settings.jwks_file) if settings.jwks_file else None
        self._keys: dict[str | None, jwt.PyJWK] = {}
        self._fetched = -math.inf
        self._lock = asyncio.Lock()
        #: Bumped on every change, so cached verdicts on an old key set are dropped.
        self.generation = 0

    def _load(self, document: bytes) -> None:
        keys: dict[str | None, jwt.PyJWK] = {}
        for entry in orjson.loads(document).get("keys", []):
            if entry.get("use", "sig") != "sig":
                continue
            try:
                key = jwt.PyJWK(entry)
            except jwt.PyJWKError as error:
                log.warning("ignoring JWKS key %s: %s", entry.get("kid"), error)
                continue
            keys[entry.get("kid")] = key
        self._keys = keys
        self.generation += 1

    async def refresh(self, *, unknown_kid: bool = False) -> None:
        """Pick up a rotated key set: the file is looked at at most once a second (at once
        for an unknown kid), the URL fetched every ``jwks_refresh_s``."""
        if self._file is not None:
            if self._file.changed(at_most_every_s=0.0 if unknown_kid else 1.0):
                self._load(self._file.path.read_bytes())
        elif self._settings.jwks_url is not None:
            age = time.monotonic() - self._fetched
            # An unknown kid may be a rotation: refetch, but at most every 30 s, so forged
            # kids cannot turn us into a load generator against the issuer.
            if age > self._settings.jwks_refresh_s or (unknown_kid and age > 30):
                async with self._lock:
                    await self._fetch(self._settings.jwks_url)

    async def get(self, kid: str | None) -> jwt.PyJWK | None:
        if kid not in self._keys and not (kid is None and len(self._keys) == 1):
            await self.refresh(unknown_kid=True)
        if kid is None and len(self._keys) == 1:
            return next(iter(self._keys.values()))
        return self._keys.get(kid)

    async def _fetch(self, url: str) -> None:
        self._fetched = time.monotonic()
        try:
            async with httpx.AsyncClient(timeout=5.0) as client:
                response = await client.get(url)
                response.raise_for_status()
            self._load(response.content)
        except (httpx.HTTPError, orjson.JSONDecodeError) as error:
            # Keep the keys we have: an issuer hiccup must not lock every caller out.
            log.warning("could not refresh the JWKS from %s: %s", url, error)


class Authenticator:
    """Turns a bearer credential into a :class:`Principal`, or refuses it."""

    def __init__(self, settings: AuthSettings) -> None:
        if not (settings.jwks_file or settings.jwks_url or settings.api_keys_file):
            raise ValueError(
                "no credentials are configured: set AUTH_JWKS_FILE or AUTH_JWKS_URL (with "
                "AUTH_ISSUER), and/or AUTH_API_KEYS_FILE"
            )
        if (settings.jwks_file or settings.jwks_url) and not settings.issuer:
            raise ValueError("AUTH_ISSUER is required with a JWKS")
        self.settings = settings
        self._keys = _Keys(settings) if settings.jwks_file or settings.jwks_url else None
        self._key_file = _WatchedFile(settings.api_keys_file) if settings.api_keys_file else None
        self._api_keys: dict[str, ApiKey] = {}
        #: Verified tokens (token -> principal, expiry), so a busy client pays for the
        #: signature check once per token rather than once per request.
        self._verified: OrderedDict[str, tuple[Principal, float, int]] = OrderedDict()

    async def authenticate(self, credential: str) -> Principal:
        if credential.startswith(API_KEY_PREFIX):
            return self._api_key(credential)
        return await self._jwt(credential)

    def _api_key(self, key: str) -> Principal:
        if self._key_file is None:
            raise Unauthenticated("API keys are not configured")
        digest = api_key_digest(key)
        # A new key is usually presented right after it was added: look again at once.
        if self._key_file.changed(at_most_every_s=0.0 if digest not in self._api_keys else 1.0):
            self._reload_api_keys()
        entry = self._api_keys.get(digest)
        if entry is None:
            raise Unauthenticated("unknown API key")
        return Principal(f"key:{entry.id}", frozenset(entry.scopes), entry.store_id)

    def _reload_api_keys(self) -> None:
        assert self._key_file is not None
        try:
            parsed = ApiKeysFile.model_validate_json(self._key_file.path.read_bytes())
        except (OSError, ValidationError) as error:
            # Keep the keys we have; a half-written file is read again on the next change.
            log.error(
                "cannot read %s, keeping the previous API keys: %s", self._key_file.path, error
            )
            return
        self._api_keys = {entry.sha256: entry for entry in parsed.keys}

    async def _jwt(self, token: str) -> Principal:
        if self._keys is None:
            raise Unauthenticated("JWTs are not configured")
        await self._keys.refresh()
        now = time.time()
        cached = self._verified.get(token)
        if cached is not None:
            principal, expires, generation = cached
            if now <= expires + self.settings.leeway_s and generation == self._keys.generation:
                return principal
            del self._verified[token]
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError as error:
            raise Unauthenticated(f"not a JWT: {error}") from None
        if header.get("alg") not in self.settings.algorithms:
            raise Unauthenticated(f"algorithm {header.get('alg')!r} not allowed")
        kid = header.get("kid")
        key = await self._keys.get(kid if isinstance(kid, str) else None)
        if key is None:
            raise Unauthenticated("unknown signing key")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=list(self.settings.algorithms),
                audience=self.settings.audience,
                issuer=self.settings.issuer,
                leeway=self.settings.leeway_s,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.InvalidTokenError as error:
            raise Unauthenticated(f"invalid JWT: {type(error).__name__}") from None
        principal = Principal(
            f"jwt:{claims['sub']}", frozenset(_scopes(claims)), _store(claims.get("store_id"))
        )
        self._verified[token] = (principal, float(claims["exp"]), self._keys.generation)
        if len(self._verified) > 10_000:
            self._verified.popitem(last=False)
        return principal


def _scopes(claims: dict[str, Any]) -> Iterable[str]:
    scope = claims.get("scope")
    if isinstance(scope, str):
        yield from scope.split()
    scp = claims.get("scp")
    if isinstance(scp, list):
        yield from (s for s in scp if isinstance(s, str))


def _store(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


@dataclass
class RateLimiter:
    """A token bucket per credential, in this process (so per replica)."""

    rate_per_s: float
    burst: int
    _buckets: dict[str, tuple[float, float]] = field(default_factory=dict)

    def take(self, subject: str) -> float:
        """0 when the request may go ahead, else the seconds until it may."""
        now = time.monotonic()
        tokens, then = self._buckets.get(subject, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - then) * self.rate_per_s)
        if tokens < 1.0:
            self._buckets[subject] = (tokens, now)
            return (1.0 - tokens) / self.rate_per_s
        self._buckets[subject] = (tokens - 1.0, now)
        if len(self._buckets) > 50_000:
            self._forget_idle(now)
        return 0.0

    def _forget_idle(self, now: float) -> None:
        # A bucket refilled to the brim is the same as no bucket.
        full_after = self.burst / self.rate_per_s
        for subject, (_, then) in list(self._buckets.items()):
            if now - then > full_after:
                del self._buckets[subject]


def unauthenticated(error: str = "invalid_token") -> Problem:
    return Problem(
        401,
        "unauthorized",
        "Authentication required",
        "A valid bearer credential is required.",
        headers={"WWW-Authenticate": f'Bearer realm="omnistock", error="{error}"'},
    )


def forbidden(scopes: Sequence[str]) -> Problem:
    return Problem(
        403,
        "forbidden",
        "Forbidden",
        "This credential may not do this.",
        headers={
            "WWW-Authenticate": (
                f'Bearer realm="omnistock", error="insufficient_scope", scope="{" ".join(scopes)}"'
            )
        },
    )


def store_forbidden() -> Problem:
    return Problem(403, "forbidden", "Forbidden", "This credential may not act for this store.")


class Gate:
    """ASGI middleware in front of every route: authenticate, rate-limit, bound the body.

    Unknown paths are refused like known ones (401 before 404), so an anonymous caller
    learns nothing about the API that the public OpenAPI document does not say.
    """

    def __init__(self, app: ASGIApp, authenticator: Authenticator) -> None:
        self.app = app
        self.authenticator = authenticator
        settings = authenticator.settings
        self.limiter = RateLimiter(settings.rate_per_s, settings.rate_burst)
        self.max_body = settings.max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path in OPEN_PATHS or path.startswith(OPEN_PREFIXES):
            await self.app(scope, receive, send)
            return
        problem: Problem | None = None
        principal: Principal | None = None
        credential = _bearer(scope)
        if credential is None:
            problem = unauthenticated("invalid_request")
        else:
            try:
                principal = await self.authenticator.authenticate(credential)
            except Unauthenticated as why:
                log.info("refused a credential on %s %s: %s", scope["method"], path, why)
                problem = unauthenticated()
        if principal is not None:
            wait = self.limiter.take(principal.subject)
            if wait:
                problem = Problem(
                    429,
                    "rate-limited",
                    "Too many requests",
                    "This credential's request rate is above its limit; slow down.",
                    headers={"Retry-After": str(max(1, math.ceil(wait)))},
                )
        if problem is None:
            problem, receive = await self._bounded(scope, receive)
        if problem is not None:
            await problem_response(problem, path)(scope, receive, send)
            return
        scope.setdefault("state", {})["principal"] = principal
        await self.app(scope, receive, send)

    async def _bounded(self, scope: Scope, receive: Receive) -> tuple[Problem | None, Receive]:
        too_large = Problem(
            413,
            "body-too-large",
            "Request body too large",
            f"At most {self.max_body} bytes.",
            max_bytes=self.max_body,
        )
        length = _header(scope, b"content-length")
        if length is not None:
            if not length.isdigit():
                return Problem(400, "bad-request", "Bad Content-Length"), receive
            # The server reads exactly the declared length, no more.
            return (too_large if int(length) > self.max_body else None), receive
        if scope["method"] in ("GET", "HEAD", "DELETE", "OPTIONS"):
            return None, receive
        # A chunked body: read it here, up to the limit, and hand it on.
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return Problem(400, "bad-request", "Incomplete request"), receive
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                return too_large, receive
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        return None, replay


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return str(value.decode("latin-1"))
    return None


def _bearer(scope: Scope) -> str | None:
    value = _header(scope, b"authorization")
    if value is None:
        return None
    kind, _, credential = value.partition(" ")
    credential = credential.strip()
    if kind.lower() != "bearer" or not credential or len(credential) > 8192:
        return None
    return credential


_bearer_scheme = HTTPBearer(
    auto_error=False,
    description="A JWT from the issuer, or a device API key (osk_...).",
)


def principal_of(request: Request) -> Principal:
    principal = getattr(request.state, "principal", None)
    if not isinstance(principal, Principal):
        # The Gate runs in front of every route; a route reached without it is a bug,
        # and refusing is the safe answer.
        raise unauthenticated()
    return principal


class Scoped:
    """The dependency :func:`require` builds; ``scopes`` is what the route accepts."""

    def __init__(self, scopes: tuple[str, ...]) -> None:
        unknown = set(scopes) - set(SCOPES)
        if not scopes or unknown:
            raise ValueError(f"unknown scopes {sorted(unknown)}")
        self.scopes = scopes

    async def __call__(
        self,
        request: Request,
        _: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer_scheme)],
    ) -> Principal:
        principal = principal_of(request)
        if not any(principal.has(scope) for scope in self.scopes):
            raise forbidden(self.scopes)
        return principal


def require(*scopes: str) -> Any:
    """A route dependency: the caller holds one of ``scopes`` (or ``admin``), else 403.

    Use as ``dependencies=[require("stock:read")]`` or, to see who called,
    ``principal: Annotated[Principal, require("pos:write")]``.
    """
    # Security (not Depends) so the OpenAPI document lists the scopes of each operation.
    return Security(Scoped(scopes), scopes=list(scopes))


def route_scopes(app: FastAPI) -> dict[tuple[str, str], tuple[str, ...]]:
    """(method, path) -> the scopes an operation accepts, as its OpenAPI document says;
    ``()`` for an operation without a check."""
    table: dict[tuple[str, str], tuple[str, ...]] = {}
    for path, operations in app.openapi()["paths"].items():
        if path in OPEN_PATHS or path.startswith(OPEN_PREFIXES):
            continue
        for method, operation in operations.items():
            requirements = operation.get("security", [])
            table[(method.upper(), path)] = tuple(
                scope
                for requirement in requirements
                for scopes in requirement.values()
                for scope in scopes
            )
    return table


def require_store(principal: Principal, store_ids: Iterable[str], scope: str = "pos:write") -> None:
    """403 unless ``principal`` may do ``scope`` for every store in ``store_ids``."""
    if not all(principal.acts_for_store(store_id, scope) for store_id in set(store_ids)):
        raise store_forbidden()

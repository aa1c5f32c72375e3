"""Real credentials for the dev stack and the tests: a local token issuer and API keys.

There is no switch that turns authentication off. The dev stack and the test
harness run a small issuer of their own instead: an EC P-256 key pair whose public
half is the JWKS the services trust (``AUTH_JWKS_FILE``), and an API keys file of
SHA-256 digests (``AUTH_API_KEYS_FILE``) that POS keys are appended to. The services
re-read both files when they change, so a key minted now works at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import secrets
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Final

import jwt
import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from omnistock.events.auth import API_KEY_PREFIX, ApiKey, ApiKeysFile, api_key_digest

#: The scopes of each kind of user (README, "Who may do what").
ROLES: Final[dict[str, tuple[str, ...]]] = {
    "ec": ("reservations:write", "orders:write", "stock:read"),
    "staff": ("stock:read",),
    "pos": ("pos:write",),
    "warehouse": ("receipts:write", "stock:adjust", "stock:read"),
    "merchandiser": ("rules:write", "stock:read"),
    "admin": ("admin",),
}
DEV_ISSUER: Final = "https://omnistock.dev/issuer"
DEV_AUDIENCE: Final = "omnistock"
DEFAULT_TTL_S: Final = 3600


def _write_private(path: Path, content: bytes) -> None:
    """Atomically, readable by this user only."""
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(content)
    temporary.replace(path)


class LocalIssuer:
    """Issues tokens and API keys that services configured with :attr:`env` accept."""

    def __init__(
        self, directory: Path, *, issuer: str = DEV_ISSUER, audience: str = DEV_AUDIENCE
    ) -> None:
        self.directory = directory
        self.issuer = issuer
        self.audience = audience
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        key_path = directory / "issuer-key.pem"
        if key_path.exists():
            loaded = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
            assert isinstance(loaded, ec.EllipticCurvePrivateKey)
            self._key = loaded
        else:
            self._key = ec.generate_private_key(ec.SECP256R1())
            _write_private(
                key_path,
                self._key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                ),
            )
        public = jwt.algorithms.ECAlgorithm.to_jwk(self._key.public_key(), as_dict=True)
        self.kid = hashlib.sha256(orjson.dumps(public, option=orjson.OPT_SORT_KEYS)).hexdigest()[
            :16
        ]
        self.jwks_file = directory / "jwks.json"
        jwks = {"keys": [{**public, "kid": self.kid, "use": "sig", "alg": "ES256"}]}
        _write_private(self.jwks_file, orjson.dumps(jwks))
        self.api_keys_file = directory / "api-keys.json"
        with self._locked():
            if not self.api_keys_file.exists():
                _write_private(self.api_keys_file, ApiKeysFile().model_dump_json().encode())

    @property
    def env(self) -> dict[str, str]:
        """What a service process needs to trust this issuer's credentials."""
        return {
            "AUTH_JWKS_FILE": str(self.jwks_file),
            "AUTH_ISSUER": self.issuer,
            "AUTH_AUDIENCE": self.audience,
            "AUTH_API_KEYS_FILE": str(self.api_keys_file),
        }

    def jwt(
        self,
        scopes: Sequence[str],
        *,
        subject: str,
        ttl_s: float = DEFAULT_TTL_S,
        store_id: str | None = None,
        **claims: Any,
    ) -> str:
        """A signed token; ``claims`` override the standard ones (tests forge with them)."""
        now = int(time.time())
        payload: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": subject,
            "iat": now,
            "nbf": now,
            "exp": now + int(ttl_s),
            "jti": uuid.uuid4().hex,
            "scope": " ".join(scopes),
        }
        if store_id is not None:
            payload["store_id"] = store_id
        payload.update(claims)
        # A claim given as None is left out (tests forge tokens without ``exp`` so).
        payload = {name: value for name, value in payload.items() if value is not None}
        return jwt.encode(payload, self._key, algorithm="ES256", headers={"kid": self.kid})

    def api_key(
        self, *, store_id: str | None, scopes: Sequence[str] = ROLES["pos"], name: str = ""
    ) -> str:
        """A new device key, its digest appended to the keys file (the key itself is not
        stored: print it once, as a real enrolment would)."""
        key = API_KEY_PREFIX + secrets.token_urlsafe(32)
        entry = ApiKey(
            id=name or f"{store_id or 'device'}-{uuid.uuid4().hex[:8]}",
            sha256=api_key_digest(key),
            scopes=list(scopes),
            store_id=store_id,
            role="pos" if tuple(scopes) == ROLES["pos"] else None,
        )
        with self._locked():
            current = ApiKeysFile.model_validate_json(self.api_keys_file.read_bytes())
            current.keys.append(entry)
            _write_private(self.api_keys_file, current.model_dump_json(indent=1).encode())
        return key

    def token(self, role: str, *, store_id: str | None = None, ttl_s: float = DEFAULT_TTL_S) -> str:
        """A credential for one of :data:`ROLES`: an API key bound to ``store_id`` for
        ``pos``, a JWT for the others."""
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}; one of {', '.join(ROLES)}")
        if role == "pos":
            if not store_id:
                raise ValueError("a pos key is bound to a store: give its location id")
            return self.api_key(store_id=store_id, name=f"pos-{store_id}-{uuid.uuid4().hex[:6]}")
        return self.jwt(ROLES[role], subject=f"dev-{role}", ttl_s=ttl_s, store_id=store_id)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        # The stack and `omnistock dev token` may add keys at the same time.
        with (self.directory / ".lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)


_session: LocalIssuer | None = None


def use_session_issuer(issuer: LocalIssuer | None) -> None:
    """Make ``issuer`` the one test helpers mint default credentials from (pytest plugin)."""
    global _session  # noqa: PLW0603 - one issuer per test session, set by the plugin
    _session = issuer


def session_issuer() -> LocalIssuer:
    if _session is None:
        raise RuntimeError("no session issuer: the omnistock pytest plugin sets one up")
    return _session


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def admin_headers() -> dict[str, str]:
    """Headers of the test session's admin (long-lived enough for a whole run)."""
    return bearer(session_issuer().token("admin", ttl_s=12 * 3600))

"""The dev issuer's credentials pass the services' real checks; `dev token` mints them."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from omnistock.devstack.cli import app
from omnistock.devstack.credentials import ROLES, LocalIssuer
from omnistock.events.auth import Authenticator
from omnistock.events.settings import AuthSettings


def authenticator(issuer: LocalIssuer) -> Authenticator:
    return Authenticator(AuthSettings(**{k[5:].lower(): v for k, v in issuer.env.items()}))


async def test_every_role_gets_its_scopes_and_pos_its_store(tmp_path: Path) -> None:
    issuer = LocalIssuer(tmp_path / "auth")
    check = authenticator(issuer)
    for role, scopes in ROLES.items():
        store = "store-berlin" if role == "pos" else None
        principal = await check.authenticate(issuer.token(role, store_id=store))
        assert principal.scopes == frozenset(scopes), role
        assert principal.store_id == store
    # The keys file holds digests only.
    key = issuer.token("pos", store_id="store-hamburg")
    assert key not in issuer.api_keys_file.read_text()
    with pytest.raises(ValueError, match="bound to a store"):
        issuer.token("pos")


def test_dev_token_prints_a_fresh_credential_on_its_last_line(tmp_path: Path) -> None:
    runner = CliRunner()
    missing = runner.invoke(app, ["dev", "token", "--role", "ec", "--state-dir", str(tmp_path)])
    assert missing.exit_code == 1
    LocalIssuer(tmp_path / "auth")
    minted = runner.invoke(
        app,
        ["dev", "token", "--role", "pos", "--store", "store-munich", "--state-dir", str(tmp_path)],
    )
    assert minted.exit_code == 0, minted.output
    assert minted.output.strip().splitlines()[-1].startswith("osk_")
    unbound = runner.invoke(app, ["dev", "token", "--role", "pos", "--state-dir", str(tmp_path)])
    assert unbound.exit_code == 2
    unknown = runner.invoke(app, ["dev", "token", "--role", "root", "--state-dir", str(tmp_path)])
    assert unknown.exit_code == 2

"""helm/omnistock's authentication settings: every service gets a credential source the
way its AuthSettings read it (AUTH_* variables and read-only directory mounts), and an
install without one fails at render time, naming the values to set."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml
from deploy_support import CHART, CI_VALUES, chart_services, helm_template, of_kind

from omnistock.devstack.credentials import DEV_AUDIENCE, DEV_ISSUER
from omnistock.events.auth import Authenticator
from omnistock.events.settings import AuthSettings

#: values.yaml name under auth -> AuthSettings field.
SETTINGS = {
    "issuer": "issuer",
    "audience": "audience",
    "algorithms": "algorithms",
    "leewaySeconds": "leeway_s",
    "ratePerSecond": "rate_per_s",
    "rateBurst": "rate_burst",
    "maxBodyBytes": "max_body_bytes",
}


def _deployments(rendered: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        d["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"]: d
        for d in of_kind(rendered, "Deployment")
    }


def _settings(container: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> AuthSettings:
    """What the service process would read from the container's environment."""
    env = [e for e in container["env"] if e["name"].startswith("AUTH_")]
    assert all("valueFrom" not in e for e in env), env  # files and plain values only
    for name in [n for n in os.environ if n.startswith("AUTH_")]:
        monkeypatch.delenv(name)
    for entry in env:
        monkeypatch.setenv(entry["name"], entry["value"])
    return AuthSettings()


def _mounted_source(spec: dict[str, Any], container: dict[str, Any], path: Path) -> dict[str, Any]:
    """The Secret or ConfigMap volume the file at ``path`` comes from."""
    file = PurePosixPath(path)
    [mount] = [m for m in container["volumeMounts"] if m["mountPath"] == str(file.parent)]
    # A whole directory, read-only: a subPath mount is a copy the kubelet never updates,
    # and the services rely on seeing a rotated Secret in place.
    assert mount.get("readOnly") is True, mount
    assert not {"subPath", "subPathExpr"} & mount.keys(), mount
    [volume] = [v for v in spec["volumes"] if v["name"] == mount["name"]]
    source: dict[str, Any] = volume.get("secret") or volume["configMap"]
    assert source["items"] == [{"key": file.name, "path": file.name}], volume
    return source


@pytest.mark.parametrize("values", CI_VALUES, ids=lambda p: p.stem)
def test_every_service_would_start_with_the_credentials_it_is_given(
    values: Path, objects: dict[str, list[dict[str, Any]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    chosen = (yaml.safe_load(values.read_text()) or {})["auth"]
    deployments = _deployments(objects[values.stem])

    for service in chart_services():
        spec = deployments[service]["spec"]["template"]["spec"]
        [container] = spec["containers"]
        settings = _settings(container, monkeypatch)

        # The same check the service makes before it serves anything.
        Authenticator(settings)
        for key, field in SETTINGS.items():
            if key in chosen:
                assert getattr(settings, field) == chosen[key], (service, key)
        jwks = chosen.get("jwks", {})
        assert settings.jwks_url == (jwks.get("url") or None), service
        if jwks.get("existingSecret"):
            assert settings.jwks_file is not None
            source = _mounted_source(spec, container, settings.jwks_file)
            assert source["secretName"] == jwks["existingSecret"]
        elif jwks.get("existingConfigMap"):
            assert settings.jwks_file is not None
            source = _mounted_source(spec, container, settings.jwks_file)
            assert source["name"] == jwks["existingConfigMap"]
        else:
            assert settings.jwks_file is None
        api_keys = chosen.get("apiKeys", {})
        if api_keys.get("existingSecret"):
            assert settings.api_keys_file is not None
            source = _mounted_source(spec, container, settings.api_keys_file)
            assert source["secretName"] == api_keys["existingSecret"]
            assert settings.api_keys_file.name == api_keys.get("key", "api-keys.json")
        else:
            assert settings.api_keys_file is None


def test_the_operator_gets_no_api_credentials(objects: dict[str, list[dict[str, Any]]]) -> None:
    # It serves health and metrics only.
    for rendered in objects.values():
        operator = _deployments(rendered)["topic-operator"]["spec"]["template"]["spec"]
        [container] = operator["containers"]
        assert not [e for e in container["env"] if e["name"].startswith("AUTH_")]
        assert not [v for v in operator["volumes"] if v["name"].startswith("auth-")]


@pytest.mark.parametrize(
    ("sets", "complaint"),
    [
        (
            [],
            "auth: no credential source; every service refuses to start without one. Set "
            "auth.jwks.url, auth.jwks.existingSecret or auth.jwks.existingConfigMap (JWTs, "
            "with auth.issuer), and/or auth.apiKeys.existingSecret",
        ),
        (
            ["auth.jwks.existingSecret=omnistock-jwks"],
            "auth.issuer is required with auth.jwks.existingSecret",
        ),
        (
            [
                "auth.issuer=https://login.example/",
                "auth.jwks.url=https://login.example/jwks.json",
                "auth.jwks.existingConfigMap=omnistock-jwks",
            ],
            "auth.jwks: set only one of url, existingSecret and existingConfigMap "
            "(found auth.jwks.url, auth.jwks.existingConfigMap)",
        ),
    ],
    ids=["nothing", "jwks-without-issuer", "two-jwks"],
)
def test_an_install_without_a_usable_credential_source_fails_naming_the_values(
    sets: list[str], complaint: str
) -> None:
    done = helm_template(sets=sets)

    assert done.returncode != 0
    assert complaint in done.stderr, done.stderr


def test_api_keys_alone_need_no_issuer() -> None:
    done = helm_template(sets=["auth.apiKeys.existingSecret=omnistock-api-keys"])

    assert done.returncode == 0, done.stderr


def test_services_may_reach_the_issuer_they_fetch_keys_from(
    objects: dict[str, list[dict[str, Any]]],
) -> None:
    production = yaml.safe_load((CHART / "ci" / "production-values.yaml").read_text())
    jwks = production["auth"]["jwks"]
    policies = {
        p["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/name"]: p
        for p in of_kind(objects["production-values"], "NetworkPolicy")
    }
    issuer = {"ports": [{"protocol": "TCP", "port": 443}], "to": jwks["networkPeers"]}

    assert jwks["url"].startswith("https://login.retailer.example/")
    for service in chart_services():
        assert issuer in policies[service]["spec"]["egress"], service
    assert issuer not in policies["topic-operator"]["spec"]["egress"]
    # A mounted JWKS needs no way out.
    for policy in of_kind(objects["default-values"], "NetworkPolicy"):
        if policy["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/name"] in (
            chart_services()
        ):
            ports = {p["port"] for rule in policy["spec"]["egress"] for p in rule["ports"]}
            assert 443 not in ports, policy["metadata"]["name"]


def test_the_dev_profile_trusts_the_dev_stacks_issuer() -> None:
    # So `omnistock dev token --role ROLE` mints tokens a skaffold dev cluster accepts.
    auth = yaml.safe_load((CHART / "ci" / "dev-values.yaml").read_text())["auth"]
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())["auth"]

    assert auth["issuer"] == DEV_ISSUER
    assert auth.get("audience", defaults["audience"]) == DEV_AUDIENCE

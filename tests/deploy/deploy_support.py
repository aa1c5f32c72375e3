"""Paths of the deployment checkers (tools/deploy, installed by scripts/setup) and of the
chart, and rendering helpers shared by the tests in tests/deploy."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "omnistock"
CI_VALUES = sorted((CHART / "ci").glob("*.yaml"))
#: The chart's defaults and the credential source there is no default for.
DEFAULT_VALUES = CHART / "ci" / "default-values.yaml"
TOOLS = ROOT / "tools" / "deploy" / ".venv" / "bin"
#: The custom resource APIs a full cluster has (the Prometheus operator's and our own).
API_VERSIONS = (
    "omnistock.io/v1alpha1/KafkaTopic",
    "monitoring.coreos.com/v1/ServiceMonitor",
    "monitoring.coreos.com/v1/PrometheusRule",
)
RELEASE = "omnistock"
NAMESPACE = "shop"


def tool(name: str) -> str:
    """A checker's path; setup installs them all, so a missing one is a failure, not a skip."""
    path = TOOLS / name
    if not path.exists():
        found = shutil.which(name)
        assert found, f"{name} is missing: run ./scripts/setup (it installs {TOOLS})"
        return found
    return str(path)


def run(args: Sequence[str], *, check: bool = True, cwd: Path | None = None) -> str:
    done = subprocess.run(args, capture_output=True, text=True, cwd=cwd, timeout=600, check=False)
    if check:
        assert done.returncode == 0, f"{' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


def helm_template(
    chart: Path = CHART,
    values: Iterable[Path] = (),
    sets: Iterable[str] = (),
    api_versions: Iterable[str] = API_VERSIONS,
    release: str = RELEASE,
) -> subprocess.CompletedProcess[str]:
    args = [tool("helm"), "template", release, str(chart), "--namespace", NAMESPACE]
    for path in values:
        args += ["--values", str(path)]
    for assignment in sets:
        args += ["--set", assignment]
    for api in api_versions:
        args += ["--api-versions", api]
    return subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)


def documents(manifest: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(manifest) if doc]


def render(**kwargs: Any) -> list[dict[str, Any]]:
    done = helm_template(**kwargs)
    assert done.returncode == 0, done.stderr
    return documents(done.stdout)


def of_kind(objects: Iterable[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def pod_template(obj: dict[str, Any]) -> dict[str, Any] | None:
    """The pod a workload runs (metadata and spec), or None for anything else."""
    if obj["kind"] in ("Deployment", "Job"):
        template: dict[str, Any] = obj["spec"]["template"]
        return template
    if obj["kind"] == "CronJob":
        template = obj["spec"]["jobTemplate"]["spec"]["template"]
        return template
    if obj["kind"] == "Pod":
        return obj
    return None


def pod_specs(objects: Iterable[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for obj in objects:
        template = pod_template(obj)
        if template is not None:
            yield obj["metadata"]["name"], template["spec"]


def service_names() -> list[str]:
    """Every service of the workspace (a folder with a pyproject.toml under services/)."""
    return sorted(
        path.parent.name
        for path in (ROOT / "services").glob("*/pyproject.toml")
        if path.parent.name != "topic-operator"
    )


def chart_services() -> list[str]:
    """The services the chart deploys: every workspace service, and possibly one being
    built on another branch that the chart already knows."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    return sorted(values["services"])

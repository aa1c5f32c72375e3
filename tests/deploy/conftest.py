from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from deploy_support import CHART, CI_VALUES, documents, helm_template

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def chart_with_monitoring_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the chart with one alert rules file and one dashboard of the tests' own
    (the real ones belong to the observability work and may or may not be there)."""
    chart = tmp_path_factory.mktemp("chart") / "omnistock"
    shutil.copytree(CHART, chart)
    for folder in ("prometheus", "grafana"):
        shutil.rmtree(chart / "files" / folder, ignore_errors=True)
        (chart / "files" / folder).mkdir(parents=True)
    shutil.copy(FIXTURES / "omnistock-test.rules.yaml", chart / "files" / "prometheus")
    shutil.copy(FIXTURES / "omnistock-test.json", chart / "files" / "grafana")
    return chart


@pytest.fixture(scope="session")
def renders(chart_with_monitoring_files: Path) -> dict[str, str]:
    """The chart rendered once per session with each values file of ci/, in a cluster
    with every optional API: name -> manifest."""
    out = {}
    for values in CI_VALUES:
        done = helm_template(chart_with_monitoring_files, values=[values])
        assert done.returncode == 0, f"{values.name}: {done.stderr}"
        out[values.stem] = done.stdout
    return out


@pytest.fixture(scope="session")
def objects(renders: dict[str, str]) -> dict[str, list[dict[str, Any]]]:
    return {name: documents(manifest) for name, manifest in renders.items()}


@pytest.fixture(scope="session")
def default_objects(objects: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    return objects["default-values"]


@pytest.fixture(scope="session")
def production_objects(objects: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    return objects["production-values"]

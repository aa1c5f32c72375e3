"""Dockerfiles (hadolint), skaffold.yaml against the chart, and checkov on the rendered
chart. No Docker engine runs here: images are linted, not built."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_support import ROOT, pod_specs, run, service_names, tool

SKAFFOLD = yaml.safe_load((ROOT / "skaffold.yaml").read_text())
DOCKERFILES = sorted((ROOT / "services").glob("*/Dockerfile"))
SKIPS: dict[str, str] = yaml.safe_load((Path(__file__).parent / "checkov_skips.yaml").read_text())


def test_hadolint_passes_on_every_dockerfile() -> None:
    assert DOCKERFILES
    run([tool("hadolint"), "--failure-threshold", "info", *map(str, DOCKERFILES)])


def test_every_service_and_the_operator_have_an_image() -> None:
    folders = {path.parent.name for path in DOCKERFILES}

    assert {*service_names(), "topic-operator"} <= folders


def test_images_are_multi_stage_non_root_and_locked() -> None:
    for dockerfile in DOCKERFILES:
        text = dockerfile.read_text()
        stages = re.findall(r"^FROM\s+(\S+)", text, re.MULTILINE)
        final = text[text.rindex("\nFROM ") :]
        package = f"omnistock-{dockerfile.parent.name}"
        assert len(stages) >= 3, dockerfile  # uv, build, runtime
        assert "uv sync --frozen --no-dev" in text, dockerfile
        assert f"--package {package}" in text, dockerfile
        assert "USER 10001:10001" in final, dockerfile
        # The runtime stage gets the environment only: no uv, no compilers, no sources.
        assert re.findall(r"^COPY .*", final, re.MULTILINE) == [
            "COPY --from=build /app/.venv /app/.venv"
        ], dockerfile
        assert not re.search(r"^HEALTHCHECK", text, re.MULTILINE), dockerfile
        [base] = re.findall(r"^ARG PYTHON_IMAGE=(\S+)", text, re.MULTILINE)
        assert "-slim" in base, dockerfile
        assert stages[1] == stages[-1] == "${PYTHON_IMAGE}", dockerfile


def _artifacts() -> dict[str, dict[str, Any]]:
    return {artifact["image"]: artifact for artifact in SKAFFOLD["build"]["artifacts"]}


def test_every_path_skaffold_names_exists() -> None:
    assert SKAFFOLD["apiVersion"].startswith("skaffold/v4")
    releases = SKAFFOLD["deploy"]["helm"]["releases"] + [
        release
        for profile in SKAFFOLD["profiles"]
        for release in profile["deploy"]["helm"]["releases"]
    ]
    for artifact in _artifacts().values():
        context = ROOT / artifact["context"]
        assert context.is_dir(), artifact
        assert (context / artifact["docker"]["dockerfile"]).is_file(), artifact
    for release in releases:
        assert (ROOT / release["chartPath"] / "Chart.yaml").is_file(), release
        for values in release["valuesFiles"]:
            assert (ROOT / values).is_file(), values


def test_skaffold_builds_every_image_the_chart_references(
    objects: dict[str, list[dict[str, Any]]],
) -> None:
    built = set(_artifacts())
    for rendered in objects.values():
        for name, spec in pod_specs(rendered):
            for container in spec["containers"]:
                repository = re.split(r"[:@]", container["image"])[0]
                assert repository in built, (name, container["image"])
    for service in [*service_names(), "topic-operator"]:
        assert f"omnistock/{service}" in built


def test_skaffold_templates_each_built_image_into_the_values() -> None:
    values = yaml.safe_load((ROOT / "helm" / "omnistock" / "values.yaml").read_text())
    releases = [SKAFFOLD["deploy"]["helm"]["releases"][0]] + [
        profile["deploy"]["helm"]["releases"][0] for profile in SKAFFOLD["profiles"]
    ]
    for release in releases:
        templates = release["setValueTemplates"]
        for image in _artifacts():
            variable = re.sub(r"[^A-Za-z0-9]", "_", image)
            [key] = [k for k, v in templates.items() if v == f"{{{{.IMAGE_REPO_{variable}}}}}"]
            assert templates[key.replace(".repository", ".tag")].startswith(
                f"{{{{.IMAGE_TAG_{variable}}}}}"
            )
            node = values
            for part in key.split(".")[:-1]:
                node = node[part]
            assert node["repository"] == image, key
    # Profiles replace whole sections; nothing patches a list position.
    assert all("patches" not in profile for profile in SKAFFOLD["profiles"])


# Checkov takes ~11 s of CPU; on a machine shared with other work its wall time stretches.
@pytest.mark.timeout(900)
def test_checkov_passes_on_the_rendered_chart(
    objects: dict[str, list[dict[str, Any]]], tmp_path: Path
) -> None:
    assert all(reason.strip() for reason in SKIPS.values())
    unique = {json.dumps(o, sort_keys=True): o for rendered in objects.values() for o in rendered}
    manifest = tmp_path / "chart.yaml"
    manifest.write_text(yaml.safe_dump_all(list(unique.values())))
    output = run(
        [
            tool("checkov"),
            "--file",
            str(manifest),
            "--framework",
            "kubernetes",
            "--output",
            "json",
            "--skip-download",
            "--skip-check",
            ",".join(SKIPS),
        ],
        check=False,
    )
    report = json.loads(output[output.index("{") : output.rindex("}") + 1])
    failed = [
        f"{check['check_id']} {check['resource']}" for check in report["results"]["failed_checks"]
    ]
    assert not failed, "\n".join(failed)
    assert report["summary"]["passed"] > 1000
    # A check skipped for one object says why on that object (checkov.io/skip annotation).
    for check in report["results"]["skipped_checks"]:
        assert check["check_id"] in SKIPS or check["check_result"].get("suppress_comment"), check

"""The image's install steps, run for real without a Docker engine: the build context
(the repository less .dockerignore) and the Dockerfile's own `uv sync` commands must give
a working operator from uv.lock, without development dependencies."""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import subprocess
from pathlib import Path

from deploy_support import ROOT, run

DOCKERFILE = ROOT / "services" / "topic-operator" / "Dockerfile"


def _ignored(path: str, patterns: list[str]) -> bool:
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        if pattern.startswith("**/"):
            if any(fnmatch.fnmatch(part, pattern[3:]) for part in parts):
                return True
        elif any(fnmatch.fnmatch(prefix, pattern) for prefix in prefixes):
            return True
    return False


def _build_context(target: Path) -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    files = run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT)
    for name in files.splitlines():
        if (ROOT / name).is_file() and not _ignored(name, patterns):
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, target / name)


def test_the_dockerfile_installs_the_operator_from_the_lock(tmp_path: Path) -> None:
    context, venv = tmp_path / "src", tmp_path / "app" / ".venv"
    context.mkdir()
    _build_context(context)
    commands = [
        re.sub(r"\s+", " ", command.replace("\\\n", " ")).strip()
        for command in re.findall(r"^\s*(uv sync [^\n]*)", DOCKERFILE.read_text(), re.MULTILINE)
    ]
    uv = os.environ.get("UV") or shutil.which("uv")
    assert uv, "uv runs these tests (uv run), so it is there"
    env = {**os.environ, "UV_PROJECT_ENVIRONMENT": str(venv), "UV_LINK_MODE": "copy"}
    env.pop("VIRTUAL_ENV", None)

    assert len(commands) == 2  # dependencies from the lock alone, then the workspace
    # The first step sees only uv.lock and pyproject.toml (bind mounts).
    lock_only = tmp_path / "lock-only"
    lock_only.mkdir()
    for name in ("uv.lock", "pyproject.toml"):
        shutil.copy2(context / name, lock_only / name)
    for directory, command in zip((lock_only, context), commands, strict=True):
        done = subprocess.run(
            [uv, *command.split()[1:]],
            cwd=directory,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert done.returncode == 0, f"{command}\n{done.stderr}"

    python = str(venv / "bin" / "python")
    run([python, "-c", "import omnistock.topic_operator.main, kopf, aiokafka"])
    development = subprocess.run(
        [python, "-c", "import pytest"], capture_output=True, timeout=60, check=False
    )
    assert development.returncode != 0, "development dependencies leaked into the image"
    assert not (venv / "lib" / "python3.11" / "site-packages" / "omnistock" / "inventory").exists()

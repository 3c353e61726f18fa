"""The image's contract, checked without a container engine (none runs here).

The Dockerfile is parsed for its stages, user and entrypoint; its build stage is then replayed
on this machine: the files it copies, installed with its pip settings into a fresh virtualenv,
must give an `orgkeeper run` that starts (its imports resolve) outside this checkout, and no
development tooling (hack/orgkeeper_dev: the local control plane, the demo).
"""

from __future__ import annotations

import ast
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
COMPILERS = re.compile(r"\b(gcc|g\+\+|clang|cc|make|build-essential|rustc|cargo)\b")


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for key, args in self.instructions if key == keyword]

    def env(self) -> dict[str, str]:
        """ENV key=value pairs (the form this Dockerfile uses)."""
        found: dict[str, str] = {}
        for args in self.all("ENV"):
            for pair in shlex.split(args):
                key, _, value = pair.partition("=")
                found[key] = value
        return found


def parse(path: Path) -> list[Stage]:
    """Instructions per stage; continuation lines joined, comments dropped, ARGs substituted."""
    text = re.sub(r"\\\n", " ", path.read_text())
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "ARG" and not stages:
            name, _, default = rest.partition("=")
            args[name] = default
        elif keyword == "FROM":
            image = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args[m[1] or m[2]], rest)
            base, _, name = re.sub(r"\s+as\s+", " AS ", image, flags=re.IGNORECASE).partition(
                " AS "
            )
            stages.append(Stage(base.strip(), name.strip() or None))
        else:
            stages[-1].instructions.append((keyword, rest))
    return stages


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse(REPO / "Dockerfile")


def test_it_is_multi_stage_on_a_slim_python_base(stages: list[Stage]) -> None:
    build, runtime = stages[0], stages[-1]
    assert len(stages) == 2
    assert build.name == "build"
    for stage in stages:
        assert re.fullmatch(r"python:3\.11(\.\d+)?-slim(-\w+)?(@sha256:\w+)?", stage.base)
    assert build.base == runtime.base, "the virtualenv links to the build stage's interpreter"


def test_the_runtime_stage_only_copies_the_virtualenv(stages: list[Stage]) -> None:
    build, runtime = stages
    assert runtime.all("COPY") == ["--from=build /opt/orgkeeper /opt/orgkeeper"]
    assert any("python -m venv /opt/orgkeeper" in run for run in build.all("RUN"))
    # Nothing is installed on top of the slim base, so no compiler can be in the final image.
    assert runtime.all("RUN") == []
    assert not any(COMPILERS.search(run) for run in build.all("RUN"))


def test_it_runs_as_a_numeric_non_root_user(stages: list[Stage]) -> None:
    (user,) = stages[-1].all("USER")
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and gid.isdigit(), "a numeric user lets Kubernetes check runAsNonRoot"
    assert int(uid) != 0 and int(gid) != 0


def test_the_environment_and_entrypoint(stages: list[Stage]) -> None:
    runtime = stages[-1]
    env = runtime.env()
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["PATH"].split(":")[0] == "/opt/orgkeeper/bin"
    assert env["MALLOC_ARENA_MAX"] == "2", "the memory the bench measures"
    (entrypoint,) = runtime.all("ENTRYPOINT")
    assert json.loads(entrypoint) == ["orgkeeper", "run"], "exec form, so signals reach kopf"
    (exposed,) = runtime.all("EXPOSE")
    assert set(exposed.split()) == {"8080", "9090", "9443"}


def test_the_shipped_package_holds_no_development_tooling() -> None:
    """Nothing under operator/ imports the dev tooling, and no module but the kubeconfig
    client (exec credential plugins) starts processes: no cluster builders ship."""
    package = REPO / "operator" / "orgkeeper"
    imported: dict[str, set[str]] = {}
    for path in package.rglob("*.py"):
        modules = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module)
        imported[path.relative_to(package).as_posix()] = {m.split(".")[0] for m in modules}
    assert [name for name, modules in imported.items() if "orgkeeper_dev" in modules] == []
    assert [name for name, modules in imported.items() if "subprocess" in modules] == ["client.py"]


# A minute of pip (a build environment, the pinned wheels): in make test's leader lane, which
# has the time for it (tests/conftest.py).
@pytest.mark.lane("leader")
@pytest.mark.timeout(240)
def test_orgkeeper_run_works_after_the_build_stages_pip_install(
    stages: list[Stage], tmp_path: Path
) -> None:
    """Replays the build stage: its COPYs, then `pip install .` into a fresh virtualenv."""
    build = stages[0]
    context = tmp_path / "src"
    context.mkdir()
    for copy in build.all("COPY"):
        *sources, destination = copy.split()
        for source in sources:
            target = context / destination / (Path(source).name if destination == "./" else "")
            if (REPO / source).is_dir():
                shutil.copytree(
                    REPO / source,
                    target,
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"),
                )
            else:
                shutil.copy(REPO / source, target)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    # The stage's pip settings; its cache setting only makes an image smaller.
    env |= {k: v for k, v in build.env().items() if k != "PIP_NO_CACHE_DIR"}
    installed = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", "."],
        cwd=context,
        env=env,
        capture_output=True,
        text=True,
    )
    assert installed.returncode == 0, f"pip install . failed:\n{installed.stderr[-3000:]}"

    # Outside this checkout, with only the virtualenv: what the image's ENTRYPOINT runs.
    runtime_env = env | {"PATH": f"{venv / 'bin'}:{env.get('PATH', '')}", "PYTHONNOUSERSITE": "1"}
    usage = subprocess.run(
        ["orgkeeper", "run", "--help"],
        cwd=tmp_path,
        env=runtime_env,
        capture_output=True,
        text=True,
    )
    assert usage.returncode == 0, usage.stderr
    assert "--webhook-mode" in usage.stdout
    imported = subprocess.run(
        [
            "python",
            "-c",
            "import orgkeeper, orgkeeper.manager, kopf, kubernetes; print(orgkeeper.__file__)",
        ],
        cwd=tmp_path,
        env=runtime_env,
        capture_output=True,
        text=True,
    )
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout.strip().startswith(str(venv)), "imported from the checkout instead"
    tooling = subprocess.run(
        ["python", "-c", "import importlib.util; print(importlib.util.find_spec('orgkeeper_dev'))"],
        cwd=tmp_path,
        env=runtime_env,
        capture_output=True,
        text=True,
    )
    assert tooling.stdout.strip() == "None", "the image carries the development tooling"

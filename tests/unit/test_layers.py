"""The layers hold: what each floor may load, checked in a fresh interpreter (so an import
added anywhere below a module counts too)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from orgkeeper import domain

CLIENTS = ("kopf", "kubernetes", "aiohttp", "urllib3", "orgkeeper.kube", "orgkeeper.client")
ABOVE_DOMAIN = ("orgkeeper.controllers", "orgkeeper.handlers", "orgkeeper.manager")
DOMAIN_MODULES = sorted(
    f"orgkeeper.domain.{path.stem}"
    for path in Path(domain.__file__).parent.glob("*.py")
    if path.stem != "__init__"
)


def loaded_by(module: str) -> list[str]:
    return subprocess.run(
        [sys.executable, "-c", f"import sys, {module}; print('\\n'.join(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()


def matching(modules: list[str], prefixes: tuple[str, ...]) -> list[str]:
    return [m for m in modules if m in prefixes or m.startswith(tuple(f"{p}." for p in prefixes))]


@pytest.mark.parametrize("module", DOMAIN_MODULES)
def test_the_domain_loads_no_client_and_nothing_above_it(module: str) -> None:
    assert matching(loaded_by(module), CLIENTS + ABOVE_DOMAIN) == []


@pytest.mark.parametrize(
    ("module", "above"),
    [
        ("orgkeeper.kube", ("orgkeeper.controllers", "orgkeeper.handlers", "kopf")),
        ("orgkeeper.controllers.organization", ("orgkeeper.handlers", "kopf")),
        ("orgkeeper.controllers.license", ("orgkeeper.handlers", "kopf")),
    ],
)
def test_the_adapter_and_the_controllers_load_nothing_above_them(
    module: str, above: tuple[str, ...]
) -> None:
    assert matching(loaded_by(module), above) == []


def test_every_domain_module_is_checked() -> None:
    assert "orgkeeper.domain.organization" in DOMAIN_MODULES and len(DOMAIN_MODULES) >= 8

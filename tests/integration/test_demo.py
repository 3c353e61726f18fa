"""`make demo` tells the whole story end to end (shortened windows, stopped at the end)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HACK = Path(__file__).resolve().parents[2] / "hack"


def test_the_demo_runs_end_to_end_and_reads_well(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "orgkeeper_dev.demo",
            "--state-dir",
            str(tmp_path / "demo"),
            "--stop",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(HACK)},  # as `make demo` runs it
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    chapters = [line for line in out.splitlines() if line.startswith("== ")]
    assert chapters == [
        "== A local control plane with orgkeeper installed ==",
        "== Two organizations sign up ==",
        "== The boundary: a stranger can't act for someone else ==",
        "== Members join, and their teams become RBAC ==",
        "== A data plane receives its license, implicitly ==",
        "== Ownership transfer: only to an Organization Admin ==",
        "== The org switcher ==",
        "== An SSO-only organization: a real login ==",
        "== Tiny goes quiet and is deactivated for inactivity ==",
        "== Support reactivates Tiny ==",
        "== Your turn ==",
    ]
    assert "spec.owner: sign-up is for yourself: you are signed in as mallory@evil.example" in out
    assert "spec.plan: Enterprise is a contract: only support (orgkeeper-support)" in out
    assert (
        "mallory@evil.example may not claim namespace mallory for Organization acme; "
        "only its Owner or support (orgkeeper-support) may set this label" in out
    )
    assert "they are not a member of the organization-admin team" in out
    assert "the e-mail founder@tiny.example is locked by deactivated organization tiny" in out
    assert "Deactivated: Inactive at" in out
    # A real login through the provider, and the same e-mail without it refused.
    assert "oidc:sam@secure.example" in out
    assert "  Sign-in:  SSO only: members act only through the identity provider" in out
    assert "error: the API server refused (403)" in out
    assert "Traceback" not in out + result.stderr
    assert not (tmp_path / "demo").exists(), "--stop leaves nothing running or behind"

"""Freed heap goes back to the system on glibc (the machines and the image this runs on)."""

from __future__ import annotations

import platform

import pytest

from orgkeeper.memory import malloc_trim


@pytest.mark.skipif(
    platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's; elsewhere it is absent"
)
def test_malloc_trim_is_found_and_runs_on_glibc() -> None:
    trim = malloc_trim()
    assert trim is not None
    assert trim() in (0, 1)  # 1: memory was released, 0: there was none to release

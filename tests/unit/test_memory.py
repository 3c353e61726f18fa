"""Freed heap goes back to the system on glibc (the machines and the image this runs on), and
the threads' malloc arenas are capped."""

from __future__ import annotations

import platform

import pytest

from orgkeeper.memory import ARENAS, limit_arenas, malloc_trim

GLIBC = platform.libc_ver()[0] == "glibc"


@pytest.mark.skipif(not GLIBC, reason="malloc_trim is glibc's; elsewhere it is absent")
def test_malloc_trim_is_found_and_runs_on_glibc() -> None:
    trim = malloc_trim()
    assert trim is not None
    assert trim() in (0, 1)  # 1: memory was released, 0: there was none to release


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's; elsewhere it is absent")
def test_arenas_are_capped_on_glibc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    assert limit_arenas(ARENAS)


def test_an_explicit_malloc_arena_max_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert not limit_arenas(ARENAS)

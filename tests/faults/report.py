"""The fault suite's tally: one row per fault, how many trials ran and how many passed.

Tests record every trial here (`Trials.trial`); the package conftest prints the table at the end
of the pytest run and writes it to .cache/faults/report.md.
"""

from __future__ import annotations

import contextlib
import os
import random
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
REPORT_PATH = REPO / ".cache" / "faults" / "report.md"

# `make faults` sets ORGKEEPER_FAULT_TRIALS=20; the bounded run inside `make test` keeps 3.
TRIALS = int(os.environ.get("ORGKEEPER_FAULT_TRIALS", "3"))
# Every random choice (when to kill, which transfer goes first, generated bodies) comes from
# a generator seeded with this and the fault's name, so a failing trial can be replayed.
SEED = int(os.environ.get("ORGKEEPER_FAULT_SEED", "20261126"))
# kube-apiserver and etcd restarts are slower trials: a quarter as many (at least one).
RESTARTS = int(os.environ.get("ORGKEEPER_FAULT_RESTARTS", str(max(1, TRIALS // 4))))
# Members of the org that is deactivated and reactivated under kills (`make faults`: 500).
MEMBERS = int(os.environ.get("ORGKEEPER_FAULT_MEMBERS", "100"))
# Generated bodies per kind in the property-based tests (`make faults`: 100).
EXAMPLES = int(os.environ.get("ORGKEEPER_FAULT_EXAMPLES", "15"))


@dataclass
class Row:
    fault: str
    trials: int = 0
    passes: int = 0
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class Tally:
    rows: dict[str, Row] = field(default_factory=dict)

    def record(self, fault: str, passed: bool, seconds: float, failure: str = "") -> None:
        row = self.rows.setdefault(fault, Row(fault))
        row.trials += 1
        row.passes += int(passed)
        row.seconds += seconds
        if failure:
            row.failures.append(failure)

    def note(self, fault: str, text: str) -> None:
        """Something about how the fault was applied (the window kills were drawn from, say)."""
        self.rows.setdefault(fault, Row(fault)).notes.append(text)

    def table(self) -> str:
        lines = [
            "| fault | trials | passes | mean s/trial | how |",
            "|---|---:|---:|---:|---|",
        ]
        for row in self.rows.values():
            mean = row.seconds / row.trials if row.trials else 0.0
            how = "; ".join(row.notes)
            lines.append(f"| {row.fault} | {row.trials} | {row.passes} | {mean:.1f} | {how} |")
        return "\n".join(lines)

    def markdown(self) -> str:
        failures = [
            f"- {row.fault}: {failure}" for row in self.rows.values() for failure in row.failures
        ]
        header = (
            f"Fault suite: {TRIALS} trial(s) per fault, seed {SEED}, "
            f"{time.strftime('%Y-%m-%d %H:%M:%S %Z')}\n\n"
        )
        body = header + self.table() + "\n"
        if failures:
            body += "\nFailed trials:\n\n" + "\n".join(failures) + "\n"
        return body

    def write(self, path: Path = REPORT_PATH) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.markdown())
        return path


TALLY = Tally()


def rng(fault: str, trial: int) -> random.Random:
    """The seeded generator of one trial of one fault."""
    return random.Random(f"{SEED}:{fault}:{trial}")


class Trials:
    """Trials of one test, possibly of several faults, recorded one by one.

    `with trials.trial(fault, index) as rng:` runs one trial with its seeded generator; a
    failure is recorded and kept, not raised, so the next trials still run and the table shows
    how many pass. `check()` at the end fails the test if any trial failed.
    """

    def __init__(self) -> None:
        self.failed: list[str] = []

    @contextlib.contextmanager
    def trial(self, fault: str, index: int) -> Iterator[random.Random]:
        started = time.monotonic()
        try:
            yield rng(fault, index)
        except Exception as error:
            first = " / ".join(f"{type(error).__name__}: {error}".splitlines()[:4])[:600]
            TALLY.record(fault, False, time.monotonic() - started, f"trial {index}: {first}")
            where = "".join(traceback.format_tb(error.__traceback__)[-2:])
            self.failed.append(f"{fault}, trial {index} (seed {SEED}): {error}\n{where}")
        else:
            TALLY.record(fault, True, time.monotonic() - started)

    def check(self) -> None:
        if self.failed:
            raise AssertionError(
                f"{len(self.failed)} trial(s) failed:\n\n" + "\n\n".join(self.failed)
            )


@contextlib.contextmanager
def once(fault: str) -> Iterator[random.Random]:
    """A fault exercised once by a test: recorded, and raised if it fails."""
    trials = Trials()
    with trials.trial(fault, 0) as generator:
        yield generator
    trials.check()

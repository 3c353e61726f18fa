"""Compares two probes of hack/memprobe/sitecustomize.py: `compare.py DIR A B [TRACEBACKS]`;
`compare.py DIR --trim` tabulates the SIGUSR2 probes (trim-N.json) of DIR, oldest first."""

from __future__ import annotations

import json
import sys
import tracemalloc
from pathlib import Path


def trims(directory: Path) -> None:
    """Resident memory after a forced trim, per probe: where it grew (pymalloc or malloc)."""
    found = sorted(directory.glob("trim-*.json"), key=lambda path: int(path.stem.split("-")[1]))
    print("probe  VmRSS KiB  anon KiB  heap KiB  pymalloc blocks  threads  tasks")
    for path in found:
        probe = json.loads(path.read_text())
        print(
            f"{path.stem:>6} {probe['vmrss_kib']:>10} {probe['smaps'].get('anon', 0):>9} "
            f"{probe['smaps'].get('[heap]', 0):>9} {probe['blocks']:>16} {probe['threads']:>8} "
            f"{probe['tasks']:>6}"
        )


def main(directory: Path, a: int, b: int, tracebacks: int = 12) -> None:
    before = dict(json.loads((directory / f"types-{a}.json").read_text())["counts"])
    after = dict(json.loads((directory / f"types-{b}.json").read_text())["counts"])
    grown = sorted(((after.get(k, 0) - before.get(k, 0), k) for k in before | after), reverse=True)
    print("== live objects per type, growth")
    for count, kind in grown[:30]:
        if count:
            print(f"{count:+8d} {kind}")
    first, second = directory / f"snap-{a}.pickle", directory / f"snap-{b}.pickle"
    if not (first.exists() and second.exists()):
        return
    ignored = [tracemalloc.Filter(False, tracemalloc.__file__)]
    old = tracemalloc.Snapshot.load(str(first)).filter_traces(ignored)
    new = tracemalloc.Snapshot.load(str(second)).filter_traces(ignored)
    print("== traced memory, growth by line")
    for stat in new.compare_to(old, "lineno")[:25]:
        print(stat)
    print("== by traceback")
    for stat in new.compare_to(old, "traceback")[:tracebacks]:
        print(f"--- {stat.size_diff / 1024:+.1f} KiB, {stat.count_diff:+d} blocks")
        print("\n".join(stat.traceback.format()[-30:]))


if __name__ == "__main__":
    if sys.argv[2:3] == ["--trim"]:
        trims(Path(sys.argv[1]))
        sys.exit(0)
    main(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), *map(int, sys.argv[4:5]))

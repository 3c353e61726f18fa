"""A memory probe for a running `orgkeeper run`, outside the operator's code (off unless asked).

    MEMPROBE_DIR=/tmp/probe PYTHONPATH=hack/memprobe orgkeeper run ...   # or the fault suite
    kill -USR1 <pid>   # 1st: starts tracemalloc (not if MEMPROBE_FRAMES=0); each next: a snapshot
    kill -USR2 <pid>   # collects, malloc_trim(0)s, then measures (no tracemalloc needed)

Each signal writes types-N.json (live objects per type, asyncio tasks, threads) and, once
tracing, snap-N.pickle; `python hack/memprobe/compare.py DIR A B` compares two of them.
SIGUSR2 writes trim-N.json: VmRSS after a forced malloc_trim, pymalloc's allocated blocks
(strings too, which gc.get_objects() never lists), resident memory per kind of mapping
(/proc/self/smaps: heap, anonymous, files), threads, and pymalloc's own statistics
(sys._debugmallocstats) as trim-N.txt; `compare.py DIR --trim` tabulates them all.
"""

from __future__ import annotations

import os
import sys

_DIR = os.environ.get("MEMPROBE_DIR", "")
if _DIR and "orgkeeper.cli" in " ".join(getattr(sys, "orig_argv", [])) + " ".join(sys.argv):
    import asyncio.tasks
    import collections
    import gc
    import json
    import signal
    import threading
    import traceback
    import tracemalloc
    from pathlib import Path
    from types import FrameType

    _OUT = Path(_DIR)

    _taken = [0]
    # MEMPROBE_FRAMES=0: SIGUSR1 counts live objects only, never starts tracemalloc.
    _FRAMES = int(os.environ.get("MEMPROBE_FRAMES", "30"))
    # MEMPROBE_COLLECT=0: SIGUSR1 counts without a collection first (garbage counted too, and
    # the operator's own collections undisturbed: gc_stats tells what they found).
    _COLLECT = os.environ.get("MEMPROBE_COLLECT", "1") != "0"
    # MEMPROBE_COUNT=0: SIGUSR1 counts no objects (light: the collector's statistics only).
    _COUNT = os.environ.get("MEMPROBE_COUNT", "1") != "0"

    def _type_name(obj: object) -> str:
        kind = type(obj)
        return f"{getattr(kind, '__module__', '?')}.{getattr(kind, '__qualname__', '?')}"

    def _dump(signum: int, frame: FrameType | None) -> None:
        _taken[0] += 1
        n = _taken[0]
        try:  # an exception here would surface in the event loop and stop the operator
            stats = gc.get_stats()  # the collector's work so far, before this probe's
            garbage: collections.Counter[str] = collections.Counter()
            if _COLLECT:  # with DEBUG_SAVEALL, what the collection finds is kept to be counted
                gc.set_debug(gc.DEBUG_SAVEALL)
                try:
                    gc.collect()
                    garbage.update(map(_type_name, gc.garbage))
                finally:
                    gc.garbage.clear()
                    gc.set_debug(0)
            if tracemalloc.is_tracing():
                tracemalloc.take_snapshot().dump(str(_OUT / f"snap-{n}.pickle"))
            elif _FRAMES:  # tracing from the start would slow the operator's start past its probes
                tracemalloc.start(_FRAMES)
            tasks = list(getattr(asyncio.tasks, "_all_tasks", ()))
            objects = gc.get_objects() if _COUNT else []
            found = {
                "counts": collections.Counter(map(_type_name, objects)).most_common(),
                "tasks": collections.Counter(t.get_name()[:50] for t in tasks).most_common(),
                "threads": [thread.name for thread in threading.enumerate()],
                "gc_stats": stats,
                "garbage": garbage.most_common(),
                "gc_count": gc.get_count(),
            }
            del objects
            (_OUT / f"types-{n}.json").write_text(json.dumps(found))
        except BaseException:
            with (_OUT / "errors.txt").open("a") as out:
                out.write(traceback.format_exc())
        finally:
            (_OUT / f"done-{n}").write_text("done")

    def _smaps() -> tuple[dict[str, int], dict[str, list[int]]]:
        """Resident KiB per kind of mapping ([heap], [stack], anon, or the file's name), and
        each anonymous mapping's size and resident KiB by its start address."""
        rss: dict[str, int] = collections.Counter()
        anon: dict[str, list[int]] = {}
        kind = start = ""
        size = 0
        for line in Path("/proc/self/smaps").read_text().splitlines():
            fields = line.split()
            if fields and not fields[0].endswith(":"):  # a mapping's header line
                kind = fields[5] if len(fields) > 5 else "anon"
                kind = kind.rsplit("/", 1)[-1]
                start = fields[0].split("-")[0]
            elif fields and fields[0] == "Size:":
                size = int(fields[1])
            elif fields and fields[0] == "Rss:":
                rss[kind] += int(fields[1])
                if kind in ("anon", "[heap]") and int(fields[1]):
                    anon[start] = [size, int(fields[1])]
        return dict(rss), anon

    def _mallinfo() -> dict[str, int]:
        """glibc's mallinfo2: bytes in use (uordblks), free in the heaps (fordblks), mmapped."""
        import ctypes

        class Info(ctypes.Structure):
            _fields_ = [
                (name, ctypes.c_size_t)
                for name in (
                    "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
                    "uordblks", "fordblks", "keepcost",
                )
            ]  # fmt: skip

        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = Info
        info = libc.mallinfo2()
        return {name: int(getattr(info, name)) for name, _ in Info._fields_}

    def _trim(signum: int, frame: FrameType | None) -> None:
        _taken[0] += 1
        n = _taken[0]
        try:
            import ctypes

            # What a full collection finds (cyclic garbage left for generation 2), and the
            # collector's counts so far.
            pending, stats = gc.get_count(), gc.get_stats()
            collected = gc.collect()
            ctypes.CDLL("libc.so.6").malloc_trim(0)
            status = Path("/proc/self/status").read_text().splitlines()
            found = {
                "vmrss_kib": next(int(s.split()[1]) for s in status if s.startswith("VmRSS:")),
                "blocks": sys.getallocatedblocks(),
                "mallinfo": _mallinfo(),
                "smaps": _smaps()[0],
                "anon": _smaps()[1],
                "threads": len(threading.enumerate()),
                "thread_names": [thread.name for thread in threading.enumerate()],
                "tasks": len(getattr(asyncio.tasks, "_all_tasks", ())),
                "gc_objects": len(gc.get_objects()),
                "gc_collected": collected,
                "gc_count_before": pending,
                "gc_stats_before": stats,
            }
            (_OUT / f"trim-{n}.json").write_text(json.dumps(found))
            saved = os.dup(2)  # _debugmallocstats writes to the C stderr
            with (_OUT / f"trim-{n}.txt").open("w") as out:
                os.dup2(out.fileno(), 2)
                try:
                    sys._debugmallocstats()
                finally:
                    os.dup2(saved, 2)
                    os.close(saved)
        except BaseException:
            with (_OUT / "errors.txt").open("a") as out:
                out.write(traceback.format_exc())
        finally:
            (_OUT / f"done-{n}").write_text("done")

    signal.signal(signal.SIGUSR1, _dump)
    signal.signal(signal.SIGUSR2, _trim)

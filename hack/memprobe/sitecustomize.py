"""A memory probe for a running `orgkeeper run`, outside the operator's code (off unless asked).

    MEMPROBE_DIR=/tmp/probe PYTHONPATH=hack/memprobe orgkeeper run ...   # or the fault suite
    kill -USR1 <pid>   # 1st: starts tracemalloc; each next one: a snapshot

Each signal writes types-N.json (live objects per type, asyncio tasks, threads) and, once
tracing, snap-N.pickle; `python hack/memprobe/compare.py DIR A B` compares two of them.
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

    def _type_name(obj: object) -> str:
        kind = type(obj)
        return f"{getattr(kind, '__module__', '?')}.{getattr(kind, '__qualname__', '?')}"

    def _dump(signum: int, frame: FrameType | None) -> None:
        _taken[0] += 1
        n = _taken[0]
        try:  # an exception here would surface in the event loop and stop the operator
            gc.collect()
            if tracemalloc.is_tracing():
                tracemalloc.take_snapshot().dump(str(_OUT / f"snap-{n}.pickle"))
            else:  # tracing from the start would slow the operator's start past its probes
                tracemalloc.start(int(os.environ.get("MEMPROBE_FRAMES", "30")))
            tasks = list(getattr(asyncio.tasks, "_all_tasks", ()))
            found = {
                "counts": collections.Counter(map(_type_name, gc.get_objects())).most_common(),
                "tasks": collections.Counter(t.get_name()[:50] for t in tasks).most_common(),
                "threads": [thread.name for thread in threading.enumerate()],
            }
            (_OUT / f"types-{n}.json").write_text(json.dumps(found))
        except BaseException:
            with (_OUT / "errors.txt").open("a") as out:
                out.write(traceback.format_exc())
        finally:
            (_OUT / f"done-{n}").write_text("done")

    signal.signal(signal.SIGUSR1, _dump)

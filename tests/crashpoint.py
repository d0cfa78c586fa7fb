"""Run `gateway` as usual, but SIGKILL the process at the Nth call of one named step (test-side only).

    CRASH_AT="gateway.ledger:Ledger.event@5:after" python tests/crashpoint.py --config C run --once

The step is wrapped here, by name, before the command runs: nothing in gateway/ knows about it. `before`
dies as the step is entered (the previous step done, this one not begun), `after` as it returns (done,
the next not begun). A process that never reaches the Nth call ends normally.

A step done in a worker process (pipeline.py's workers, forked with the step already wrapped, each counting
its own calls) kills the gateway's main process with it: the whole gateway stops at that boundary.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def arm(spec: str) -> None:
    target, _, rest = spec.partition("@")
    count, _, when = rest.partition(":")
    module_name, _, attribute = target.partition(":")
    owner = importlib.import_module(module_name)
    *path, name = attribute.split(".")
    for part in path:
        owner = getattr(owner, part)
    original = getattr(owner, name)
    calls = 0
    gateway = os.getpid()

    def die() -> None:
        if os.getpid() != gateway:
            os.kill(gateway, signal.SIGKILL)
        os.kill(os.getpid(), signal.SIGKILL)

    def wrapped(*args, **kwargs):
        nonlocal calls
        calls += 1
        if calls == int(count) and when == "before":
            die()
        result = original(*args, **kwargs)
        if calls == int(count) and when != "before":
            die()
        return result

    setattr(owner, name, wrapped)


if __name__ == "__main__":
    if os.environ.get("CRASH_AT"):
        arm(os.environ["CRASH_AT"])
    from gateway.cli import main

    sys.exit(main(sys.argv[1:]))

"""Where build messages and stage output go: stdout, or stderr when a machine-readable reporter owns stdout."""
from __future__ import annotations

import sys
from typing import TextIO

_to_stderr = False


def use_stderr() -> None:
    """Send build messages and stage output to stderr from now on (the JSON-lines reporter owns stdout)."""
    global _to_stderr
    _to_stderr = True


def stream() -> TextIO:
    return sys.stderr if _to_stderr else sys.stdout


def say(message: str) -> None:
    out = stream()
    out.write(message + "\n")
    out.flush()


def progress(task: str, elapsed: float, phase: str) -> None:
    """A long stage is alive: a line on the console, or a ``progress`` event when the JSON-lines reporter owns stdout."""
    if _to_stderr:
        import json
        import time

        sys.stdout.write(json.dumps({"event": "progress", "task": task, "elapsed": round(elapsed, 1), "phase": phase,
                                     "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}) + "\n")
        sys.stdout.flush()
        return
    say(f"[{task}] still running ({int(elapsed) // 60}:{int(elapsed) % 60:02d}; last: {phase[:120]})")

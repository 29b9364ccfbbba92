"""Run one stage worker subprocess, streaming its output (for doit and the log) and keeping a tail."""
from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

FAILED_VERIFY_EXIT = 3  # verify finished and an artifact failed: the stage is stamped, the task fails


def console() -> "object":
    """Where build messages and stage output go: stdout, or stderr when a JSON-lines reporter owns stdout."""
    return sys.stderr if os.environ.get("INFBUILD_WORKER_OUTPUT") == "stderr" else sys.stdout


def say(message: str) -> None:
    stream = console()
    stream.write(message + "\n")  # type: ignore[attr-defined]
    stream.flush()  # type: ignore[attr-defined]


def run_worker(request: dict[str, Any], log_path: Path, tail_lines: int = 25) -> tuple[int, list[str]]:
    """Run ``python -m infbuild.stages`` on ``request``; return (exit code, last lines of output)."""
    request_path = log_path.with_name("request.json.tmp")
    request_path.write_text(json.dumps(request), encoding="utf-8")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    tail: collections.deque[str] = collections.deque(maxlen=tail_lines)
    echo = console()
    with open(log_path, "w", encoding="utf-8") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "infbuild.stages", str(request_path)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace",
            cwd=request["root"], env=env, start_new_session=True,
        )
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                log.write(line)
                tail.append(line.rstrip("\n"))
                echo.write(line)  # type: ignore[attr-defined]
                echo.flush()  # type: ignore[attr-defined]
            code = proc.wait()
        except BaseException:
            # Interrupted (Ctrl-C, SIGTERM): stop the worker's whole process group before unwinding.
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
            raise
        finally:
            request_path.unlink(missing_ok=True)
    return code, list(tail)

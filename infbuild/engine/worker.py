"""Run one stage worker subprocess (``python -m infbuild.stages``), streaming its output to the console and the
stage's log, and keeping a tail for the failure message."""
from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
from pathlib import Path

from ..console import stream
from ..stages.request import WorkerRequest


def run_worker(request: WorkerRequest, log_path: Path, tail_lines: int = 25) -> tuple[int, list[str]]:
    """Run the worker on ``request``; return (exit code, last lines of output)."""
    request_path = log_path.with_name("request.json.tmp")
    request.write(request_path)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    tail: collections.deque[str] = collections.deque(maxlen=tail_lines)
    echo = stream()
    with open(log_path, "w", encoding="utf-8") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "infbuild.stages", str(request_path)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace",
            cwd=request.root, env=env, start_new_session=True,
        )
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                log.write(line)
                tail.append(line.rstrip("\n"))
                echo.write(line)
                echo.flush()
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

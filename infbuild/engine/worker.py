"""Run one stage worker (``python -m infbuild.stages``, or a fork of the warm server: ``forkserver``), streaming
its output to the console and the stage's log, and keeping a tail for the failure message."""
from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Callable

from .. import settings
from ..console import progress, stream
from ..stages.request import WorkerRequest
from . import forkserver


def run_worker(request: WorkerRequest, log_path: Path, tail_lines: int = 25) -> tuple[int, list[str]]:
    """Run the worker on ``request``; return (exit code, last lines of output). CPU stages run in a fork of the warm
    server unless ``workers = "subprocess"``; CUDA stages always in a subprocess of their own (a process that
    forks never initialises CUDA)."""
    request_path = log_path.with_name("request.json.tmp")
    request.write(request_path)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    warm = None
    if request.device != "cuda" and settings.value("workers") == "warm":
        warm = forkserver.server()
    try:
        if warm is not None:
            return _forked(warm, request, str(request_path), env, log_path, tail_lines)
        return _subprocess(request, str(request_path), env, log_path, tail_lines)
    finally:
        request_path.unlink(missing_ok=True)


def _stream_lines(source: IO[str], log_path: Path, tail_lines: int, task: str = "") -> list[str]:
    tail: collections.deque[str] = collections.deque(maxlen=tail_lines)
    echo = stream()
    started = last = time.monotonic()
    done = threading.Event()
    quiet = float(settings.value("heartbeat_s"))  # a stage silent this long says it is alive

    def heartbeat() -> None:
        nonlocal last
        while not done.wait(1.0):
            if time.monotonic() - last >= quiet:
                last = time.monotonic()
                progress(task, last - started, tail[-1] if tail else "starting")

    threading.Thread(target=heartbeat, name="stage-heartbeat", daemon=True).start()
    try:
        with open(log_path, "w", encoding="utf-8") as log:
            for line in source:
                last = time.monotonic()
                log.write(line)
                tail.append(line.rstrip("\n"))
                echo.write(line)
                echo.flush()
    finally:
        done.set()
    return list(tail)


def _task(request: WorkerRequest) -> str:
    return f"{request.stage}:{request.recipe.get('name', '?')}"


def _kill(pid: int | None) -> None:
    if pid is None:
        return
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _subprocess(request: WorkerRequest, request_path: str, env: dict[str, str], log_path: Path,
                tail_lines: int) -> tuple[int, list[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "infbuild.stages", request_path],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace",
        cwd=request.root, env=env, start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        tail = _stream_lines(proc.stdout, log_path, tail_lines, _task(request))
        return proc.wait(), tail
    except BaseException:
        # Interrupted (Ctrl-C, SIGTERM): stop the worker's whole process group before unwinding.
        _kill(proc.pid)
        proc.wait()
        raise


def _forked(warm: forkserver.ForkServer, request: WorkerRequest, request_path: str, env: dict[str, str],
            log_path: Path, tail_lines: int) -> tuple[int, list[str]]:
    """The stage in a fork of the warm server: its output through a pipe, its exit code from the server."""
    read_end, write_end = os.pipe()
    child: list[int] = []
    result: list[int | BaseException] = []

    def ask(started: Callable[[int], None] = child.append) -> None:
        try:
            result.append(warm.run(request_path, request.root, env, write_end, started))
        except BaseException as exc:  # noqa: B036 - handed to the build thread, which raises it
            result.append(exc)

    asker = threading.Thread(target=ask, name="stage-worker", daemon=True)
    asker.start()
    try:
        with open(read_end, encoding="utf-8", errors="replace") as source:
            tail = _stream_lines(source, log_path, tail_lines, _task(request))
        asker.join()
    except BaseException:
        deadline = time.monotonic() + 5  # interrupted as it starts: learn its pid before unwinding, or it outlives us
        while not child and asker.is_alive() and time.monotonic() < deadline:
            asker.join(0.02)
        _kill(child[0] if child else None)
        asker.join(timeout=5)
        raise
    outcome = result[0] if result else forkserver.Unavailable("no answer from the warm worker")
    if isinstance(outcome, BaseException):
        if not child:  # it never started: run it cold instead
            return _subprocess(request, request_path, env, log_path, tail_lines)
        raise outcome
    return outcome, tail

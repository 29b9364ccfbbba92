"""Warm stage workers, like Bazel's persistent workers but with a process per stage: one server per build process,
started on the first CPU stage, imports torch, torch._inductor, the ONNX exporter and onnxruntime once (3-5 s that
every stage worker used to pay); each stage then runs in a fresh ``fork`` of it, so the isolation the workers exist
for stays:

- a crash, a leak or a hung compile is the child's: the server and the build go on (the child is its own session,
  killed as a group when the build is interrupted);
- a killed build leaves nothing behind: the server polls its parent and, once the build is gone, kills every child
  and exits (within half a second); a child whose server is gone exits too (``infbuild.stages.__main__``);
- CUDA is never initialised in a process that forks: the server only imports (importing torch initialises no
  device), and CUDA stages run as plain subprocesses (``run_worker``).

The server is single-threaded (a ``selectors`` loop over its socket, its clients and its children's pidfds), so a
fork never copies a lock another thread holds. Protocol over an AF_UNIX SOCK_SEQPACKET socket, one JSON message per
packet: the client sends ``{"request", "cwd", "env"}`` with the write end of its output pipe as an ancillary fd;
the server answers ``{"pid"}`` once forked and ``{"exit"}`` when the child has exited.
"""
from __future__ import annotations

import atexit
import json
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import IO, Any

PRELOAD = ("numpy", "torch", "torch._inductor", "torch.export", "torch.onnx", "onnx", "onnxscript", "onnxruntime")
MAX_MESSAGE = 1 << 20  # a request is a path, a folder and an environment


class Unavailable(Exception):
    """The server could not be started here (the build falls back to a subprocess per stage)."""


# --- the client, in the build process ------------------------------------------------------------------------

class ForkServer:
    """A running server and how to reach it."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="infbuild-fs-"))  # short: a unix socket path is at most 107 bytes
        self.address = str(self.folder / "socket")
        log_path = self.folder / "server.log"
        self.log = open(log_path, "ab")
        self.process = subprocess.Popen([sys.executable, "-m", "infbuild.engine.forkserver", self.address,
                                         str(os.getpid())], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                        stderr=self.log, start_new_session=True)
        assert self.process.stdout is not None
        ready = self.process.stdout.readline()  # the server says so once every module is imported
        if ready.strip() != b"ready":
            said = log_path.read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
            self.stop()
            raise Unavailable(f"the warm worker did not start: {said[0][:200]}")
        self.owner = os.getpid()

    def alive(self) -> bool:
        return self.owner == os.getpid() and self.process.poll() is None

    def run(self, request: str, cwd: str, env: dict[str, str], out: int, started: Any) -> int:
        """Run one stage worker in a fork; ``out``: the write end of its stdout+stderr; ``started(pid)`` is called
        once it runs (the caller kills the group on an interrupt). Returns its exit code."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as conn:
            conn.connect(self.address)
            socket.send_fds(conn, [json.dumps({"request": request, "cwd": cwd, "env": env}).encode()], [out])
            os.close(out)
            answer = json.loads(conn.recv(MAX_MESSAGE) or b"{}")
            if "pid" not in answer:
                raise Unavailable(f"the warm worker refused the stage: {answer.get('error', 'no answer')}")
            started(int(answer["pid"]))
            done = json.loads(conn.recv(MAX_MESSAGE) or b'{"exit": -9}')
            return int(done["exit"])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
        shutil.rmtree(self.folder, ignore_errors=True)


_server: ForkServer | None = None
_failed = False
_lock = threading.Lock()


def server() -> ForkServer | None:
    """This build process's server (started on first use), or None where it cannot run (then stages run as
    subprocesses, as before, and the build says why once)."""
    global _server, _failed
    with _lock:
        if _server is not None and _server.alive():
            return _server
        if _failed or not hasattr(os, "pidfd_open") or not hasattr(socket, "send_fds"):
            return None
        try:
            _server = ForkServer()
        except (Unavailable, OSError) as exc:
            _failed = True
            print(f"infbuild: stage workers start cold ({exc})", file=sys.stderr)
            return None
        atexit.register(_server.stop)
        return _server


# --- the server -------------------------------------------------------------------------------------------------

def _serve(address: str, parent: int) -> None:
    for name in PRELOAD:
        try:
            __import__(name)
        except ImportError as exc:  # an optional one missing: its stages import it themselves (and fail there)
            print(f"forkserver: not preloaded: {name} ({exc})", file=sys.stderr, flush=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(address)
    listener.listen(64)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ, "listen")
    children: dict[int, tuple[int, socket.socket]] = {}  # pidfd -> (pid, the client's connection)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    quiet = os.open(os.devnull, os.O_WRONLY)
    os.dup2(quiet, 1)  # the client reads nothing more from it (and fds 0-2 stay taken: forks dup2 onto them)
    os.close(quiet)
    while True:
        if os.getppid() != parent:  # the build is gone: so are its stages
            for pid, _ in children.values():
                _kill_group(pid)
            return
        for key, _ in selector.select(timeout=0.25):
            if key.data == "listen":
                conn, _ = listener.accept()
                selector.register(conn, selectors.EVENT_READ, "client")
            elif key.data == "client":
                conn = key.fileobj  # type: ignore[assignment]
                assert isinstance(conn, socket.socket)
                _take_request(conn, selector, listener, children)
            else:
                _reap(key.fd, selector, children)


def _take_request(conn: socket.socket, selector: selectors.BaseSelector, listener: socket.socket,
                  children: dict[int, tuple[int, socket.socket]]) -> None:
    """A client's request: fork its stage; a client that hung up kills its stage (the build was interrupted)."""
    try:
        message, fds, _, _ = socket.recv_fds(conn, MAX_MESSAGE, 1)
    except OSError:
        message, fds = b"", []
    if not message:
        selector.unregister(conn)
        for pid, owner in list(children.values()):
            if owner is conn:
                _kill_group(pid)
        conn.close()
        return
    try:
        request = json.loads(message)
        out = fds[0]
    except (ValueError, IndexError):
        conn.send(json.dumps({"error": "malformed request"}).encode())
        return
    pid = os.fork()
    if pid == 0:
        _child(request, out, [listener, conn, *(c for _, c in children.values())])
    os.close(out)
    pidfd = os.pidfd_open(pid)
    children[pidfd] = (pid, conn)
    selector.register(pidfd, selectors.EVENT_READ, "child")
    conn.send(json.dumps({"pid": pid}).encode())


def _reap(pidfd: int, selector: selectors.BaseSelector, children: dict[int, tuple[int, socket.socket]]) -> None:
    pid, conn = children.pop(pidfd)
    selector.unregister(pidfd)
    os.close(pidfd)
    _, status = os.waitpid(pid, 0)
    try:
        conn.send(json.dumps({"exit": os.waitstatus_to_exitcode(status)}).encode())
    except OSError:
        pass  # the client is gone


def _kill_group(pid: int) -> None:
    for kill in (os.killpg, os.kill):
        try:
            kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _child(request: dict[str, Any], out: int, inherited: list[socket.socket]) -> None:
    """In the fork: become the stage worker ``python -m infbuild.stages REQUEST`` would have been."""
    code = 1
    try:
        os.setsid()
        if out <= 2:
            out = os.dup(out)
        for sock in inherited:
            sock.close()
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(out, 1)
        os.dup2(out, 2)
        os.close(out)
        os.close(devnull)
        sys.stdout = _text(1)
        sys.stderr = _text(2)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_DFL)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        sys.argv = ["infbuild.stages", request["request"]]
        from ..stages.__main__ import main

        code = main([request["request"]])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # noqa: B036 - a bug in a stage: its traceback goes to the log, as a subprocess's would
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)


def _text(fd: int) -> IO[str]:
    return open(fd, "w", encoding="utf-8", errors="replace", buffering=1, closefd=False)


if __name__ == "__main__":
    _serve(sys.argv[1], int(sys.argv[2]))

"""The engine's locks: one build per artifacts tree (held for the life of the build process), and one GPU stage
at a time across threads, processes and concurrent builds."""
from __future__ import annotations

import errno
import fcntl
import os
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator

from ..console import say
from ..filelock import flocked

_held: dict[Path, IO[str]] = {}


def hold_build_lock(artifacts: Path) -> None:
    """Take the build lock of ``artifacts`` for the rest of this process (and its forked -n workers); a second
    build waits here, saying so. Taken before the first stage is checked, so the dep DB and manifest stay
    consistent whatever reporter doit runs with."""
    if artifacts in _held:
        return
    lock_dir = artifacts / ".infbuild"
    lock_dir.mkdir(parents=True, exist_ok=True)
    handle = open(lock_dir / "build.lock", "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        say(f"waiting for another build of {artifacts} to finish (pid {holder}) ...")
        fcntl.flock(handle, fcntl.LOCK_EX)
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    _held[artifacts] = handle


@contextmanager
def gpu_lock(artifacts: Path, needed: bool) -> Iterator[None]:
    """Serialize GPU stages across threads, processes and concurrent builds (even under `doit -n`)."""
    if not needed:
        yield
        return
    with flocked(artifacts / ".infbuild" / "gpu.lock",
                 lambda: say("waiting for the GPU lock: another stage is using the GPU")):
        yield


def check_writable(artifacts: Path) -> None:
    """Fail early, with the path, when the build could not record its work: a read-only artifacts folder, or a
    lock, DB or bookkeeping path that is not what it must be (an OSError naming the path)."""
    (artifacts / ".infbuild").mkdir(parents=True, exist_ok=True)
    for folder in (artifacts, artifacts / ".infbuild"):
        if not os.access(folder, os.W_OK | os.X_OK):
            raise PermissionError(errno.EACCES, "the folder is not writable", str(folder))
    for path in (artifacts / ".infbuild" / "build.lock", artifacts / ".infbuild" / "gpu.lock",
                 artifacts / ".manifest.lock", artifacts / ".doit.db"):
        if path.exists() and not path.is_file():
            raise IsADirectoryError(errno.EISDIR, "must be a file (remove it)", str(path))


def os_problem(exc: OSError) -> str:
    """One line for a file-system failure: which path, and why."""
    where = f"{exc.filename}" + (f" -> {exc.filename2}" if exc.filename2 else "") if exc.filename else "a file"
    return f"cannot write or read {where}: {exc.strerror or exc}"

"""A ``flock`` on a lock file (exclusive, or shared among readers), held for a ``with`` block: across threads,
processes and builds."""
from __future__ import annotations

import fcntl
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator


@contextmanager
def flocked(path: Path, waiting: Callable[[], None] | None = None, *, shared: bool = False) -> Iterator[None]:
    """Hold the lock on ``path`` (created with its folder); ``waiting()`` is called once if another holder makes
    this wait. ``shared``: beside other shared holders, never beside an exclusive one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, mode | fcntl.LOCK_NB)
        except BlockingIOError:
            if waiting is not None:
                waiting()
            fcntl.flock(handle, mode)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)

"""An exclusive ``flock`` on a lock file, held for a ``with`` block: across threads, processes and builds."""
from __future__ import annotations

import fcntl
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator


@contextmanager
def flocked(path: Path, waiting: Callable[[], None] | None = None) -> Iterator[None]:
    """Hold the lock on ``path`` (created with its folder); ``waiting()`` is called once if another holder makes
    this wait."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if waiting is not None:
                waiting()
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)

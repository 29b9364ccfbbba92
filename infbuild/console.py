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

"""What a stage folder holds: its outputs (``Outputs``, declared by each stage) and infbuild's own bookkeeping
beside them (the stamp, the worker's log, the folder's signature), and which file names may be outputs at all."""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Any, Iterable

STAMP = "stamp.json"
LOG = "worker.log"
SIGNATURE = "stage.sig"  # the folder's signature (infbuild.signing.stage_signature)
UNSTAMPED = {STAMP, LOG, SIGNATURE}


@dataclass(frozen=True)
class Outputs:
    """The files a stage must produce (exact names) and may produce (fnmatch patterns): a stamp, cache entry
    or restored folder holding anything else is not that stage's output, however its stamp is labelled."""

    required: tuple[str, ...]
    optional: tuple[str, ...] = ()

    def problem(self, names: Iterable[str]) -> str | None:
        """Why these file names are not exactly this stage's outputs (None when they are)."""
        names = set(names)
        missing = sorted(set(self.required) - names)
        if missing:
            return f"lacks the required output(s) {', '.join(missing)}"
        foreign = sorted(n for n in names - set(self.required)
                         if not any(fnmatch.fnmatchcase(n, p) for p in self.optional))
        if foreign:
            shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
            return f"holds file(s) this stage never produces: {shown}"
        return None


def unsafe_name(name: Any) -> str | None:
    """Why ``name`` cannot be a file of a stage folder (None when it can): relative, no '..', no absolute path,
    no backslashes or NULs, not infbuild's own bookkeeping."""
    if not isinstance(name, str) or not name or "\\" in name or "\x00" in name:
        return f"invalid file name {name!r}"
    if name.startswith("/") or any(part in ("..", ".", "") for part in name.split("/")):
        return f"file name {name!r} would escape the stage folder"
    if name in UNSTAMPED:
        return f"file name {name!r} is infbuild's own bookkeeping, never a stage output"
    return None

"""Why a stage is stale, as data (``Reason``: a kind and its detail), rendered as text only at the edge (status,
plan, the reporters), the way DVC's ``status()`` and doit's ``DependencyStatus`` keep theirs."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal[
    "never_built",       # no folder yet
    "unfinished",        # a folder without a valid stamp (an interrupted or damaged build)
    "upstream_missing",  # a stage it reads has no stamp: its key cannot be known
    "unreadable_input",  # a file its key reads cannot be read
    "key_changed",       # its inputs differ from the stamped ones (``parts`` says which)
    "damaged",           # the stamp no longer describes the folder (labels, outputs, sizes)
    "stage_rule",        # the stage's own rule (``Stage.stale``: a failed verification is redone)
    "upstream_rebuilt",  # a stage it reads will be rebuilt first
]


@dataclass(frozen=True)
class Reason:
    kind: Kind
    detail: str = ""  # the upstream stage, the error, the problem
    parts: tuple[str, ...] = ()  # key_changed: the parts of the key that differ ("recipe (dims)", "packages (…)")

    def __str__(self) -> str:
        if self.kind == "never_built":
            return "never built"
        if self.kind == "unfinished":
            return "no valid stamp (unfinished or damaged build)"
        if self.kind == "upstream_missing":
            return f"upstream stage {self.detail} is not built"
        if self.kind == "unreadable_input":
            return f"cannot read an input: {self.detail}"
        if self.kind == "key_changed":
            return "key changed: " + ", ".join(self.parts) if self.parts else "key changed"
        if self.kind == "upstream_rebuilt":
            return f"upstream {self.detail} will be rebuilt"
        return self.detail

"""What executing one stage came to: built, restored from a cache, or failed (with one located message)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Status = Literal["built", "restored", "failed"]


@dataclass(frozen=True)
class Outcome:
    task: str  # "stage:recipe"
    status: Status
    seconds: float = 0.0
    cache: str | None = None  # where it was restored from
    message: str | None = None  # why it failed
    stamped: bool = False  # failed, but stamped: a judging stage's verdict with failures (not a failed build)

    @property
    def ok(self) -> bool:
        return self.status != "failed"

    def values(self) -> dict[str, Any]:
        """What reporters see of a successful task (doit's task values)."""
        info: dict[str, Any] = {"outcome": self.status, "seconds": self.seconds}
        if self.cache:
            info["cache"] = self.cache
        if self.message is not None:
            info["message"] = self.message
        return {"infbuild": info}

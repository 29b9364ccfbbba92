"""doit reporter: doit's console lines plus a closing summary of what infbuild did — stages built, restored
from which cache and how long each took, up to date, failed."""
from __future__ import annotations

from collections import defaultdict
from typing import Any

from doit.reporter import ConsoleReporter


class SummaryReporter(ConsoleReporter):
    def __init__(self, outstream: Any, options: dict[str, Any]) -> None:
        super().__init__(outstream, options)
        self.built: list[float] = []
        self.restored: dict[str, list[float]] = defaultdict(list)
        self.uptodate = 0
        self.failed: list[str] = []

    def add_success(self, task: Any) -> None:
        super().add_success(task)
        info = (getattr(task, "values", None) or {}).get("infbuild")
        if not info:
            return
        if info.get("outcome") == "restored":
            self.restored[info.get("cache", "?")].append(info.get("seconds", 0.0))
        else:
            self.built.append(info.get("seconds", 0.0))

    def skip_uptodate(self, task: Any) -> None:
        super().skip_uptodate(task)
        if ":" in task.name:
            self.uptodate += 1

    def add_failure(self, task: Any, fail: Any) -> None:
        super().add_failure(task, fail)
        self.failed.append(task.name)

    def summary(self) -> str | None:
        if not (self.built or self.restored or self.uptodate or self.failed):
            return None
        parts = [f"{len(self.built)} built ({sum(self.built):.1f}s)"]
        for cache, seconds in self.restored.items():
            parts.append(f"{len(seconds)} restored from {cache} ({sum(seconds):.1f}s)")
        parts.append(f"{self.uptodate} up to date")
        if self.failed:
            parts.append(f"{len(self.failed)} failed ({', '.join(self.failed)})")
        return "infbuild: " + ", ".join(parts)

    def complete_run(self) -> None:
        super().complete_run()
        line = self.summary()
        if line and (self.built or self.restored or self.failed):
            self.outstream.write(line + "\n")

"""doit reporters. ``SummaryReporter`` (the default): doit's console lines, a progress prefix on terminals
([done/total elapsed] with built vs restored counts) and a closing summary. ``JsonLinesReporter``
(``--reporter infbuild-jsonl``): one JSON object per event for CI, with stage output sent to stderr."""
from __future__ import annotations

import json
import time
from collections import defaultdict
from typing import Any

from doit.exceptions import TaskFailed
from doit.reporter import ConsoleReporter

from .console import use_stderr


def _not_buildable(tasks: Any) -> dict[str, str]:
    """Tasks this host cannot build, with the reason (from the task's ``meta``, set by the doit adapter)."""
    out: dict[str, str] = {}
    for name, task in dict(tasks or {}).items():
        reason = ((getattr(task, "meta", None) or {}).get("infbuild") or {}).get("not_buildable")
        if reason:
            out[name] = reason
    return out


def _outcome(task: Any) -> dict[str, Any]:
    return (getattr(task, "values", None) or {}).get("infbuild") or {}


# Tasks whose failure a later task of this run reports (``meta.infbuild.reported_by``: verify for the artifacts it
# judges, the ``build`` gate for verify): they fail "softly" (a success to doit, a failure to these reporters), so
# verify and bench still judge and time a recipe's other artifacts. Filled by the reporter's ``initialize`` before
# any task runs (doit forks its workers after); empty under another reporter: then every failure fails its task.
SOFT: set[str] = set()
GATE = "build"


def soft_failures(tasks: Any, selected: Any) -> set[str]:
    """The tasks of this run that may fail softly: those whose reporting task runs too."""
    tasks = dict(tasks or {})
    closure: set[str] = set()
    todo = list(selected or [])
    while todo:
        name = todo.pop()
        if name in closure or name not in tasks:
            continue
        closure.add(name)
        todo += list(getattr(tasks[name], "task_dep", None) or [])
    return {name for name in closure
            if ((getattr(tasks[name], "meta", None) or {}).get("infbuild") or {}).get("reported_by") in closure}


def _soft_failure(task: Any) -> TaskFailed | None:
    """A task that failed softly, as doit's failure (None for a real success)."""
    info = _outcome(task)
    return TaskFailed(info.get("message") or "failed") if info.get("outcome") == "failed" else None


UP_TO_DATE_NOTES: dict[str, tuple[str, str]] = {}  # task -> (the task it reads that was rebuilt after it, why it
# is up to date nevertheless), filled by the up-to-date checks


class SummaryReporter(ConsoleReporter):
    """doit's console reporter, with one line per stage built or failed (not one per stage up to date: a no-op
    build of 50 recipes prints its summary, not 250 ``--`` lines) and a summary at the end."""

    def __init__(self, outstream: Any, options: dict[str, Any]) -> None:
        super().__init__(outstream, options)
        self.built: list[float] = []
        self.restored: dict[str, list[float]] = defaultdict(list)
        self.uptodate = 0
        self.ran: set[str] = set()  # tasks built or restored in this build
        self.failed: list[str] = []
        self.reasons: dict[str, str] = {}
        self.blocked: list[str] = []
        self.started = time.perf_counter()
        self.total = 0
        self.done = 0
        self.tty = bool(getattr(outstream, "isatty", lambda: False)())

    def initialize(self, tasks: Any, selected_tasks: Any) -> None:
        super().initialize(tasks, selected_tasks)
        SOFT.update(soft_failures(tasks, selected_tasks))
        blocked = _not_buildable(tasks)
        self.total = sum(1 for name in tasks if ":" in name and name not in blocked)

    def execute_task(self, task: Any) -> None:
        if self.tty and ":" in task.name:
            elapsed = time.perf_counter() - self.started
            restored = sum(len(v) for v in self.restored.values())
            self.write(f"\033[1m[{self.done + 1}/{self.total} {int(elapsed) // 60}:{int(elapsed) % 60:02d}] "
                       f"{task.name}\033[0m  (built {len(self.built)}, restored {restored}, up to date {self.uptodate})\n")
        if task.name != GATE:  # the gate only checks what the stages left: no line of its own
            super().execute_task(task)

    def add_success(self, task: Any) -> None:
        soft = _soft_failure(task)
        if soft is not None:
            return self.add_failure(task, soft)
        super().add_success(task)
        self.ran.add(task.name)
        info = _outcome(task)
        if not info:
            return
        self.done += 1
        if info.get("outcome") == "restored":
            self.restored[info.get("cache", "?")].append(info.get("seconds", 0.0))
        else:
            self.built.append(info.get("seconds", 0.0))

    def skip_uptodate(self, task: Any) -> None:
        if ":" not in task.name:
            return super().skip_uptodate(task)
        self.uptodate += 1
        self.done += 1
        upstream, note = UP_TO_DATE_NOTES.get(task.name, ("", ""))
        if upstream in self.ran:  # early cut-off in this build: say why it did not rebuild
            self.write(f"-- {task.name} (up to date: {note})\n")

    def add_failure(self, task: Any, fail: Any) -> None:
        if task.name == GATE and self.failed:  # the gate repeats the failures already reported
            return
        super().add_failure(task, fail)
        if fail.get_name() == "UnmetDependency":  # not run because something it needs failed: not a failure itself
            self.blocked.append(task.name)
            return
        self.failed.append(task.name)
        first = (str(getattr(fail, "message", "")) or "failed").strip().splitlines()[0]
        self.reasons[task.name] = first if first.startswith(task.name) else f"{task.name}: {first}"

    def summary(self) -> str | None:
        if not (self.built or self.restored or self.uptodate or self.failed):
            return None
        parts = [f"{len(self.built)} built ({sum(self.built):.1f}s)"]
        for cache, seconds in self.restored.items():
            parts.append(f"{len(seconds)} restored from {cache} ({sum(seconds):.1f}s)")
        parts.append(f"{self.uptodate} up to date")
        if self.failed:
            parts.append(f"{len(self.failed)} failed ({', '.join(self.failed)})")
        stages_blocked = [t for t in self.blocked if ":" in t]
        if stages_blocked:
            parts.append(f"{len(stages_blocked)} not run because a stage they need failed ({', '.join(stages_blocked)})")
        return "infbuild: " + ", ".join(parts)

    def complete_run(self) -> None:
        super().complete_run()
        line = self.summary()
        if line:
            self.outstream.write(line + "\n")
        for name in self.failed:  # every failure with its reason, after everything that could be built was
            self.outstream.write(f"  FAILED {self.reasons.get(name, name)}\n")


class JsonLinesReporter:
    """One JSON object per line on stdout: start, success, failure, uptodate, not_buildable, summary."""

    desc = "infbuild: JSON lines, one event per task (stage output goes to stderr)"

    def __init__(self, outstream: Any, options: dict[str, Any]) -> None:
        self.out = outstream
        self.started: dict[str, float] = {}
        self.counts: dict[str, int] = defaultdict(int)
        self.t0 = time.perf_counter()
        use_stderr()  # stdout is this reporter's: build messages and stage output go to stderr

    def _emit(self, event: str, task: Any = None, **fields: Any) -> None:
        record: dict[str, Any] = {"event": event, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        if task is not None:
            name = task if isinstance(task, str) else task.name
            record["task"] = name
            if ":" in name:
                record["stage"], record["recipe"] = name.split(":", 1)
        record.update(fields)
        self.out.write(json.dumps(record, sort_keys=True) + "\n")
        self.out.flush()

    def initialize(self, tasks: Any, selected_tasks: Any) -> None:
        SOFT.update(soft_failures(tasks, selected_tasks))
        for name, reason in sorted(_not_buildable(tasks).items()):
            self.counts["not_buildable"] += 1
            self._emit("not_buildable", name, reason=reason)

    def get_status(self, task: Any) -> None:
        pass

    def execute_task(self, task: Any) -> None:
        self.started[task.name] = time.perf_counter()
        if task.actions and task.name != GATE:
            self._emit("start", task)

    def add_success(self, task: Any) -> None:
        soft = _soft_failure(task)
        if soft is not None:
            return self.add_failure(task, soft)
        if not task.actions or task.name == GATE:
            return
        info = _outcome(task)
        self.counts[info.get("outcome", "ok")] += 1
        self._emit("success", task, seconds=round(time.perf_counter() - self.started.get(task.name, self.t0), 3),
                   **{k: v for k, v in info.items() if k != "seconds"})

    def add_failure(self, task: Any, fail: Any) -> None:
        if task.name == GATE and self.counts["failed"]:  # the gate repeats the failures already reported
            return
        self.counts["failed"] += 1
        self._emit("failure", task, error=fail.get_msg().strip())

    def skip_uptodate(self, task: Any) -> None:
        if ":" in task.name:
            self.counts["uptodate"] += 1
            upstream, note = UP_TO_DATE_NOTES.get(task.name, ("", ""))
            self._emit("uptodate", task, **({"note": note} if note else {}))

    def skip_ignore(self, task: Any) -> None:
        self._emit("ignored", task)

    def cleanup_error(self, exception: Any) -> None:
        self._emit("error", error=str(exception))

    def runtime_error(self, msg: str) -> None:
        self._emit("error", error=msg)

    def teardown_task(self, task: Any) -> None:
        pass

    def complete_run(self) -> None:
        self._emit("summary", seconds=round(time.perf_counter() - self.t0, 3), **dict(self.counts))

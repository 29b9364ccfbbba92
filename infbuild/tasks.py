"""The doit adapter: one ``<stage>:<recipe>`` task per planned stage, a ``manifest`` task and the ``build``
group. Everything a task does is the engine's (``infbuild.engine``); this module only translates. Task actions
and up-to-date checks take picklable arguments (root, task name), so ``doit -n N`` works with processes or
threads."""
from __future__ import annotations

import os
import signal
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

from doit.exceptions import TaskFailed

from . import stage as registry
from .artifacts import failed_log, remove_stage
from .console import say
from .engine import BuildContext, BuildOptions, execute
from .engine.locks import check_writable, hold_build_lock, os_problem
from .errors import InfbuildError
from .manifest import manifest_current, update_manifest
from .project import load_project
from .reporter import GATE, SOFT
from .stamp import read_stamp


def _require_var() -> str | None:
    try:
        from doit import get_var

        return get_var("require", None)
    except Exception:  # get_var is only set up when doit runs the dodo
        return None


@lru_cache(maxsize=4)
def context(root: str) -> BuildContext:
    """This doit process's build context (doit calls tasks with picklable arguments only, so it is kept here)."""
    return BuildContext.load(Path(root), BuildOptions.from_env(require_var=_require_var()))


def building(root: str) -> BuildContext:
    """The context, with this process holding the build lock (taken before the first stage is checked)."""
    ctx = context(root)
    try:
        hold_build_lock(ctx.artifacts)
    except OSError as exc:
        print(f"infbuild: {os_problem(exc)}", file=sys.stderr)
        raise SystemExit(1) from None
    return ctx


def check_uptodate(root: str, task_name: str) -> bool:
    """doit uptodate: stamp key == fresh key and stamped files present. Never raises (an error is 'stale')."""
    from .reporter import UP_TO_DATE_NOTES

    ctx = building(root)
    try:
        p = ctx.planned[task_name]
        if not ctx.up_to_date(p):
            return False
        failed_log(p.folder).unlink(missing_ok=True)  # a failure under other inputs (since reverted) is history
        note = ctx.cut_off(p)
        if note:
            UP_TO_DATE_NOTES[task_name] = (f"{note[0]}:{p.recipe.name}", note[1])
        return True
    except Exception:  # doit aborts the whole run on an exception here
        return False


def reported_by(task_name: str, ctx: BuildContext) -> str | None:
    """The task that reports this stage's failure when both run: verify, for the artifacts it judges and what they
    are built from (not what verify itself needs); the ``build`` gate, for verify's own verdict."""
    p = ctx.planned[task_name]
    verify = f"{registry.judge().name}:{p.recipe.name}"
    if task_name == verify:
        return GATE
    judge = ctx.planned.get(verify)
    if judge is None or p.stage.name in _closure(ctx, judge, judge.stage.needs):
        return None
    return verify if p.stage.name in _closure(ctx, judge, judge.upstream) else None


def _closure(ctx: BuildContext, p: Any, names: tuple[str, ...]) -> set[str]:
    """The stages in ``names`` of ``p``'s recipe and everything they read, transitively."""
    seen: set[str] = set()
    todo = [n for n in names if f"{n}:{p.recipe.name}" in ctx.planned]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo += list(ctx.planned[f"{name}:{p.recipe.name}"].upstream)
    return seen


def run_stage(root: str, task_name: str) -> TaskFailed | dict[str, Any]:
    outcome = execute(building(root), task_name)
    if outcome.ok or task_name in SOFT:
        return outcome.values()
    return TaskFailed(outcome.message or "failed")


def check_build(root: str) -> TaskFailed | None:
    """The ``build`` gate: fails when a stage of this build failed softly (its failed log is there, or its verdict
    is stamped failed); those stages' reasons were reported as they failed."""
    ctx = building(root)
    failed = []
    for task_name, p in ctx.planned.items():
        if p.not_buildable is not None and not ctx.required(p):
            continue
        stamp = read_stamp(p.folder) if p.stage.judges else None
        if failed_log(p.folder).exists() or (stamp is not None and stamp.passed is False):
            failed.append(task_name)
    if failed:
        return TaskFailed(f"{len(failed)} stage(s) failed: {', '.join(failed)}")
    return None


def clean_stage(root: str, task_name: str) -> None:
    p = building(root).planned[task_name]
    remove_stage(p.folder)
    failed_log(p.folder).unlink(missing_ok=True)


def write_manifest(root: str) -> None:
    ctx = building(root)
    if update_manifest(ctx.artifacts, ctx.names):
        say("manifest.json updated")


def manifest_uptodate(root: str) -> bool:
    try:
        ctx = building(root)
        return manifest_current(ctx.artifacts, ctx.names)
    except Exception:
        return False


def _sigterm_as_interrupt() -> None:
    """SIGTERM -> KeyboardInterrupt, so doit saves the record of tasks that finished (stamps never depend on it)."""
    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    try:
        signal.signal(signal.SIGTERM, handler)
    except ValueError:
        pass  # not the main thread


def _check_dep_db(path: Path) -> None:
    """doit's DB only saves work (infbuild's stamps decide staleness): a damaged one is moved aside."""
    try:
        with open(path, "rb") as f:
            header = f.read(16)
    except OSError:
        return
    if header and header != b"SQLite format 3\x00":
        aside = path.with_name(path.name + ".corrupt")
        os.replace(path, aside)
        print(f"{path} was not a doit database: moved to {aside.name}; nothing is lost (stamps decide "
              "what is up to date)", file=sys.stderr)


def doit_config(root: Path | None = None) -> dict[str, Any]:
    """DOIT_CONFIG for dodo.py. Recipes are checked here, before doit opens its DB: a bad recipe touches nothing."""
    from .reporter import SummaryReporter

    try:
        project = load_project(root)
        context(str(project.root))
    except InfbuildError as exc:
        print(str(exc), file=sys.stderr)
        raise SystemExit(exc.exit_code) from None
    try:
        check_writable(project.artifacts)
        _check_dep_db(project.artifacts / ".doit.db")
    except OSError as exc:
        print(f"infbuild: {os_problem(exc)}", file=sys.stderr)
        raise SystemExit(1) from None
    return {
        "dep_file": str(project.artifacts / ".doit.db"),
        "backend": "sqlite3",
        "default_tasks": ["build"],
        "continue": True,  # independent recipes keep building past a failure; `doit --no-continue` stops at the first
        "verbosity": 2,
        "reporter": SummaryReporter,
    }


def generate(root: Path | None = None) -> Iterator[dict[str, Any]]:
    """All infbuild tasks for the project at ``root`` (default: found from the working directory)."""
    project = load_project(root)
    ctx = context(str(project.root))
    _sigterm_as_interrupt()
    root_s = str(project.root)
    buildable: list[str] = []
    for stage in registry.stages():
        yield {"basename": stage.name, "name": None, "doc": stage.doc}
    for task_name, p in ctx.planned.items():
        doc = f"{p.stage.doc} [{p.recipe.name} -> {p.target}]"
        if p.not_buildable:
            doc += f" (not buildable here: {p.not_buildable})"
        if p.not_buildable is None or ctx.required(p):
            buildable.append(task_name)
        yield {
            "basename": p.stage.name,
            "name": p.recipe.name,
            "doc": doc,
            "actions": [(run_stage, [root_s, task_name])],
            "uptodate": [(check_uptodate, [root_s, task_name])],
            "task_dep": [f"{u}:{p.recipe.name}" for u in p.upstream],
            "clean": [(clean_stage, [root_s, task_name])],
            "verbosity": 2,
            # What reporters present without asking the engine: the stage, recipe and why it cannot run here.
            "meta": {"infbuild": {"stage": p.stage.name, "recipe": p.recipe.name, "target": p.target,
                                  "not_buildable": p.not_buildable, "reported_by": reported_by(task_name, ctx)}},
        }
    yield {
        "basename": "manifest",
        "doc": "index every stamped artifact in artifacts/manifest.json",
        "actions": [(write_manifest, [root_s])],
        "uptodate": [(manifest_uptodate, [root_s])],
        # No task_dep: every stage updates the manifest when it commits, so this task only repairs a manifest
        # edited or lost by hand, and it must run even when some recipe failed (doit skips dependents of failures).
        "verbosity": 2,
    }
    yield {
        "basename": GATE,
        "doc": "build, verify and index every stage buildable on this host",
        "actions": [(check_build, [root_s])],
        "verbosity": 2,
        "task_dep": buildable + ["manifest"],
    }

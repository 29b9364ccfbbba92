"""doit tasks from recipes: one ``<stage>:<recipe>`` task per planned stage, a ``manifest`` task and the
``build`` group. Task actions and up-to-date checks take only picklable arguments (root, task name), so
``doit -n N`` works with processes or threads."""
from __future__ import annotations

import fcntl
import json
import os
import signal
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

from doit.exceptions import TaskFailed

from .artifacts import LOG, clean_leftovers, commit, discard, new_staging, remove_stage
from .cache import Wanted, configured_caches, differs_from, restore, same_files, store, unusable
from .errors import InfbuildError
from .fingerprint import host_fingerprint
from .hashing import DigestCache
from .keys import UpstreamMissing, key_inputs, stage_key, staleness
from .manifest import manifest_current, update_manifest
from .plan import STAGES, PlannedStage, is_required, plan
from .project import Project, load_project
from .recipe import Recipe, load_recipes
from .reporter import SummaryReporter
from .worker import FAILED_VERIFY_EXIT, run_worker, say


@dataclass
class Context:
    project: Project
    recipes: list[Recipe]
    fingerprint: dict[str, Any]
    planned: dict[str, PlannedStage]
    digests: DigestCache
    caches: list[Any]

    @property
    def names(self) -> set[str]:
        """The project's recipes: the manifest indexes these only."""
        return {r.name for r in self.recipes}

    def siblings(self, p: PlannedStage) -> dict[str, PlannedStage]:
        return {name: self.planned[f"{name}:{p.recipe.name}"] for name in p.upstream}

    def staleness(self, p: PlannedStage) -> str | None:
        try:
            return staleness(p, self.fingerprint, self.project.root, self.digests, self.siblings(p))
        finally:
            self.digests.save()


@lru_cache(maxsize=4)
def context(root: str) -> Context:
    project = load_project(Path(root))
    recipes = load_recipes(project)
    fp = host_fingerprint()
    planned = {p.task_name: p for p in plan(recipes, fp, project.artifacts, project.root, required_stages())}
    return Context(project, recipes, fp, planned, DigestCache(project.artifacts / ".infbuild" / "digests.json"),
                   configured_caches(project.root, list(project.caches)))


def required_stages() -> set[str]:
    """Stages the user requires (INFBUILD_REQUIRE or `doit build require=a,b`): not buildable -> failure."""
    names = set(filter(None, os.environ.get("INFBUILD_REQUIRE", "").replace(",", " ").split()))
    try:
        from doit import get_var

        names |= set(filter(None, (get_var("require", "") or "").replace(",", " ").split()))
    except Exception:  # noqa: BLE001 - get_var is only set up when doit runs the dodo
        pass
    return names


# --- doit callables (module-level, picklable arguments) ---------------------------------------

def forced_stages() -> set[str]:
    """Stages or tasks to rerun although up to date (INFBUILD_FORCE=bench, e.g. for fresh numbers)."""
    return set(filter(None, os.environ.get("INFBUILD_FORCE", "").replace(",", " ").split()))


def check_uptodate(root: str, task_name: str) -> bool:
    """doit uptodate: stamp key == fresh key and stamped files present. Never raises (an error is 'stale')."""
    try:
        ctx = context(root)
        p = ctx.planned[task_name]
        if {p.stage.name, task_name} & forced_stages():
            return False
        return p.not_buildable is None and ctx.staleness(p) is None
    except Exception:  # noqa: BLE001 - doit aborts the whole run on an exception here
        return False


_leftovers_cleaned: set[str] = set()


def run_stage(root: str, task_name: str) -> TaskFailed | dict[str, Any]:
    """doit action: build (or restore) one stage. Every user-facing problem is a one-line TaskFailed."""
    try:
        return _run_stage(root, task_name)
    except InfbuildError as exc:
        return TaskFailed(f"{task_name}: {exc}")
    except OSError as exc:
        return TaskFailed(f"{task_name}: {os_problem(exc)}")


def os_problem(exc: OSError) -> str:
    """One line for a file-system failure: which path, and why."""
    where = f"{exc.filename}" + (f" -> {exc.filename2}" if exc.filename2 else "") if exc.filename else "a file"
    return f"cannot write or read {where}: {exc.strerror or exc}"


def _run_stage(root: str, task_name: str) -> TaskFailed | dict[str, Any]:
    ctx = context(root)
    p = ctx.planned[task_name]
    if p.not_buildable:
        return TaskFailed(f"{task_name}: not buildable here: {p.not_buildable}")
    if root not in _leftovers_cleaned:
        _leftovers_cleaned.add(root)
        for folder in clean_leftovers(ctx.project.artifacts):
            say(f"removed leftover {folder.relative_to(ctx.project.artifacts)} from an interrupted build")
    try:
        inputs = key_inputs(p, ctx.fingerprint, ctx.project.root, ctx.digests, ctx.siblings(p))
    except UpstreamMissing as missing:
        return TaskFailed(f"{task_name}: upstream stage {missing}:{p.recipe.name} has not been built")
    finally:
        ctx.digests.save()
    key = stage_key(inputs)
    staging = new_staging(p.folder)
    failed_log = p.folder.parent / f"{p.stage.name}.failed.log"
    forced = bool({p.stage.name, task_name} & forced_stages())
    caches = ctx.caches if p.stage.cacheable and not forced else []
    started = time.perf_counter()
    try:
        restored = restore_stage(ctx, p, key, inputs, staging, caches)
        if restored is not None:
            return restored
        request = {
            "stage": p.stage.name, "recipe": p.recipe.to_dict(), "root": str(ctx.project.root),
            "out": str(staging), "device": p.device, "target": p.target,
            "upstream": {name: str(s.folder) for name, s in ctx.siblings(p).items()},
            "error_file": str(staging / "error.json.tmp"), "tools": p.tools,
            "packages_file": str(staging / PACKAGES_FILE) if p.stage.reads_model else None,
        }
        with gpu_lock(ctx.project.artifacts, p.device == "cuda"):
            code, tail = run_worker(request, staging / LOG)
        if code == 0 or (code == FAILED_VERIFY_EXIT and p.stage.name == "verify"):
            stamp: dict[str, Any] = {"key": key, "stage": p.stage.name, "recipe": p.recipe.name, "target": p.target,
                     "fingerprint": ctx.fingerprint, "inputs": inputs}
            if p.stage.name == "verify":
                stamp["passed"] = code == 0
            if p.stage.reads_model:
                stamp["packages"] = _take_packages(staging)
            failures = (staging / "failures.txt").read_text(encoding="utf-8").splitlines() if code else []
            stamp = commit(staging, p.folder, stamp, p.stage.outputs)
            failed_log.unlink(missing_ok=True)
            update_manifest(ctx.project.artifacts, ctx.names)
            if failures:
                lines = "\n".join(f"  {f}" for f in failures)
                return TaskFailed(f"{task_name}: verification failed for recipe '{p.recipe.name}' "
                                  f"({p.recipe.file}):\n{lines}")
            seconds = time.perf_counter() - started
            return share(ctx, p, key, inputs, stamp, caches) or {"infbuild": {"outcome": "built", "seconds": seconds}}
        os.replace(staging / LOG, failed_log)
        error_path = staging / "error.json.tmp"
        if code == 1 and error_path.is_file():
            error = json.loads(error_path.read_text(encoding="utf-8"))
            if error.get("field"):
                message = p.recipe.locate(error["field"], error["message"]).render()
            else:
                message = f"{task_name}: {error['message']}"
            return TaskFailed(message)
        shown = "\n".join(f"  | {line}" for line in tail)
        return TaskFailed(f"{task_name}: stage worker failed (exit {code}); full log: {failed_log}\n{shown}")
    finally:
        discard(staging)


PACKAGES_FILE = "packages.json.tmp"


def _take_packages(staging: Path) -> dict[str, str]:
    """The distributions the worker recorded (removed from the folder before it is stamped)."""
    path = staging / PACKAGES_FILE
    try:
        return dict(json.loads(path.read_text(encoding="utf-8")))
    finally:
        path.unlink(missing_ok=True)


@contextmanager
def gpu_lock(artifacts: Path, needed: bool) -> Iterator[None]:
    """Serialize GPU stages across threads, processes and concurrent builds (even under `doit -n`)."""
    if not needed:
        yield
        return
    lock_dir = artifacts / ".infbuild"
    lock_dir.mkdir(parents=True, exist_ok=True)
    with open(lock_dir / "gpu.lock", "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say("waiting for the GPU lock: another stage is using the GPU")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def share(ctx: Context, p: PlannedStage, key: str, inputs: dict[str, Any], stamp: dict[str, Any],
          caches: list[Any]) -> TaskFailed | None:
    """Store a built stage in the caches. If another build stored this key first, adopt its outputs instead of
    ours: every build sharing a cache then agrees on the bytes behind a key (AOTI packages and engines are not
    bit-reproducible), so the keys downstream of it, and their cache entries, line up across machines."""
    public = {k: v for k, v in stamp.items() if k != "inputs"}
    stored = store(caches, key, public, p.folder)
    if stored.held_by is None or not differs_from(stored.held_by, key, stamp):
        return None
    staging = new_staging(p.folder)
    try:
        adopted = restore_stage(ctx, p, key, inputs, staging, [stored.held_by], adopting=True)
    finally:
        discard(staging)
    if adopted is None:  # the entry is damaged or gone: ours replaces it
        store([stored.held_by], key, public, p.folder, replace=True)
    return None


def wanted(p: PlannedStage, key: str) -> Wanted:
    """What a cache entry must be to stand in for building ``p`` under ``key``."""
    return Wanted(key, p.stage.name, p.recipe.name, p.target, p.stage.outputs)


def restore_stage(ctx: Context, p: PlannedStage, key: str, inputs: dict[str, Any], staging: Path,
                  caches: list[Any], adopting: bool = False) -> dict[str, Any] | None:
    """Commit a stage from the first cache holding exactly its outputs under its key; None on a miss (build)."""
    started = time.perf_counter()
    hit = restore(caches, wanted(p, key), staging)
    if hit is None:
        return None
    extra: dict[str, Any] = {k: hit.stamp[k] for k in ("passed", "packages") if k in hit.stamp}
    stamp = commit(staging, p.folder, {"key": key, "stage": p.stage.name, "recipe": p.recipe.name, "target": p.target,
                                       "fingerprint": hit.stamp["fingerprint"], "inputs": inputs,
                                       "restored_from": hit.cache, **extra}, p.stage.outputs)
    if not same_files(stamp, hit.stamp):  # the bytes were checked on the way in: never keep a mismatch
        remove_stage(p.folder)
        cache = next(c for c in caches if c.name == hit.cache)
        say("warning: " + unusable(cache, key, "the restored files differ from its stamp"))
        return None
    update_manifest(ctx.project.artifacts, ctx.names)
    if adopting:
        say(f"adopted {p.task_name} from {hit.cache}: another build stored this key first")
    else:
        say(f"restored {p.task_name} from {hit.cache} in {hit.seconds:.2f}s")
    return {"infbuild": {"outcome": "restored", "cache": hit.cache, "seconds": time.perf_counter() - started}}


def clean_stage(root: str, task_name: str) -> None:
    p = context(root).planned[task_name]
    remove_stage(p.folder)
    (p.folder.parent / f"{p.stage.name}.failed.log").unlink(missing_ok=True)


def write_manifest(root: str) -> None:
    if update_manifest(context(root).project.artifacts, context(root).names):
        say("manifest.json updated")


def manifest_uptodate(root: str) -> bool:
    try:
        return manifest_current(context(root).project.artifacts, context(root).names)
    except Exception:  # noqa: BLE001
        return False


# --- task generation ------------------------------------------------------------------------------

def _sigterm_as_interrupt() -> None:
    """SIGTERM -> KeyboardInterrupt, so doit saves the record of tasks that finished (DESIGN.md §3)."""
    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    try:
        signal.signal(signal.SIGTERM, handler)
    except ValueError:
        pass  # not the main thread


_build_lock: Any = None


def hold_build_lock(artifacts: Path) -> None:
    """One build per artifacts tree at a time: a second `doit build` waits here, saying so. The lock lives as
    long as the doit process (and its -n workers), so the dep DB and the manifest stay consistent."""
    global _build_lock
    if _build_lock is not None:
        return
    lock_dir = artifacts / ".infbuild"
    try:
        lock_dir.mkdir(parents=True, exist_ok=True)
        handle = open(lock_dir / "build.lock", "a+")
    except OSError as exc:
        print(f"infbuild: {os_problem(exc)}", file=sys.stderr)
        raise SystemExit(1) from None
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
    _build_lock = handle


def check_writable(artifacts: Path) -> None:
    """Fail early, with the path, when the build could not record its work: a read-only artifacts folder, or a
    lock, DB or bookkeeping path that is not what it must be (an OSError naming the path)."""
    import errno

    (artifacts / ".infbuild").mkdir(parents=True, exist_ok=True)
    for folder in (artifacts, artifacts / ".infbuild"):
        if not os.access(folder, os.W_OK | os.X_OK):
            raise PermissionError(errno.EACCES, "the folder is not writable", str(folder))
    for path in (artifacts / ".infbuild" / "build.lock", artifacts / ".infbuild" / "gpu.lock",
                 artifacts / ".manifest.lock", artifacts / ".doit.db"):
        if path.exists() and not path.is_file():
            raise IsADirectoryError(errno.EISDIR, "must be a file (remove it)", str(path))


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
    for name, stage in STAGES.items():
        yield {"basename": name, "name": None, "doc": stage.doc}
    for task_name, p in ctx.planned.items():
        doc = f"{p.stage.doc} [{p.recipe.name} -> {p.target}]"
        if p.not_buildable:
            doc += f" (not buildable here: {p.not_buildable})"
        if p.not_buildable is None or is_required(p, required_stages()):
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
        "basename": "build",
        "doc": "build, verify and index every stage buildable on this host",
        "actions": None,
        "task_dep": buildable + ["manifest"],
    }

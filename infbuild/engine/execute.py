"""``execute(ctx, task) -> Outcome``: one stage, as a sequence of small named steps (like nox's session
workflow): refuse what cannot be built here, key it, restore it from a cache or run its worker, commit and stamp
it, share it with the caches, index it in the manifest. Each step either passes (None) or ends the run with an
Outcome; exceptions become outcomes in one place (``execute``)."""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

from ..artifacts import clean_leftovers, commit, discard, failed_log, failure_reason, new_staging, record_failure, remove_stage
from ..cache import Cache, differs_from, restore, store, unusable
from ..cache.entry import SIGNATURE_FIELD, Wanted
from ..console import say
from ..errors import InfbuildError
from ..folder import LOG, SIGNATURE
from ..keys import Inputs, UpstreamMissing, changed_parts
from ..manifest import update_manifest
from ..signing import stage_signature
from ..signing.dsse import BadSignature
from ..signing.stage_signature import sealer
from ..stage import PlannedStage
from ..stages.request import WorkerRequest, WorkerResult, take_error
from ..stamp import Stamp, read_stamp, rehash_problems
from .context import BuildContext
from .locks import gpu_lock, os_problem
from .memory import expected_mb, reserved
from .outcome import Outcome
from .worker import run_worker


@dataclass
class Run:
    """One stage being executed: what the steps share."""

    ctx: BuildContext
    p: PlannedStage
    started: float = field(default_factory=time.perf_counter)
    key: str = ""
    inputs: Inputs = field(default_factory=dict)
    staging: Path | None = None
    result: WorkerResult | None = None

    @property
    def task(self) -> str:
        return self.p.task_name

    worker_log: Path | None = None  # the worker's log, kept in the failed log when the stage fails

    @property
    def failed_log(self) -> Path:
        return failed_log(self.p.folder)

    def failed(self, message: str) -> Outcome:
        return Outcome(self.task, "failed", time.perf_counter() - self.started, message=message)


Step = Callable[[Run], "Outcome | None"]


def refuse_unbuildable(run: Run) -> Outcome | None:
    reason = run.p.not_buildable
    return run.failed(f"{run.task}: not buildable here: {reason}") if reason else None


_leftovers_cleaned: set[Path] = set()


def remove_leftovers(run: Run) -> Outcome | None:
    """Once per build process: staging/trash folders of interrupted builds go."""
    artifacts = run.ctx.artifacts
    if artifacts not in _leftovers_cleaned:
        _leftovers_cleaned.add(artifacts)
        for folder in clean_leftovers(artifacts):
            say(f"removed leftover {folder.relative_to(artifacts)} from an interrupted build")
    return None


def compute_key(run: Run) -> Outcome | None:
    try:
        run.key, run.inputs = run.ctx.key(run.p)
    except UpstreamMissing as missing:
        upstream = f"{missing}:{run.p.recipe.name}"
        why = failure_reason(run.ctx.planned[upstream].folder)
        return run.failed(f"{run.task}: not built: upstream stage {upstream} failed ({why})" if why
                          else f"{run.task}: upstream stage {upstream} has not been built")
    return None


def restore_from_cache(run: Run) -> Outcome | None:
    return restore_stage(run.ctx, run.p, run.key, run.inputs, run.ctx.caches_for(run.p))


def check_upstream(run: Run) -> Outcome | None:
    """Every file the stage will read from its upstream stages still has its stamped sha256 (and, with trusted keys,
    its signature): a stamped file edited in place is never consumed, copied into a repository or shipped."""
    ctx = run.ctx
    for sibling in ctx.readable_siblings(run.p).values():
        stamp = read_stamp(sibling.folder)
        if stamp is None:
            return run.failed(f"{run.task}: upstream stage {sibling.task_name} has no valid stamp: rebuild it")
        if stamp.passed is False and not run.p.stage.tolerates_failed:
            return run.failed(f"{run.task}: not run: {sibling.task_name} failed (see its report.md); nothing is shipped "
                              "from a recipe whose verification failed")
        problems = rehash_problems(sibling.folder, stamp)
        if not problems and ctx.trust.enforced:
            from ..signing import stage_signature

            why = stage_signature.problem(sibling.folder, stamp, ctx.trust.for_local())
            problems = [f"{SIGNATURE}: {why} (trusted: {ctx.trust.describe()})"] if why else []
        if problems:
            return run.failed(f"{run.task}: refusing to read {sibling.task_name} ({sibling.folder}): {problems[0]}; "
                              f"rebuild it: infbuild verify-artifacts --fix (or doit forget {sibling.task_name} && "
                              "doit build)")
    return None


def run_stage_worker(run: Run) -> Outcome | None:
    """Run the stage's worker into a fresh staging folder; a failure keeps its log as ``<stage>.failed.log``."""
    p, ctx = run.p, run.ctx
    run.staging = staging = new_staging(p.folder)
    request = WorkerRequest(p.stage.name, p.recipe.to_dict(), str(ctx.project.root), out=str(staging),
                            device=p.device, target=p.target,
                            upstream={name: str(s.folder) for name, s in ctx.readable_siblings(p).items()},
                            tools=dict(p.tools), record_packages=p.stage.reads_model,
                            signing_key=ctx.signer.source if ctx.signer and p.stage.signs_images else None,
                            signing_passphrase_env=ctx.signing_passphrase_env, failed=ctx.failed_upstream(p))
    wanted = expected_mb(p, ctx.project.root, ctx.siblings(p))
    with reserved(ctx.artifacts, run.task, wanted, ctx.memory_budget_mb), gpu_lock(ctx.artifacts, p.device == "cuda"):
        code, tail = run_worker(request, staging / LOG)
    if code == 0:
        run.result = WorkerResult.take(staging)
        return None
    run.worker_log = staging / LOG
    error = take_error(staging) if code == 1 else None
    if error is not None:
        if error.get("field"):
            return run.failed(p.recipe.locate(error["field"], error["message"]).render())
        return run.failed(f"{run.task}: {error['message']}")
    shown = "\n".join(f"  | {line}" for line in tail)
    return run.failed(f"{run.task}: stage worker failed (exit {code}); full log: {run.failed_log}\n{shown}")


def check_inputs_unchanged(run: Run) -> Outcome | None:
    """The key is computed again after the worker: an input edited while it ran (a source saved mid-build) means the
    outputs may not be what the key names, so nothing is stamped and the next build rebuilds (ccache's "file too
    new" rule)."""
    key, inputs = run.ctx.key(run.p)
    if key == run.key:
        return None
    changed = ", ".join(changed_parts(run.inputs, inputs).parts) or "the key"
    return run.failed(f"{run.task}: its inputs changed while it was built ({changed}): not stamped; build again")


def commit_built(run: Run) -> Outcome | None:
    """Stamp the staging folder (exactly the stage's outputs), sign it and move it into place."""
    p, result = run.p, run.result or WorkerResult()
    assert run.staging is not None
    stamp = Stamp(run.key, p.stage.name, p.recipe.name, target=p.target, files={}, fingerprint=run.ctx.fingerprint,
                  inputs=run.inputs, passed=not result.failures if p.stage.judges else None,
                  packages=result.packages if p.stage.reads_model else None, peak_rss_mb=result.peak_rss_mb)
    stamped = commit(run.staging, p.folder, stamp, p.stage.outputs, seal=sealer(run.ctx.signer))
    update_manifest(run.ctx.artifacts, run.ctx.names)
    if result.failures:
        lines = "\n".join(f"  {f}" for f in result.failures)
        return replace(run.failed(f"{run.task}: verification failed for recipe '{p.recipe.name}' ({p.recipe.file}):\n"
                                  f"{lines}"), stamped=True)
    share(run.ctx, p, run.key, run.inputs, stamped, run.ctx.caches_for(p))
    return Outcome(run.task, "built", time.perf_counter() - run.started)


STEPS: Sequence[Step] = (refuse_unbuildable, remove_leftovers, compute_key, restore_from_cache, check_upstream,
                         run_stage_worker, check_inputs_unchanged, commit_built)


def execute(ctx: BuildContext, task: str, steps: Sequence[Step] = STEPS) -> Outcome:
    """Build (or restore) one stage. Every user-facing problem is a failed Outcome with one located message."""
    run = Run(ctx, ctx.planned[task])
    try:
        outcome = _steps(run, steps)
        if not outcome.ok and not outcome.stamped:  # a verdict with failures is stamped: it has no failed log
            record_failure(run.p.folder, outcome.message or f"{task}: failed", run.worker_log)
        return outcome
    finally:
        if run.staging is not None:
            discard(run.staging)


def _steps(run: Run, steps: Sequence[Step]) -> Outcome:
    try:
        for step in steps:
            outcome = step(run)
            if outcome is not None:
                return outcome
        raise AssertionError(f"{run.task}: no step ended the run")  # commit_built always ends it
    except InfbuildError as exc:
        return run.failed(f"{run.task}: {exc}")
    except OSError as exc:
        return run.failed(f"{run.task}: {os_problem(exc)}")


# --- caches ---------------------------------------------------------------------------------------------------

def wanted(p: PlannedStage, key: str) -> Wanted:
    """What a cache entry must be to stand in for building ``p`` under ``key``."""
    return Wanted(key, p.stage.name, p.recipe.name, p.target, p.stage.outputs)


def restore_stage(ctx: BuildContext, p: PlannedStage, key: str, inputs: Inputs, caches: Sequence[Cache],
                  adopting: bool = False) -> Outcome | None:
    """Commit a stage from the first cache holding exactly its outputs under its key; None on a miss (build)."""
    if not caches:
        return None
    started = time.perf_counter()
    staging = new_staging(p.folder)
    try:
        hit = restore(caches, wanted(p, key), staging, ctx.trust)
        if hit is None:
            return None
        signature = hit.signature
        stamp = commit(staging, p.folder, Stamp(key, p.stage.name, p.recipe.name, target=p.target, files={},
                                                fingerprint=hit.stamp.fingerprint, inputs=inputs, passed=hit.stamp.passed,
                                                packages=hit.stamp.packages, restored_from=hit.cache), p.stage.outputs,
                       seal=(lambda folder, _: stage_signature.write(folder, signature)) if signature else None)
    finally:
        discard(staging)
    if not stamp.same_files(hit.stamp):  # the bytes were checked on the way in: never keep a mismatch
        remove_stage(p.folder)
        cache = next(c for c in caches if c.name == hit.cache)
        say("warning: " + unusable(cache, key, "the restored files differ from its stamp"))
        return None
    update_manifest(ctx.artifacts, ctx.names)
    if adopting:
        say(f"adopted {p.task_name} from {hit.cache}: another build stored this key first")
    else:
        say(f"restored {p.task_name} from {hit.cache} in {hit.seconds:.2f}s")
    return Outcome(p.task_name, "restored", time.perf_counter() - started, cache=hit.cache)


def share(ctx: BuildContext, p: PlannedStage, key: str, inputs: Inputs, stamp: Stamp, caches: Sequence[Cache]) -> None:
    """Store a built stage in the caches. If another build stored this key first, adopt its outputs instead of
    ours: every build sharing a cache then agrees on the bytes behind a key (AOTI packages and engines are not
    bit-reproducible), so the keys downstream of it, and their cache entries, line up across machines."""
    entry = entry_of(p.folder, stamp)
    stored = store(caches, key, entry, p.folder)
    if stored.held_by is None or not differs_from(stored.held_by, key, stamp):
        return
    if restore_stage(ctx, p, key, inputs, [stored.held_by], adopting=True) is None:
        store([stored.held_by], key, entry, p.folder, replace=True)  # damaged, untrusted or gone: ours replaces it


def entry_of(folder: Path, stamp: Stamp) -> dict[str, Any]:
    """What a cache stores for a stamped folder: its public stamp and, when signed, its signature."""
    entry = stamp.public()
    try:
        entry[SIGNATURE_FIELD] = stage_signature.read(folder)
    except BadSignature:
        pass  # unsigned: stored as such (a cache that requires signatures never serves it)
    return entry

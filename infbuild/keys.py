"""Stage keys and staleness (README, "How staleness works"): key = sha256 of the canonical dict of everything a stage reads.

``staleness`` checks the cheap things first and says *why* a stage is stale, like DVC's ``changed()``. What a
stage reads is the stage's own declaration (``Stage.fields``, ``Stage.upstream_view``); this module only
assembles it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from .artifacts import failure_reason
from .hashing import DigestCache, digest_json
from .packages import changes
from .reasons import Reason
from .stage import PlannedStage, UpstreamMissing
from .stamp import Stamp, missing_or_resized, read_stamp, stamp_problem

Inputs = dict[str, Any]

__all__ = ["Inputs", "UpstreamMissing", "changed_parts", "cut_off", "failed_upstream", "key_inputs", "stage_key",
           "staleness"]


def key_inputs(p: PlannedStage, fingerprint: Mapping[str, Any], root: Path, digests: DigestCache,
               siblings: Mapping[str, PlannedStage]) -> Inputs:
    """The canonical dict whose digest is the stage key."""
    recipe, stage = p.recipe, p.stage
    inputs: Inputs = {
        "stage": stage.name,
        "version": stage.version,
        "recipe": stage.fields(recipe),
        "fingerprint": stage.hardware(recipe, fingerprint, p.device),
        "tools": stage.tool_versions(recipe, {t: p.tools.get("version") if t == "trtexec" else fingerprint["tools"].get(t)
                                              for t in stage.tools}),
    }
    if stage.reads_model and not any(siblings[name].stage.covers_model for name in p.upstream):
        inputs["sources"] = {src: digests.sha256(root / src) for src in recipe.model.sources}
        weights = recipe.model.weights
        inputs["weights"] = {weights: digests.sha256(root / weights)} if weights else {}
    if stage.reads_model and recipe.samples:  # the user's own sample inputs (absent from keys of recipes without)
        inputs["samples"] = {sample: digests.sha256(root / sample) for sample in recipe.samples}
    upstream: dict[str, tuple[Path, Stamp]] = {}
    reasons = _failure_reasons(p, siblings)
    failed = _taken_as_failed(p, reasons)
    for name in p.upstream:
        if name in failed:
            continue
        folder = siblings[name].folder
        stamp = None if reasons[name] else read_stamp(folder)  # a failed last attempt: its old stamp is not current
        if stamp is None:
            raise UpstreamMissing(name)
        upstream[name] = (folder, stamp)
    view = stage.upstream_view(recipe, upstream) if upstream else {}
    view.update({name: {"failed": True} for name in failed})  # judged as failed; rebuilt, it changes this key
    if view:
        inputs["upstream"] = view
    return inputs


def failed_upstream(p: PlannedStage, siblings: Mapping[str, PlannedStage]) -> dict[str, str]:
    """The artifacts ``p`` judges or times whose last build failed (stage -> why), for a stage that takes them as
    failed rather than waiting for them (``Stage.tolerates_failed``: verify, bench); what it ``needs`` never is."""
    return _taken_as_failed(p, _failure_reasons(p, siblings))


def _failure_reasons(p: PlannedStage, siblings: Mapping[str, PlannedStage]) -> dict[str, str | None]:
    """Each upstream stage's last failure (None: its last attempt did not fail), read once."""
    return {name: failure_reason(siblings[name].folder) for name in p.upstream}


def _taken_as_failed(p: PlannedStage, reasons: Mapping[str, str | None]) -> dict[str, str]:
    if not p.stage.tolerates_failed:
        return {}
    return {name: why for name, why in reasons.items() if why is not None and name not in p.stage.needs}


def stage_key(inputs: Inputs) -> str:
    return digest_json(inputs)


def changed_parts(old: Inputs | None, new: Inputs) -> Reason:
    """Which parts of the key differ: a field, or a field with the entries of it that differ."""
    if not isinstance(old, dict):
        return Reason("key_changed")
    parts = []
    for field in sorted(set(old) | set(new)):
        if old.get(field) == new.get(field):
            continue
        if isinstance(old.get(field), dict) and isinstance(new.get(field), dict):
            subs = sorted(k for k in set(old[field]) | set(new[field]) if old[field].get(k) != new[field].get(k))
            parts.append(f"{field} ({', '.join(str(s) for s in subs)})")
        else:
            parts.append(field)
    return Reason("key_changed", parts=tuple(parts))


def staleness(p: PlannedStage, fingerprint: Mapping[str, Any], root: Path, digests: DigestCache,
              siblings: Mapping[str, PlannedStage]) -> Reason | None:
    """None when up to date, else the reason it must be rebuilt (cheap checks first)."""
    stamp = read_stamp(p.folder)
    if stamp is None:
        return Reason("never_built" if not p.folder.exists() else "unfinished")
    try:
        inputs = key_inputs(p, fingerprint, root, digests, siblings)
    except UpstreamMissing as missing:
        return Reason("upstream_missing", str(missing))
    except OSError as exc:
        return Reason("unreadable_input", str(exc))
    if stamp.key != stage_key(inputs):
        return changed_parts(stamp.inputs, inputs)
    upgraded = changes(stamp.packages)
    if upgraded:
        return Reason("key_changed", parts=(f"packages ({', '.join(upgraded)})",))
    damaged = stamp_problem(stamp, p.stage.name, p.recipe.name, p.target, p.stage.outputs) \
        or missing_or_resized(p.folder, stamp)
    if damaged:
        return Reason("damaged", damaged)
    rule = p.stage.stale(stamp)
    return Reason("stage_rule", rule) if rule else None


def cut_off(p: PlannedStage, siblings: Mapping[str, PlannedStage]) -> tuple[str, str] | None:
    """For an up-to-date stage that a stage it reads was rebuilt after (early cut-off: its output came out
    identical): that stage's name and why this one is up to date; else None."""
    stamp = read_stamp(p.folder)
    for name in p.upstream:
        up = read_stamp(siblings[name].folder)
        if stamp and up and stamp.created and up.created and up.created > stamp.created:
            return name, siblings[name].stage.cut_off_note or f"{name} was rebuilt with identical outputs"
    return None

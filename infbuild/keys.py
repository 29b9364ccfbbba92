"""Stage keys and staleness (DESIGN.md §3): key = sha256 of the canonical dict of everything a stage reads.

``staleness`` checks the cheap things first and says *why* a stage is stale, like DVC's ``changed()``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .artifacts import missing_or_resized, read_stamp, stamp_problem
from .fingerprint import scope_fields
from .hashing import DigestCache, digest_json
from .packages import changes
from .plan import PlannedStage

Inputs = dict[str, Any]


class UpstreamMissing(Exception):
    """An upstream stage has no stamp yet, so this stage's key cannot be known (it is stale)."""


def key_inputs(p: PlannedStage, fp: dict[str, Any], root: Path, digests: DigestCache,
               siblings: dict[str, PlannedStage]) -> Inputs:
    """The canonical dict whose digest is the stage key."""
    recipe, stage = p.recipe, p.stage
    inputs: Inputs = {
        "stage": stage.name,
        "version": stage.version,
        "recipe": stage.fields(recipe),
        "fingerprint": scope_fields(fp, "portable" if stage.scope == "portable" else p.device),
        "tools": {t: p.tools.get("version") if t == "trtexec" else fp["tools"].get(t) for t in stage.tools},
    }
    if stage.reads_model:
        inputs["sources"] = {src: digests.sha256(root / src) for src in recipe.model.sources}
        weights = recipe.model.weights
        inputs["weights"] = {weights: digests.sha256(root / weights)} if weights else {}
        if recipe.samples:  # the user's own sample inputs (absent from keys of recipes that give none)
            inputs["samples"] = {sample: digests.sha256(root / sample) for sample in recipe.samples}
    upstream: dict[str, Any] = {}
    for name in p.upstream:
        folder = siblings[name].folder
        stamp = read_stamp(folder)
        if stamp is None:
            raise UpstreamMissing(name)
        if stage.upstream_view == "graph":  # the ONNX graph without its weights: weights-only edits keep this key
            upstream[name] = {"graph": _graph_digest(folder)}
        elif stage.upstream_view == "bench" and name == "verify":  # which artifacts passed, not tolerances
            upstream[name] = {"passed": _verdicts(folder)}
        elif stage.upstream_view in ("files", "bench"):
            upstream[name] = {"key": stamp["key"], "files": {f: m.get("sha256") for f, m in stamp["files"].items()}}
    if stage.upstream_view == "package":  # only what goes into the image: the chosen artifacts, not timings
        from .package.contents import selection

        upstream = selection(recipe.to_dict(), {name: s.folder for name, s in siblings.items()})
    if upstream:
        inputs["upstream"] = upstream
    return inputs


def _graph_digest(onnx_folder: Path) -> str:
    try:
        return str(json.loads((onnx_folder / "export.json").read_text(encoding="utf-8"))["graph_sha256"])
    except (OSError, ValueError, KeyError) as exc:
        raise UpstreamMissing(f"onnx (no graph digest in export.json: {exc})") from None


def _verdicts(verify_folder: Path) -> dict[str, Any]:
    try:
        results = json.loads((verify_folder / "report.json").read_text(encoding="utf-8"))["results"]
    except (OSError, ValueError, KeyError) as exc:
        raise UpstreamMissing(f"verify (no report: {exc})") from None
    return {backend: r.get("passed") for backend, r in results.items()}


def stage_key(inputs: Inputs) -> str:
    return digest_json(inputs)


def _changed_parts(old: Inputs | None, new: Inputs) -> str:
    if not isinstance(old, dict):
        return "key changed"
    parts = []
    for field in sorted(set(old) | set(new)):
        if old.get(field) == new.get(field):
            continue
        if isinstance(old.get(field), dict) and isinstance(new.get(field), dict):
            subs = sorted(k for k in set(old[field]) | set(new[field]) if old[field].get(k) != new[field].get(k))
            parts.append(f"{field} ({', '.join(str(s) for s in subs)})")
        else:
            parts.append(field)
    return "key changed: " + ", ".join(parts) if parts else "key changed"


def staleness(p: PlannedStage, fp: dict[str, Any], root: Path, digests: DigestCache,
              siblings: dict[str, PlannedStage]) -> str | None:
    """None when up to date, else the reason it must be rebuilt."""
    stamp = read_stamp(p.folder)
    if stamp is None:
        return "never built" if not p.folder.exists() else "no valid stamp (unfinished or damaged build)"
    try:
        inputs = key_inputs(p, fp, root, digests, siblings)
    except UpstreamMissing as missing:
        return f"upstream stage {missing} is not built"
    except OSError as exc:
        return f"cannot read an input: {exc}"
    if stamp["key"] != stage_key(inputs):
        return _changed_parts(stamp.get("inputs"), inputs)
    upgraded = changes(stamp.get("packages"))
    if upgraded:
        return f"key changed: packages ({', '.join(upgraded)})"
    reason = stamp_problem(stamp, p.stage.name, p.recipe.name, p.target, p.stage.outputs) \
        or missing_or_resized(p.folder, stamp)
    if reason:
        return reason
    if p.stage.name == "verify" and stamp.get("passed") is False:
        return "last verification failed"
    return None

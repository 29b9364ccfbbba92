"""artifacts/manifest.json (a contract: the index users' scripts read), rebuilt from the stamps on disk.

Deriving the manifest from stamps means it can never disagree with what is stamped: a manifest edited by
hand or lost is simply rewritten. Writers hold an flock so parallel builds don't interleave.
"""
from __future__ import annotations

import os
import sys
import time
from contextlib import AbstractContextManager
from importlib import metadata
from pathlib import Path
from typing import Any, Collection

from . import stage as registry
from .filelock import flocked
from .jsonio import read_or_none, write_atomic
from .manifest_index import MANIFEST
from .preferred import preference
from .stamp import read_stamp

SCHEMA_VERSION = 2
"""2: artifacts may be variants (``onnxruntime:int8_dynamic``) in ``verify``, ``bench`` and ``preferred``, and each
target lists its ``artifacts`` (stage, backend, variant, precision). 1: backends only."""


def locked(artifacts: Path, name: str = ".manifest.lock") -> AbstractContextManager[None]:
    return flocked(artifacts / name)


def _version() -> str | None:
    try:
        return metadata.version("infbuild")
    except metadata.PackageNotFoundError:
        return None


def build_manifest(artifacts: Path, names: Collection[str] | None = None) -> dict[str, Any]:
    """The index of every stamp under ``artifacts`` (of the recipes ``names`` only, when given: the folders of a
    deleted recipe stay on disk but leave the index). Each stage adds what it knows (``Stage.index``)."""
    known = {s.name: s for s in registry.stages()}
    built_by = registry.artifacts()

    def describe(name: str) -> dict[str, Any]:
        stage = built_by[name]
        return {"stage": stage.name, "backend": stage.backend, "variant": stage.variant, "precision": stage.precision}

    recipes: dict[str, Any] = {}
    for stamp_path in sorted(artifacts.glob("*/*/*/stamp.json")):
        folder = stamp_path.parent
        stamp = read_stamp(folder)
        recipe, target, stage = folder.parent.parent.name, folder.parent.name, folder.name
        if stamp is None or (names is not None and recipe not in names):
            continue
        recipe_entry = recipes.setdefault(recipe, {"targets": {}})
        entry = recipe_entry["targets"].setdefault(target, {"stages": {}})
        entry["stages"][stage] = stamp.public()
        created = stamp.created or ""
        if stamp.fingerprint and created >= entry.get("_created", ""):
            entry["fingerprint"], entry["_created"] = stamp.fingerprint, created
        if stage in known:
            known[stage].index(folder, stamp, recipe_entry, entry)
    for recipe_entry in recipes.values():
        for entry in recipe_entry["targets"].values():
            entry.pop("_created", None)
            order = entry.pop("_order", [])  # the recipe's artifacts in its order (set by a judging stage's index)
            entry["preferred"], entry["preferred_reason"] = preference(entry.get("verify", {}), entry.get("bench"), order)
            entry["artifacts"] = {name: describe(name) for name in order if name in built_by}
    return {"schema": SCHEMA_VERSION, "infbuild": _version(), "recipes": recipes}


def update_manifest(artifacts: Path, names: Collection[str] | None = None) -> bool:
    """Rewrite the manifest if it differs from the stamps; True when it was written. Whatever stands in its place
    (a folder, a FIFO) is moved aside first, so a damaged manifest is always repaired, never a crash."""
    with locked(artifacts):
        fresh = build_manifest(artifacts, names)
        path = artifacts / MANIFEST
        if read_or_none(path) == fresh:
            return False
        if path.exists() and not path.is_file() and not path.is_symlink():
            aside = path.with_name(f"{MANIFEST}.damaged-{time.strftime('%Y%m%dT%H%M%S')}")
            os.replace(path, aside)
            print(f"{path} was not a file: moved aside to {aside.name} and rewritten from the stamps", file=sys.stderr)
        write_atomic(path, fresh)
        return True


def manifest_problem(artifacts: Path, names: Collection[str] | None = None) -> str | None:
    """What is wrong with the manifest on disk (None when it matches the stamps)."""
    path = artifacts / MANIFEST
    if not path.exists():
        return "missing"
    if not path.is_file():
        return "not a regular file"
    on_disk = read_or_none(path)
    if on_disk is None:
        return "unreadable or not valid JSON"
    if on_disk != build_manifest(artifacts, names):
        return "differs from the stamps (edited by hand?)"
    return None


def manifest_current(artifacts: Path, names: Collection[str] | None = None) -> bool:
    return manifest_problem(artifacts, names) is None

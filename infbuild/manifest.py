"""artifacts/manifest.json (DESIGN.md §4, a contract), rebuilt from the stamps on disk.

Deriving the manifest from stamps means it can never disagree with what is stamped: a manifest edited by
hand or lost is simply rewritten. Writers hold an flock so parallel builds don't interleave.
"""
from __future__ import annotations

import fcntl
import json
import os
import sys
import time
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any, Collection, Iterator

from .artifacts import read_stamp, write_json_atomic

MANIFEST = "manifest.json"
SCHEMA_VERSION = 1


@contextmanager
def locked(artifacts: Path, name: str = ".manifest.lock") -> Iterator[None]:
    artifacts.mkdir(parents=True, exist_ok=True)
    with open(artifacts / name, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None


def _version() -> str | None:
    try:
        return metadata.version("infbuild")
    except metadata.PackageNotFoundError:
        return None


def build_manifest(artifacts: Path, names: Collection[str] | None = None) -> dict[str, Any]:
    """The index of every stamp under ``artifacts`` (of the recipes ``names`` only, when given: the folders of a
    deleted recipe stay on disk but leave the index)."""
    recipes: dict[str, Any] = {}
    for stamp_path in sorted(artifacts.glob("*/*/*/stamp.json")):
        folder = stamp_path.parent
        stamp = read_stamp(folder)
        recipe, target, stage = folder.parent.parent.name, folder.parent.name, folder.name
        if stamp is None or (names is not None and recipe not in names):
            continue
        entry = recipes.setdefault(recipe, {"targets": {}})["targets"].setdefault(target, {"stages": {}})
        entry["stages"][stage] = {k: v for k, v in stamp.items() if k != "inputs"}
        if stage == "reference":  # the I/O contract the runtime validates inputs against
            fields = (stamp.get("inputs") or {}).get("recipe") or {}
            recipes[recipe]["io"] = {k: fields.get(k) for k in ("inputs", "dims", "outputs")}
        if stamp.get("fingerprint") and stamp.get("created", "") >= entry.get("_created", ""):
            entry["fingerprint"], entry["_created"] = stamp["fingerprint"], stamp.get("created", "")
        if stage == "verify":
            report = read_json(folder / "report.json") or {}
            entry["verify"] = report.get("results", {})
            entry["verify_order"] = report.get("backends", [])
        if stage == "package":
            image = read_json(folder / "image.json") or {}
            entry["image"] = {k: image.get(k) for k in ("reference", "digest", "builder", "size", "pushed")}
        if stage == "bench":
            report = read_json(folder / "report.json") or {}
            entry["bench"] = {"primary_shape": report.get("primary_shape"), "threads": report.get("threads"),
                              "results": {b: {label: {k: r[k] for k in ("p50_ms", "p90_ms", "p99_ms", "throughput")}
                                              for label, r in per.items()}
                                          for b, per in (report.get("results") or {}).items()}}
    for recipe in recipes.values():
        for entry in recipe["targets"].values():
            entry.pop("_created", None)
            entry["preferred"] = choose_preferred(entry.get("verify", {}), entry.get("bench"),
                                                  entry.pop("verify_order", []))
    return {"schema": SCHEMA_VERSION, "infbuild": _version(), "recipes": recipes}


def choose_preferred(verify: dict[str, Any], bench: dict[str, Any] | None, order: list[str]) -> str | None:
    """The artifact the runtime loads: the fastest at the primary shape among those that passed verify
    (never a failed or unverified one, however fast); before any bench, the first passed in recipe order."""
    passed = [b for b in order if (verify.get(b) or {}).get("passed") is True]
    if not passed:
        return None
    results = (bench or {}).get("results") or {}
    primary = (bench or {}).get("primary_shape")
    timed = [b for b in passed if primary in (results.get(b) or {})]
    if timed:
        return min(timed, key=lambda b: results[b][primary]["p50_ms"])
    return passed[0]


def update_manifest(artifacts: Path, names: Collection[str] | None = None) -> bool:
    """Rewrite the manifest if it differs from the stamps; True when it was written. Whatever stands in its place
    (a folder, a FIFO) is moved aside first, so a damaged manifest is always repaired, never a crash."""
    with locked(artifacts):
        fresh = build_manifest(artifacts, names)
        path = artifacts / MANIFEST
        if read_json(path) == fresh:
            return False
        if path.exists() and not path.is_file() and not path.is_symlink():
            aside = path.with_name(f"{MANIFEST}.damaged-{time.strftime('%Y%m%dT%H%M%S')}")
            os.replace(path, aside)
            print(f"{path} was not a file: moved aside to {aside.name} and rewritten from the stamps", file=sys.stderr)
        write_json_atomic(path, fresh)
        return True


def manifest_problem(artifacts: Path, names: Collection[str] | None = None) -> str | None:
    """What is wrong with the manifest on disk (None when it matches the stamps)."""
    path = artifacts / MANIFEST
    if not path.exists():
        return "missing"
    if not path.is_file():
        return "not a regular file"
    on_disk = read_json(path)
    if on_disk is None:
        return "unreadable or not valid JSON"
    if on_disk != build_manifest(artifacts, names):
        return "differs from the stamps (edited by hand?)"
    return None


def manifest_current(artifacts: Path, names: Collection[str] | None = None) -> bool:
    return manifest_problem(artifacts, names) is None

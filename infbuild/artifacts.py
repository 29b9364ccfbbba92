"""Artifact folders, atomic staging and stamps (a stamp's fields are a contract: README, "What a build produces").

A stage builds into a hidden staging folder beside its final folder; ``commit`` hashes the outputs,
writes stamp.json last, then swaps the folder in with renames. A killed build leaves only hidden
staging/trash folders, which never look complete and are removed by ``clean_leftovers``.
"""
from __future__ import annotations

import os
import re
import shutil
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

from .errors import ArtifactError
from .folder import SIGNATURE, STAMP, UNSTAMPED, Outputs
from .hashing import sha256_file
from .jsonio import write_atomic
from .stamp import Stamp

_SLUG = re.compile(r"[a-z0-9][a-z0-9._-]{0,127}")


def slug_problem(name: Any) -> str | None:
    """Why ``name`` cannot be a recipe or target folder name (None when it can): lowercase letters, digits, ``._-``,
    starting with a letter or digit, at most 128 characters: never a path, ``..`` or an absolute name."""
    if not isinstance(name, str) or not _SLUG.fullmatch(name) or ".." in name:
        return f"{str(name)[:60]!r} is not a folder name (lowercase letters, digits, '.', '_', '-')"
    return None


def failed_log(folder: Path) -> Path:
    """``<stage>.failed.log`` beside a stage's folder: present exactly while the stage's last attempt failed (its
    first line says why, the worker's log follows); a commit removes it."""
    return folder.parent / f"{folder.name}.failed.log"


def record_failure(folder: Path, message: str, log: Path | None = None) -> None:
    """Write the stage's failed log: the message, then the worker's log when there is one (streamed, not read)."""
    path = failed_log(folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as out:
        out.write(message.rstrip() + "\n")
        if log is not None and log.is_file():
            out.write("\n--- worker log ---\n")
            with open(log, encoding="utf-8", errors="replace") as f:
                shutil.copyfileobj(f, out)
    os.replace(tmp, path)


def failure_reason(folder: Path) -> str | None:
    """The first line of the stage's failed log (None when its last attempt did not fail)."""
    try:
        with open(failed_log(folder), encoding="utf-8", errors="replace") as f:
            return f.readline().strip() or "failed"
    except FileNotFoundError:
        return None


def stage_dir(artifacts: Path, recipe: str, target: str, stage: str) -> Path:
    """A stage's folder; a recipe or target that is not a slug never becomes a path (ArtifactError)."""
    for what, name in (("recipe", recipe), ("target", target)):
        why = slug_problem(name)
        if why:
            raise ArtifactError(f"{what} {why}")
    return artifacts / recipe / target / stage


def new_staging(final: Path) -> Path:
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = final.parent / f".{final.name}.staging-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    return staging


def list_files(folder: Path) -> dict[str, dict[str, Any]]:
    files = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.is_symlink()):
        name = path.relative_to(folder).as_posix()
        if name in UNSTAMPED:
            continue
        files[name] = {"sha256": sha256_file(path), "size": path.stat().st_size}
    return files


def commit(staging: Path, final: Path, stamp: Stamp, outputs: Outputs,
           seal: Callable[[Path, Stamp], None] | None = None) -> Stamp:
    """Stamp the staging folder (stamp written last) and move it into place; return the stamp. Refuses (and
    stamps nothing) when the folder is not exactly the stage's ``outputs``. ``seal(staging, stamp)`` runs before the
    stamp is written (it signs the folder: a stamped folder is never seen without its signature)."""
    files = list_files(staging)
    why = outputs.problem(files)
    if why:
        raise ArtifactError(f"{stamp.stage}:{stamp.recipe}: not stamped: the output folder {why}")
    stamp = replace(stamp, files=files, created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    (staging / SIGNATURE).unlink(missing_ok=True)  # only the seal signs: a worker's own stage.sig never stays
    if seal is not None:
        seal(staging, stamp)
    write_atomic(staging / STAMP, stamp.to_json())
    trash = final.parent / f".{final.name}.trash-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    if final.exists():
        os.replace(final, trash)
    os.replace(staging, final)
    shutil.rmtree(trash, ignore_errors=True)
    failed_log(final).unlink(missing_ok=True)
    return stamp


def discard(staging: Path) -> None:
    shutil.rmtree(staging, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_leftovers(artifacts: Path) -> list[Path]:
    """Remove staging/trash folders left by killed builds (those whose process is gone)."""
    removed: list[Path] = []
    if not artifacts.is_dir():
        return removed
    for folder in artifacts.glob("*/*/.*"):
        name = folder.name
        marker = ".staging-" if ".staging-" in name else ".trash-" if ".trash-" in name else None
        if marker is None or not folder.is_dir():
            continue
        try:
            pid = int(name.split(marker, 1)[1].split("-", 1)[0])
        except ValueError:
            continue
        if not _pid_alive(pid):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def remove_stage(folder: Path) -> None:
    """`doit clean`: remove a stage's outputs (stamp first, so a half-removed folder is stale)."""
    (folder / STAMP).unlink(missing_ok=True)
    shutil.rmtree(folder, ignore_errors=True)

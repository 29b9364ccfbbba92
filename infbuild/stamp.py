"""The stamp (a contract: README, "What a build produces"): ``<stage folder>/stamp.json``, written last by ``artifacts.commit``.

``Stamp`` is its typed form; the JSON on disk keeps the contract's field names. Reading a stamp and deciding
whether it still describes its folder (labels, outputs, sizes, digests) lives here, in one place.
"""
from __future__ import annotations

from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .folder import STAMP, Outputs, unsafe_name
from .hashing import sha256_file
from .jsonio import read_or_none
from .records import from_flat

FileMeta = dict[str, Any]  # {"sha256": hex, "size": bytes}


@dataclass(frozen=True)
class Stamp:
    key: str  # sha256 of the canonical JSON of ``inputs``, everything the stage reads
    stage: str
    recipe: str
    _: KW_ONLY  # the rest by name: a stamp has too many fields to read positionally
    target: str
    files: dict[str, FileMeta]
    fingerprint: dict[str, Any] = field(default_factory=dict)  # the host that built it
    inputs: dict[str, Any] | None = None  # what the key is the digest of (absent from cache entries and images)
    created: str | None = None
    passed: bool | None = None  # judging stages (verify): whether every artifact passed
    packages: dict[str, str] | None = None  # distributions the model imported, with versions
    restored_from: str | None = None  # the cache it came from, when restored
    peak_rss_mb: int | None = None  # the worker's peak memory when it was built here
    extra: dict[str, Any] = field(default_factory=dict)  # fields of newer infbuild versions, kept as they are

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Stamp:
        stamp: Stamp = from_flat(cls, data, "extra")
        return stamp

    def to_json(self) -> dict[str, Any]:
        """The contract's JSON object (optional fields only when set)."""
        out: dict[str, Any] = {"key": self.key, "stage": self.stage, "recipe": self.recipe, "target": self.target,
                               "files": self.files, "fingerprint": self.fingerprint, **self.extra}
        for name in ("inputs", "created", "passed", "packages", "restored_from", "peak_rss_mb"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        return out

    def public(self) -> dict[str, Any]:
        """What caches and the manifest carry: everything but ``inputs`` (which can name local paths)."""
        return {k: v for k, v in self.to_json().items() if k != "inputs"}

    def digests(self) -> dict[str, Any]:
        return {n: m.get("sha256") for n, m in self.files.items()}

    def same_files(self, other: Stamp) -> bool:
        """Whether both stamps name the same files with the same contents."""
        return self.digests() == other.digests()


def parse_stamp(data: Any) -> Stamp | None:
    """A stamp from untrusted JSON, or None when it is not one (then the stage is stale)."""
    if not isinstance(data, dict) or not isinstance(data.get("files"), dict) or not isinstance(data.get("key"), str):
        return None
    if any(unsafe_name(name) or not isinstance(meta, dict) for name, meta in data["files"].items()):
        return None
    if any(not isinstance(data.get(f), str) for f in ("stage", "recipe", "target")):
        return None
    try:
        return Stamp.from_json(data)
    except TypeError:
        return None


_read: dict[Path, tuple[tuple[int, int, int, int], Stamp | None]] = {}


def read_stamp(folder: Path) -> Stamp | None:
    """The stamp of a stage folder, or None when absent, unreadable or naming files outside its folder.

    A no-op build asks for each stamp several times (its stage, the stages downstream, the manifest): a stamp is
    parsed once per process and reused while its file is the same (device, inode, size, mtime: commit replaces
    stamps with a rename, so a new stamp is a new inode)."""
    path = folder / STAMP
    try:
        st = path.stat()
    except OSError:
        return None
    ident = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    seen = _read.get(path)
    if seen is not None and seen[0] == ident:
        return seen[1]
    stamp = parse_stamp(read_or_none(path))
    _read[path] = (ident, stamp)
    return stamp


def stamp_problem(stamp: Stamp, stage: str, recipe: str, target: str, outputs: Outputs) -> str | None:
    """Why a stamp does not describe this stage's outputs (None when it does): a relabelled or foreign stamp."""
    for name, value in (("stage", stage), ("recipe", recipe), ("target", target)):
        if getattr(stamp, name) != value:
            return f"the stamp is labelled {name} {str(getattr(stamp, name))[:40]!r}, not {value!r}"
    why = outputs.problem(stamp.files)
    return f"the stamp {why}" if why else None


def missing_or_resized(folder: Path, stamp: Stamp) -> str | None:
    """Cheap completeness check: every stamped file exists with its size. Returns a reason or None."""
    for name, meta in stamp.files.items():
        try:
            size = (folder / name).stat().st_size
        except OSError:
            return f"file {name} is missing"
        if size != meta.get("size"):
            return f"file {name} changed size ({size} bytes, stamped {meta.get('size')})"
    return None


def rehash_problems(folder: Path, stamp: Stamp) -> list[str]:
    """Full check: every stamped file exists and has the stamped sha256."""
    problems = []
    for name, meta in stamp.files.items():
        path = folder / name
        if not path.is_file():
            problems.append(f"{name}: missing")
        elif sha256_file(path) != meta.get("sha256"):
            problems.append(f"{name}: sha256 differs from the stamp (tampered or corrupted)")
    return problems

"""What a cache entry is (a stamp plus its files' bytes), and the checks that make entries safe to use."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any, Callable, Mapping

from ..folder import Outputs, unsafe_name
from ..jsonio import loads_bounded
from ..packages import changes
from ..stamp import Stamp, stamp_problem

if TYPE_CHECKING:
    from ..signing.dsse import PublicKey

STAMP_FIELDS = ("key", "stage", "recipe", "target", "files", "fingerprint")


class BadEntry(Exception):
    """A cache entry that must not be used (corrupt, truncated, tampered or hostile): treated as a miss."""


def safe_name(name: Any) -> str:
    """A file name inside a stage folder (see ``unsafe_name``), else BadEntry."""
    why = unsafe_name(name)
    if why:
        raise BadEntry(why)
    return str(name)


@dataclass(frozen=True)
class Wanted:
    """The stage being built: an entry is a hit only when its stamp says it is exactly this stage's output, and, when
    signatures are required, a trusted key signed exactly that stamp (checked before any file is fetched)."""

    key: str
    stage: str
    recipe: str
    target: str
    outputs: Outputs
    trusted: Mapping[str, PublicKey] = field(default_factory=dict)  # the keys this cache's entries may be signed by
    require_signature: bool = False

    def check(self, stamp: dict[str, Any]) -> None:
        why = stamp_problem(Stamp.from_json(stamp), self.stage, self.recipe, self.target, self.outputs)
        upgraded = changes(stamp.get("packages"))
        if why or upgraded:
            raise BadEntry(why or f"built with other package versions than this host's: {', '.join(upgraded)}")
        if self.require_signature:
            why = signature_problem(stamp, self.trusted)
            if why:
                raise BadEntry(f"not signed by a trusted key: {why}")


SIGNATURE_FIELD = "signature"  # the entry's stage.sig bundle, beside its stamp


def signature_problem(entry: dict[str, Any], trusted: Mapping[str, PublicKey]) -> str | None:
    """Why the entry's signature does not show that one of ``trusted`` signed exactly its stamp (None when it does)."""
    from ..signing import stage_signature
    from ..signing.dsse import BadSignature

    bundle = entry.get(SIGNATURE_FIELD)
    if bundle is None:
        return "unsigned"
    try:
        stage_signature.check(bundle, trusted, Stamp.from_json({k: v for k, v in entry.items() if k != SIGNATURE_FIELD}))
    except BadSignature as exc:
        return str(exc)
    return None


MAX_STAMP_BYTES = 16 << 20  # a stamp lists file names and digests: anything larger is not one


def read_entry_json(read: Callable[[], bytes]) -> Any:
    """Parse an entry's stamp JSON; anything unreadable, oversized or too deeply nested is a BadEntry."""
    try:
        raw = read()
    except OSError as exc:
        raise BadEntry(f"entry unreadable: {exc.strerror or exc}") from None
    if len(raw) > MAX_STAMP_BYTES:
        raise BadEntry(f"entry stamp is {len(raw)} bytes, more than a stamp can be")
    try:
        return loads_bounded(raw, MAX_STAMP_BYTES)
    except ValueError:
        raise BadEntry("entry is not valid JSON") from None


def check_stamp(stamp: Any, key: str) -> dict[str, Any]:
    if not isinstance(stamp, dict) or any(f not in stamp for f in STAMP_FIELDS):
        raise BadEntry("entry stamp is malformed")
    if stamp["key"] != key:
        raise BadEntry(f"entry is for key {str(stamp['key'])[:12]}, not {key[:12]}")
    if not isinstance(stamp["files"], dict) or not stamp["files"]:
        raise BadEntry("entry lists no files")
    for name, meta in stamp["files"].items():
        safe_name(name)
        if not isinstance(meta, dict) or not isinstance(meta.get("sha256"), str) or not isinstance(meta.get("size"), int) \
                or isinstance(meta.get("size"), bool) or meta["size"] < 0:
            raise BadEntry(f"entry file {name!r} has no sha256/size")
    folders = {str(parent) for name in stamp["files"] for parent in PurePosixPath(name).parents}
    clash = sorted(folders & set(stamp["files"]))
    if clash:
        raise BadEntry(f"entry lists {clash[0]!r} both as a file and as a folder")
    return stamp

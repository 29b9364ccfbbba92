"""Whether an artifact's bytes are the ones verify judged: the verify stage's own stamp (its files as stamped, its
key the digest of what it recorded) must record exactly this artifact's key and digests among its upstream, and,
with trusted keys, carry a trusted signature. Then its report's verdict counts; the manifest's word never does.
Used by the runtime (load, run, the Triton model), packaging and the Triton repository."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from .folder import SIGNATURE
from .hashing import digest_json
from .reports import VerifyReport
from .stamp import Stamp, read_stamp, rehash_problems

if TYPE_CHECKING:
    from .signing.dsse import PublicKey

JUDGE = "verify"


def signature_problem(folder: Path, stamp: Stamp, trusted: Mapping[str, PublicKey] | None) -> str | None:
    """Why ``folder`` is not signed by one of ``trusted`` for exactly ``stamp`` (None when it is, or when no
    signature is required: ``trusted`` is None)."""
    if trusted is None:
        return None
    from .signing import stage_signature

    why = stage_signature.problem(folder, stamp, trusted)
    if why is None:
        return None
    keys = ", ".join(k.short for k in trusted.values()) or "none"
    return f"{folder / SIGNATURE}: {why} (trusted keys: {keys})"


def verdict(verify_folder: Path, stage: str, artifact: Stamp, backend: str,
            trusted: Mapping[str, PublicKey] | None = None) -> tuple[dict[str, Any] | None, str | None]:
    """(verify's result for ``backend``, None) when the stamped verify report judged exactly ``artifact``'s
    bytes; else (None, why not)."""
    stamp = read_stamp(verify_folder)
    if stamp is None or stamp.stage != JUDGE:
        return None, f"no verify stamp in {verify_folder}"
    problems = rehash_problems(verify_folder, stamp)
    if problems:
        return None, f"{verify_folder}: {problems[0]}"
    if stamp.inputs is None or digest_json(stamp.inputs) != stamp.key:
        return None, f"{verify_folder / 'stamp.json'} was altered (its key is not the digest of what it records)"
    judged = (stamp.inputs.get("upstream") or {}).get(stage)
    if judged != {"key": artifact.key, "files": artifact.digests()}:
        return None, f"verify judged another build of {stage} (rebuilt since: run doit build to verify this one)"
    why = signature_problem(verify_folder, stamp, trusted)
    if why:
        return None, why
    report = VerifyReport.read(verify_folder)
    if report is None:
        return None, f"{verify_folder}: the report is unreadable"
    result = report.results.get(backend)
    return (result if isinstance(result, dict) else {}), None


def passed(verify_folder: Path, stage: str, artifact_folder: Path, backend: str,
           trusted: Mapping[str, PublicKey] | None = None) -> bool:
    """Whether verify passed exactly the stamped build in ``artifact_folder``."""
    artifact = read_stamp(artifact_folder)
    if artifact is None:
        return False
    result, _ = verdict(verify_folder, stage, artifact, backend, trusted)
    return bool(result and result.get("passed") is True)

"""A stage folder's signature, ``stage.sig``: an OpenSSF model-signing v1.0 bundle over the folder's stamped files
(every file but ``stamp.json``, ``worker.log`` and ``stage.sig`` itself, which it records as ignored), whose
predicate also carries what infbuild binds to those bytes: the stage, recipe, target and **key** (and a judge's
verdict and the model's package versions, which the stamp records beside the key).

``model_signing verify key FOLDER --signature FOLDER/stage.sig --public_key PUB`` checks the bytes on its own;
infbuild checks the same bundle against the stamp (``check``), so an entry replayed under another key, relabelled
for another stage or target, or with any file changed is refused. The stamp itself is left out of the signed files
because it holds what differs between copies of one build (when and where it was restored, the local paths its key
was computed from); the predicate holds what of it matters."""
from __future__ import annotations

import hashlib
import json
import os
import uuid
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Mapping

from ..folder import LOG, SIGNATURE, STAMP
from ..hashing import canonical_json
from ..stamp import Stamp
from .dsse import STATEMENT_TYPE, BadSignature, PublicKey, SigningKey, open_bundle, read_bundle

IGNORED = (LOG, SIGNATURE, STAMP)  # what the model-signing serialization leaves out of a stage folder
PREDICATE_TYPE = "https://model_signing/signature/v1.0"
CLAIM = "dev.infbuild.stage.v1"  # the predicate field infbuild adds (model-signing v1.0 verifiers ignore it)


def claim_of(stamp: Stamp) -> dict[str, Any]:
    """What of the stamp a signature binds besides the files."""
    claim: dict[str, Any] = {"stage": stamp.stage, "recipe": stamp.recipe, "target": stamp.target, "key": stamp.key}
    if stamp.passed is not None:
        claim["passed"] = stamp.passed
    if stamp.packages is not None:
        claim["packages"] = stamp.packages
    return claim


def _resources(digests: Mapping[str, str]) -> list[dict[str, str]]:
    return [{"name": name, "algorithm": "sha256", "digest": digests[name]}
            for name in sorted(digests, key=PurePosixPath)]


def _root_digest(resources: list[dict[str, Any]]) -> str:
    """model-signing's subject digest: sha256 over the resources' raw digests, in the predicate's order."""
    h = hashlib.sha256()
    for r in resources:
        h.update(bytes.fromhex(r["digest"]))
    return h.hexdigest()


def statement(stamp: Stamp) -> dict[str, Any]:
    resources = _resources(stamp.digests())
    return {"_type": STATEMENT_TYPE,
            "subject": [{"name": stamp.stage, "digest": {"sha256": _root_digest(resources)}}],
            "predicateType": PREDICATE_TYPE,
            "predicate": {"serialization": {"method": "files", "hash_type": "sha256", "allow_symlinks": False,
                                            "ignore_paths": list(IGNORED)},
                          "resources": resources, CLAIM: claim_of(stamp)}}


def sign(key: SigningKey, stamp: Stamp) -> dict[str, Any]:
    """The bundle for a stamped folder (its files' digests are the stamp's: nothing is re-read)."""
    return key.bundle(canonical_json(statement(stamp)).encode())


def write(folder: Path, bundle: Mapping[str, Any]) -> None:
    """``folder/stage.sig``, atomically."""
    tmp = folder / f".{SIGNATURE}.{os.getpid()}.{uuid.uuid4().hex[:6]}.tmp"
    tmp.write_text(json.dumps(bundle, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, folder / SIGNATURE)


def read(folder: Path) -> Any:
    """The folder's bundle (JSON, unchecked), or BadSignature when there is none or it is not JSON."""
    return read_bundle(folder / SIGNATURE)


def check(bundle: Any, trusted: Mapping[str, PublicKey], stamp: Stamp) -> PublicKey:
    """The trusted key that signed exactly ``stamp``'s files for exactly its stage, recipe, target and key; else
    BadSignature saying what does not match."""
    payload, signer = open_bundle(bundle, trusted)
    try:
        if payload["_type"] != STATEMENT_TYPE or payload["predicateType"] != PREDICATE_TYPE:
            raise BadSignature("the signed statement is not a model-signing v1.0 statement")
        predicate = payload["predicate"]
        resources = predicate["resources"]
        signed = {r["name"]: r["digest"] for r in resources if r.get("algorithm") == "sha256"}
        subject = payload["subject"][0]["digest"]["sha256"]
        claim = predicate[CLAIM]
    except BadSignature:
        raise
    except (KeyError, TypeError, IndexError, AttributeError):
        raise BadSignature("the signed statement is malformed") from None
    try:
        consistent = len(signed) == len(resources) and subject == _root_digest(resources)
    except (KeyError, TypeError, ValueError):
        consistent = False
    if not consistent:
        raise BadSignature("the signed statement's digests are inconsistent")
    wanted = claim_of(stamp)
    if claim != wanted:
        field = next((k for k in sorted(set(claim) | set(wanted)) if claim.get(k) != wanted.get(k)), "claim") \
            if isinstance(claim, dict) else "claim"
        shown = str(claim.get(field))[:16] if isinstance(claim, dict) else "?"
        raise BadSignature(f"signed for {field} {shown!r}, not {str(wanted.get(field))[:16]!r} (replayed or relabelled)")
    digests = stamp.digests()
    for name in sorted(set(signed) | set(digests)):
        if signed.get(name) != digests.get(name):
            what = "is not signed" if name not in signed else "is signed but absent" if name not in digests \
                else "differs from the signed sha256"
            raise BadSignature(f"{name} {what}")
    return signer


def problem(folder: Path, stamp: Stamp, trusted: Mapping[str, PublicKey]) -> str | None:
    """Why ``folder/stage.sig`` does not show that one of ``trusted`` signed exactly ``stamp`` (None when it does)."""
    try:
        check(read(folder), trusted, stamp)
    except BadSignature as exc:
        return str(exc)
    return None


def sealer(key: SigningKey | None) -> Callable[[Path, Stamp], None] | None:
    """What ``artifacts.commit`` calls to sign a folder before stamping it (None: left unsigned)."""
    if key is None:
        return None

    def seal(folder: Path, stamp: Stamp) -> None:
        write(folder, sign(key, stamp))

    return seal

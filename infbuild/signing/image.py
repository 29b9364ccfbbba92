"""Signed container images. After an image is pushed, infbuild attaches to it in the registry, as OCI referrers
(manifests whose ``subject`` is the image; the ``sha256-<hex>`` index of the referrers tag schema where the registry
has no referrers API):

- a **signature** over the image manifest digest in cosign's simple-signing format (payload
  ``{"critical": {"identity": {"docker-reference"}, "image": {"docker-manifest-digest"}, "type"}, "optional"}``, an
  ECDSA-SHA256 signature in the layer's ``dev.cosignproject.cosign/signature`` annotation);
- an in-toto **SLSA provenance v1** statement about that digest (the recipe, the stage keys, the commit, the builder's
  fingerprint and tool versions, the base image's digest, the layers infbuild added) in a Sigstore bundle (DSSE).

``verify_image`` checks the signature, the provenance and every stage folder the image holds (its files against its
stamp, its ``stage.sig`` against the key): a re-pushed or tampered image has another digest, which nobody signed; a
signed image re-tagged under another tag is refused by the tag its signature names."""
from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

from ..errors import InfbuildError
from ..folder import SIGNATURE, STAMP
from ..package.oci import canonical, sha256
from ..package.reference import Reference, parse
from ..package.registry import INDEX_TYPES, MANIFEST_TYPES, Registry, RegistryError
from ..stamp import parse_stamp
from .dsse import BUNDLE_TYPE, STATEMENT_TYPE, BadSignature, PublicKey, SigningKey, open_bundle
from .stage_signature import check as check_stage

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import ec

SIGNATURE_ARTIFACT = "application/vnd.dev.cosign.artifact.sig.v1+json"
SIMPLE_SIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
COSIGN_SIGNATURE = "dev.cosignproject.cosign/signature"
PREDICATE_ANNOTATION = "dev.sigstore.bundle.predicateType"
PROVENANCE = "https://slsa.dev/provenance/v1"
BUILD_TYPE = "https://github.com/infbuild/infbuild/package/v1"
EMPTY_DIGEST = sha256(b"{}")
EMPTY_CONFIG: dict[str, Any] = {"mediaType": "application/vnd.oci.empty.v1+json", "digest": EMPTY_DIGEST, "size": 2}
OCI_MANIFEST = MANIFEST_TYPES[1]
OCI_INDEX = MANIFEST_TYPES[0]
MAX_LAYER_BYTES = 64 << 30


class ImageRefused(InfbuildError):
    """An image whose signature, provenance or contents do not check out against the key."""


@dataclass(frozen=True)
class Subject:
    """The image being signed: where it is and the exact manifest (digest, media type, size)."""

    ref: Reference  # repository and tag
    digest: str
    media_type: str
    size: int


def signature_payload(subject: Subject) -> bytes:
    return canonical({"critical": {"identity": {"docker-reference": subject.ref.name},
                                   "image": {"docker-manifest-digest": subject.digest},
                                   "type": "cosign container image signature"},
                      "optional": {"dev.infbuild.tag": subject.ref.tag or ""}})


def provenance(subject: Subject, *, recipe: dict[str, Any], target: str, builder: str, stage_keys: dict[str, str],
               revision: str | None, source: str | None, fingerprint: dict[str, Any], base: str, base_digest: str | None,
               layers: list[str], started: str) -> dict[str, Any]:
    """The SLSA provenance v1 statement of one image."""
    dependencies: list[dict[str, Any]] = []
    if revision:
        dependencies.append({"uri": f"git+{source or 'unknown'}@{revision}", "digest": {"gitCommit": revision}})
    if base_digest:
        dependencies.append({"uri": f"oci://{parse(base).name}", "name": base,
                             "digest": {"sha256": base_digest.removeprefix("sha256:")}})
    return {"_type": STATEMENT_TYPE,
            "subject": [{"name": f"{subject.ref.name}:{subject.ref.tag}",
                         "digest": {"sha256": subject.digest.removeprefix("sha256:")}}],
            "predicateType": PROVENANCE,
            "predicate": {
                "buildDefinition": {
                    "buildType": BUILD_TYPE,
                    "externalParameters": {"recipe": recipe["name"], "version": str(recipe["package"]["version"]),
                                           "target": target, "image": str(subject.ref)},
                    "internalParameters": {"builder": builder, "stage_keys": stage_keys, "layers": layers},
                    "resolvedDependencies": dependencies},
                "runDetails": {
                    "builder": {"id": "https://github.com/infbuild/infbuild", "version": fingerprint.get("tools") or {},
                                "builderDependencies": []},
                    "metadata": {"startedOn": started,
                                 "finishedOn": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
                    "byproducts": [{"name": "fingerprint", "content": base64.b64encode(canonical(fingerprint)).decode()}]}}}


def _referrer(artifact_type: str, layer: dict[str, Any], subject: Subject) -> bytes:
    return canonical({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": artifact_type,
                      "config": EMPTY_CONFIG, "layers": [layer],
                      "subject": {"mediaType": subject.media_type, "digest": subject.digest, "size": subject.size},
                      "annotations": {"org.opencontainers.image.created": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                                        time.gmtime())}})


def fallback_tag(digest: str) -> str:
    """The referrers tag schema's tag for the referrers of ``digest``."""
    return digest.replace(":", "-")


def _attach(client: Registry, subject: Subject, artifact_type: str, blob: bytes, media_type: str,
            annotations: dict[str, str]) -> str:
    """Push one referrer; where the registry did not take it as a referrer (no ``OCI-Subject`` header), add it to
    the fallback index. Returns how it was attached."""
    client.push_blob(EMPTY_DIGEST, b"{}")
    client.push_blob(sha256(blob), blob)
    raw = _referrer(artifact_type, {"mediaType": media_type, "digest": sha256(blob), "size": len(blob),
                                    "annotations": annotations}, subject)
    headers = client.push_manifest(sha256(raw), raw, OCI_MANIFEST)
    if headers.get("oci-subject") == subject.digest:
        return "referrers API"
    tag = fallback_tag(subject.digest)
    found = client.raw_manifest(tag)
    index: dict[str, Any] = json.loads(found[0]) if found else {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}
    entry = {"mediaType": OCI_MANIFEST, "digest": sha256(raw), "size": len(raw), "artifactType": artifact_type,
             "annotations": annotations}
    index["manifests"] = [m for m in index.get("manifests") or [] if m.get("digest") != entry["digest"]] + [entry]
    client.push_manifest(tag, canonical(index), OCI_INDEX)
    return f"tag {tag}"


def sign_image(client: Registry, subject: Subject, key: SigningKey, statement: dict[str, Any]) -> dict[str, Any]:
    """Attach the signature and the provenance to the pushed image; what was attached, for image.json."""
    payload = signature_payload(subject)
    signature = base64.b64encode(key.sign_blob(payload)).decode()
    how = _attach(client, subject, SIGNATURE_ARTIFACT, payload, SIMPLE_SIGNING, {COSIGN_SIGNATURE: signature})
    bundle = canonical(key.bundle(canonical(statement)))
    _attach(client, subject, BUNDLE_TYPE, bundle, BUNDLE_TYPE, {PREDICATE_ANNOTATION: PROVENANCE})
    return {"key": key.public.id, "digest": subject.digest, "attached": how}


# --- verification ---------------------------------------------------------------------------------------------

@dataclass
class Verified:
    digest: str
    provenance: dict[str, Any]
    folders: list[str] = field(default_factory=list)  # the stage folders checked inside the image


def _referrer_descriptors(client: Registry, digest: str) -> list[dict[str, Any]]:
    found = client.referrers(digest)
    if found is not None:
        return found
    raw = client.raw_manifest(fallback_tag(digest))
    if raw is None:
        return []
    try:
        index = json.loads(raw[0])
        return [d for d in index.get("manifests") or [] if isinstance(d, dict)]
    except (ValueError, AttributeError, RecursionError):
        raise ImageRefused(f"the referrers index {fallback_tag(digest)} is not JSON") from None


def _layer_of(client: Registry, descriptor: dict[str, Any], digest: str) -> tuple[dict[str, Any], bytes] | None:
    """(layer descriptor, blob) of a referrer manifest whose subject is ``digest``; None for anything else."""
    found = client.raw_manifest(str(descriptor.get("digest")))
    if found is None or sha256(found[0]) != descriptor.get("digest"):
        return None
    try:
        manifest = json.loads(found[0])
        if (manifest.get("subject") or {}).get("digest") != digest or len(manifest["layers"]) != 1:
            return None
        layer = manifest["layers"][0]
        if not isinstance(layer.get("size"), int) or layer["size"] > (16 << 20):
            return None
        return layer, client.blob(layer["digest"], max_bytes=layer["size"])
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError, RegistryError):
        return None


def _ecdsa_ok(key: ec.EllipticCurvePublicKey, signature: bytes, payload: bytes) -> bool:
    from cryptography import exceptions
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        key.verify(signature, payload, ec.ECDSA(hashes.SHA256()))
        return True
    except exceptions.InvalidSignature:
        return False


def _check_signature(found: list[tuple[dict[str, Any], bytes]], ref: Reference, digest: str, key: PublicKey) -> None:
    why = "no signature is attached to it"
    for layer, payload in found:
        if layer.get("mediaType") != SIMPLE_SIGNING:
            continue
        try:
            signature = base64.b64decode((layer.get("annotations") or {}).get(COSIGN_SIGNATURE, ""), validate=True)
        except ValueError:
            continue
        if not _ecdsa_ok(key.key, signature, payload):
            why = f"its signature is not by key {key.short} (another key, or altered)"
            continue
        claim = json.loads(payload)
        critical, optional = claim.get("critical") or {}, claim.get("optional") or {}
        if (critical.get("image") or {}).get("docker-manifest-digest") != digest:
            why = "the signature is for another image digest"
        elif (critical.get("identity") or {}).get("docker-reference") != ref.name:
            why = f"the signature is for {(critical.get('identity') or {}).get('docker-reference')}, not {ref.name}"
        elif ref.tag and optional.get("dev.infbuild.tag") != ref.tag:
            why = f"the image was signed as tag {optional.get('dev.infbuild.tag')!r}, not {ref.tag!r} (re-tagged)"
        else:
            return
    raise ImageRefused(f"{ref}@{digest[:19]}: {why}")


def _check_provenance(found: list[tuple[dict[str, Any], bytes]], ref: Reference, digest: str, key: PublicKey
                      ) -> dict[str, Any]:
    why = "no provenance is attached to it"
    for layer, blob in found:
        if (layer.get("annotations") or {}).get(PREDICATE_ANNOTATION) != PROVENANCE:
            continue
        try:
            statement, _ = open_bundle(json.loads(blob), {key.id: key})
        except (BadSignature, ValueError) as exc:
            why = f"its provenance does not verify ({exc})"
            continue
        subjects = statement.get("subject") or []
        if statement.get("predicateType") != PROVENANCE or not any(
                (s.get("digest") or {}).get("sha256") == digest.removeprefix("sha256:") for s in subjects):
            why = "the provenance is about another image"
            continue
        return dict(statement)
    raise ImageRefused(f"{ref}@{digest[:19]}: {why}")


def _layer_files(blob: bytes, where: str) -> tuple[dict[str, str], dict[str, bytes]]:
    """Every regular file of a layer: path -> sha256, and the small bookkeeping files' bytes (stamps, signatures)."""
    digests: dict[str, str] = {}
    small: dict[str, bytes] = {}
    data = gzip.decompress(blob) if blob[:2] == b"\x1f\x8b" else blob
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for member in tar:
            name = PurePosixPath(member.name.lstrip("./")).as_posix()
            if not member.isfile():
                continue
            f = tar.extractfile(member)
            assert f is not None
            content = f.read()
            digests[name] = hashlib.sha256(content).hexdigest()
            if PurePosixPath(name).name in (STAMP, SIGNATURE) or name.endswith("/manifest.json"):
                small[name] = content
    return digests, small


def _check_folders(digests: dict[str, str], small: dict[str, bytes], key: PublicKey, ref: Reference) -> list[str]:
    """Every stage folder in the layer: files as its stamp says, its stage.sig by ``key`` for exactly that stamp.
    A Triton image's repository (under /models) is checked against the triton stage's stamp carried beside it."""
    checked = []
    for name, raw in sorted(small.items()):
        if PurePosixPath(name).name != STAMP:
            continue
        folder = str(PurePosixPath(name).parent)
        try:
            stamp = parse_stamp(json.loads(raw))
        except (ValueError, RecursionError):
            stamp = None
        if stamp is None:
            raise ImageRefused(f"{ref}: /{name} is not a stamp")
        base = "models" if stamp.stage == "triton" and folder.startswith("opt/infbuild/") else folder
        for file, meta in stamp.files.items():
            path = f"{base}/{file.removeprefix('repository/')}" if base == "models" and file.startswith("repository/") \
                else f"{folder}/{file}"
            if digests.get(path) != meta.get("sha256"):
                raise ImageRefused(f"{ref}: /{path} {'is missing' if path not in digests else 'differs from its stamp'}")
        signature = small.get(f"{folder}/{SIGNATURE}")
        if signature is None:
            raise ImageRefused(f"{ref}: /{folder} carries no {SIGNATURE}")
        try:
            check_stage(json.loads(signature), {key.id: key}, stamp)
        except (BadSignature, ValueError) as exc:
            raise ImageRefused(f"{ref}: /{folder}/{SIGNATURE}: {exc}") from None
        checked.append(f"/{folder}")
    if not checked:
        raise ImageRefused(f"{ref}: the image holds no stamped artifact folder")
    return checked


def verify_image(text: str, key: PublicKey, credentials: tuple[str, str] | None = None) -> Verified:
    """Check an image in its registry: signature, provenance and every artifact folder, against ``key``."""
    ref = parse(text)
    client = Registry(ref, credentials)
    found = client.raw_manifest(ref.digest or ref.tag or "latest")
    if found is None:
        raise ImageRefused(f"{ref}: no such image")
    raw, media_type = found
    digest = sha256(raw)
    if ref.digest and ref.digest != digest:
        raise ImageRefused(f"{ref}: the registry answered a manifest of another digest")
    manifest = json.loads(raw)
    if manifest.get("mediaType", media_type) in INDEX_TYPES:
        raise ImageRefused(f"{ref}: an index, not an image manifest: verify one platform's image by its digest")
    referrers = [x for x in (_layer_of(client, d, digest) for d in _referrer_descriptors(client, digest)) if x]
    _check_signature(referrers, ref, digest, key)
    statement = _check_provenance(referrers, ref, digest, key)
    ours = set(statement["predicate"]["buildDefinition"]["internalParameters"].get("layers") or [])
    layers = [layer for layer in manifest.get("layers") or [] if layer.get("digest") in ours]
    if not layers:
        raise ImageRefused(f"{ref}: the provenance names no layer of this image")
    digests: dict[str, str] = {}
    small: dict[str, bytes] = {}
    for layer in layers:
        size = layer.get("size")
        if not isinstance(size, int) or size > MAX_LAYER_BYTES:
            raise ImageRefused(f"{ref}: layer {str(layer.get('digest'))[:19]} has no plausible size")
        try:
            files, extra = _layer_files(client.blob(layer["digest"], max_bytes=size), ref.name)
        except (RegistryError, tarfile.TarError, OSError, EOFError) as exc:
            raise ImageRefused(f"{ref}: layer {layer['digest'][:19]} is damaged ({exc})") from None
        digests.update(files)
        small.update(extra)
    return Verified(digest, statement, _check_folders(digests, small, key, ref))

"""Daemonless OCI images: the base image's manifest and config from its registry, one deterministic layer
with the artifacts (sorted entries, mtime 0, uid/gid 0, gzip header without time or name), a new config with
the labels; written as an OCI image layout and/or pushed. Same inputs -> same digests, run after run."""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from .reference import Reference
from .registry import Registry

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
_LAYER_TYPES = {
    "application/vnd.docker.image.rootfs.diff.tar.gzip": OCI_LAYER_GZIP,
    "application/vnd.docker.image.rootfs.diff.tar": "application/vnd.oci.image.layer.v1.tar",
}
EPOCH = "1970-01-01T00:00:00Z"


def canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def layer_tar(files: dict[str, Path | bytes]) -> bytes:
    """A reproducible tar: entries sorted, parent folders included, mtime 0, uid/gid 0, fixed modes, PAX."""
    folders: set[str] = set()
    for name in files:
        for parent in PurePosixPath(name).parents:
            if str(parent) not in (".", "/"):
                folders.add(str(parent))
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(folders | set(files)):
            info = tarfile.TarInfo(name if name in files else name + "/")
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            if name in files:
                source = files[name]
                data = source if isinstance(source, bytes) else source.read_bytes()
                info.size, info.mode = len(data), 0o644
                tar.addfile(info, io.BytesIO(data))
            else:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
    return buffer.getvalue()


def gzip_deterministic(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=6, mtime=0)


@dataclass
class OciImage:
    manifest: bytes
    config: bytes
    layer: bytes
    base_layers: list[dict[str, Any]]
    base_ref: Reference
    base_digest: str
    blobs: dict[str, bytes] = field(default_factory=dict)

    @property
    def digest(self) -> str:
        return sha256(self.manifest)

    @property
    def size(self) -> int:
        return sum(layer["size"] for layer in json.loads(self.manifest)["layers"]) + len(self.config)


def assemble(base: str, files: dict[str, Path | bytes], labels: dict[str, str], annotations: dict[str, str],
             credentials: tuple[str, str] | None = None, env: dict[str, str] | None = None,
             cmd: list[str] | None = None) -> OciImage:
    """Fetch the base's manifest and config, add the artifact layer, the labels, and the environment variables and
    command when given (the base's own variables of other names are kept)."""
    from .reference import parse

    base_ref = parse(base)
    source = Registry(base_ref, credentials)
    base_manifest, base_digest, _ = source.manifest(base_ref.digest or base_ref.tag or "latest")
    config = json.loads(source.blob(base_manifest["config"]["digest"]))
    tar = layer_tar(files)
    layer = gzip_deterministic(tar)
    config.setdefault("config", {})
    config["config"]["Labels"] = {**(config["config"].get("Labels") or {}), **labels}
    if env:  # a *PATH variable the base sets keeps the base's entries after ours
        before = dict(e.split("=", 1) for e in config["config"].get("Env") or [] if "=" in e)
        ours = {k: f"{v}:{before[k]}" if k.endswith("PATH") and before.get(k) else v for k, v in env.items()}
        config["config"]["Env"] = [f"{k}={v}" for k, v in {**before, **ours}.items()]
    if cmd:
        config["config"]["Cmd"] = list(cmd)
    config.setdefault("rootfs", {"type": "layers", "diff_ids": []})["diff_ids"].append(sha256(tar))
    config.setdefault("history", []).append({"created": EPOCH, "created_by": "infbuild package (artifact layer)"})
    config["created"] = EPOCH
    config_raw = canonical(config)
    base_layers = [{**layer_desc, "mediaType": _LAYER_TYPES.get(layer_desc["mediaType"], layer_desc["mediaType"])}
                   for layer_desc in base_manifest["layers"]]
    manifest = {
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": sha256(config_raw), "size": len(config_raw)},
        "layers": base_layers + [{"mediaType": OCI_LAYER_GZIP, "digest": sha256(layer), "size": len(layer)}],
        "annotations": {**annotations, "org.opencontainers.image.base.name": str(base_ref.with_tag(base_ref.tag or "latest")),
                        "org.opencontainers.image.base.digest": base_digest},
    }
    return OciImage(canonical(manifest), config_raw, layer, base_layers, base_ref, base_digest)


def write_layout(image: OciImage, dest: Path, tag: str, credentials: tuple[str, str] | None = None) -> None:
    """An OCI image layout (oci-layout, index.json, blobs/sha256/…) holding the whole image."""
    blobs = dest / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    source = Registry(image.base_ref, credentials)

    def put(data: bytes) -> None:
        (blobs / sha256(data).split(":", 1)[1]).write_bytes(data)

    for layer in image.base_layers:
        path = blobs / layer["digest"].split(":", 1)[1]
        if not path.exists():
            path.write_bytes(source.blob(layer["digest"]))
    for data in (image.layer, image.config, image.manifest):
        put(data)
    (dest / "oci-layout").write_bytes(canonical({"imageLayoutVersion": "1.0.0"}))
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [{
        "mediaType": OCI_MANIFEST, "digest": image.digest, "size": len(image.manifest),
        "annotations": {"org.opencontainers.image.ref.name": tag}}]}
    (dest / "index.json").write_bytes(canonical(index))


def push(image: OciImage, target: Reference, credentials: tuple[str, str] | None = None,
         base_credentials: tuple[str, str] | None = None) -> Registry:
    """Push to ``target``: blobs the registry already has are skipped, base layers are mounted across
    repositories of the same registry or copied; returns the client (its uploaded_bytes say what moved)."""
    dest = Registry(target, credentials)
    source = Registry(image.base_ref, base_credentials)
    for layer in image.base_layers:
        if dest.has_blob(layer["digest"]):
            continue
        if target.registry == image.base_ref.registry and dest.mount(layer["digest"], image.base_ref.repository):
            continue
        dest.push_blob(layer["digest"], source.blob(layer["digest"]))
    dest.push_blob(sha256(image.layer), image.layer)
    dest.push_blob(sha256(image.config), image.config)
    dest.push_manifest(target.tag or "latest", image.manifest, OCI_MANIFEST)
    return dest

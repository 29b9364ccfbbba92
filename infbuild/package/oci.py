"""Daemonless OCI images: the base image's manifest and config from its registry, one deterministic layer
with the artifacts (sorted entries, mtime 0, uid/gid 0, gzip header without time or name), a new config with
the labels; written as an OCI image layout and/or pushed. Same inputs -> same digests, run after run. Every
layer is streamed through files (built, hashed, copied and uploaded in chunks): an artifact is never held whole
in memory."""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from ..hashing import sha256_file
from .reference import Reference
from .registry import CHUNK, Registry

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


def write_tar(files: dict[str, Path | bytes], out: BinaryIO) -> None:
    """A reproducible tar streamed into ``out`` (files are read in chunks, never whole): entries sorted, parent
    folders included, mtime 0, uid/gid 0, fixed modes, PAX."""
    folders: set[str] = set()
    for name in files:
        for parent in PurePosixPath(name).parents:
            if str(parent) not in (".", "/"):
                folders.add(str(parent))
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(folders | set(files)):
            info = tarfile.TarInfo(name if name in files else name + "/")
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            if name in files:
                source = files[name]
                info.mode = 0o644
                if isinstance(source, bytes):
                    info.size = len(source)
                    tar.addfile(info, io.BytesIO(source))
                else:
                    info.size = source.stat().st_size
                    with open(source, "rb") as f:
                        tar.addfile(info, f)
            else:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)


@dataclass(frozen=True)
class Layer:
    """A gzipped layer on disk: its file, digest, size and uncompressed digest (the config's diff_id)."""

    path: Path
    digest: str
    size: int
    diff_id: str


def write_layer(files: dict[str, Path | bytes], folder: Path) -> Layer:
    """The artifact layer as ``folder/layer.tar.gz``, streamed through a temporary tar (memory: one chunk, whatever
    the artifacts weigh), gzip deterministic (no name, mtime 0, fixed chunking)."""
    tar_path, gz_path = folder / "layer.tar", folder / "layer.tar.gz"
    with open(tar_path, "wb") as f:
        write_tar(files, f)
    diff_id = sha256_file(tar_path)
    with open(tar_path, "rb") as src, open(gz_path, "wb") as raw, \
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=6, mtime=0) as gz:
        shutil.copyfileobj(src, gz, CHUNK)
    tar_path.unlink()
    return Layer(gz_path, "sha256:" + sha256_file(gz_path), gz_path.stat().st_size, "sha256:" + diff_id)


@dataclass
class OciImage:
    manifest: bytes
    config: bytes
    layer: Layer
    base_layers: list[dict[str, Any]]
    base_ref: Reference
    base_digest: str

    @property
    def digest(self) -> str:
        return sha256(self.manifest)

    @property
    def size(self) -> int:
        return sum(layer["size"] for layer in json.loads(self.manifest)["layers"]) + len(self.config)


def assemble(base: str, files: dict[str, Path | bytes], labels: dict[str, str], annotations: dict[str, str],
             scratch: Path, credentials: tuple[str, str] | None = None, env: dict[str, str] | None = None,
             cmd: list[str] | None = None) -> OciImage:
    """Fetch the base's manifest and config, add the artifact layer (written into ``scratch``), the labels, and the
    environment variables and command when given (the base's own variables of other names are kept)."""
    from .reference import parse

    base_ref = parse(base)
    source = Registry(base_ref, credentials)
    base_manifest, base_digest, _ = source.manifest(base_ref.digest or base_ref.tag or "latest")
    config = json.loads(source.blob(base_manifest["config"]["digest"]))
    layer = write_layer(files, scratch)
    config.setdefault("config", {})
    config["config"]["Labels"] = {**(config["config"].get("Labels") or {}), **labels}
    if env:  # a *PATH variable the base sets keeps the base's entries after ours
        before = dict(e.split("=", 1) for e in config["config"].get("Env") or [] if "=" in e)
        ours = {k: f"{v}:{before[k]}" if k.endswith("PATH") and before.get(k) else v for k, v in env.items()}
        config["config"]["Env"] = [f"{k}={v}" for k, v in {**before, **ours}.items()]
    if cmd:
        config["config"]["Cmd"] = list(cmd)
    config.setdefault("rootfs", {"type": "layers", "diff_ids": []})["diff_ids"].append(layer.diff_id)
    config.setdefault("history", []).append({"created": EPOCH, "created_by": "infbuild package (artifact layer)"})
    config["created"] = EPOCH
    config_raw = canonical(config)
    base_layers = [{**layer_desc, "mediaType": _LAYER_TYPES.get(layer_desc["mediaType"], layer_desc["mediaType"])}
                   for layer_desc in base_manifest["layers"]]
    manifest = {
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": sha256(config_raw), "size": len(config_raw)},
        "layers": base_layers + [{"mediaType": OCI_LAYER_GZIP, "digest": layer.digest, "size": layer.size}],
        "annotations": {**annotations, "org.opencontainers.image.base.name": str(base_ref.with_tag(base_ref.tag or "latest")),
                        "org.opencontainers.image.base.digest": base_digest},
    }
    return OciImage(canonical(manifest), config_raw, layer, base_layers, base_ref, base_digest)


def _download(source: Registry, layer: dict[str, Any], dest: Path) -> None:
    """A base layer streamed into ``dest`` (checked against its digest, no more than its descriptor's size)."""
    tmp = dest.with_name(dest.name + ".part")
    with open(tmp, "wb") as f:
        source.blob_to(layer["digest"], f, max_bytes=int(layer["size"]))
    tmp.replace(dest)


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
            _download(source, layer, path)
    layer_blob = blobs / image.layer.digest.split(":", 1)[1]
    if not layer_blob.exists():
        shutil.copyfile(image.layer.path, layer_blob)
    for data in (image.config, image.manifest):
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
        copy = image.layer.path.with_name("base-layer")  # through the scratch folder, never whole in memory
        _download(source, layer, copy)
        try:
            dest.push_blob(layer["digest"], copy)
        finally:
            copy.unlink(missing_ok=True)
    dest.push_blob(image.layer.digest, image.layer.path)  # streamed in chunks
    dest.push_blob(sha256(image.config), image.config)
    dest.push_manifest(target.tag or "latest", image.manifest, OCI_MANIFEST)
    return dest

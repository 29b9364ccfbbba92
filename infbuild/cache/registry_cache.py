"""An OCI registry as a cache: each entry is an OCI artifact (manifest + blobs) tagged with the stage key;
the config blob is the stamp, each layer one file (annotated with its name). Credentials from the environment."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..package.oci import canonical, sha256
from ..package.reference import parse
from ..package.registry import NotFound, Registry, RegistryError, Unavailable
from .entry import MAX_STAMP_BYTES, BadEntry, Wanted, check_stamp, read_entry_json, safe_name

ARTIFACT_TYPE = "application/vnd.infbuild.stage.v1"
STAMP_TYPE = "application/vnd.infbuild.stamp.v1+json"
FILE_TYPE = "application/vnd.infbuild.file.v1"
TITLE = "org.opencontainers.image.title"


class RegistryCache:
    kind = "oci"

    def __init__(self, repository: str, writable: bool = True, credentials: tuple[str, str] | None = None) -> None:
        self.ref = parse(f"{repository}:cache")
        self.writable = writable
        self.credentials = credentials
        self.name = f"oci:{self.ref.name}"

    def _client(self) -> Registry:
        return Registry(self.ref, self.credentials, timeout=30)

    def where(self, key: str) -> str:
        """The entry's location, for messages."""
        return f"{self.ref.name}:{key}"

    def _entry(self, client: Registry, key: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """(manifest, stamp) of the entry tagged ``key``, the stamp checked for shape; None when absent."""
        try:
            manifest, _, _ = client.manifest(key)
        except NotFound:
            return None
        except Unavailable:
            raise  # the cache is down: not this entry's fault
        except RegistryError as exc:
            raise BadEntry(str(exc)) from None
        try:
            config = manifest["config"]
            if not isinstance(config.get("size"), int) or config["size"] > MAX_STAMP_BYTES:
                raise BadEntry(f"stamp blob size {config.get('size')!r} is not a stamp's")
            raw = client.blob(str(config["digest"]), max_bytes=config["size"])
        except (KeyError, TypeError, AttributeError, RegistryError) as exc:
            raise BadEntry(f"malformed cache artifact: {exc}") from None
        return manifest, check_stamp(read_entry_json(lambda: raw), key)

    def peek(self, key: str) -> dict[str, Any] | None:
        """The entry's stamp as stored (its files unchecked), or None when the key has no entry."""
        found = self._entry(self._client(), key)
        return found[1] if found else None

    def get(self, wanted: Wanted, staging: Path) -> dict[str, Any] | None:
        """The entry for ``wanted.key``, checked like a local one, its files streamed into the empty folder
        ``staging`` (hashed as they come, one chunk in memory). Each layer's descriptor must give the size and
        digest the stamp names before anything is fetched, and no fetch reads more than that size."""
        client = self._client()
        found = self._entry(client, wanted.key)
        if found is None:
            return None
        manifest, stamp = found
        wanted.check(stamp)
        try:
            layers = {safe_name((layer.get("annotations") or {}).get(TITLE)): layer for layer in manifest["layers"]}
        except (KeyError, TypeError, AttributeError) as exc:
            raise BadEntry(f"malformed cache artifact: {exc}") from None
        if set(layers) != set(stamp["files"]) or len(layers) != len(manifest["layers"]):
            raise BadEntry("cache artifact files differ from its stamp")
        for name, layer in layers.items():
            meta = stamp["files"][name]
            if layer.get("size") != meta["size"] or layer.get("digest") != "sha256:" + meta["sha256"]:
                raise BadEntry(f"{name}: layer descriptor ({layer.get('size')!r} bytes, {str(layer.get('digest'))[:19]}) "
                               "differs from the stamp")
        for name, layer in layers.items():
            dest = staging / name
            try:
                dest.parent.mkdir(parents=True, exist_ok=True)
                with open(dest, "xb") as f:  # never through a link or over another file of the entry
                    size = client.blob_to(layer["digest"], f, max_bytes=stamp["files"][name]["size"])
            except (FileExistsError, NotADirectoryError, IsADirectoryError) as exc:
                raise BadEntry(f"{name}: cannot be written into the stage folder ({exc.strerror})") from None
            except Unavailable:
                raise
            except RegistryError as exc:
                raise BadEntry(f"{name}: {exc}") from None
            if size != stamp["files"][name]["size"]:
                raise BadEntry(f"{name}: {size} bytes, the stamp says {stamp['files'][name]['size']} (truncated?)")
        return stamp

    def put(self, key: str, stamp: dict[str, Any], folder: Path, replace: bool = False) -> bool:
        """Push the stage unless its key is already tagged (first writer wins, up to the registry's lack of a
        conditional push; ``replace`` overrides). Returns whether this call pushed it."""
        if not replace:
            try:
                if self.peek(key) is not None:
                    return False
            except BadEntry:
                pass  # a damaged entry is replaced
        client = self._client()
        config = canonical(stamp)
        layers = []
        for name, meta in sorted(stamp["files"].items()):
            client.push_blob("sha256:" + meta["sha256"], folder / name)  # streamed in chunks
            layers.append({"mediaType": FILE_TYPE, "digest": "sha256:" + meta["sha256"], "size": meta["size"],
                           "annotations": {TITLE: name}})
        client.push_blob(sha256(config), config)
        manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "artifactType": ARTIFACT_TYPE,
                    "config": {"mediaType": STAMP_TYPE, "digest": sha256(config), "size": len(config)},
                    "layers": layers,
                    "annotations": {"dev.infbuild.stage": str(stamp.get("stage")), "dev.infbuild.target": str(stamp.get("target"))}}
        client.push_manifest(key, canonical(manifest), str(manifest["mediaType"]))
        return True

    def entries(self) -> list[dict[str, Any]]:
        return [{"key": tag, "stage": None, "recipe": None, "target": None, "size": None, "used": None}
                for tag in self._client().tags()]

    def size(self) -> int | None:
        return None  # a registry does not say how much a repository holds

    def gc(self, max_size: int) -> tuple[int, int] | None:
        return None  # pruned by the registry's own retention policy, not by infbuild

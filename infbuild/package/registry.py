"""A small client for the OCI distribution API (pull manifests and blobs, push blobs and manifests), with
the Bearer-token and Basic auth flows registries use. Credentials come from the environment only."""
from __future__ import annotations

import base64
import hashlib
import json
import re
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, BinaryIO

from .. import settings
from ..errors import InfbuildError
from .reference import Reference

MANIFEST_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
INDEX_TYPES = MANIFEST_TYPES[0], MANIFEST_TYPES[2]
OCI_EMPTY_ACCEPT = "*/*"


class RegistryError(InfbuildError):
    """A registry could not be reached, refused us, or answered something unusable."""


class Unavailable(RegistryError):
    """The registry cannot be reached or refuses our credentials: nothing it holds can be used now."""


class NotFound(RegistryError):
    """The registry answered 404: no such manifest, tag or blob."""


CHUNK = 16 << 20  # what a streamed download or a chunked upload holds in memory at once
MAX_MANIFEST_BYTES = 4 << 20  # the distribution spec lets registries refuse larger manifests; so do we
MAX_INDEX_DEPTH = 2  # an index names manifests; an index of indexes of ... is refused, not followed forever


class Registry:
    def __init__(self, ref: Reference, credentials: tuple[str, str] | None = None, timeout: float = 60) -> None:
        self.ref = ref
        scheme = "http" if ref.plain_http or settings.value("insecure_registry") == ref.registry else "https"
        self.base = f"{scheme}://{ref.registry}/v2/{ref.repository}"
        self.credentials = credentials
        self.timeout = timeout
        self.token: str | None = None
        self.uploaded_bytes = 0
        self.uploaded_blobs: list[str] = []

    # -- transport ---------------------------------------------------------------------------
    def _open(self, method: str, url: str, data: bytes | None = None, headers: dict[str, str] | None = None,
              retry_auth: bool = True) -> Any:
        """One HTTP exchange: the open response of a 2xx answer (the caller reads and closes it), else the
        (status, headers, start of the body) of the error answer, after one authentication round where asked."""
        sent = dict(headers or {})
        if self.token:
            sent["Authorization"] = f"Bearer {self.token}"
        elif self.credentials:
            raw = f"{self.credentials[0]}:{self.credentials[1]}".encode()
            sent["Authorization"] = "Basic " + base64.b64encode(raw).decode()
        request = urllib.request.Request(url, data=data, method=method, headers=sent)
        try:
            return urllib.request.urlopen(request, timeout=self.timeout)
        except urllib.error.HTTPError as exc:
            body = exc.read(64 << 10)
            if exc.code == 401 and retry_auth and self._authenticate(exc.headers.get("WWW-Authenticate", "")):
                return self._open(method, url, data, headers, retry_auth=False)
            return exc.code, {k.lower(): v for k, v in exc.headers.items()}, body
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise Unavailable(f"registry {self.ref.registry} unreachable: {reason}") from None

    def _request(self, method: str, url: str, data: bytes | None = None, headers: dict[str, str] | None = None,
                 max_bytes: int | None = None) -> tuple[int, dict[str, str], bytes]:
        """One HTTP exchange read whole; a body longer than ``max_bytes`` is refused after reading at most one byte
        more."""
        answer = self._open(method, url, data, headers)
        if isinstance(answer, tuple):
            return answer
        try:
            with answer as response:
                body = response.read() if max_bytes is None else response.read(max_bytes + 1)
                if max_bytes is not None and len(body) > max_bytes:
                    raise RegistryError(f"registry {self.ref.registry}: {method} {url.rsplit('/', 2)[-2]} answered "
                                        f"more than the expected {max_bytes} bytes")
                return response.status, {k.lower(): v for k, v in response.headers.items()}, body
        except (urllib.error.URLError, OSError) as exc:
            raise Unavailable(f"registry {self.ref.registry} unreachable: {getattr(exc, 'reason', exc)}") from None

    def _authenticate(self, challenge: str) -> bool:
        if not challenge.lower().startswith("bearer "):
            return False
        params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
        realm = params.pop("realm", None)
        if not realm:
            return False
        url = realm + "?" + urllib.parse.urlencode(params)
        headers = {}
        if self.credentials:
            raw = f"{self.credentials[0]}:{self.credentials[1]}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(raw).decode()
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=self.timeout) as r:
                body = json.loads(r.read())
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise RegistryError(f"registry {self.ref.registry}: token request failed: {exc}") from None
        self.token = body.get("token") or body.get("access_token")
        return bool(self.token)

    def _check(self, status: int, body: bytes, what: str, ok: tuple[int, ...]) -> None:
        if status in ok:
            return
        detail = body[:300].decode("utf-8", "replace").strip()
        if status in (401, 403):
            raise Unavailable(f"registry {self.ref.registry} refused {what} (HTTP {status}): check the credentials "
                                f"in the environment; {detail}")
        raise RegistryError(f"registry {self.ref.registry}: {what} failed (HTTP {status}): {detail}")

    # -- pull --------------------------------------------------------------------------------
    def manifest(self, reference: str, platform: tuple[str, str] = ("linux", "amd64"),
                 _depth: int = 0) -> tuple[dict[str, Any], str, bytes]:
        """(manifest, its digest, raw bytes), resolving an index to the platform's manifest."""
        status, headers, body = self._request("GET", f"{self.base}/manifests/{reference}",
                                              headers={"Accept": ", ".join(MANIFEST_TYPES)},
                                              max_bytes=MAX_MANIFEST_BYTES)
        if status == 404:
            raise NotFound(f"image {self.ref.name}:{reference} not found in {self.ref.registry}")
        self._check(status, body, f"GET manifest {reference}", (200,))
        try:
            document = json.loads(body)
        except (ValueError, RecursionError):
            raise RegistryError(f"registry {self.ref.registry}: manifest {self.ref.name}:{reference} is not JSON") from None
        if not isinstance(document, dict):
            raise RegistryError(f"registry {self.ref.registry}: manifest {self.ref.name}:{reference} is not an object")
        media = document.get("mediaType") or headers.get("content-type", "")
        if media in INDEX_TYPES or "manifests" in document:
            if _depth >= MAX_INDEX_DEPTH:
                raise RegistryError(f"registry {self.ref.registry}: {self.ref.name}:{reference} is an index of "
                                    f"indexes more than {MAX_INDEX_DEPTH} deep")
            for entry in document.get("manifests") or []:
                p = entry.get("platform", {}) if isinstance(entry, dict) else {}
                if isinstance(p, dict) and (p.get("os"), p.get("architecture")) == platform:
                    return self.manifest(str(entry.get("digest")), platform, _depth + 1)
            raise RegistryError(f"image {self.ref.name}:{reference} has no {platform[0]}/{platform[1]} manifest")
        return document, "sha256:" + hashlib.sha256(body).hexdigest(), body

    def blob(self, digest: str, max_bytes: int | None = None) -> bytes:
        """A small blob (a config, a stamp), checked against its digest; ``max_bytes`` caps what is read."""
        status, _, body = self._request("GET", f"{self.base}/blobs/{digest}", max_bytes=max_bytes)
        if status == 404:
            raise NotFound(f"registry {self.ref.registry}: blob {digest[:19]} not found")
        self._check(status, body, f"GET blob {digest[:19]}", (200,))
        if "sha256:" + hashlib.sha256(body).hexdigest() != digest:
            raise RegistryError(f"registry {self.ref.registry}: blob {digest[:19]} does not match its digest")
        return body

    def blob_to(self, digest: str, dest: BinaryIO, max_bytes: int) -> int:
        """Stream a blob into ``dest`` in chunks, hashing as it comes (memory: one chunk, whatever its size): never
        more than ``max_bytes``; RegistryError when its bytes do not match ``digest``. Returns its size."""
        answer = self._open("GET", f"{self.base}/blobs/{digest}")
        if isinstance(answer, tuple):
            status, _, body = answer
            if status == 404:
                raise NotFound(f"registry {self.ref.registry}: blob {digest[:19]} not found")
            self._check(status, body, f"GET blob {digest[:19]}", (200,))
        h, size = hashlib.sha256(), 0
        try:
            with answer as response:
                while chunk := response.read(CHUNK):
                    size += len(chunk)
                    if size > max_bytes:
                        raise RegistryError(f"registry {self.ref.registry}: blob {digest[:19]} has more than the "
                                            f"expected {max_bytes} bytes")
                    h.update(chunk)
                    dest.write(chunk)
        except (urllib.error.URLError, OSError) as exc:
            raise Unavailable(f"registry {self.ref.registry}: blob {digest[:19]} interrupted: "
                              f"{getattr(exc, 'reason', exc)}") from None
        if "sha256:" + h.hexdigest() != digest:
            raise RegistryError(f"registry {self.ref.registry}: blob {digest[:19]} does not match its digest")
        return size

    def tags(self) -> list[str]:
        """The repository's tags (empty when the repository does not exist yet)."""
        status, _, body = self._request("GET", f"{self.base}/tags/list", max_bytes=MAX_MANIFEST_BYTES)
        if status == 404:
            return []
        self._check(status, body, "list tags", (200,))
        try:
            tags = json.loads(body).get("tags") or []
        except (ValueError, AttributeError, RecursionError):
            raise RegistryError(f"registry {self.ref.registry}: the tag list of {self.ref.name} is not JSON") from None
        return [str(t) for t in tags]

    # -- push --------------------------------------------------------------------------------
    def has_blob(self, digest: str) -> bool:
        status, _, _ = self._request("HEAD", f"{self.base}/blobs/{digest}")
        return status == 200

    def mount(self, digest: str, source_repository: str) -> bool:
        query = urllib.parse.urlencode({"mount": digest, "from": source_repository})
        status, _, _ = self._request("POST", f"{self.base}/blobs/uploads/?{query}", data=b"")
        return status == 201

    def push_blob(self, digest: str, data: bytes | Path) -> None:
        """Upload a blob unless the registry has it: bytes, or a file sent in CHUNK-sized PATCH requests (the
        distribution API's chunked upload; memory: one chunk) closed by the PUT that names the digest."""
        if self.has_blob(digest):
            return
        status, headers, body = self._request("POST", f"{self.base}/blobs/uploads/", data=b"")
        self._check(status, body, "start blob upload", (202,))
        location = urllib.parse.urljoin(self.base, headers.get("location", ""))
        last: bytes = data if isinstance(data, bytes) else b""
        size = len(data) if isinstance(data, bytes) else 0
        if isinstance(data, Path):
            with open(data, "rb") as f:
                while chunk := f.read(CHUNK):
                    status, headers, body = self._request("PATCH", location, data=chunk, headers={
                        "Content-Type": "application/octet-stream",
                        "Content-Range": f"{size}-{size + len(chunk) - 1}", "Content-Length": str(len(chunk))})
                    self._check(status, body, f"upload blob {digest[:19]} (bytes {size}..)", (202,))
                    location = urllib.parse.urljoin(self.base, headers.get("location", location))
                    size += len(chunk)
        sep = "&" if "?" in location else "?"
        status, _, body = self._request("PUT", f"{location}{sep}digest={digest}", data=last,
                                        headers={"Content-Type": "application/octet-stream"})
        self._check(status, body, f"upload blob {digest[:19]}", (201,))
        self.uploaded_bytes += size
        self.uploaded_blobs.append(digest)

    def push_manifest(self, tag: str, raw: bytes, media_type: str) -> dict[str, str]:
        """PUT a manifest under ``tag`` (or its digest); the response headers (``oci-subject`` when the registry
        processed a referrer's subject)."""
        status, headers, body = self._request("PUT", f"{self.base}/manifests/{tag}", data=raw,
                                              headers={"Content-Type": media_type})
        self._check(status, body, f"push manifest {tag}", (201, 200))
        return headers

    def raw_manifest(self, reference: str) -> tuple[bytes, str] | None:
        """(bytes, media type) of the manifest ``reference`` names exactly (an index is not resolved), or None."""
        status, headers, body = self._request("GET", f"{self.base}/manifests/{reference}",
                                              headers={"Accept": ", ".join((*MANIFEST_TYPES, OCI_EMPTY_ACCEPT))},
                                              max_bytes=MAX_MANIFEST_BYTES)
        if status == 404:
            return None
        self._check(status, body, f"GET manifest {reference}", (200,))
        return body, headers.get("content-type", "")

    def referrers(self, digest: str) -> list[dict[str, Any]] | None:
        """The descriptors of the manifests whose ``subject`` is ``digest``, from the referrers API; None when the
        registry has no referrers API (then the ``sha256-<hex>`` tag of the fallback schema holds them)."""
        status, _, body = self._request("GET", f"{self.base}/referrers/{digest}", max_bytes=MAX_MANIFEST_BYTES,
                                        headers={"Accept": MANIFEST_TYPES[0]})
        if status in (404, 405, 400):
            return None
        self._check(status, body, f"GET referrers of {digest[:19]}", (200,))
        try:
            found = json.loads(body).get("manifests") or []
        except (ValueError, AttributeError, RecursionError):
            raise RegistryError(f"registry {self.ref.registry}: the referrers of {digest[:19]} are not an index") from None
        return [d for d in found if isinstance(d, dict)]


def credentials_from_env(options: dict[str, Any] | None) -> tuple[str, str] | None:
    """(user, password) from the environment variables the recipe names; never from the recipe itself."""
    if not options:
        return None
    user = settings.named(options.get("username_env")) or ""
    password = settings.named(options.get("password_env")) or ""
    return (user, password) if user or password else None

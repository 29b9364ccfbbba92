"""Image references: ``[registry/]repository[:tag][@digest]`` with Docker's defaults for short names."""
from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import InfbuildError

DOCKER_HUB = "registry-1.docker.io"
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_REPO = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$")


class ReferenceError_(InfbuildError):
    """An image reference that cannot be parsed."""


@dataclass(frozen=True)
class Reference:
    registry: str
    repository: str
    tag: str | None
    digest: str | None

    @property
    def plain_http(self) -> bool:
        """Loopback registries speak plain HTTP (as Docker assumes for 127.0.0.0/8 and localhost)."""
        host = self.registry.rsplit(":", 1)[0]
        return host in ("localhost", "::1") or host.startswith("127.")

    @property
    def name(self) -> str:
        return f"{self.registry}/{self.repository}"

    def __str__(self) -> str:
        out = self.name
        if self.tag:
            out += f":{self.tag}"
        if self.digest:
            out += f"@{self.digest}"
        return out

    def with_tag(self, tag: str) -> "Reference":
        return Reference(self.registry, self.repository, tag, None)


def parse(text: str) -> Reference:
    rest, _, digest = text.partition("@")
    first, sep, remainder = rest.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        registry, path = first, remainder
    else:
        registry, path = DOCKER_HUB, rest
        if "/" not in path:
            path = f"library/{path}"
    repository, tag = path, None
    if ":" in path.rsplit("/", 1)[-1]:
        repository, tag = path.rsplit(":", 1)
    if not _REPO.match(repository) or (tag is not None and not _TAG.match(tag)):
        raise ReferenceError_(f"'{text}' is not a valid image reference")
    if digest and not re.match(r"^sha256:[0-9a-f]{64}$", digest):
        raise ReferenceError_(f"'{text}': bad digest '{digest}'")
    if tag is None and not digest:
        tag = "latest"
    return Reference(registry, repository, tag, digest or None)

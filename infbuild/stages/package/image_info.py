"""``image.json``, the package stage's record of the image it built: its reference and digest, how it was built
and shipped (pushed, signed, the OCI layout's layer), what it holds. Its one reader and writer; the manifest's
``image`` entry is read from it."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ... import jsonio
from ...records import from_flat, to_flat

IMAGE = "image.json"


@dataclass(frozen=True)
class ImageInfo:
    reference: str  # name:tag it was built as
    builder: str  # "docker" or "oci"
    pushed: bool
    digest: str | None = None  # the image id (docker) or manifest digest (an OCI layout)
    size: int | None = None
    details: dict[str, Any] = field(default_factory=dict)  # base, labels, files, signatures, layers, ...

    def write(self, folder: Path) -> None:
        jsonio.write_atomic(folder / IMAGE, to_flat(self, "details"), durable=False)

    @classmethod
    def read(cls, folder: Path) -> ImageInfo | None:
        data = jsonio.read_mapping(folder / IMAGE)
        return from_flat(cls, data, "details") if isinstance(data.get("reference"), str) else None

    def index(self) -> dict[str, Any]:
        """What the manifest's ``image`` entry says of it."""
        return {"reference": self.reference, "digest": self.digest, "builder": self.builder, "size": self.size,
                "pushed": self.pushed}

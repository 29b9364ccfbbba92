"""Records written as flat JSON objects: some fields named (typed attributes), the rest kept as they are in one
mapping (a link's details, an image's signatures, a newer infbuild's fields), so that reading and writing back
loses nothing."""
from __future__ import annotations

from dataclasses import fields
from typing import Any, Mapping


def from_flat(cls: Any, data: Mapping[str, Any], rest: str) -> Any:
    """``cls`` (a dataclass) from a flat object: its named fields, everything else in the field ``rest``."""
    named = {f.name for f in fields(cls)} - {rest}
    return cls(**{k: v for k, v in data.items() if k in named}, **{rest: {k: v for k, v in data.items() if k not in named}})


def to_flat(record: Any, rest: str, *, drop_none: bool = False) -> dict[str, Any]:
    """The flat object of a record: the ``rest`` mapping with the named fields over it (unset ones left out
    with ``drop_none``)."""
    named = {f.name: getattr(record, f.name) for f in fields(record) if f.name != rest}
    return {**getattr(record, rest), **{k: v for k, v in named.items() if not (drop_none and v is None)}}

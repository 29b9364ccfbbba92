"""Reading and writing infbuild's JSON files, one way: ``read`` (raises), ``read_or_none`` (a missing, unreadable or
malformed file is None: bookkeeping and side files that are checked by their readers), ``loads_bounded`` (bytes from
outside, refused above a size before they are parsed), and ``write_atomic`` (a temp file beside the target, renamed
over it: a reader never sees half a file; ``durable`` fsyncs first, for contracts such as stamps and the manifest)."""
from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

UNREADABLE = (OSError, ValueError, RecursionError)  # what reading a file as JSON may raise (UnicodeError is a ValueError)


def read(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def read_or_none(path: Path) -> Any:
    try:
        return read(path)
    except UNREADABLE:
        return None


def read_mapping(path: Path) -> dict[str, Any]:
    """The file's JSON object, or an empty one (missing, unreadable, malformed or not an object)."""
    value = read_or_none(path)
    return value if isinstance(value, dict) else {}


def loads_bounded(raw: bytes, limit: int) -> Any:
    """JSON from bytes of outside origin: ValueError above ``limit`` bytes (never parsed) or when not JSON."""
    if len(raw) > limit:
        raise ValueError(f"{len(raw)} bytes, more than {limit}")
    try:
        return json.loads(raw)
    except RecursionError:
        raise ValueError("nested too deep") from None


def write_atomic(path: Path, value: Any, *, durable: bool = True, indent: int | None = 2) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:6]}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(value, f, indent=indent, sort_keys=True)
            f.write("\n")
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)

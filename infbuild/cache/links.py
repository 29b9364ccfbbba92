"""Putting a cached file into a stage folder without holding it in memory, like DVC's cache link types: a reflink
(copy-on-write clone: shares blocks, safe to edit) where the file system has them, else a hard link (the file is
the cache's read-only blob: editing it in place needs a chmod, and the next restore's check catches it), else a
streamed copy. Whichever, the bytes are hashed from disk, in chunks, against the stamp before the file counts."""
from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
from pathlib import Path
from typing import Any

from .entry import BadEntry

CHUNK = 1 << 20
FICLONE = 0x40049409  # linux/fs.h: _IOW(0x94, 9, int)
LINK_TYPES = ("reflink", "hardlink", "copy")


def _reflink(source: Path, dest: Path) -> bool:
    with open(source, "rb") as src, open(dest, "xb") as dst:
        try:
            fcntl.ioctl(dst.fileno(), FICLONE, src.fileno())
            return True
        except OSError:
            pass
    dest.unlink()
    return False


def _hardlink(source: Path, dest: Path) -> bool:
    try:
        os.link(source, dest)
        return True
    except OSError:  # another file system, or one without links
        return False


def copy_stream(source: Path, dest: Path) -> None:
    """A copy through the kernel (``copy_file_range``/``sendfile`` where Python has them): no file-sized buffer."""
    with open(source, "rb") as src, open(dest, "xb") as dst:
        shutil.copyfileobj(src, dst, CHUNK)


def place(source: Path, dest: Path, link_types: tuple[str, ...] = LINK_TYPES) -> str:
    """Make ``dest`` (absent: never written through a link or over a file) hold ``source``'s bytes; returns the
    link type used."""
    for kind in link_types:
        if kind == "reflink" and _reflink(source, dest):
            return kind
        if kind == "hardlink" and _hardlink(source, dest):
            return kind
        if kind == "copy":
            copy_stream(source, dest)
            return kind
    raise ValueError(f"no usable link type among {link_types}")


def check_file(name: str, path: Path, meta: dict[str, Any]) -> None:
    """The file has the stamp's size and sha256 (read in chunks); BadEntry naming the file otherwise."""
    size = path.stat().st_size
    if size != meta["size"]:
        raise BadEntry(f"{name}: {size} bytes, the stamp says {meta['size']} (truncated?)")
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    if h.hexdigest() != meta["sha256"]:
        raise BadEntry(f"{name}: sha256 differs from the stamp (corrupted or tampered)")

"""Facts about tool binaries (a compiler's version, trtexec's TensorRT version), cached on disk by what identifies
the binary, so a no-op build starts none of them. ``~/.cache/infbuild/<file>.json`` (or ``$XDG_CACHE_HOME``)."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable


def cache_file(name: str) -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "infbuild" / f"{name}.json"


def stat_key(path: Path) -> str:
    """The binary's identity: resolved path, size and modification time."""
    real = path.resolve()
    st = real.stat()
    return f"{real}|{st.st_size}|{st.st_mtime_ns}"


def cached(name: str, key: str, compute: Callable[[], str | None]) -> str | None:
    """``compute()`` once per ``key`` (a value of None is not kept: asked again next time)."""
    path = cache_file(name)
    try:
        cache = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        cache = {}
    if not isinstance(cache, dict):
        cache = {}
    if isinstance(cache.get(key), str):
        return str(cache[key])
    found = compute()
    if found:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            cache[key] = found
            path.write_text(json.dumps(cache), encoding="utf-8")
        except OSError:
            pass
    return found

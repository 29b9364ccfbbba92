"""Discovered dependencies: which installed distributions a stage worker's model code imported (like a
compiler's depfile), recorded in its stamp, and whether their installed versions still match. Read with
``importlib.metadata`` only: the no-op build never imports them."""
from __future__ import annotations

from functools import lru_cache
from importlib import metadata
from typing import Any, Iterable

OWN = {"infbuild"}


def distributions_of(modules: Iterable[str]) -> dict[str, str]:
    """{distribution: version} of the installed distributions that provide these modules."""
    by_module = metadata.packages_distributions()
    tops = {name.partition(".")[0] for name in modules}
    found: dict[str, str] = {}
    for dist in sorted({d for top in tops for d in by_module.get(top, ())}):
        version = installed_version(dist)
        if version is not None and dist.lower() not in OWN:
            found[dist] = version
    return found


@lru_cache(maxsize=None)
def installed_version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def changes(recorded: Any) -> list[str]:
    """``name old → new`` for each recorded distribution whose installed version differs (or is gone)."""
    if not isinstance(recorded, dict):
        return []
    out = []
    for dist, version in sorted(recorded.items()):
        now = installed_version(str(dist))
        if now != version:
            out.append(f"{dist} {version} → {now or 'not installed'}")
    return out

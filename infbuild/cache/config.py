"""Which caches a build uses: the ``cache`` setting (``[tool.infbuild] cache = [...]`` in pyproject.toml, overridden
by ``INFBUILD_CACHE``: comma-separated; ``off`` disables). Each entry is ``KIND[:LOCATION][#rw|#ro]``:
``local`` (default folder under the user's cache dir, writable) or ``oci:REGISTRY/REPOSITORY`` (read-only
unless ``#rw``). Read in order, first hit wins; writes go to the writable ones."""
from __future__ import annotations

import os
from pathlib import Path

from .. import settings
from ..errors import ConfigError
from .base import Cache
from .local import LocalCache


def default_local_path() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "infbuild" / "cache"


def parse_entry(text: str, root: Path) -> Cache:
    spec, _, mode = text.strip().partition("#")
    if mode not in ("", "rw", "ro"):
        raise ConfigError(f"cache '{text}': the mode after '#' is rw or ro")
    kind, _, location = spec.partition(":")
    if kind == "local":
        path = Path(location).expanduser() if location else default_local_path()
        return LocalCache(path if path.is_absolute() else root / path, writable=mode != "ro")
    if kind == "oci":
        location = location.removeprefix("//")
        if not location or "/" not in location:
            raise ConfigError(f"cache '{text}': expected oci:REGISTRY/REPOSITORY")
        from .registry_cache import RegistryCache  # the registry client only when a registry cache is configured

        user, password = settings.value("cache_username"), settings.value("cache_password")
        try:
            return RegistryCache(location, writable=mode == "rw",
                                 credentials=(user or "", password or "") if user or password else None)
        except Exception as exc:  # a bad reference
            raise ConfigError(f"cache '{text}': {exc}") from None
    raise ConfigError(f"cache '{text}': unknown kind '{kind}' (local or oci)")


def configured_caches(root: Path, entries: list[str]) -> list[Cache]:
    """The caches of the ``cache`` setting's ``entries`` (``Project.caches``)."""
    return [parse_entry(e, root) for e in entries]

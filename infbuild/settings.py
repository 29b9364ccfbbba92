"""infbuild's settings, declared once (name, type, default, the ``[tool.infbuild]`` key, the environment variable)
and read with one meaning: a flag is on for ``1/true/yes/on``, off for ``0/false/no/off`` or unset, and anything else
is a ConfigError naming the variable (``INFBUILD_ALLOW_TARGET_MISMATCH=0`` means off)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from .errors import ConfigError

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


@dataclass(frozen=True)
class Setting:
    name: str
    kind: str  # "flag", "path", "paths", "name", "choice", "seconds", "megabytes"
    default: Any
    toml: str | None  # the [tool.infbuild] key, when a project may set it
    env: str | None  # the environment variable (wins over pyproject.toml)
    doc: str
    choices: tuple[str, ...] = ()  # a "choice" setting's values


SETTINGS = {s.name: s for s in (
    Setting("signing_key", "path", None, "signing_key", "INFBUILD_SIGNING_KEY",
            "PEM EC P-256 private key that signs every stage built or stored (default: this machine's key)"),
    Setting("signing_key_passphrase_env", "name", "INFBUILD_SIGNING_KEY_PASSPHRASE", "signing_key_passphrase_env", None,
            "the environment variable holding the signing key's passphrase (never the passphrase itself)"),
    Setting("trusted_keys", "paths", (), "trusted_keys", "INFBUILD_TRUSTED_KEYS",
            "PEM public keys whose signatures are trusted; set: caches, load, serve, verify and bench require them"),
    Setting("machine_key", "path", None, None, "INFBUILD_MACHINE_KEY",
            "this machine's own key (default ~/.config/infbuild/machine-key.pem), created on first use"),
    Setting("allow_target_mismatch", "flag", False, None, "INFBUILD_ALLOW_TARGET_MISMATCH",
            "load artifacts built for another target anyway (loudly)"),
    Setting("heartbeat_s", "seconds", 30.0, None, "INFBUILD_HEARTBEAT_S",
            "a stage silent this long says it is alive (elapsed time and its last line; a JSON-lines progress event)"),
    Setting("memory_mb", "megabytes", None, "memory_mb", "INFBUILD_MEMORY_MB",
            "memory parallel stages may use together (doit -n N): a stage starts when its expected peak fits "
            "(default: 80 % of RAM)"),
    Setting("workers", "choice", "warm", None, "INFBUILD_WORKERS",
            "warm: CPU stages run in forks of one server that imported torch once; subprocess: a fresh Python each",
            choices=("warm", "subprocess")),
)}


def flag(name: str, environ: Mapping[str, str] | None = None) -> bool:
    """A flag setting from the environment, strictly: on, off, or a ConfigError."""
    setting = SETTINGS[name]
    assert setting.env is not None and setting.kind == "flag"
    raw = (os.environ if environ is None else environ).get(setting.env)
    if raw is None:
        return bool(setting.default)
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(f"{setting.env}={raw[:40]!r}: expected 1/true/yes/on or 0/false/no/off")


def value(name: str, config: Mapping[str, Any] | None = None, root: Path | None = None,
          environ: Mapping[str, str] | None = None) -> Any:
    """A setting from the environment, else the project's ``[tool.infbuild]`` table (``config``), else its default.
    Paths from pyproject.toml are relative to the project ``root``; paths from the environment to the working
    directory. ``paths`` from the environment are comma-separated."""
    setting = SETTINGS[name]
    environ = os.environ if environ is None else environ
    raw: Any = environ.get(setting.env) if setting.env else None
    base = Path.cwd()
    if raw is None or (setting.kind == "paths" and not raw.strip()):
        raw = (config or {}).get(setting.toml) if setting.toml else None
        base = root or Path.cwd()
        where = f"[tool.infbuild] {setting.toml}"
    else:
        where = str(setting.env)
    if raw is None:
        return setting.default
    if setting.kind == "flag":
        return flag(name, environ)
    if setting.kind == "seconds":
        try:
            seconds = float(raw)
        except (TypeError, ValueError):
            seconds = -1.0
        if not 0 < seconds < 86400:
            raise ConfigError(f"{where}={str(raw)[:40]!r}: expected a number of seconds")
        return seconds
    if setting.kind == "megabytes":
        try:
            megabytes = int(raw)
        except (TypeError, ValueError):
            megabytes = 0
        if megabytes <= 0:
            raise ConfigError(f"{where}={str(raw)[:40]!r}: expected a whole number of megabytes")
        return megabytes
    if setting.kind == "choice":
        if raw not in setting.choices:
            raise ConfigError(f"{where}={str(raw)[:40]!r}: expected one of {', '.join(setting.choices)}")
        return raw
    if setting.kind == "name":
        if not isinstance(raw, str) or not raw.isidentifier():
            raise ConfigError(f"{where}: expected the name of an environment variable")
        return raw
    items = raw.split(",") if isinstance(raw, str) and setting.kind == "paths" else raw
    if setting.kind == "path":
        items = [raw]
    if not isinstance(items, (list, tuple)) or not all(isinstance(i, str) for i in items):
        raise ConfigError(f"{where}: expected {'a path' if setting.kind == 'path' else 'a list of paths'}")
    paths = tuple(base / Path(i.strip()).expanduser() for i in items if i.strip())
    if any("\x00" in str(p) for p in paths):
        raise ConfigError(f"{where}: a path holds a NUL byte")
    return paths[0] if setting.kind == "path" else paths

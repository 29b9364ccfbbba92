"""infbuild's settings, declared once (name, type, default, the ``[tool.infbuild]`` key, the environment variable, the
command-line flag where there is one) and read through one API: ``value`` (or ``flag``), ``resolve`` (the value and
where it came from) and ``effective`` (every setting: what ``infbuild config`` prints). The environment wins over
pyproject.toml, which wins over the default. A flag is on for ``1/true/yes/on``, off for ``0/false/no/off`` or unset,
and anything else is a ConfigError naming the variable (``INFBUILD_ALLOW_TARGET_MISMATCH=0`` means off). No other
module reads an ``INFBUILD_*`` variable itself (tests/test_settings.py checks)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, MutableMapping

from .errors import ConfigError

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}
_EMPTY_IS_UNSET = {"path", "paths", "text", "secret", "names"}  # an empty variable of these kinds is not set
_NONE = {"off", "none", "0", ""}  # a "strings" variable meaning none at all


@dataclass(frozen=True)
class Setting:
    name: str
    kind: str  # "flag", "path", "paths", "name", "choice", "seconds", "megabytes", "strings", "names", "text", "secret"
    default: Any
    toml: str | None  # the [tool.infbuild] key, when a project may set it
    env: str | None  # the environment variable (wins over pyproject.toml)
    doc: str
    choices: tuple[str, ...] = ()  # a "choice" setting's values
    cli: str | None = None  # the command-line flag that sets it, where there is one
    rooted: bool = False  # a relative path is relative to the project root even from the environment
    expect: str = ""  # what a wrong value should have been, when the kind does not say it well


SETTINGS = {s.name: s for s in (
    Setting("root", "path", None, None, "INFBUILD_ROOT",
            "the project folder (default: the nearest folder at or above the working directory with dodo.py or "
            "pyproject.toml)"),
    Setting("recipes", "strings", ("recipes/*.yaml", "recipes/*.yml", "recipes/*.json"), "recipes", None,
            "globs of the recipe files, relative to the project root", expect="a list of globs"),
    Setting("artifacts", "path", "artifacts", "artifacts", "INFBUILD_ARTIFACTS",
            "the artifacts folder, relative to the project root", rooted=True),
    Setting("cache", "strings", (), "cache", "INFBUILD_CACHE",
            "the caches, read in order: KIND[:LOCATION][#rw|#ro] (local, oci:REGISTRY/REPOSITORY); from the "
            "environment comma-separated, off for none", expect='a list like ["local", "oci:host/repo#rw"]'),
    Setting("cache_username", "text", None, None, "INFBUILD_CACHE_USERNAME", "the user name for registry caches"),
    Setting("cache_password", "secret", None, None, "INFBUILD_CACHE_PASSWORD", "the password for registry caches"),
    Setting("insecure_registry", "text", None, None, "INFBUILD_INSECURE_REGISTRY",
            "a registry (host:port) spoken to over plain HTTP although not on loopback"),
    Setting("fingerprint", "text", None, None, "INFBUILD_FINGERPRINT",
            "a JSON object (or @path to one) merged over the detected host fingerprint: plan or test for another host"),
    Setting("require", "names", frozenset(), None, "INFBUILD_REQUIRE",
            "stages or tasks that fail instead of being skipped when this host cannot build them",
            cli="infbuild build --require STAGE, doit build require=STAGE"),
    Setting("force", "names", frozenset(), None, "INFBUILD_FORCE", "stages or tasks rerun although up to date",
            cli="infbuild bench --force"),
    Setting("signing_key", "path", None, "signing_key", "INFBUILD_SIGNING_KEY",
            "PEM EC P-256 private key that signs every stage built or stored (default: this machine's key)"),
    Setting("signing_key_passphrase_env", "name", "INFBUILD_SIGNING_KEY_PASSPHRASE", "signing_key_passphrase_env", None,
            "the environment variable holding the signing key's passphrase (never the passphrase itself)"),
    Setting("trusted_keys", "paths", (), "trusted_keys", "INFBUILD_TRUSTED_KEYS",
            "PEM public keys whose signatures are trusted; set: caches, load, serve, verify and bench require them"),
    Setting("machine_key", "path", None, None, "INFBUILD_MACHINE_KEY",
            "this machine's own key (default ~/.config/infbuild/machine-key.pem), created on first use"),
    Setting("allow_target_mismatch", "flag", False, None, "INFBUILD_ALLOW_TARGET_MISMATCH",
            "load artifacts built for another target anyway (loudly)", cli="infbuild run --allow-target-mismatch"),
    Setting("heartbeat_s", "seconds", 30.0, None, "INFBUILD_HEARTBEAT_S",
            "a stage silent this long says it is alive (elapsed time and its last line; a JSON-lines progress event)"),
    Setting("memory_mb", "megabytes", None, "memory_mb", "INFBUILD_MEMORY_MB",
            "memory parallel stages may use together (doit -n N): a stage starts when its expected peak fits "
            "(default: 80 % of RAM)"),
    Setting("workers", "choice", "warm", None, "INFBUILD_WORKERS",
            "warm: CPU stages run in forks of one server that imported torch once; subprocess: a fresh Python each",
            choices=("warm", "subprocess")),
)}


@dataclass(frozen=True)
class Resolved:
    """A setting's effective value and where it came from: ``source`` is "default", "pyproject" or "environment"."""

    setting: Setting
    value: Any
    source: str

    @property
    def origin(self) -> str:
        """The source in words: ``default``, ``[tool.infbuild] KEY in pyproject.toml``, ``environment variable NAME``."""
        if self.source == "pyproject":
            return f"[tool.infbuild] {self.setting.toml} in pyproject.toml"
        return f"environment variable {self.setting.env}" if self.source == "environment" else "default"

    def shown(self) -> Any:
        """The value as JSON shows it; a secret only as ``set`` or ``unset``."""
        found = self.value
        if self.setting.kind == "secret":
            return "set" if found else "unset"
        if isinstance(found, Path):
            return str(found)
        if isinstance(found, (tuple, frozenset)):
            return [str(i) for i in (sorted(found) if isinstance(found, frozenset) else found)]
        return found

    def to_dict(self) -> dict[str, Any]:
        s = self.setting
        return {"name": s.name, "value": self.shown(), "source": self.source, "origin": self.origin, "toml": s.toml,
                "env": s.env, "flag": s.cli, "doc": s.doc}


def names(text: str | None) -> frozenset[str]:
    """A ``names`` value: names separated by commas or white space."""
    return frozenset(filter(None, (text or "").replace(",", " ").split()))


def resolve(name: str, config: Mapping[str, Any] | None = None, root: Path | None = None,
            environ: Mapping[str, str] | None = None) -> Resolved:
    """A setting from the environment, else the project's ``[tool.infbuild]`` table (``config``), else its default.
    Paths from pyproject.toml (and a path default) are relative to the project ``root``; paths from the environment to
    the working directory (to the root for a ``rooted`` setting). ``paths`` and ``strings`` from the environment are
    comma-separated."""
    setting = SETTINGS[name]
    raw = (os.environ if environ is None else environ).get(setting.env) if setting.env else None
    if raw is not None and (raw.strip() or setting.kind not in _EMPTY_IS_UNSET):
        base = (root or Path.cwd()) if setting.rooted else Path.cwd()
        return Resolved(setting, _parse(setting, raw, str(setting.env), base, True), "environment")
    if setting.toml and (config or {}).get(setting.toml) is not None:
        where = f"{root / 'pyproject.toml'}: tool.infbuild.{setting.toml}" if root else f"[tool.infbuild] {setting.toml}"
        return Resolved(setting, _parse(setting, (config or {})[setting.toml], where, root or Path.cwd(), False),
                        "pyproject")
    default = setting.default
    if setting.kind == "path" and isinstance(default, str):
        default = _parse(setting, default, "default", root or Path.cwd(), False)
    return Resolved(setting, default, "default")


def value(name: str, config: Mapping[str, Any] | None = None, root: Path | None = None,
          environ: Mapping[str, str] | None = None) -> Any:
    """A setting's effective value (see ``resolve``)."""
    return resolve(name, config, root, environ).value


def flag(name: str, environ: Mapping[str, str] | None = None) -> bool:
    """A flag setting from the environment, strictly: on, off, or a ConfigError."""
    assert SETTINGS[name].kind == "flag"
    return bool(value(name, environ=environ))


def effective(config: Mapping[str, Any] | None = None, root: Path | None = None,
              environ: Mapping[str, str] | None = None) -> list[Resolved]:
    """Every setting, resolved (a ConfigError at the first wrong one)."""
    return [resolve(name, config, root, environ) for name in SETTINGS]


def named(variable: str | None, environ: Mapping[str, str] | None = None) -> str | None:
    """The environment variable a setting or a recipe names (a passphrase, a registry credential), or None."""
    return (os.environ if environ is None else environ).get(variable) if variable else None


def pass_on(environ: MutableMapping[str, str], name: str, more: Iterable[str]) -> None:
    """Add ``more`` to a ``names`` setting in ``environ``, the environment of a child process: how `infbuild build
    --require` and `infbuild bench --force` reach the doit process."""
    setting = SETTINGS[name]
    assert setting.kind == "names" and setting.env is not None
    more = list(more)
    if more:
        environ[setting.env] = ",".join(filter(None, [environ.get(setting.env, ""), *more]))


def render(found: list[Resolved]) -> str:
    """One line per setting: name, value (a secret as set/unset), where it came from."""
    def text(r: Resolved) -> str:
        shown = r.shown()
        if isinstance(shown, bool):
            return "on" if shown else "off"
        if isinstance(shown, list):
            return ", ".join(shown) or "-"
        return "-" if shown is None else str(shown)

    rows = [(r.setting.name, text(r), r.origin) for r in found]
    width = [max(len(row[i]) for row in rows) for i in (0, 1)]
    return "\n".join(f"{n:<{width[0]}}  {v:<{width[1]}}  {o}" for n, v, o in rows)


def _parse(setting: Setting, raw: Any, where: str, base: Path, environment: bool) -> Any:
    """``raw`` (a variable's text, or what pyproject.toml holds) as ``setting``'s type; ``where`` names it in errors."""
    kind = setting.kind
    if kind == "flag":
        text = ("1" if raw else "0") if isinstance(raw, bool) else str(raw).strip().lower()
        if text in _TRUE | _FALSE:
            return text in _TRUE
        raise ConfigError(f"{where}={str(raw)[:40]!r}: expected 1/true/yes/on or 0/false/no/off")
    if kind == "seconds":
        try:
            seconds = float(raw)
        except (TypeError, ValueError):
            seconds = -1.0
        if not 0 < seconds < 86400:
            raise ConfigError(f"{where}={str(raw)[:40]!r}: expected a number of seconds")
        return seconds
    if kind == "megabytes":
        try:
            megabytes = int(raw)
        except (TypeError, ValueError):
            megabytes = 0
        if megabytes <= 0:
            raise ConfigError(f"{where}={str(raw)[:40]!r}: expected a whole number of megabytes")
        return megabytes
    if kind == "choice":
        if raw not in setting.choices:
            raise ConfigError(f"{where}={str(raw)[:40]!r}: expected one of {', '.join(setting.choices)}")
        return raw
    if kind == "name":
        if not isinstance(raw, str) or not raw.isidentifier():
            raise ConfigError(f"{where}: expected the name of an environment variable")
        return raw
    if kind == "names":
        return names(raw)
    if kind in ("text", "secret"):
        if not isinstance(raw, str):
            raise ConfigError(f"{where}: expected a string")
        return raw
    if kind == "strings":
        if environment:
            return () if raw.strip().lower() in _NONE else tuple(e for e in raw.split(",") if e.strip())
        items = [raw] if isinstance(raw, str) else raw
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            raise ConfigError(f"{where}: expected {setting.expect or 'a list of strings'}")
        return tuple(items)
    items = raw.split(",") if isinstance(raw, str) and kind == "paths" else [raw] if kind == "path" else raw
    if not isinstance(items, (list, tuple)) or not all(isinstance(i, str) for i in items):
        raise ConfigError(f"{where}: expected {'a path' if kind == 'path' else 'a list of paths'}")
    paths = tuple(base / Path(i.strip()).expanduser() for i in items if i.strip())
    if kind == "path" and not paths:
        raise ConfigError(f"{where}: expected a path")
    if any("\x00" in str(p) for p in paths):
        raise ConfigError(f"{where}: a path holds a NUL byte")
    return paths[0] if kind == "path" else paths

"""Who signs and whom to trust, from the settings (``infbuild.settings``).

- **Signing**: ``signing_key`` (``INFBUILD_SIGNING_KEY``; its passphrase from the environment variable
  ``signing_key_passphrase_env`` names) signs every stage built or restored; without one, this machine's own key
  does (``machine_key``, created on first use with mode 0600, as Nix makes a store key).
- **Trust**: with ``trusted_keys`` set (``INFBUILD_TRUSTED_KEYS``), a cache entry is a hit only when a trusted key
  signed exactly it, and the runtime, the server, verify and bench refuse anything else. This machine's own key
  is trusted too, but only for what this machine made: its local caches and its own artifacts folders; a registry
  cache and an image trust only the configured keys. Without ``trusted_keys`` nothing is required (entries are
  checked for consistency only: see the README's trust model).
"""
from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping, Sequence

from .. import settings
from ..errors import ConfigError
from .dsse import KeyFileError, PublicKey, SigningKey


def machine_key_path(environ: Mapping[str, str] | None = None) -> Path:
    explicit = settings.value("machine_key", environ=environ)
    if explicit is not None:
        return Path(explicit)
    env = os.environ if environ is None else environ
    return Path(env.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "infbuild" / "machine-key.pem"


def _create_machine_key(path: Path) -> SigningKey:
    """Write a fresh key at ``path`` (0600; its public half beside it as ``.pub``) unless another process won."""
    key = SigningKey.generate(str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:6]}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.pem())
    try:
        os.link(tmp, path)  # fails when another build created the key first: then that one is this machine's
    except FileExistsError:
        return SigningKey.read(path)
    finally:
        tmp.unlink(missing_ok=True)
    pub = path.with_suffix(".pub")
    pub.write_bytes(key.public.pem())
    return SigningKey(key.key, str(path))


@lru_cache(maxsize=4)
def _machine_key(path: Path) -> SigningKey | None:
    try:
        return SigningKey.read(path) if path.exists() else _create_machine_key(path)
    except (OSError, KeyFileError):
        return None  # an unwritable home: stages stay unsigned (status says so)


def machine_key(create: bool = True) -> SigningKey | None:
    """This machine's key (created when ``create`` and absent), or None when there is none or it cannot be made."""
    path = machine_key_path()
    if not create and not path.exists():
        return None
    return _machine_key(path)


@dataclass(frozen=True)
class Trust:
    """The keys whose signatures count: ``keys`` (configured; when empty nothing is required) and this machine's."""

    keys: Mapping[str, PublicKey] = field(default_factory=dict)
    machine: PublicKey | None = None

    @property
    def enforced(self) -> bool:
        return bool(self.keys)

    def for_local(self) -> dict[str, PublicKey]:
        """What this machine's own caches and artifacts folders trust: the configured keys and its own."""
        own = {self.machine.id: self.machine} if self.machine else {}
        return {**self.keys, **own}

    def for_shared(self) -> dict[str, PublicKey]:
        """What a registry cache or an image is trusted by: the configured keys only."""
        return dict(self.keys)

    def describe(self, local: bool = True) -> str:
        keys = self.for_local() if local else self.for_shared()
        return ", ".join(f"{k.short} ({Path(k.source).name})" for k in keys.values()) or "none"


def read_trusted(paths: tuple[Path, ...]) -> dict[str, PublicKey]:
    try:
        keys = [PublicKey.read(p) for p in paths]
    except KeyFileError as exc:
        raise ConfigError(f"trusted_keys: {exc}") from None
    return {k.id: k for k in keys}


def trust(config: Mapping[str, Any] | None = None, root: Path | None = None,
          explicit: tuple[Path, ...] | None = None, create_machine_key: bool = False) -> Trust:
    """The trust of this process: ``explicit`` keys, else the settings' ``trusted_keys``; plus this machine's key
    (created when ``create_machine_key``: a build, which signs with it)."""
    paths = explicit if explicit is not None else settings.value("trusted_keys", config, root)
    own = machine_key(create=create_machine_key)
    return Trust(read_trusted(tuple(paths)), own.public if own else None)


def signer(config: Mapping[str, Any] | None = None, root: Path | None = None) -> SigningKey | None:
    """The key that signs this build's stages: ``signing_key`` when set (a ConfigError when it cannot be used),
    else this machine's (created on first use), else None."""
    path = settings.value("signing_key", config, root)
    if path is None:
        return machine_key()
    passphrase_env = settings.value("signing_key_passphrase_env", config, root)
    passphrase = settings.named(passphrase_env)
    try:
        return SigningKey.read(Path(path), passphrase.encode() if passphrase else None)
    except KeyFileError as exc:
        hint = f" (passphrase from ${passphrase_env})" if passphrase is not None else ""
        raise ConfigError(f"signing_key: {exc}{hint}") from None


def required_keys(artifacts: Path, explicit: Sequence[str | os.PathLike[str]] | None = None
                  ) -> dict[str, PublicKey] | None:
    """The keys an artifact under ``artifacts`` must be signed by to be loaded or served (the configured ones and this
    machine's), or None when no trusted keys are configured: ``explicit``, else ``INFBUILD_TRUSTED_KEYS``, else the
    ``[tool.infbuild] trusted_keys`` of the project holding the folder."""
    from ..project import find_root, read_config

    paths = tuple(Path(p) for p in explicit) if explicit is not None else None
    if paths is None and not settings.value("trusted_keys"):
        project = find_root(artifacts)
        paths = settings.value("trusted_keys", read_config(project), project)
    found = trust(explicit=paths)
    return found.for_local() if found.enforced else None

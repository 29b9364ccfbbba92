"""Where a project's recipes and artifacts live: pyproject.toml [tool.infbuild] plus environment overrides (the
settings ``root``, ``recipes``, ``artifacts`` and ``cache``)."""
from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from . import settings
from .errors import ConfigError


@dataclass(frozen=True)
class Project:
    root: Path
    recipe_globs: tuple[str, ...]
    artifacts: Path
    caches: tuple[str, ...] = ()  # the cache entries in effect (INFBUILD_CACHE, else [tool.infbuild] cache)
    config: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)  # [tool.infbuild] as read

    def recipe_files(self) -> list[Path]:
        """Every path the recipe globs match, files or not: the loader reports a directory, FIFO or device
        matched by a recipe glob instead of skipping it silently."""
        found: set[Path] = set()
        for pattern in self.recipe_globs:
            found.update(self.root.glob(pattern))
        return sorted(found)

    def display(self, path: Path) -> str:
        """Path as shown in messages: relative to the project root when inside it (a symlinked recipe is shown
        where it is, not where it points)."""
        for where in (os.path.abspath, os.path.realpath):
            try:
                return str(Path(where(path)).relative_to(self.root))
            except ValueError:
                continue
        return str(path)


def find_root(start: Path | None = None) -> Path:
    """The nearest folder at or above ``start`` holding dodo.py or a pyproject.toml."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "dodo.py").is_file() or (folder / "pyproject.toml").is_file():
            return folder
    return here


def read_config(root: Path) -> dict[str, Any]:
    """``[tool.infbuild]`` of ``root/pyproject.toml`` ({} without one)."""
    pyproject = root / "pyproject.toml"
    if not pyproject.is_file():
        return {}
    try:
        config = tomllib.loads(pyproject.read_text(encoding="utf-8")).get("tool", {}).get("infbuild", {})
    except (tomllib.TOMLDecodeError, OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{pyproject}: {exc}") from None
    if not isinstance(config, dict):
        raise ConfigError(f"{pyproject}: tool.infbuild: expected a table")
    return config


def load_project(root: Path | None = None) -> Project:
    if root is None:
        root = settings.value("root")
        if root is not None and not root.is_dir():
            raise ConfigError(f"{settings.SETTINGS['root'].env}={str(root)[:200]}: no such folder")
    root = (root or find_root()).resolve()
    config = read_config(root)
    artifacts = settings.value("artifacts", config, root)
    return Project(root=root, recipe_globs=settings.value("recipes", config, root), artifacts=artifacts.resolve(),
                   caches=settings.value("cache", config, root), config=config)

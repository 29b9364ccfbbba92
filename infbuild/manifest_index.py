"""Reading ``artifacts/manifest.json`` (written by ``manifest.py``) for those who load from it: typed entries, each
field checked where it is reached, a damaged one an ``ArtifactError`` naming the file, the field and the repair.
The manifest is an index: what it lists is checked again against the stamps before anything is loaded."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import jsonio
from .errors import ArtifactError

MANIFEST = "manifest.json"
REPAIR = "rewrite it from the stamps with: doit build (or infbuild verify-artifacts --fix)"


def _positive_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


@dataclass(frozen=True)
class TargetEntry:
    """One recipe's entry for one target: its stages (each its stamp's public fields), the fingerprint of the host
    that built them, what verify and bench found and the preferred artifact."""

    name: str
    data: dict[str, Any]

    @property
    def fingerprint(self) -> dict[str, Any] | None:
        value = self.data.get("fingerprint")
        return value if isinstance(value, dict) else None

    @property
    def preferred(self) -> str | None:
        value = self.data.get("preferred")
        return value if isinstance(value, str) else None

    @property
    def stages(self) -> dict[str, Any]:
        value = self.data.get("stages")
        return value if isinstance(value, dict) else {}

    @property
    def bench_threads(self) -> int | None:
        """The thread count bench measured with."""
        return _positive_int(self._bench.get("threads"))

    @property
    def bench_runtime(self) -> dict[str, Any]:
        """The session settings bench timed with (the recipe's ``runtime``, per backend)."""
        value = self._bench.get("runtime")
        return value if isinstance(value, dict) else {}

    @property
    def _bench(self) -> dict[str, Any]:
        value = self.data.get("bench")
        return value if isinstance(value, dict) else {}


@dataclass(frozen=True)
class RecipeEntry:
    name: str
    targets: dict[str, Any]  # target -> its entry as written (``target`` checks the one asked for)
    io: dict[str, Any]  # input/output names, dtypes, shapes and dims as the recipe declares them
    index: ManifestIndex

    def target(self, name: str) -> TargetEntry:
        return TargetEntry(name, self.index.object(self.targets[name], f"recipes.{self.name}.targets.{name}"))

    def fingerprint_of(self, name: str) -> dict[str, Any] | None:
        """A listed target's recorded fingerprint, or None (a damaged entry included: for messages)."""
        entry = self.targets.get(name)
        value = entry.get("fingerprint") if isinstance(entry, dict) else None
        return value if isinstance(value, dict) else None

    def holding(self, stage: str, among: tuple[str, ...]) -> str | None:
        """The first of the targets ``among`` whose entry lists ``stage``."""
        return next((t for t in among if isinstance(self.targets.get(t), dict)
                     and stage in (self.targets[t].get("stages") or {})), None)


@dataclass(frozen=True)
class ManifestIndex:
    path: Path  # the manifest file
    recipes: dict[str, Any]

    @property
    def root(self) -> Path:
        """The artifacts folder it indexes."""
        return self.path.parent

    @classmethod
    def read(cls, path: Path) -> ManifestIndex:
        """The manifest at ``path`` (an artifacts folder or the file itself)."""
        manifest_path = path if path.is_file() else path / MANIFEST
        try:
            data = jsonio.read(manifest_path)
        except FileNotFoundError:
            raise ArtifactError(f"no manifest at {manifest_path}: build first (doit build)") from None
        except OSError as exc:
            raise ArtifactError(f"{manifest_path} cannot be read ({exc.strerror or exc}): {REPAIR}") from None
        except (ValueError, RecursionError) as exc:
            raise ArtifactError(f"{manifest_path} is not valid JSON ({str(exc)[:100]}): {REPAIR}") from None
        if not isinstance(data, dict) or not isinstance(data.get("recipes"), dict):
            raise ArtifactError(f"{manifest_path} is damaged (no 'recipes' object): {REPAIR}")
        return cls(manifest_path, data["recipes"])

    def object(self, value: Any, where: str) -> dict[str, Any]:
        """A field that must be an object, else an ArtifactError naming it."""
        if not isinstance(value, dict):
            raise ArtifactError(f"{self.path} is damaged ({where} is not an object): {REPAIR}")
        return value

    def recipe(self, name: str) -> RecipeEntry:
        entry = self.recipes.get(name)
        if entry is None:
            known = ", ".join(sorted(self.recipes)) or "none"
            raise ArtifactError(f"no recipe '{name}' in {self.path} (built: {known})")
        entry = self.object(entry, f"recipes.{name}")
        return RecipeEntry(name, self.object(entry.get("targets") or {}, f"recipes.{name}.targets"),
                           self.object(entry.get("io") or {}, f"recipes.{name}.io"), self)

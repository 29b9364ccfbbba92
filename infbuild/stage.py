"""What a stage is: one ``Stage`` object per stage, declared in ``infbuild/stages/<name>/__init__.py`` and
registered once. Planning, keys, the engine, the worker, the manifest and the runtime ask these objects (and
this registry) instead of branching on stage names; a stage's own behaviour lives in its own package.

Declarations are light (no torch): the no-op build plans and checks keys with them. What a stage does in the
worker is in ``infbuild/stages/<name>/run.py``, imported only by the worker.
"""
from __future__ import annotations

import importlib
from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal, Mapping, Sequence

from .folder import Outputs

if TYPE_CHECKING:
    from .host import Host
    from .recipe import Recipe
    from .runner import Runner
    from .stamp import Stamp

Scope = Literal["portable", "device", "cuda"]


@dataclass(frozen=True)
class Placement:
    """Where a stage runs for a recipe on this host: ``device`` "cpu"/"cuda" (None: wherever the recipe's
    artifacts run), why it cannot be built here (None when it can), and tool facts its key and worker need."""

    device: str | None = None
    not_buildable: str | None = None
    tools: Mapping[str, Any] = field(default_factory=dict)


class UpstreamMissing(Exception):
    """An upstream stage has no stamp (or no usable report) yet: this stage's key cannot be known (it is stale)."""


def _no_fields(recipe: Recipe) -> dict[str, Any]:
    return {}


@dataclass(frozen=True)
class Stage:
    """One stage: what it reads (its key), what it needs, where it runs, what it writes, how the worker runs it.

    Subclasses override the methods whose default does not fit; the attributes cover the rest.
    """

    name: str
    version: int  # bump when the stage's implementation changes what it produces
    scope: Scope  # "portable", "device" (the recipe's device target) or "cuda" (the GPU's target)
    doc: str
    outputs: Outputs  # exactly what its folder holds: checked on commit, restore, status, load
    tools: tuple[str, ...] = ()  # tool versions in its key
    fields: Callable[[Recipe], dict[str, Any]] = _no_fields  # the recipe fields its key reads
    needs: tuple[str, ...] = ()  # stages it always consumes (planned with it)
    reads_model: bool = False  # its key includes the model's sources, weights and samples; its stamp the packages
    covers_model: bool = False  # its output stands for the model's sources and weights in its dependents' keys
    cut_off_note: str = ""  # why a dependent is up to date although this stage was rebuilt (its output is identical)
    cacheable: bool = True  # outputs may be shared through caches (not container images)
    backend: str | None = None  # the runtime backend whose artifact this stage builds
    variant: str | None = None  # for an artifact stage: which variant of its backend (None: the model as it is)
    precision: str = "fp32"  # the arithmetic its artifact computes in: picks the accuracy budget verify applies
    judges: bool = False  # it checks other stages: may finish with failures (stamped with passed=False)
    tolerates_failed: bool = False  # runs when artifacts it reads (not what it needs) failed: takes them as failed
    signs_images: bool = False  # its worker pushes images and signs them (it is handed the build's signing key)
    module: str = ""  # the package under infbuild/stages holding its run.py (and runner.py): default its name (a
    # plugin's stage: its package's dotted name)
    runner_of: str = ""  # the package whose runner.py loads its artifact (a variant's base backend): default module

    # --- planning -------------------------------------------------------------------------------------------

    @property
    def artifact(self) -> str | None:
        """The artifact's name in reports, the manifest and ``load``: its backend, ``backend:variant`` for a variant."""
        if self.backend is None:
            return None
        return self.backend if self.variant is None else f"{self.backend}:{self.variant}"

    @property
    def package(self) -> str:
        """The package holding its run.py: ``infbuild.stages.<module>``, or ``module`` itself for a plugin's stage."""
        return _package(self.module or self.name)

    def wanted(self, recipe: Recipe) -> bool:
        """Whether the recipe asks for this stage by itself (stages it ``needs`` are planned with it)."""
        return self.artifact is None or self.artifact in recipe.artifacts()

    def required(self, recipe: Recipe) -> bool:
        """Whether the recipe requires it: then a host that cannot build it fails instead of skipping it."""
        return False

    def placement(self, recipe: Recipe, host: Host) -> Placement:
        return Placement("cpu" if self.scope == "portable" else "cuda" if self.scope == "cuda" else None)

    def upstream(self, recipe: Recipe, planned: Mapping[str, PlannedStage], required: Callable[[PlannedStage], bool]
                 ) -> tuple[str, ...]:
        """The stages whose outputs it reads, among those planned before it."""
        return tuple(n for n in self.needs if n in planned)

    # --- keys and staleness ---------------------------------------------------------------------------------

    def upstream_view(self, recipe: Recipe, upstream: Mapping[str, tuple[Path, Stamp]]) -> dict[str, Any]:
        """How its upstream stages enter its key: as each one says (``dependent_view``)."""
        return {name: get(name).dependent_view(stamp) for name, (_, stamp) in upstream.items()}

    def dependent_view(self, stamp: Stamp) -> dict[str, Any]:
        """How this stage's build enters the keys of the stages that read it: by default its key and file digests."""
        return files_view(stamp)

    def hardware(self, recipe: Recipe, fingerprint: Mapping[str, Any], device: str) -> dict[str, Any]:
        """What of the host its output depends on (in its key): its scope's fingerprint fields
        (``fingerprint.scope_fields``), by default what a compile for ``device`` reads."""
        from .fingerprint import scope_fields

        return scope_fields(dict(fingerprint), "portable" if self.scope == "portable" else device)

    def tool_versions(self, recipe: Recipe, versions: Mapping[str, Any]) -> dict[str, Any]:
        """How its tools' versions enter its key (default: exactly)."""
        return dict(versions)

    def recorded_parameters(self, folder: Path) -> int:
        """The model's parameter count as this built stage recorded it (0: it records none), for memory estimates."""
        return 0

    def stale(self, stamp: Stamp) -> str | None:
        """A reason beyond its key that a stamped build of it must be redone (None: up to date)."""
        return None

    # --- the manifest (artifacts/manifest.json) -------------------------------------------------------------

    def index(self, folder: Path, stamp: Stamp, recipe_entry: dict[str, Any], target_entry: dict[str, Any]) -> None:
        """Add what the manifest says about this stage's outputs beyond its stamp (reports, image, I/O)."""

    # --- the worker ------------------------------------------------------------------------------------------

    # --- the runtime (artifact stages) ----------------------------------------------------------------------------

    def load_runner(self, folder: Path, outputs: tuple[str, ...], input_dtypes: Mapping[str, str], device: str,
                    threads: int | None, settings: Mapping[str, Any]) -> Runner:
        """Load this stage's artifact with its backend's runner (``infbuild/stages/<runner_of>/runner.py:load``) and the
        recipe's settings for that backend (``runtime.<backend>``)."""
        module = importlib.import_module(f"{_package(self.runner_of) if self.runner_of else self.package}.runner")
        return module.load(folder, outputs, input_dtypes, self.artifact_device(folder, device), threads, settings)

    def artifact_device(self, folder: Path, default: str) -> str:
        """The device this artifact was built for, where it records one; else ``default``."""
        return default

    def declined(self, folder: Path) -> str | None:
        """Why this built stage holds no artifact (a variant its tool could not make for this model), else None."""
        return None

    def unavailable(self) -> str | None:
        """Why this host cannot run this stage's artifacts (None when it can)."""
        return None

    def runner(self) -> Callable[..., Sequence[str] | None]:
        """The function the worker runs: ``infbuild.stages.<name>.run:run(job)``, returning failures if it judges."""
        module = importlib.import_module(f"{self.package}.run")
        return module.run


@dataclass(frozen=True)
class PlannedStage:
    recipe: Recipe
    stage: Stage
    target: str
    _: KW_ONLY
    folder: Path
    upstream: tuple[str, ...]
    device: str  # "cpu" or "cuda": where the stage runs
    not_buildable: str | None  # reason this host cannot build it, or None
    tools: Mapping[str, Any]  # extra tool facts for this recipe (trtexec path and version)

    @property
    def task_name(self) -> str:
        return f"{self.stage.name}:{self.recipe.name}"

    @property
    def required(self) -> bool:
        return self.stage.required(self.recipe)


def _package(module: str) -> str:
    """A built-in stage's package (``infbuild/stages/<module>``), else ``module`` itself: a plugin's package."""
    return f"infbuild.stages.{module}" if (Path(__file__).parent / "stages" / module / "__init__.py").is_file() else module


def files_view(stamp: Stamp) -> dict[str, Any]:
    return {"key": stamp.key, "files": {f: m.get("sha256") for f, m in stamp.files.items()}}


_REGISTRY: dict[str, Stage] = {}


def register(stage: Stage) -> Stage:
    """Add a stage (once; in build order: a stage registers after those it reads)."""
    if stage.name in _REGISTRY:
        raise ValueError(f"stage {stage.name!r} registered twice")
    missing = [n for n in stage.needs if n not in _REGISTRY]
    if missing:
        raise ValueError(f"stage {stage.name!r} needs {missing} registered before it")
    _REGISTRY[stage.name] = stage
    return stage


def _load() -> dict[str, Stage]:
    """The registered stages: ``infbuild/stages/__init__.py``, the catalogue, registers every one of them, and
    ``infbuild/__init__.py`` imports it, so the registry is whole wherever infbuild is imported."""
    return _REGISTRY


def stages() -> list[Stage]:
    """Every stage, in build order."""
    return list(_load().values())


def get(name: str) -> Stage:
    return _load()[name]


def artifacts() -> dict[str, Stage]:
    """Artifact name (``onnxruntime``, ``onnxruntime:int8_dynamic`` ...) -> the stage that builds it."""
    return {s.artifact: s for s in _load().values() if s.artifact}


def backends() -> dict[str, Stage]:
    """Runtime backend -> the stage that builds its artifact as the model is (no variant)."""
    return {s.backend: s for s in _load().values() if s.backend and s.variant is None}


def for_backend(backend: str) -> Stage:
    """The stage building this artifact (a backend, or ``backend:variant``)."""
    return artifacts()[backend]


def judge() -> Stage:
    """The stage that verifies artifacts (its report says which passed)."""
    return next(s for s in _load().values() if s.judges)

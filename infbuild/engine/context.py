"""The build context: project, recipes, host, plan and caches, built explicitly (``BuildContext.load``) and
passed to every engine step. Nothing here runs a stage."""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from .. import settings
from ..cache import Cache, configured_caches
from ..fingerprint import host_fingerprint
from ..hashing import DigestCache
from ..host import Host
from ..keys import Inputs, cut_off, failed_upstream, key_inputs, stage_key, staleness
from ..plan import is_required, plan
from ..project import Project, load_project
from ..reasons import Reason
from ..recipe import Recipe
from ..recipe_load import load_recipes
from ..stage import PlannedStage

if TYPE_CHECKING:
    from ..signing.dsse import SigningKey
    from ..signing.trust import Trust


@dataclass(frozen=True)
class BuildOptions:
    """What the user asked of this build besides its tasks."""

    required: frozenset[str] = frozenset()  # stages/tasks to fail on (not skip) when this host cannot build them
    forced: frozenset[str] = frozenset()  # stages/tasks to rerun although up to date

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, require_var: str | None = None) -> BuildOptions:
        """The ``require`` and ``force`` settings (how `infbuild build --require` and `infbuild bench --force` reach
        the doit process) and doit's ``require=`` command-line variable."""
        return cls(settings.value("require", environ=environ) | settings.names(require_var),
                   settings.value("force", environ=environ))


@dataclass
class BuildContext:
    project: Project
    recipes: list[Recipe]
    host: Host
    planned: dict[str, PlannedStage]  # task name ("stage:recipe") -> planned stage, in build order
    digests: DigestCache
    caches: list[Cache]
    options: BuildOptions = field(default_factory=BuildOptions)

    @classmethod
    def load(cls, root: Path | None = None, options: BuildOptions | None = None) -> BuildContext:
        project = load_project(root)
        recipes = load_recipes(project)
        options = options or BuildOptions()
        host = Host(host_fingerprint(), project.root)
        planned = {p.task_name: p for p in plan(recipes, host, project.artifacts, options.required)}
        return cls(project, recipes, host, planned, DigestCache(project.artifacts / ".infbuild" / "digests.json"),
                   configured_caches(project.root, list(project.caches)), options)

    @property
    def artifacts(self) -> Path:
        return self.project.artifacts

    @property
    def fingerprint(self) -> dict[str, Any]:
        return dict(self.host.fingerprint)

    @property
    def names(self) -> set[str]:
        """The project's recipes: the manifest indexes these only."""
        return {r.name for r in self.recipes}

    def siblings(self, p: PlannedStage) -> dict[str, PlannedStage]:
        return {name: self.planned[f"{name}:{p.recipe.name}"] for name in p.upstream}

    def failed_upstream(self, p: PlannedStage) -> dict[str, str]:
        """The artifacts ``p`` takes as failed (``Stage.tolerates_failed``): stage -> why."""
        return failed_upstream(p, self.siblings(p))

    def readable_siblings(self, p: PlannedStage) -> dict[str, PlannedStage]:
        """The upstream stages ``p`` reads: all of them but those it takes as failed."""
        failed = self.failed_upstream(p)
        return {name: s for name, s in self.siblings(p).items() if name not in failed}

    def key_inputs(self, p: PlannedStage) -> Inputs:
        """What ``p``'s key is the digest of (UpstreamMissing while an upstream stage is unbuilt)."""
        try:
            return key_inputs(p, self.host.fingerprint, self.project.root, self.digests, self.siblings(p))
        finally:
            self.digests.save()

    def key(self, p: PlannedStage) -> tuple[str, Inputs]:
        inputs = self.key_inputs(p)
        return stage_key(inputs), inputs

    def staleness(self, p: PlannedStage) -> Reason | None:
        """None when ``p`` is up to date, else why it must be rebuilt."""
        try:
            return staleness(p, self.host.fingerprint, self.project.root, self.digests, self.siblings(p))
        finally:
            self.digests.save()

    def cut_off(self, p: PlannedStage) -> tuple[str, str] | None:
        """For an up-to-date stage: the upstream stage rebuilt after it, and why that did not make it stale."""
        return cut_off(p, self.siblings(p))

    def forced(self, p: PlannedStage) -> bool:
        return bool({p.stage.name, p.task_name} & self.options.forced)

    def required(self, p: PlannedStage) -> bool:
        return is_required(p, self.options.required)

    def up_to_date(self, p: PlannedStage) -> bool:
        return not self.forced(p) and p.not_buildable is None and self.staleness(p) is None

    @cached_property
    def trust(self) -> Trust:
        """The keys this build trusts (``trusted_keys``; this machine's key for its own caches and folders)."""
        from ..signing.trust import trust

        return trust(self.project.config, self.project.root, create_machine_key=True)

    @cached_property
    def signer(self) -> SigningKey | None:
        """The key this build signs stages with (``signing_key``, else this machine's)."""
        from ..signing.trust import signer

        return signer(self.project.config, self.project.root)

    @cached_property
    def memory_budget_mb(self) -> int:
        """What parallel stages may use together (``memory_mb``, default 80 % of RAM)."""
        from .memory import budget_mb

        return budget_mb(settings.value("memory_mb", self.project.config, self.project.root))

    @property
    def signing_passphrase_env(self) -> str:
        return str(settings.value("signing_key_passphrase_env", self.project.config, self.project.root))

    def caches_for(self, p: PlannedStage) -> list[Cache]:
        """The caches a stage may be restored from and stored in (none when forced or not cacheable)."""
        return self.caches if p.stage.cacheable and not self.forced(p) else []

"""Plan: recipes + host -> the stages to build, where, and whether this host can build them.

Pure and light (no torch): the no-op build runs this and the key checks, nothing more. Every stage decides for
itself (``infbuild.stage.Stage``) whether the recipe wants it, where it runs and what it reads; this module only
puts the answers together in build order.
"""
from __future__ import annotations

from pathlib import Path
from typing import AbstractSet

from . import stage as registry
from .artifacts import stage_dir
from .host import Host
from .recipe import Recipe
from .stage import Placement, PlannedStage, Stage


def _wanted(recipe: Recipe) -> list[Stage]:
    """The stages the recipe asks for and those they need, in build order."""
    names = {s.name for s in registry.stages() if s.wanted(recipe)}
    for stage in reversed(registry.stages()):  # needs point backwards in build order: one pass closes them
        if stage.name in names:
            names.update(stage.needs)
    return [s for s in registry.stages() if s.name in names]


def plan_recipe(recipe: Recipe, host: Host, artifacts: Path, required: AbstractSet[str] = frozenset()
                ) -> list[PlannedStage]:
    """The recipe's stages in build order. Required stages that cannot be built stay in (and fail)."""
    wanted = _wanted(recipe)
    places: dict[str, Placement] = {s.name: s.placement(recipe, host) for s in wanted}
    on_gpu = host.cuda_target is not None and any(p.device == "cuda" for p in places.values())
    gpu_target = host.cuda_target or "cuda-unavailable"
    targets = {"portable": "portable", "device": gpu_target if on_gpu else host.cpu_target, "cuda": gpu_target}
    planned: dict[str, PlannedStage] = {}
    for stage in wanted:
        place = places[stage.name]
        upstream = stage.upstream(recipe, planned, lambda p: is_required(p, required))
        reason = place.not_buildable or next((planned[u].not_buildable for u in upstream if planned[u].not_buildable),
                                             None)
        target = targets[stage.scope]
        planned[stage.name] = PlannedStage(recipe, stage, target, folder=stage_dir(artifacts, recipe.name, target, stage.name),
                                           upstream=upstream, device=place.device or ("cuda" if on_gpu else "cpu"),
                                           not_buildable=reason, tools=place.tools)
    return list(planned.values())


def is_required(p: PlannedStage, required: AbstractSet[str]) -> bool:
    return p.required or p.stage.name in required or p.task_name in required


def plan(recipes: list[Recipe], host: Host, artifacts: Path, required: AbstractSet[str] = frozenset()
         ) -> list[PlannedStage]:
    return [p for r in recipes for p in plan_recipe(r, host, artifacts, required)]

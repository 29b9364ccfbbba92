"""A stage's part of a recipe (``Section``): where it sits (``stages.onnx``, ``bench``), its JSON Schema fragment (a
file in the stage's package), its defaults, and its checks beyond the schema. Each stage package declares the
section it owns; the recipe loader applies them and ``infbuild.recipe_schema`` assembles the one schema file."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Generic, Mapping, TypeVar, cast

from .recipe_file import FieldPath

if TYPE_CHECKING:
    from .recipe import Recipe

Options = TypeVar("Options")  # the section's typed options (a TypedDict of its package)

Add = Callable[[FieldPath, str], None]  # report a problem at a field path of the recipe


def obj(value: Any) -> dict[str, Any]:
    """``value`` when it is a mapping, else an empty one: checks run on data the schema may have refused."""
    return value if isinstance(value, dict) else {}


@dataclass(frozen=True, kw_only=True)
class Section(Generic[Options]):
    path: tuple[str, ...]  # where in a recipe: ("stages", "onnx"), ("bench",)
    schema_file: Path  # its JSON Schema (a fragment of infbuild/schema/recipe.schema.json)
    defaults: Mapping[str, Any] = field(default_factory=dict)  # what a recipe that does not set a field gets
    optional: bool = False  # absent from a recipe, it is absent (None) from the recipe's options, defaults and all
    check: Callable[[dict[str, Any], dict[str, Any], Add], None] | None = None  # (the section, the whole recipe, add)
    complete: Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]] | None = None  # (section, recipe): defaults
    # applied, where they depend on more than the section (default: the defaults under the recipe's values)
    more_variants: Callable[[dict[str, Any], dict[str, tuple[str, ...]]], dict[str, tuple[str, ...]]] | None = None
    # (its options, the recipe's variants per backend) -> the variants with those its options add

    def of(self, recipe: Recipe) -> Options:
        """This section of a loaded recipe, typed (defaults applied)."""
        if self.path[0] == "stages":
            return cast(Options, recipe.stages[self.path[1]])
        return cast(Options, getattr(recipe, self.path[0]))

    @cached_property
    def schema(self) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(self.schema_file.read_text(encoding="utf-8"))
        return value

    def given(self, data: Mapping[str, Any]) -> dict[str, Any] | None:
        """The section as the recipe's data gives it (None when absent)."""
        value: Any = data
        for part in self.path:
            value = value.get(part) if isinstance(value, dict) else None
        return value if isinstance(value, dict) else None

    def options(self, data: dict[str, Any]) -> dict[str, Any] | None:
        """The section with its defaults applied, from valid data (None for an optional section not given)."""
        given = self.given(data)
        if given is None and self.optional:
            return None
        if self.complete is not None:
            return self.complete(given or {}, data)
        return {**self.defaults, **(given or {})}

    def problems(self, data: dict[str, Any], add: Add) -> None:
        if self.check is not None:
            self.check(obj(self.given(data)), data, add)


_SECTIONS: dict[tuple[str, ...], Section[Any]] = {}


def declare(section: Section[Options]) -> Section[Options]:
    """Add a stage package's section (once per path; in the catalogue's order, which the schema file keeps)."""
    if section.path in _SECTIONS:
        raise ValueError(f"recipe section {'.'.join(section.path)} declared twice")
    _SECTIONS[section.path] = section
    return section


def sections() -> list[Section[Any]]:
    """Every declared section (the catalogue, ``infbuild/stages/__init__.py``, has every stage package declare its)."""
    return list(_SECTIONS.values())

"""The recipe check cache (artifacts/.infbuild/recipes.json): a recipe text that parsed and passed the schema is
not parsed or schema-checked again, anything edited is, and checking recipes alone creates nothing."""
from __future__ import annotations

import json

import pytest
from helpers import Project, mlp_recipe

from infbuild import recipe_cache
from infbuild import recipe_load as recipe_module
from infbuild.errors import RecipeError
from infbuild.project import load_project
from infbuild.recipe_load import load_recipes


def _checked(project: Project) -> list:
    return load_recipes(load_project(project.root))


def test_a_checked_recipe_is_not_parsed_or_schema_checked_again(project: Project,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    project.add_recipe("a.yaml", mlp_recipe(name="a"))
    (project.artifacts / ".infbuild").mkdir(parents=True)  # as a build leaves it
    first = _checked(project)
    saved = json.loads((project.artifacts / ".infbuild" / "recipes.json").read_text())
    assert len(saved["entries"]) == 1

    def refuse(*args: object) -> None:
        raise AssertionError("parsed or schema-checked again")

    monkeypatch.setattr(recipe_module, "parse_text", refuse)
    monkeypatch.setattr(recipe_module, "_schema_problems", refuse)
    again = _checked(project)
    assert again == first and again[0].line("dims.batch") == first[0].line("dims.batch")


def test_an_edited_recipe_is_checked_afresh(project: Project) -> None:
    project.add_recipe("a.yaml", mlp_recipe(name="a"))
    (project.artifacts / ".infbuild").mkdir(parents=True)
    _checked(project)
    project.add_recipe("a.yaml", mlp_recipe(name="a").replace("rtol: ", "rtool: "))
    with pytest.raises(RecipeError, match="unknown field"):
        _checked(project)


def test_the_semantic_checks_run_on_a_cached_recipe(project: Project) -> None:
    """They read the project's files (sources, weights): a checked text with a deleted source file fails."""
    project.add_recipe("a.yaml", mlp_recipe(name="a", extra_model="  weights: weights/a.pt\n"))
    (project.root / "weights").mkdir()
    (project.root / "weights" / "a.pt").write_bytes(b"x")
    (project.artifacts / ".infbuild").mkdir(parents=True)
    _checked(project)
    (project.root / "weights" / "a.pt").unlink()
    with pytest.raises(RecipeError, match="weights"):
        _checked(project)


def test_another_schema_or_parser_invalidates_the_cache(project: Project) -> None:
    project.add_recipe("a.yaml", mlp_recipe(name="a"))
    (project.artifacts / ".infbuild").mkdir(parents=True)
    _checked(project)
    path = project.artifacts / ".infbuild" / "recipes.json"
    assert recipe_cache.CheckedRecipes(path, recipe_module.checker_version()).entries != {}
    assert recipe_cache.CheckedRecipes(path, "another schema").entries == {}


def test_checking_recipes_alone_creates_nothing(project: Project) -> None:
    project.add_recipe("a.yaml", mlp_recipe(name="a"))
    _checked(project)
    assert not project.artifacts.exists()

"""Every recipe mistake a user will make is reported as FILE:LINE: field: message, all at once, exit 1,
no traceback, nothing under artifacts/ touched."""
from __future__ import annotations

import json as json_module
import sys
from pathlib import Path

import pytest
from helpers import Project, mlp_recipe, problems_of

from infbuild.project import load_project
from infbuild.recipe_load import load_recipes

CASES = {
    "yaml_syntax": ("name: a\nmodel: {factory: 'examples.models:mlp'\ninputs: x\n", 3, "", "YAML syntax error"),
    "unknown_field_did_you_mean": (mlp_recipe().replace("outputs:", "outptus:"), 9, "outptus",
                                   "unknown field; did you mean 'outputs'?"),
    "wrong_type": (mlp_recipe().replace("min: 1,", "min: one,"), 8, "dims.batch.min", "expected integer, got string"),
    "bad_enum": (mlp_recipe().replace("dtype: float32", "dtype: float64"), 6, "inputs.x.dtype",
                 "must be one of: float32"),
    "missing_required": (mlp_recipe().replace("  factory: examples.models:mlp\n", "  weights: null\n"), 2,
                         "model.factory", "missing required field"),
    "min_gt_max": (mlp_recipe(opt=4, max=4).replace("min: 1,", "min: 8,"), 8, "dims.batch", "min (8) > max (4)"),
    "min_eq_max": (mlp_recipe(opt=4, max=4).replace("min: 1,", "min: 4,"), 8, "dims.batch",
                   "min equals max (4): a named dim ranges; for a fixed size write 4 in the inputs' shapes"),
    "opt_outside": (mlp_recipe(opt=100, max=64), 8, "dims.batch.opt", "opt (100) must lie within min..max (1..64)"),
    "undeclared_dim": (mlp_recipe().replace("[batch, 10]", "[batch, feat]"), 6, "inputs.x.shape[1]",
                       "dim 'feat' is not declared"),
    "weights_missing": (mlp_recipe(extra_model="  weights: weights/nope.pt\n"), 5, "model.weights",
                        "weights file 'weights/nope.pt' not found"),
    "name_escapes_artifacts": (mlp_recipe(name="../../etc"), 1, "name", "is not a valid recipe name"),
    "name_absolute": (mlp_recipe(name="/tmp/x"), 1, "name", "is not a valid recipe name"),
    "module_missing": (mlp_recipe().replace("examples.models:mlp", "examples.nowhere:mlp"), 3, "model.factory",
                       "module 'examples.nowhere' not found"),
    "source_glob_empty": (mlp_recipe(extra_model="  sources: ['examples/*.cpp']\n"), 5, "model.sources[0]",
                          "matches no file"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_recipe_mistake_is_located(project: Project, case: str) -> None:
    text, line, field, message = CASES[case]
    project.add_recipe("bad.yaml", text)
    rendered = problems_of(project)
    prefix = f"recipes/bad.yaml:{line}: " + (f"{field}: " if field else "")
    assert any(r.startswith(prefix) and message in r for r in rendered), rendered


def test_all_problems_of_a_file_are_reported_at_once(project: Project) -> None:
    project.add_recipe("bad.yaml", """\
name: ../evil
model:
  facotry: examples.models:mlp
  dtype: float64
inputs:
  x: {shape: [batch, 10, seq]}
dims:
  batch: {min: 8, opt: 4, max: 4}
outputs: y
""")
    rendered = problems_of(project)
    fields = [r.split(": ")[1] for r in rendered]
    assert fields == ["name", "model.factory", "model.facotry", "model.dtype", "inputs.x.shape[2]", "dims.batch",
                      "outputs"], rendered


def test_duplicate_names_across_files(project: Project) -> None:
    project.add_recipe("a.yaml", mlp_recipe())
    project.add_recipe("b.json", '{"name": "mlp", "model": {"factory": "examples.models:mlp"},\n'
                       ' "inputs": {"x": {"shape": [2, 10]}}, "outputs": ["y"]}\n')
    rendered = problems_of(project)
    assert rendered == ["recipes/b.json:1: name: duplicate recipe name 'mlp' (also in recipes/a.yaml:1)"]


def test_json_syntax_error_has_its_line(project: Project) -> None:
    project.add_recipe("a.json", '{\n  "name": "a",\n  "model": {,}\n}\n')
    assert problems_of(project)[0].startswith("recipes/a.json:3: JSON syntax error")


def test_duplicate_yaml_key_is_an_error(project: Project) -> None:
    project.add_recipe("a.yaml", mlp_recipe() + "outputs: [z]\n")
    assert any("duplicate key" in r and ":12: outputs" in r for r in problems_of(project))


def test_defaults_are_applied(project: Project) -> None:
    project.add_recipe("a.yaml", mlp_recipe(bench="").replace("verify: {rtol: 0.001, atol: 1.0e-4}\n", ""))
    (recipe,) = load_recipes(load_project(project.root))
    assert recipe.backends == ("onnxruntime", "aoti")
    assert recipe.stages["onnx"] == {"opset": 18, "external_data": False, "graph_only": False}
    assert recipe.stages["aoti"]["device"] == "auto"
    assert recipe.verify == {"rtol": 1e-3, "atol": 1e-4}
    assert recipe.model.sources == ("examples/models.py",)
    assert recipe.bench["shapes"] == ["min", "opt", "max"] and recipe.bench["threads"] == 1
    assert recipe.package is None


def test_validate_cli_exit_1_no_traceback_nothing_touched(project: Project) -> None:
    project.add_recipe("bad.yaml", mlp_recipe(opt=4, max=4).replace("min: 1,", "min: 8,"))
    for argv in ([sys.executable, "-m", "infbuild.cli", "validate"], [sys.executable, "-m", "doit", "build"]):
        done = project.run(*argv)
        assert done.returncode == 1, done.stderr
        assert "Traceback" not in done.stdout + done.stderr
        assert done.stderr.strip() == "recipes/bad.yaml:8: dims.batch: min (8) > max (4)"
    assert not project.artifacts.exists()


@pytest.mark.parametrize("factory,kwargs,message", [
    ("examples.models:nope", "{}", "has no attribute 'nope'"),
    ("examples.models:torch", "{}", "is not callable"),  # a module object, not a function
    ("examples.models:mlp", "{depth: 3}", "raised TypeError"),
    ("examples.models:_seeded", "{seed: 1}", "returned a NoneType, not a torch.nn.Module"),
    ("examples.broken:model", "{}", "cannot import 'examples.broken'"),
])
def test_validate_imports_the_factory(project: Project, factory: str, kwargs: str, message: str) -> None:
    (project.root / "examples" / "broken.py").write_text("raise RuntimeError('boom at import')\n", encoding="utf-8")
    project.add_recipe("a.yaml", mlp_recipe().replace("examples.models:mlp", factory).replace("{seed: 0}", kwargs))
    done = project.infbuild("validate")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith("recipes/a.yaml:3: model.factory: "), done.stderr
    assert message in done.stderr


def test_validate_checks_forward_parameters(project: Project) -> None:
    project.add_recipe("a.yaml", mlp_recipe().replace("  x: {shape", "  inp: {shape"))
    done = project.infbuild("validate")
    assert done.returncode == 1
    assert done.stderr.strip() == "recipes/a.yaml:6: inputs.inp: not a parameter of MLP.forward(x)"


def test_validate_rejects_weights_that_are_not_a_state_dict(project: Project) -> None:
    (project.root / "w.pt").write_bytes(b"not a pickle at all")
    project.add_recipe("a.yaml", mlp_recipe(extra_model="  weights: w.pt\n"))
    done = project.infbuild("validate")
    assert done.returncode == 1
    assert done.stderr.startswith("recipes/a.yaml:5: model.weights: cannot load 'w.pt'"), done.stderr


def test_validate_accepts_the_examples() -> None:
    import subprocess

    from helpers import REPO

    done = subprocess.run([sys.executable, "-m", "infbuild.cli", "validate"], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "3 recipe(s) valid: convnet, mlp, seqblock"


def test_schema_ships_in_the_package_and_is_draft_2020_12() -> None:
    import json

    from infbuild.recipe_schema import SHIPPED as SCHEMA_PATH

    schema = json.loads(Path(SCHEMA_PATH).read_text())
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_build_reports_forward_mismatch_at_the_recipe_line(project: Project) -> None:
    project.add_recipe("a.yaml", mlp_recipe().replace("  x: {shape", "  inp: {shape"))
    result = project.doit("build")
    assert result.returncode != 0 and "Traceback" not in result.output  # doit: 1 failed, 2 dependents not run
    assert "recipes/a.yaml:6: inputs.inp: not a parameter of MLP.forward(x)" in result.output
    assert not list(project.artifacts.rglob("stamp.json")) and not list(project.artifacts.glob("*/*/onnx"))


def test_odd_field_names_render_on_one_line(project: Project) -> None:
    """Found by the property test: a key holding a newline must not split the FILE:LINE: message."""
    project.add_recipe("a.json", json_module.dumps({"name": "mlp", "model": {"factory": "examples.models:mlp"},
                                                    "inputs": {"x": {"shape": [2, 10]}}, "outputs": ["y"], "\n": None}))
    (rendered,) = problems_of(project)
    assert rendered.startswith('recipes/a.json:1: ["\\n"]: unknown field') and "\n" not in rendered


def test_validate_says_what_integer_samples_are_drawn_from_unless_the_recipe_bounds_them(project: Project) -> None:
    project.add_recipe("ids.yaml", "name: ids\nmodel: {factory: examples.hf:bert}\ninputs:\n"
                                   "  input_ids: {shape: [batch, seq], dtype: int64}\n"
                                   "  attention_mask: {shape: [batch, seq], dtype: int64, values: [1]}\n"
                                   "dims:\n  batch: {min: 1, max: 2}\n  seq: {min: 4, max: 8}\n"
                                   "outputs: [last_hidden_state, pooler_output]\n")
    project.add_recipe("bounded.yaml", mlp_recipe(name="bounded"))
    done = project.infbuild("validate", "--no-import")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[1:] == [
        "note: recipes/ids.yaml:4: inputs.input_ids: samples are integers in 0..99 (the default); for token ids set "
        "high to the vocabulary size"]

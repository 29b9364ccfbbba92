"""Hostile recipe files: alias bombs, deep nesting, non-finite numbers, standard library factories, paths out of
the project, special files, bad bytes. Each comes out as located one-line problems (FILE:LINE: field: message),
fast and with bounded memory, never a traceback, and nothing runs or gets written."""
from __future__ import annotations

import json
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from helpers import VALID_RECIPE, Project, deadline, loader_project, mlp_recipe, problems_of
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from infbuild.project import load_project
from infbuild.recipe_file import MAX_ALIAS_NODES, MAX_DEPTH, MAX_RECIPE_BYTES
from infbuild.recipe_load import load_file, load_recipes

MEMORY_LIMIT = 4 << 30  # address space for the CLI subprocesses: a regression fails instead of eating the host
HOSTILE = Path(__file__).with_name("hostile")


def assert_located(rendered: list[str], file: str, line: int, field: str, message: str) -> None:
    prefix = f"recipes/{file}:{line}: " + (f"{field}: " if field else "")
    assert any(r.startswith(prefix) and message in r for r in rendered), rendered


def run_cli(project: Project, *argv: str, timeout: float = 60) -> tuple[subprocess.CompletedProcess, float]:
    """Run a command in the project with an address-space limit; (result, seconds)."""
    def limit_memory() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))

    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", *argv], cwd=project.root, env=project.env(), capture_output=True,
                          text=True, timeout=timeout, check=False, preexec_fn=limit_memory)
    return done, time.monotonic() - started


def assert_refused_fast(project: Project, file: str, message: str) -> None:
    """`infbuild validate` and `doit build` both exit 1 within seconds with one located line, touching nothing."""
    for argv in (("infbuild.cli", "validate", "--no-import"), ("doit", "build")):
        done, seconds = run_cli(project, *argv)
        output = done.stdout + done.stderr
        assert done.returncode != 0, output
        assert "Traceback" not in output
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and re.match(rf"^recipes/{re.escape(file)}:\d+: ", lines[0]), output
        assert message in lines[0]
        assert seconds < 10, f"{argv}: {seconds:.1f} s"
    assert not project.artifacts.exists()


# --- 1. YAML alias bombs ---------------------------------------------------------------------------------

def alias_bomb(levels: int = 9, width: int = 9) -> str:
    """The "billion laughs": each level a list of `width` aliases to the level below (9**9 leaves)."""
    names = [f"l{i}" for i in range(levels)]
    text = "name: bomb\n" + f"{names[0]}: &{names[0]} [" + ", ".join(["lol"] * width) + "]\n"
    for below, name in zip(names, names[1:]):
        text += f"{name}: &{name} [" + ", ".join([f"*{below}"] * width) + "]\n"
    return text


def test_alias_bomb_is_refused_at_the_alias_that_passes_the_limit(project: Project) -> None:
    project.add_recipe("bomb.yaml", alias_bomb())
    started = time.monotonic()
    rendered = problems_of(project)
    assert time.monotonic() - started < 2
    # sizes: l0 10 nodes, l1 91, l2 820, l3 7381: the aliases in l1..l3 add 8289; the first *l3, in l4 on line 6, passes 10000
    assert rendered == [f"recipes/bomb.yaml:6: YAML aliases expand to more than {MAX_ALIAS_NODES} nodes (at alias "
                        f"*l3); a recipe may repeat at most {MAX_ALIAS_NODES} nodes through aliases"]


def test_merge_key_bomb_is_refused(project: Project) -> None:
    text = "a: &a {k0: 1, k1: 1, k2: 1, k3: 1, k4: 1, k5: 1, k6: 1, k7: 1, k8: 1, k9: 1}\n"
    for i in range(1, 8):
        text += f"m{i}: &m{i}\n" + "".join(f"  x{j}: {{<<: *{'a' if i == 1 else f'm{i - 1}'}}}\n" for j in range(10))
    project.add_recipe("merge.yaml", text)
    (rendered,) = problems_of(project)
    assert rendered.startswith("recipes/merge.yaml:") and "YAML aliases expand to more than" in rendered


def test_recursive_alias_is_refused(project: Project) -> None:
    project.add_recipe("loop.yaml", mlp_recipe() + "description: &d [a, *d]\n")
    assert problems_of(project) == ["recipes/loop.yaml:12: alias *d refers to a node that contains it (a recursive "
                                    "structure, which JSON cannot hold)"]


def test_ordinary_anchors_and_merge_keys_still_load(project: Project) -> None:
    project.add_recipe("a.yaml", """\
name: anchors
model: {factory: 'examples.models:mlp'}
inputs:
  x: &spec {shape: [batch, 10], dtype: float32}
  y: *spec
dims:
  batch: &range {min: 1, max: 8}
  other: {<<: *range, opt: 4}
outputs: [out]
""".replace("[batch, 10], dtype", "[batch, other], dtype"))
    (recipe,) = load_recipes(load_project(project.root))
    assert [i.shape for i in recipe.inputs] == [("batch", "other")] * 2
    assert (recipe.dims["other"].min, recipe.dims["other"].opt, recipe.dims["other"].max) == (1, 4, 8)


def test_cli_refuses_an_alias_bomb_fast(project: Project) -> None:
    project.add_recipe("bomb.yaml", alias_bomb())
    assert_refused_fast(project, "bomb.yaml", "YAML aliases expand to more than")


# --- 2. deep nesting and size ----------------------------------------------------------------------------

def test_json_nested_200000_deep_is_refused_by_size(project: Project) -> None:
    project.add_recipe("deep.json", "[" * 200_000 + "]" * 200_000)
    assert problems_of(project) == [f"recipes/deep.json:1: recipe file is larger than {MAX_RECIPE_BYTES} bytes "
                                    "(the limit for one recipe)"]


def test_json_nested_too_deep_is_located(project: Project) -> None:
    project.add_recipe("deep.json", '{\n  "name": "deep",\n  "model": ' + "[" * 50_000 + "]" * 50_000 + "\n}\n")
    assert problems_of(project) == [f"recipes/deep.json:3: nesting too deep: more than {MAX_DEPTH} levels"]


def test_yaml_block_nesting_too_deep_is_located(project: Project) -> None:
    text = "name: deep\nmodel:\n" + "".join("  " * (i + 1) + f"k{i}:\n" for i in range(150)) + "  " * 151 + "x: 1\n"
    project.add_recipe("deep.yaml", text)
    (rendered,) = problems_of(project)
    assert re.match(rf"^recipes/deep\.yaml:\d+: nesting too deep: more than {MAX_DEPTH} levels$", rendered)
    assert int(rendered.split(":")[1]) > MAX_DEPTH - 5  # at the level that passes the limit, not line 1


def test_nesting_within_the_limit_is_fine(project: Project) -> None:
    kwargs = "{seed: 0, extra: " + "[" * 50 + "]" * 50 + "}"
    project.add_recipe("a.yaml", mlp_recipe().replace("{seed: 0}", kwargs))
    (recipe,) = load_recipes(load_project(project.root))
    assert "extra" in recipe.model.kwargs


def test_cli_refuses_deep_json_fast(project: Project) -> None:
    project.add_recipe("deep.json", "[" * 60_000 + "]" * 60_000)
    assert_refused_fast(project, "deep.json", "nesting too deep")


def test_cli_refuses_200000_deep_json_fast(project: Project) -> None:
    project.add_recipe("deep.json", "[" * 200_000 + "]" * 200_000)
    assert_refused_fast(project, "deep.json", "recipe file is larger than")


def test_many_distinct_list_items_are_checked_in_linear_time(project: Project) -> None:
    """jsonschema's uniqueItems is quadratic for lists of objects; the loader's own is not."""
    items = ",".join(f'{{"a":{i}}}' for i in range(9000))
    project.add_recipe("a.json", '{"name": "a", "model": {"factory": "examples.models:mlp"}, '
                       '"inputs": {"x": {"shape": [2]}}, "backends": [' + items + '], "outputs": ["y"]}')
    started = time.monotonic()
    rendered = problems_of(project)
    assert time.monotonic() - started < 10
    assert len(rendered) == 101 and "more problem(s) not shown" in rendered[-1]


def test_hundreds_of_problems_are_capped(project: Project) -> None:
    project.add_recipe("a.yaml", mlp_recipe() + "".join(f"unknown{i}: 1\n" for i in range(500)))
    rendered = problems_of(project)
    assert len(rendered) == 101
    assert rendered[-1] == "recipes/a.yaml:111: ~: 400 more problem(s) not shown; fix the ones above first"


# --- 3. numbers a worker cannot use ----------------------------------------------------------------------

JSON_RECIPE = """{{
  "name": "j",
  "model": {{"factory": "examples.models:mlp", "kwargs": {kwargs}}},
  "inputs": {{
    "x": {input}
  }},
  "dims": {{"batch": {{"min": 1, "max": 8}}}},
  "outputs": ["y"],
  "verify": {verify}
}}
"""


def json_recipe(input: str = '{"shape": ["batch", 10]}', kwargs: str = "{}", verify: str = "{}") -> str:
    return JSON_RECIPE.format(input=input, kwargs=kwargs, verify=verify)


NUMBER_CASES = {
    "json_nan_low_inf_high": ("a.json", json_recipe('{"shape": ["batch", 10], "low": NaN,\n "high": Infinity}'),
                              [(5, "inputs.x.low", "NaN is not allowed: numbers must be finite"),
                               (6, "inputs.x.high", "Infinity is not allowed: numbers must be finite")]),
    "json_minus_infinity_kwarg": ("a.json", json_recipe(kwargs='{"scale": -Infinity}'),
                                  [(3, "model.kwargs.scale", "-Infinity is not allowed")]),
    "json_int64_high_1e23": ("a.json", json_recipe('{"shape": ["batch", 10], "dtype": "int64", "high": 1e23}'),
                             [(5, "inputs.x.high", "high (1e+23) is outside the range of int64")]),
    "json_overflowing_float": ("a.json", json_recipe(verify='{"atol": 1e999}'),
                               [(9, "verify.atol", "Infinity is not allowed")]),
    "yaml_rtol_nan": ("a.yaml", mlp_recipe().replace("rtol: 0.001", "rtol: .nan"),
                      [(10, "verify.rtol", "NaN is not allowed: numbers must be finite")]),
    "yaml_inf_in_kwargs": ("a.yaml", mlp_recipe().replace("{seed: 0}", "{seed: 0, eps: [1, -.inf]}"),
                           [(4, "model.kwargs.eps[1]", "-Infinity is not allowed")]),
    "yaml_negative_atol": ("a.yaml", mlp_recipe().replace("atol: 1.0e-4", "atol: -1.0e-4"),
                           [(10, "verify.atol", "must be at least 0")]),
    "int32_low_out_of_range": ("a.yaml", mlp_recipe().replace("dtype: float32}", "dtype: int32, low: -3000000000}"),
                               [(6, "inputs.x.low", "low (-3000000000) is outside the range of int32")]),
    "int32_high_exclusive_bound": ("a.yaml", mlp_recipe().replace("dtype: float32}", "dtype: int32, high: 2147483649}"),
                                   [(6, "inputs.x.high", "is outside the range of int32 (-2147483648..2147483648; "
                                     "high is exclusive)")]),
    "int_high_not_whole": ("a.yaml", mlp_recipe().replace("dtype: float32}", "dtype: int64, high: 2.5}"),
                           [(6, "inputs.x.high", "high (2.5) must be a whole number for int64 inputs")]),
    "int_default_low_above_high": ("a.yaml", mlp_recipe().replace("dtype: float32}", "dtype: int64, high: -5}"),
                                   [(6, "inputs.x.high", "high (-5) must be greater than low (0)")]),
    "bool_high_above_2": ("a.yaml", mlp_recipe().replace("dtype: float32}", "dtype: bool, high: 3}"),
                          [(6, "inputs.x.high", "high (3) is outside the range of bool (0..2")]),
    "float16_beyond_max": ("a.yaml", mlp_recipe().replace("dtype: float32}", "dtype: float16, high: 7.0e+4}"),
                           [(6, "inputs.x.high", "high (70000.0) is outside the range of float16 (-65504.0..65504.0)")]),
    "float32_beyond_max": ("a.yaml", mlp_recipe().replace("dtype: float32}", "dtype: float32, low: -1.0e+300}"),
                           [(6, "inputs.x.low", "is outside the range of float32")]),
    "int_beyond_64_bits": ("a.yaml", mlp_recipe().replace("{seed: 0}", "{seed: 36893488147419103232}"),
                           [(4, "model.kwargs.seed", "integer out of range: integers must fit 64 bits")]),
    "int_of_5000_digits_yaml": ("a.yaml", mlp_recipe().replace("{seed: 0}", "{seed: " + "7" * 5000 + "}"),
                                [(4, "", "YAML value error: cannot read !!int value: Exceeds the limit (4300 digits)")]),
    "int_of_5000_digits_json": ("a.json", json_recipe(kwargs='{"seed":\n' + "7" * 5000 + "}"),
                                [(4, "", "cannot read number: Exceeds the limit (4300 digits)")]),
    "static_size_too_big": ("a.yaml", mlp_recipe().replace("[batch, 10]", "[batch, 100000000000]"),
                            [(6, "inputs.x.shape[1]", "must be at most 1073741824")]),
}


@pytest.mark.parametrize("case", sorted(NUMBER_CASES))
def test_numbers_a_worker_cannot_use_are_located(project: Project, case: str) -> None:
    file, text, expected = NUMBER_CASES[case]
    project.add_recipe(file, text)
    rendered = problems_of(project)
    for line, field, message in expected:
        assert_located(rendered, file, line, field, message)
    assert len(rendered) == len(expected), rendered


def test_integer_ranges_at_the_dtype_bounds_are_accepted(project: Project) -> None:
    project.add_recipe("a.yaml", mlp_recipe().replace("  x: {shape: [batch, 10], dtype: float32}\n",
                                                      "  x: {shape: [batch, 10], dtype: int32, low: -2147483648, "
                                                      "high: 2147483648}\n  b: {shape: [batch], dtype: bool}\n"
                                                      "  h: {shape: [batch], dtype: float16, low: -65504, high: 65504}\n"))
    (recipe,) = load_recipes(load_project(project.root))
    assert [(i.dtype, i.low, i.high) for i in recipe.inputs] == [
        ("int32", -2**31, 2**31), ("bool", 0, 2), ("float16", -65504, 65504)]


def test_sample_inputs_refuse_a_bad_range_as_a_field_error(project: Project) -> None:
    """Defence in depth: a Recipe that never went through validate still fails as a located FieldError."""
    from infbuild.errors import FieldError
    from infbuild.stages.samples import sample_inputs

    project.add_recipe("a.yaml", mlp_recipe())
    (recipe,) = load_recipes(load_project(project.root))
    data = recipe.to_dict()
    data["inputs"]["x"].update(low=float("nan"), high=float("inf"))
    broken = type(recipe).from_dict(data)
    with pytest.raises(FieldError) as info:
        sample_inputs(broken, {"x": (2, 10)}, seed=0)
    assert info.value.field == "inputs.x"


# --- 4. standard library factories -----------------------------------------------------------------------

@pytest.mark.parametrize("factory", ["subprocess:run", "os:system", "builtins:exec", "shutil:rmtree",
                                     "importlib:import_module", "pickle:loads", "__main__:main", "os.path:join"])
def test_standard_library_factory_is_refused(project: Project, factory: str) -> None:
    project.add_recipe("a.yaml", mlp_recipe().replace("examples.models:mlp", factory))
    module = factory.partition(":")[0]
    assert problems_of(project) == [f"recipes/a.yaml:3: model.factory: '{module}' is a Python standard library "
                                    "module, not a model factory's module: refused without importing it"]


def test_validate_never_calls_a_standard_library_factory(project: Project, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    project.add_recipe("a.yaml", mlp_recipe().replace("examples.models:mlp", "subprocess:run")
                       .replace("{seed: 0}", f"{{args: [touch, {marker}]}}"))
    done = project.infbuild("validate")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip() == ("recipes/a.yaml:3: model.factory: 'subprocess' is a Python standard library "
                                   "module, not a model factory's module: refused without importing it")
    assert not marker.exists()


def test_validate_never_calls_a_standard_library_callable_reexported_by_a_project_module(
        project: Project, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    (project.root / "helpers.py").write_text("import subprocess\n", encoding="utf-8")
    project.add_recipe("a.yaml", mlp_recipe().replace("examples.models:mlp", "helpers:subprocess.run")
                       .replace("{seed: 0}", f"{{args: [touch, {marker}]}}"))
    done = project.infbuild("validate")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith("recipes/a.yaml:3: model.factory: 'helpers:subprocess.run' is subprocess.run, "
                                  "from the Python standard library"), done.stderr
    assert not marker.exists()


def test_import_factory_refuses_the_standard_library_without_importing(tmp_path: Path) -> None:
    from infbuild.errors import FieldError
    from infbuild.stages.model import import_factory

    with pytest.raises(FieldError, match="standard library"):
        import_factory("antigravity:fly", tmp_path)  # importing it would open a web browser
    assert "antigravity" not in sys.modules


# --- 5. files outside the project ------------------------------------------------------------------------

@pytest.mark.parametrize("pattern,message", [
    ("/etc/passwd", "'/etc/passwd' is outside the project root"),
    ("../../x", "'../../x' is outside the project root"),
    ("examples/../../*", "is outside the project root"),
    ("secret.py", "'secret.py' (matched by 'secret.py') is outside the project root (it resolves to"),
    ("links/*", "'links/shadow' (matched by 'links/*') is outside the project root"),
])
def test_sources_outside_the_project_are_refused(project: Project, tmp_path: Path, pattern: str, message: str) -> None:
    outside = tmp_path / "outside.py"
    outside.write_text("SECRET = 1\n", encoding="utf-8")
    (project.root / "secret.py").symlink_to(outside)
    (project.root / "links").mkdir()
    (project.root / "links" / "shadow").symlink_to(outside)
    project.add_recipe("a.yaml", mlp_recipe(extra_model=f"  sources: [{json.dumps(pattern)}]\n"))
    assert_located(problems_of(project), "a.yaml", 5, "model.sources[0]", message)


def test_symlinks_inside_the_project_are_fine(project: Project) -> None:
    (project.root / "alias.py").symlink_to(project.root / "examples" / "models.py")
    project.add_recipe("a.yaml", mlp_recipe(extra_model="  sources: [alias.py]\n"))
    (recipe,) = load_recipes(load_project(project.root))
    assert recipe.model.sources == ("examples/models.py",)


def test_weights_symlinked_outside_the_project_are_refused(project: Project, tmp_path: Path) -> None:
    (tmp_path / "w.pt").write_bytes(b"x")
    (project.root / "w.pt").symlink_to(tmp_path / "w.pt")
    project.add_recipe("a.yaml", mlp_recipe(extra_model="  weights: w.pt\n"))
    assert problems_of(project) == ["recipes/a.yaml:5: model.weights: weights file 'w.pt' is outside the project root"]


# --- 6. recipe paths that are not regular files ----------------------------------------------------------

def make_special_files(recipes: Path) -> None:
    (recipes / "dir.yaml").mkdir()
    os.mkfifo(recipes / "fifo.yaml")
    (recipes / "zero.yaml").symlink_to("/dev/zero")
    (recipes / "gone.json").symlink_to(recipes / "nowhere.json")


def test_special_files_matched_by_the_globs_are_reported(project: Project) -> None:
    make_special_files(project.root / "recipes")
    assert problems_of(project) == [
        "recipes/dir.yaml:1: not a regular file (a directory); a recipe is a YAML or JSON file",
        "recipes/fifo.yaml:1: not a regular file (a FIFO); a recipe is a YAML or JSON file",
        "recipes/gone.json:1: cannot read recipe file: it does not exist (a dangling symlink?)",
        "recipes/zero.yaml:1: not a regular file (a character device); a recipe is a YAML or JSON file",
    ]


def test_cli_reports_special_files_without_blocking(project: Project) -> None:
    make_special_files(project.root / "recipes")
    done, seconds = run_cli(project, "infbuild.cli", "validate", "--no-import")
    assert done.returncode == 1 and "Traceback" not in done.stderr and seconds < 10
    assert len(done.stderr.strip().splitlines()) == 4 and "(a FIFO)" in done.stderr


def test_recipe_larger_than_the_limit_is_refused_without_reading_it_all(project: Project) -> None:
    project.add_recipe("big.yaml", mlp_recipe() + "description: '" + "x" * MAX_RECIPE_BYTES + "'\n")
    assert problems_of(project) == [f"recipes/big.yaml:1: recipe file is larger than {MAX_RECIPE_BYTES} bytes "
                                    "(the limit for one recipe)"]


# --- 7. bad bytes and non-JSON YAML ----------------------------------------------------------------------

def test_non_utf8_byte_is_reported_on_its_line(project: Project) -> None:
    (project.root / "recipes" / "a.yaml").write_bytes(b"name: a\ndescription: caf\xe9\n")
    assert problems_of(project) == ["recipes/a.yaml:2: not UTF-8: byte 0xe9 at column 17 (invalid continuation byte)"]


def test_control_character_is_reported_on_its_line(project: Project) -> None:
    (project.root / "recipes" / "a.yaml").write_bytes(b"name: a\n\ndescription: a\x00b\n")
    assert problems_of(project) == ["recipes/a.yaml:3: YAML syntax error: unacceptable character #x0000: special "
                                    "characters are not allowed"]


@pytest.mark.parametrize("extra,line,message", [
    ("description: !!binary aGVsbG8=\n", 12, "!!binary values are not allowed in a recipe (JSON values only"),
    ("description: !!set {a, b}\n", 12, "!!set values are not allowed in a recipe"),
    ("description: !!timestamp 2001-02-30\n", 12, "!!timestamp values are not allowed in a recipe"),
    ("description: !!python/object:os.system {}\n", 12, "could not determine a constructor"),
    ("1: x\n", 12, 'mapping key "1" is not a string (YAML reads it as !!int); quote it'),
    ("yes: x\n", 12, 'mapping key "yes" is not a string (YAML reads it as !!bool); quote it'),
])
def test_yaml_values_json_lacks_are_located(project: Project, extra: str, line: int, message: str) -> None:
    project.add_recipe("a.yaml", mlp_recipe() + extra)
    (rendered,) = problems_of(project)
    assert rendered.startswith(f"recipes/a.yaml:{line}: YAML value error: ") and message in rendered, rendered


def test_dates_stay_strings(project: Project) -> None:
    project.add_recipe("a.yaml", mlp_recipe() + "description: 2024-02-30\n")
    (recipe,) = load_recipes(load_project(project.root))
    assert recipe.name == "mlp"


# --- the hostile corpus, and machine-generated values ----------------------------------------------------

@pytest.mark.parametrize("name", sorted(p.name for p in HOSTILE.iterdir()))
def test_hostile_corpus_is_refused_with_located_problems(tmp_path: Path, name: str) -> None:
    """tests/hostile/: one hostile recipe per file, named for its problem (a comment says more where YAML allows)."""
    project = loader_project(tmp_path)
    path = tmp_path / name
    path.write_bytes((HOSTILE / name).read_bytes())
    with deadline(10):
        recipe, problems = load_file(path, project)
    assert recipe is None and problems
    for problem in problems:
        assert problem.render().startswith(f"{name}:{problem.line}: ") and "\n" not in problem.render()
        assert "infbuild bug" not in problem.message


leaves = st.one_of(st.none(), st.booleans(), st.integers(min_value=-2**80, max_value=2**80),
                   st.sampled_from([2**63 - 1, 2**63, -2**63, -2**63 - 1, 2**31, 65504, 65505, 1e23, 1e308]),
                   st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20))
values = st.recursive(leaves, lambda children: st.one_of(st.lists(children, max_size=4),
                                                         st.dictionaries(st.text(max_size=8), children, max_size=4)),
                      max_leaves=30)
TARGETS = [("inputs", "x", "low"), ("inputs", "x", "high"), ("inputs", "x", "dtype"), ("inputs", "x", "shape"),
           ("inputs", "x", "shape", 1), ("verify", "rtol"), ("verify", "atol"), ("model", "kwargs", "seed"),
           ("model", "kwargs"), ("model", "weights"), ("model", "sources"), ("dims", "batch", "max"),
           ("dims", "batch"), ("bench", "shapes"), ("stages", "aoti", "inductor_configs"), ("outputs",), ("name",),
           ("package",), ("extra",)]
DTYPES = st.sampled_from(["float32", "float16", "bfloat16", "int32", "int64", "bool"])


def _put(doc: dict, path: tuple, value: object) -> None:
    """Set doc[path] = value where every container on the way exists (earlier mutations may have replaced one)."""
    parent: object = doc
    for part in path[:-1]:
        if isinstance(parent, dict) and part in parent:
            parent = parent[part]
        elif isinstance(parent, list) and isinstance(part, int) and part < len(parent):
            parent = parent[part]
        else:
            return
    last = path[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list) and isinstance(last, int) and last < len(parent):
        parent[last] = value


@st.composite
def hostile_recipes(draw: st.DrawFn) -> dict:
    """The valid MLP recipe with a random dtype and 1-4 fields replaced by random JSON-ish values."""
    doc = json.loads(json.dumps(VALID_RECIPE))
    doc["inputs"]["x"]["dtype"] = draw(DTYPES)
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        _put(doc, draw(st.sampled_from(TARGETS)), draw(values))
    return doc


@settings(max_examples=200, deadline=5000, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(doc=hostile_recipes(), as_json=st.booleans())
def test_hostile_values_never_crash_the_loader(tmp_path: Path, doc: dict, as_json: bool) -> None:
    project = loader_project(tmp_path, stub_factory=True)
    path = tmp_path / ("r.json" if as_json else "r.yaml")
    path.write_text(json.dumps(doc, ensure_ascii=False, indent=1) if as_json else yaml.safe_dump(doc, allow_unicode=True))
    recipe, problems = load_file(path, project)
    for problem in problems:
        rendered = problem.render()
        assert rendered.startswith(f"{path.name}:{problem.line}: ") and problem.line >= 1 and "\n" not in rendered
        assert "infbuild bug" not in problem.message, rendered
    if recipe is None:
        assert problems, "rejected without a reason"
        return
    assert not problems
    for spec in recipe.inputs:  # what validate accepts, a worker can use
        assert all(isinstance(v, (int, float)) and abs(v) < float("inf") for v in (spec.low, spec.high))
        assert spec.low < spec.high
    json.dumps(recipe.to_dict(), allow_nan=False)  # stage workers receive it as JSON


YAML_TOKENS = st.sampled_from(list("&*!<>:-[]{},'\"\n #|%@`?=.019abxyz\t\\") + [
    "&a ", "*a", "&b ", "*b", "<<: *a", "[*a, *a, *a]", "{<<: *b}", "\n  ", "- ", "---\n", "name: ", "model: ",
    "!!set ", "!!binary ", "!!int ", "!!bool ", "!!float ", "!!timestamp ", "!!python/name:os.system ", ".nan",
    ".inf", "1e400", "1.0e400", "0x", "0o", "1:2:3", "yes", "~", "2001-02-30", "\u0085", "\ufeff", "\x00"])


@settings(max_examples=300, deadline=5000, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(parts=st.lists(YAML_TOKENS, max_size=60), suffix=st.sampled_from([".yaml", ".json"]))
def test_yaml_token_soup_never_crashes_the_loader(tmp_path: Path, parts: list[str], suffix: str) -> None:
    """Anchors, aliases, merge keys, tags and odd scalars in random order: problems, never an exception."""
    project = loader_project(tmp_path)
    path = tmp_path / ("r" + suffix)
    path.write_text("".join(parts), encoding="utf-8")
    recipe, problems = load_file(path, project)
    assert recipe is None or not problems
    for problem in problems:
        assert "infbuild bug" not in problem.message and "\n" not in problem.render(), problem.render()

"""Builds that survive concurrency and bad input: one build per tree at a time, damaged doit DB and
hand-edited manifests, re-hashing stamped files, hostile recipe values, machine-generated recipes,
JSON-lines events for CI."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import VALID_RECIPE, Project, copy_built, doit_argv, jsonl_run, loader_project, mlp_recipe
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from infbuild.errors import RecipeError
from infbuild.recipe_load import load_file, load_recipes


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, mlp_built: tuple[Project, Path]) -> Project:
    """A copy of the session's built MLP (its subject here is not the cold build)."""
    return copy_built(mlp_built[0], tmp_path_factory.mktemp("robust") / "proj")


def test_two_builds_on_one_tree_take_turns(built: Project) -> None:
    (built.stage("mlp", "portable", "onnx") / "model.onnx").unlink()
    procs = [subprocess.Popen([sys.executable, "-m", "doit", *doit_argv(("build",), "jsonl")], cwd=built.root,
                              env=built.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outputs = [proc.communicate(timeout=600) for proc in procs]
    runs = [jsonl_run(proc.returncode, out, err) for proc, (out, err) in zip(procs, outputs)]
    assert [run.returncode for run in runs] == [0, 0], [run.output for run in runs]
    assert sum("waiting for another build of" in run.output for run in runs) == 1
    assert sum("onnx:mlp" in run.stages_ran() for run in runs) == 1  # built once, by the first
    assert built.infbuild("status").returncode == 0
    assert built.infbuild("verify-artifacts").returncode == 0


@pytest.mark.slow
def test_parallel_aoti_compiles_of_one_architecture_keep_their_own_weights(tmp_path: Path, cpu_target: str) -> None:
    """Two recipes that differ only in weights generate the same AOTInductor wrapper code; compiled at once
    (doit -n 2) each package must hold its own weights. The generated sources and .so go to a folder of the
    stage's own, never the shared inductor cache (where one build could package the other's files)."""
    p = Project(tmp_path / "proj")
    p.add_recipe("a.yaml", mlp_recipe(name="a", seed=0))
    p.add_recipe("b.yaml", mlp_recipe(name="b", seed=1))
    inductor_cache = tmp_path / "inductor"
    result = p.doit("-n", "2", "build", env=p.env(INFBUILD_CACHE="off", TORCHINDUCTOR_CACHE_DIR=str(inductor_cache)))
    assert result.returncode == 0, result.output[-3000:]
    for name in ("a", "b"):
        report = json.loads((p.stage(name, cpu_target, "verify") / "report.json").read_text())
        assert report["results"]["aoti"]["passed"] is True, report["results"]["aoti"]
        assert str(p.root).encode() not in (p.stage(name, "portable", "onnx") / "model.onnx").read_bytes()
    assert inductor_cache.is_dir()
    generated = [f.name for f in inductor_cache.rglob("*") if f.name.endswith((".wrapper.so", ".wrapper.cpp", "_metadata.json"))]
    assert generated == []


def test_garbage_dep_db_is_moved_aside_and_nothing_rebuilds(built: Project) -> None:
    (built.artifacts / ".doit.db").write_bytes(b"this is not sqlite at all" * 10)
    result = built.doit("build")
    assert result.returncode == 0 and result.stages_ran() == set()
    assert "was not a doit database: moved to .doit.db.corrupt" in result.output


def test_hand_edited_manifest_is_rewritten(built: Project) -> None:
    manifest = built.artifacts / "manifest.json"
    good = manifest.read_text()
    data = json.loads(good)
    data["recipes"]["mlp"]["targets"]["portable"]["stages"]["onnx"]["files"]["model.onnx"]["sha256"] = "0" * 64
    manifest.write_text(json.dumps(data))
    assert built.infbuild("verify-artifacts").returncode == 1
    result = built.doit("build")
    assert result.returncode == 0 and "manifest" in result.ran and result.stages_ran() == set()
    assert json.loads(manifest.read_text()) == json.loads(good)
    manifest.write_text("{ not json")
    assert built.doit("build").returncode == 0 and json.loads(manifest.read_text()) == json.loads(good)


def test_verify_artifacts_finds_same_size_tampering_and_fix_rebuilds(built: Project, cpu_target: str) -> None:
    package = built.stage("mlp", cpu_target, "aoti") / "model.pt2"
    data = bytearray(package.read_bytes())
    data[len(data) // 2] ^= 0xFF
    package.write_bytes(bytes(data))
    assert built.doit("build").stages_ran() == set()  # same size: only a re-hash notices
    check = built.infbuild("verify-artifacts")
    assert check.returncode == 1
    assert f"aoti:mlp ({cpu_target}): model.pt2: sha256 differs from the stamp" in check.stdout
    fixed = built.infbuild("verify-artifacts", "--fix")
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert ".  aoti:mlp" in fixed.stdout
    assert built.infbuild("verify-artifacts").returncode == 0


def test_jsonl_reporter_emits_one_event_per_task(built: Project) -> None:
    built.add_recipe("gpu.yaml", mlp_recipe(name="gpu").replace("outputs: [y]", "outputs: [y]\nstages: {aoti: {device: cuda}}"))
    (built.stage("mlp", "portable", "onnx") / "model.onnx").unlink()
    done = built.infbuild("build", "--reporter", "jsonl")
    assert done.returncode == 0, done.stderr[-2000:]
    events = [json.loads(line) for line in done.stdout.splitlines()]  # stdout holds nothing but events
    kinds = {(e["event"], e.get("task")) for e in events}
    assert ("not_buildable", "aoti:gpu") in kinds
    assert ("start", "onnx:mlp") in kinds and ("success", "onnx:mlp") in kinds
    assert ("uptodate", "aoti:mlp") in kinds
    assert events[-1]["event"] == "summary" and events[-1]["built"] >= 1
    assert "[onnx] exporting" in done.stderr
    (built.root / "recipes" / "gpu.yaml").unlink()


@pytest.mark.parametrize("field,value,message", [
    ("name", "a;rm -rf /", "is not a valid recipe name"),
    ("name", "/etc/passwd", "is not a valid recipe name"),
    ("name", "..", "is not a valid recipe name"),
    ("name", "manifest.json", "is reserved under artifacts/"),
])
def test_hostile_names_never_reach_the_file_system(project: Project, field: str, value: str, message: str) -> None:
    project.add_recipe("a.yaml", mlp_recipe(name="x").replace("name: x", f"name: {json.dumps(value)}"))
    done = project.infbuild("validate", "--no-import")
    assert done.returncode == 1 and message in done.stderr and "Traceback" not in done.stderr


def test_hostile_image_reference_is_a_located_error(project: Project) -> None:
    project.add_recipe("a.yaml", mlp_recipe() + "package: {image: 'reg.io/ml/x;touch /tmp/pwned', version: '1.0'}\n")
    done = project.infbuild("validate", "--no-import")
    assert done.returncode == 1
    assert "recipes/a.yaml:12: package.image: 'reg.io/ml/x;touch /tmp/pwned' is not a valid image repository" in done.stderr


# --- machine-generated recipes ------------------------------------------------------------------------

leaves = st.one_of(st.none(), st.booleans(), st.integers(min_value=-2**70, max_value=2**70),
                   st.floats(allow_nan=True), st.text(max_size=30))
json_values = st.recursive(leaves, lambda children: st.one_of(st.lists(children, max_size=4),
                                                               st.dictionaries(st.text(max_size=12), children, max_size=4)),
                           max_leaves=25)


def _paths(doc: object, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, prefix + (i,))
    return out


@st.composite
def mutated_recipes(draw: st.DrawFn) -> object:
    doc = json.loads(json.dumps(VALID_RECIPE))
    for _ in range(draw(st.integers(min_value=0, max_value=4))):
        paths = [p for p in _paths(doc) if p]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = doc
        for part in path[:-1]:
            parent = parent[part]
        action = draw(st.sampled_from(["replace", "delete", "add", "deepen"]))
        if action == "replace":
            parent[path[-1]] = draw(json_values)
        elif action == "delete":
            del parent[path[-1]]
        elif action == "add" and isinstance(parent, dict):
            parent[draw(st.text(min_size=1, max_size=12))] = draw(json_values)
        elif action == "deepen":
            value = parent[path[-1]]
            for _ in range(draw(st.integers(min_value=1, max_value=60))):
                value = {"x": value} if draw(st.booleans()) else [value]
            parent[path[-1]] = value
    return doc


@settings(max_examples=150, deadline=2000, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(doc=mutated_recipes(), as_json=st.booleans())
def test_validate_accepts_or_locates_every_problem(tmp_path: Path, doc: object, as_json: bool) -> None:
    project = loader_project(tmp_path, stub_factory=True)
    path = tmp_path / ("r.json" if as_json else "r.yaml")
    path.write_text(json.dumps(doc, ensure_ascii=False) if as_json else yaml.safe_dump(doc, allow_unicode=True))
    recipe, problems = load_file(path, project)
    if recipe is None:
        assert problems, "rejected without a reason"
        for problem in problems:
            rendered = problem.render()
            assert rendered.startswith(f"{path.name}:{problem.line}: ") and problem.line >= 1
            assert "\n" not in rendered
    else:
        assert not problems
        load_recipes(project, [path])  # and the full loader agrees


@settings(max_examples=40, deadline=3000, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=400))
def test_arbitrary_text_never_crashes_the_loader(tmp_path: Path, text: str) -> None:
    project = loader_project(tmp_path, globs=("*.yaml",))
    path = tmp_path / "r.yaml"
    path.write_text(text)
    try:
        load_recipes(project, [path])
    except RecipeError as exc:
        assert all(p.line >= 1 for p in exc.problems)


def test_validate_cli_on_a_deep_document_exits_1_without_traceback(project: Project) -> None:
    deep = "model: " + "[" * 2000 + "]" * 2000 + "\n"
    project.add_recipe("deep.yaml", deep)
    done = project.infbuild("validate", "--no-import")
    assert done.returncode == 1 and "Traceback" not in done.stderr and done.stderr.startswith("recipes/deep.yaml:")

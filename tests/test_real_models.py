"""Third-party models as their libraries return them (Hugging Face ModelOutput, from tiny configs), verification
that tells a small reference from an artifact that computes nothing, library versions as discovered
dependencies, and builds that keep going past a failing recipe."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import BERT, GPT2, SMALL_BENCH, Project, mlp_recipe

pytestmark = pytest.mark.slow  # real builds (see the README's test tiers)

pytest.importorskip("transformers")



@pytest.fixture(scope="module")
def hf_built(tmp_path_factory: pytest.TempPathFactory) -> Project:
    """A BERT encoder and a GPT-2 decoder built end to end: export, AOTI, verify, bench (BERT)."""
    p = Project(tmp_path_factory.mktemp("hf") / "proj")
    (p.root / "samples").mkdir()
    mask = np.ones((3, 12), np.int64)
    mask[1, 7:] = mask[2, 3:] = 0  # real padding: what random inputs (all-ones masks) never exercise
    np.savez(p.root / "samples" / "padded.npz", input_ids=np.arange(36, dtype=np.int64).reshape(3, 12) % 128,
             attention_mask=mask)
    p.add_recipe("bert.yaml", BERT.format(dtype="float32", bench=SMALL_BENCH) + "samples: [samples/padded.npz]\n")
    p.add_recipe("gpt2.yaml", GPT2 + SMALL_BENCH)
    result = p.doit("build", env=p.env(INFBUILD_CACHE="off"))
    assert result.returncode == 0, result.output[-4000:]
    return p


def test_hugging_face_models_build_verify_and_load_without_their_library(hf_built: Project, cpu_target: str) -> None:
    p = hf_built
    for recipe, outputs in (("bert", ["last_hidden_state", "pooler_output"]), ("gpt2", ["logits"])):
        report = json.loads((p.stage(recipe, cpu_target, "verify") / "report.json").read_text())
        for backend in ("onnxruntime", "aoti"):
            assert report["results"][backend]["passed"] is True, report["results"][backend]
            shape = report["results"][backend]["shapes"]["max"]
            assert sorted(shape["outputs"]) == sorted(outputs)
            assert all(o["cosine"] > 0.9999 and o["rel_l2_err"] < 1e-4 for o in shape["outputs"].values())
    padded = json.loads((p.stage("bert", cpu_target, "verify") / "report.json").read_text())["results"]
    assert all(padded[b]["shapes"]["sample_padded"]["passed"] is True for b in ("onnxruntime", "aoti"))
    assert padded["aoti"]["shapes"]["sample_padded"]["inputs"]["attention_mask"] == [3, 12]
    for recipe in ("bert", "gpt2"):
        assert json.loads((p.stage(recipe, cpu_target, "bench") / "report.json").read_text())["preferred"]
    bench = json.loads((p.stage("bert", cpu_target, "bench") / "report.json").read_text())
    assert "sample_padded" in bench["results"]["aoti"]
    assert set(bench["setup_s"]) >= {"onnxruntime", "aoti", "eager"} and bench["preferred"] in ("onnxruntime", "aoti")
    # A fresh process that never imports transformers loads and runs both artifacts.
    code = (
        "import sys, json, numpy as np\n"
        "from infbuild.runtime import load\n"
        "out = {}\n"
        "for backend in ('aoti', 'onnxruntime'):\n"
        "    m = load(sys.argv[1], 'bert', backend=backend)\n"
        "    r = m(input_ids=np.ones((3, 20), np.int64), attention_mask=np.ones((3, 20), np.int64))\n"
        "    out[backend] = {k: list(v.shape) for k, v in r.items()}\n"
        "    g = load(sys.argv[1], 'gpt2', backend=backend)(input_ids=np.ones((2, 9), np.int64))\n"
        "    out[backend]['gpt2'] = list(g['logits'].shape)\n"
        "print(json.dumps({'shapes': out, 'transformers': 'transformers' in sys.modules}))\n")
    done = subprocess.run([sys.executable, "-c", code, str(p.artifacts)], capture_output=True, text=True, check=False,
                          cwd=p.root)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["transformers"] is False
    assert result["shapes"]["aoti"] == {"last_hidden_state": [3, 20, 32], "pooler_output": [3, 32], "gpt2": [2, 9, 128]}
    assert result["shapes"]["onnxruntime"] == result["shapes"]["aoti"]


def test_library_version_is_a_discovered_dependency_of_exactly_the_model_stages(hf_built: Project,
                                                                                 tmp_path: Path) -> None:
    """The stamps of the stages that build the model record transformers' version; another installed version
    makes exactly those stages stale, with the reason, and the no-op check imports neither torch nor transformers."""
    import transformers

    p = hf_built
    stamp = json.loads((p.stage("gpt2", "portable", "export") / "stamp.json").read_text())
    assert stamp["packages"]["transformers"] == transformers.__version__
    # Simulate `pip install -U transformers`: a dist-info of another version earlier on the path.
    fake = tmp_path / "site"
    dist = fake / "transformers-99.0.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: transformers\nVersion: 99.0.0\n")
    env = p.env(INFBUILD_CACHE="off", PYTHONPATH=str(fake))
    status = p.infbuild("status", "--json", env=env)
    assert status.returncode == 1
    stale = {s["task"]: s["reason"] for s in json.loads(status.stdout) if s["state"] == "stale"}
    change = f"key changed: packages (transformers {transformers.__version__} → 99.0.0)"
    # onnx and aoti (fp32, CPU) compile the export stage's saved program: they never import transformers, and
    # its upgrade reaches them only through the export stage (cut off when the program is the same)
    assert {t for t, r in stale.items() if r == change} == {"export:gpt2", "reference:gpt2", "bench:gpt2",
                                                           "export:bert", "reference:bert", "bench:bert"}
    assert all("upstream" in r for t, r in stale.items() if r != change)
    probe = ("import sys, runpy; sys.argv = ['infbuild', 'status']\n"
             "from infbuild.cli import main\n"
             "main(['status'])\n"
             "print('HEAVY', sorted(m for m in ('torch', 'transformers') if m in sys.modules))\n")
    done = subprocess.run([sys.executable, "-c", probe], cwd=p.root, env=env, capture_output=True, text=True, check=False)
    assert "HEAVY []" in done.stdout, done.stdout[-2000:] + done.stderr[-2000:]


def test_outputs_that_do_not_match_the_model_are_caught_by_validate(tmp_path: Path) -> None:
    p = Project(tmp_path / "proj")
    p.add_recipe("bert.yaml", BERT.format(dtype="float32", bench="").replace("[last_hidden_state, pooler_output]",
                                                                              "[last_hidden, pooler_output]"))
    done = p.infbuild("validate")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert ("recipes/bert.yaml:9: outputs: the recipe names last_hidden, pooler_output but the model returns "
            "last_hidden_state (tensor [1, 4, 32]), pooler_output (tensor [1, 32])") in done.stderr


def test_an_artifact_computing_zeros_fails_verify_for_a_model_with_tiny_outputs(tmp_path: Path, cpu_target: str) -> None:
    """Outputs around 5e-8 sit far below float32's atol (1e-4): the old rule passed an all-zeros artifact."""
    from infbuild.project import load_project
    from infbuild.recipe_load import load_recipes
    from infbuild.runtime.backends import load_backend
    from infbuild.stages.verify.run import check_shape

    p = Project(tmp_path / "proj")
    p.add_recipe("tiny.yaml", mlp_recipe(name="tiny").replace("examples.models:mlp", "examples.models:tiny_outputs"))
    result = p.doit("build", env=p.env(INFBUILD_CACHE="off"))
    assert result.returncode == 0, result.output[-3000:]
    report = json.loads((p.stage("tiny", cpu_target, "verify") / "report.json").read_text())
    assert report["results"]["onnxruntime"]["passed"] is True
    recipe = load_recipes(load_project(p.root))[0]
    with np.load(p.stage("tiny", "portable", "reference") / "opt.npz") as data:
        inputs = {"x": data["input.x"]}
        expected = {"y": data["output.y"]}
    assert 0 < np.abs(expected["y"]).max() < 1e-6 < recipe.verify["atol"]
    zeros = check_shape(recipe, lambda feed: {"y": np.zeros_like(expected["y"])}, inputs, expected)
    constant = check_shape(recipe, lambda feed: {"y": np.full_like(expected["y"], expected["y"].mean())}, inputs,
                           expected)
    assert zeros["passed"] is False and zeros["outputs"]["y"]["rel_l2_err"] == pytest.approx(1.0)
    assert constant["passed"] is False
    real = load_backend("onnxruntime", p.stage("tiny", "portable", "onnx"), ("y",), {"x": "float32"})
    assert check_shape(recipe, real, inputs, expected)["passed"] is True
    md = (p.stage("tiny", cpu_target, "verify") / "report.md").read_text()
    assert "Pass rule: every element |actual - reference| <= atol_eff + rtol * |reference|" in md


def test_one_failing_recipe_does_not_stop_the_others(tmp_path: Path, cpu_target: str) -> None:
    p = Project(tmp_path / "proj")
    p.add_recipe("a.yaml", mlp_recipe(name="a"))
    p.add_recipe("b.yaml", mlp_recipe(name="b").replace("kwargs: {seed: 0}", "kwargs: {seed: 0, boom: true}"))
    result = p.doit("build", env=p.env(INFBUILD_CACHE="off"), reporter="console")  # its closing FAILED lines
    assert result.returncode != 0
    assert {"onnx:a", "aoti:a", "verify:a"} <= result.stages_ran()
    assert (p.stage("a", cpu_target, "verify") / "stamp.json").is_file()
    assert "  FAILED export:b: " in result.output and "unexpected keyword argument 'boom'" in result.output
    fast = p.infbuild("build", "--fail-fast", env=p.env(INFBUILD_CACHE="off"))
    assert fast.returncode != 0


def test_a_backend_without_kernels_for_the_dtype_is_unsupported_not_a_failure(tmp_path: Path, cpu_target: str) -> None:
    """bfloat16: onnxruntime's CPU provider has no bf16 Gemm. That artifact is reported unsupported with
    onnxruntime's reason and never preferred; AOTI verifies, benches and is preferred; the build succeeds."""
    p = Project(tmp_path / "proj")
    p.add_recipe("bf.yaml", mlp_recipe(name="bf", bench=SMALL_BENCH, extra_model="  dtype: bfloat16\n")
                 .replace("dtype: float32}", "dtype: bfloat16}").replace("verify: {rtol: 0.001, atol: 1.0e-4}\n", ""))
    result = p.doit("build", env=p.env(INFBUILD_CACHE="off"))
    assert result.returncode == 0, result.output[-3000:]
    report = json.loads((p.stage("bf", cpu_target, "verify") / "report.json").read_text())["results"]
    assert report["onnxruntime"]["passed"] is None
    assert report["onnxruntime"]["status"].startswith("unsupported on this target: ") and "NOT_IMPLEMENTED" in \
        report["onnxruntime"]["status"]
    assert report["aoti"]["passed"] is True
    manifest = json.loads((p.artifacts / "manifest.json").read_text())
    assert manifest["recipes"]["bf"]["targets"][cpu_target]["preferred"] == "aoti"


def test_a_deleted_recipe_leaves_the_manifest(tmp_path: Path) -> None:
    p = Project(tmp_path / "proj")
    p.add_recipe("a.yaml", mlp_recipe(name="a"))
    p.add_recipe("b.yaml", mlp_recipe(name="b"))
    assert p.doit("build", env=p.env(INFBUILD_CACHE="off")).returncode == 0
    (p.root / "recipes" / "b.yaml").unlink()
    result = p.doit("build", env=p.env(INFBUILD_CACHE="off"))
    assert result.returncode == 0 and result.stages_ran() == set()
    assert list(json.loads((p.artifacts / "manifest.json").read_text())["recipes"]) == ["a"]


def test_constant_integer_inputs_come_from_values(tmp_path: Path) -> None:
    from infbuild.project import load_project
    from infbuild.recipe_load import load_recipes
    from infbuild.stages.samples import sample_inputs

    p = Project(tmp_path / "proj")
    p.add_recipe("bert.yaml", BERT.format(dtype="float32", bench=""))
    (recipe,) = load_recipes(load_project(p.root))
    arrays = sample_inputs(recipe, {"input_ids": (2, 5), "attention_mask": (2, 5)}, seed=0)
    assert arrays["attention_mask"].dtype == np.int64 and (arrays["attention_mask"] == 1).all()
    p.add_recipe("bert.yaml", BERT.format(dtype="float32", bench="").replace("values: [1]", "values: [1], low: 0"))
    from infbuild.errors import RecipeError

    with pytest.raises(RecipeError, match="give either values or low/high, not both"):
        load_recipes(load_project(p.root))

"""Staleness users can predict: each test edits one thing and counts which stages ran.

The tests share one project (two small MLP recipes) and run in file order; each leaves it fully built.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from helpers import SMALL_BENCH, Project, build, mlp_recipe, tasks

pytestmark = pytest.mark.slow  # real builds (see the README's test tiers)

OTHER = mlp_recipe(name="other", seed=1, extra_model="  sources: [examples/models.py, examples/extra.py]\n",
                   bench=SMALL_BENCH)
CHAIN = {"export", "onnx", "reference", "aoti", "verify"}  # mlp has no bench stage; other has one
MLP_CHAIN = tasks("mlp", CHAIN)
OTHER_CHAIN = tasks("other", CHAIN | {"bench"})


def save_weights(path: Path, seed: int) -> None:
    from examples.models import mlp

    path.parent.mkdir(exist_ok=True)
    torch.save(mlp(seed=seed).state_dict(), path)


@pytest.fixture(scope="module")
def proj(tmp_path_factory: pytest.TempPathFactory) -> Project:
    p = Project(tmp_path_factory.mktemp("staleness") / "proj")
    (p.root / "examples" / "extra.py").write_text("SCALE = 1\n")
    import sys

    sys.path.insert(0, str(p.root))
    save_weights(p.root / "weights" / "mlp.pt", seed=5)
    p.add_recipe("mlp.yaml", mlp_recipe(extra_model="  weights: weights/mlp.pt\n"))
    p.add_recipe("other.yaml", OTHER)
    first = p.doit()
    assert first.returncode == 0, first.output[-3000:]
    assert first.stages_ran() == MLP_CHAIN | OTHER_CHAIN
    return p


def test_dims_edit_reruns_that_recipes_chain_only(proj: Project) -> None:
    """(Which edit changes which keys is pinned in-process by test_plan_keys; here the chain really rebuilds, with
    the ONNX weights written as external data, and a second build runs nothing.)"""
    proj.add_recipe("mlp.yaml", mlp_recipe(rtol=2e-3, max=128, extra_model="  weights: weights/mlp.pt\n")
                    + "stages: {onnx: {external_data: true}}\n")
    assert build(proj).stages_ran() == MLP_CHAIN
    stamp = json.loads((proj.stage("mlp", "portable", "onnx") / "stamp.json").read_text())
    assert {"model.onnx", "model.onnx.data"} <= set(stamp["files"])
    assert build(proj).stages_ran() == set()


def test_deleted_or_truncated_artifact_rebuilds_that_stage(proj: Project, cpu_target: str) -> None:
    (proj.stage("mlp", "portable", "onnx") / "model.onnx").unlink()
    # ONNX export is byte-identical, so verify's key (upstream digests) is unchanged: only onnx reruns.
    assert build(proj).stages_ran() == {"onnx:mlp"}
    package = proj.stage("other", cpu_target, "aoti") / "model.pt2"
    package.write_bytes(package.read_bytes()[:1000])
    # An AOTI package is not bit-reproducible: the new one is verified and measured again.
    assert build(proj).stages_ran() == {"aoti:other", "verify:other", "bench:other"}


def test_other_host_target_builds_beside_and_coming_back_rebuilds_nothing(proj: Project, cpu_target: str) -> None:
    other_isa = "avx2" if not cpu_target.endswith("-avx2") else "avx512"
    simulated = json.dumps({"cpu": {"isa": other_isa}})
    assert build(proj, INFBUILD_FINGERPRINT=simulated).stages_ran() == \
        tasks("mlp", {"aoti", "verify"}) | tasks("other", {"aoti", "verify", "bench"})
    new_target = f"cpu-{cpu_target.split('-')[1]}-{other_isa}"
    assert (proj.stage("mlp", new_target, "aoti") / "model.pt2").is_file()
    assert (proj.stage("mlp", cpu_target, "aoti") / "model.pt2").is_file()
    manifest = json.loads((proj.artifacts / "manifest.json").read_text())
    assert sorted(manifest["recipes"]["mlp"]["targets"]) == sorted(["portable", cpu_target, new_target])
    assert build(proj).stages_ran() == set()
    assert build(proj, INFBUILD_FINGERPRINT=simulated).stages_ran() == set()


def test_failed_verification_fails_the_build_and_is_recorded(proj: Project, cpu_target: str) -> None:
    proj.add_recipe("mlp.yaml", (mlp_recipe(rtol=0, max=128, extra_model="  weights: weights/mlp.pt\n")
                                 + "stages: {onnx: {external_data: true}}\n").replace("atol: 1.0e-4", "atol: 0"))
    result = proj.doit("build")
    assert result.returncode != 0 and "verify:mlp" in result.ran
    assert "verification failed for recipe 'mlp' (recipes/mlp.yaml)" in result.output
    assert "onnxruntime at max shape (x[128, 10]): y: max abs " in result.output
    target = json.loads((proj.artifacts / "manifest.json").read_text())["recipes"]["mlp"]["targets"][cpu_target]
    assert target["verify"]["onnxruntime"]["passed"] is False
    assert target["preferred"] != "onnxruntime"
    again = proj.doit("build")  # a failed verification is never up to date
    assert again.returncode != 0 and again.stages_ran() == {"verify:mlp"}
    proj.add_recipe("mlp.yaml", mlp_recipe(rtol=2e-3, max=128, extra_model="  weights: weights/mlp.pt\n")
                    + "stages: {onnx: {external_data: true}}\n")
    assert build(proj).stages_ran() == {"verify:mlp"}


def test_cuda_recipe_is_not_buildable_here_unless_required(proj: Project, cpu_target: str) -> None:
    proj.add_recipe("gpu.yaml", mlp_recipe(name="gpu").replace("outputs: [y]", "outputs: [y]\nstages: {aoti: {device: cuda}}"))
    listing = proj.run(sys.executable, "-m", "doit", "list", "--all").stdout
    assert "aoti:gpu" in listing and "not buildable here: no CUDA GPU" in listing
    assert build(proj).stages_ran() == tasks("gpu", {"export", "onnx", "reference", "verify"})  # verify what can be built here
    report = json.loads((proj.stage("gpu", cpu_target, "verify") / "report.json").read_text())
    assert report["results"]["aoti"] == {"passed": None, "status": "not buildable here"}
    status = proj.infbuild("status")
    assert status.returncode == 0 and "aoti:gpu" in status.stdout and "not buildable here" in status.stdout
    required = proj.doit("build", env=proj.env(INFBUILD_REQUIRE="aoti"))
    assert required.returncode != 0
    assert "aoti:gpu: not buildable here: no CUDA GPU" in required.output


def test_doit_clean_removes_outputs(proj: Project, cpu_target: str) -> None:
    result = proj.doit("clean", "aoti:mlp")
    assert result.returncode == 0
    assert not proj.stage("mlp", cpu_target, "aoti").exists()
    assert build(proj).stages_ran() == {"aoti:mlp", "verify:mlp"}

"""`doit build` over the example recipes: every example exported to ONNX, compiled with AOTInductor for this
CPU, its reference captured, every artifact verified; the manifest indexes it; a second build is a no-op."""
from __future__ import annotations

import json
import re
import sys

import numpy as np
import onnx
import pytest
from helpers import DoitRun, Project, tasks

from infbuild.stamp import read_stamp, rehash_problems

pytestmark = pytest.mark.slow  # real builds (see the README's test tiers)

EXAMPLES = ("convnet", "mlp", "seqblock")
STAGES = ("export", "onnx", "reference", "aoti", "verify", "bench")


def test_every_example_is_built_and_verified(examples_built: tuple[Project, DoitRun], cpu_target: str) -> None:
    proj, result = examples_built
    assert result.stages_ran() == set().union(*(tasks(r, STAGES) for r in EXAMPLES))
    manifest = json.loads((proj.artifacts / "manifest.json").read_text())
    assert sorted(manifest["recipes"]) == list(EXAMPLES)
    for recipe in EXAMPLES:
        targets = manifest["recipes"][recipe]["targets"]
        assert sorted(targets) == sorted([cpu_target, "portable"])
        device = targets[cpu_target]
        assert sorted(device["stages"]) == ["aoti", "bench", "verify"]
        assert sorted(targets["portable"]["stages"]) == ["export", "onnx", "reference"]
        for backend in ("onnxruntime", "aoti"):
            verdict = device["verify"][backend]
            assert verdict["passed"] is True
            assert 0 <= verdict["max_abs_err"] < 1e-3 and verdict["max_rel_err"] >= 0
            assert set(verdict["shapes"]) == ({"opt", "min", "max"})
        bench = device["bench"]["results"]
        primary = device["bench"]["primary_shape"]
        baselines = {"eager", "torch_compile"} if recipe == "convnet" else {"eager"}  # torch.compile: opt-in
        assert primary == "opt" and set(bench) == {"onnxruntime", "aoti"} | baselines
        fastest = min(("onnxruntime", "aoti"), key=lambda b: bench[b][primary]["p50_ms"])
        reason = device["preferred_reason"]
        # the fastest at the primary shape, unless the measurements cannot tell them apart (then the stated rule)
        # (a tie names the artifacts tied with the fastest: the preferred one among them when it is not the fastest)
        tied = reason.split(" (95 %")[0] if reason.startswith("tied at opt with ") else ""
        assert device["preferred"] == fastest or device["preferred"] in tied, reason
        assert reason.startswith(("fastest at opt", "tied at opt")), reason
        assert device["fingerprint"]["targets"]["cpu"] == cpu_target


def test_stamps_follow_the_contract(examples_built: tuple[Project, DoitRun], cpu_target: str) -> None:
    proj, _ = examples_built
    for recipe in EXAMPLES:
        for target, stage in (("portable", "onnx"), ("portable", "reference"), (cpu_target, "aoti"),
                              (cpu_target, "verify")):
            folder = proj.stage(recipe, target, stage)
            stamp = read_stamp(folder)
            assert stamp is not None
            on_disk = json.loads((folder / "stamp.json").read_text())
            assert {"key", "stage", "recipe", "target", "files", "fingerprint", "created"} <= set(on_disk)
            assert stamp.to_json() == on_disk
            assert (stamp.stage, stamp.recipe, stamp.target) == (stage, recipe, target)
            assert len(stamp.key) == 64
            assert rehash_problems(folder, stamp) == []
    aoti = read_stamp(proj.stage("mlp", cpu_target, "aoti"))
    onnx_stamp = read_stamp(proj.stage("convnet", "portable", "onnx"))
    assert aoti is not None and "model.pt2" in aoti.files
    assert onnx_stamp is not None and {"model.onnx", "model.graph.onnx", "export.json"} <= set(onnx_stamp.files)


def test_onnx_uses_the_recipe_dim_names(examples_built: tuple[Project, DoitRun]) -> None:
    proj, _ = examples_built
    model = onnx.load(str(proj.stage("seqblock", "portable", "onnx") / "model.onnx"))
    dims = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert [i.name for i in model.graph.input] == ["x"] and dims == [1, "seq_len", 64]
    assert [o.name for o in model.graph.output] == ["latents"]
    graph_only = onnx.load(str(proj.stage("convnet", "portable", "onnx") / "model.graph.onnx"))
    assert graph_only.graph.initializer and not any(i.raw_data for i in graph_only.graph.initializer)


def test_reference_covers_min_opt_max(examples_built: tuple[Project, DoitRun]) -> None:
    proj, _ = examples_built
    folder = proj.stage("mlp", "portable", "reference")
    shapes = {label: np.load(folder / f"{label}.npz")["input.x"].shape for label in ("min", "opt", "max")}
    assert shapes == {"min": (1, 10), "opt": (32, 10), "max": (1024, 10)}
    assert np.abs(np.load(folder / "opt.npz")["input.x"]).min() > 0  # never zeros


def test_aoti_package_loads_and_matches_eager(examples_built: tuple[Project, DoitRun], cpu_target: str) -> None:
    import torch
    import torch._inductor

    proj, _ = examples_built
    compiled = torch._inductor.aoti_load_package(str(proj.stage("mlp", cpu_target, "aoti") / "model.pt2"))
    ref = np.load(proj.stage("mlp", "portable", "reference") / "max.npz")
    (out,) = compiled(x=torch.from_numpy(ref["input.x"]))  # every artifact returns the recipe's outputs, flat
    np.testing.assert_allclose(out.numpy(), ref["output.y"], rtol=1e-4, atol=1e-5)


def test_second_build_runs_nothing_and_never_imports_torch(examples_built: tuple[Project, DoitRun]) -> None:
    proj, _ = examples_built
    done = proj.run(sys.executable, "-X", "importtime", "-m", "doit", "build")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "\n.  " not in "\n" + done.stdout, done.stdout
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if "|" in line}
    assert not {"torch", "onnx", "onnxruntime", "numpy"} & imported


def test_status_is_clean_after_build(examples_built: tuple[Project, DoitRun]) -> None:
    proj, _ = examples_built
    done = proj.infbuild("status")
    assert done.returncode == 0, done.stdout
    assert done.stdout.strip().endswith("20 stages: 18 up to date, 0 stale, 2 not buildable here")
    assert "trt_engine:convnet" in done.stdout and "not buildable here: no CUDA GPU" in done.stdout
    via_doit = proj.run(sys.executable, "-m", "doit", "status")
    assert via_doit.returncode == 0 and "18 up to date" in via_doit.stdout


def test_doit_list_shows_every_task_with_its_doc(examples_built: tuple[Project, DoitRun]) -> None:
    proj, _ = examples_built
    listing = proj.run(sys.executable, "-m", "doit", "list", "--all").stdout
    for recipe in EXAMPLES:
        for stage in STAGES:
            assert any(line.startswith(f"{stage}:{recipe} ") and "[" in line for line in listing.splitlines())
    assert "build " in listing and "manifest " in listing


@pytest.mark.parametrize("recipe", EXAMPLES)
def test_verify_report_names_every_shape(examples_built: tuple[Project, DoitRun], cpu_target: str, recipe: str) -> None:
    proj, _ = examples_built
    report = json.loads((proj.stage(recipe, cpu_target, "verify") / "report.json").read_text())
    assert report["failures"] == []
    assert report["backends"] == (["onnxruntime", "aoti", "tensorrt"] if recipe == "convnet" else ["onnxruntime", "aoti"])
    if recipe == "convnet":
        assert report["results"]["tensorrt"] == {"passed": None, "status": "not buildable here"}


def test_infbuild_build_is_doit_build(examples_built: tuple[Project, DoitRun]) -> None:
    proj, _ = examples_built
    done = proj.infbuild("build", "-j", "2")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "\n.  " not in "\n" + done.stdout and "-- verify:mlp" not in done.stdout  # no line per stage up to date
    assert re.search(r"infbuild: 0 built \(0.0s\), \d+ up to date", done.stdout), done.stdout


def test_report_says_per_recipe_the_preferred_artifact_its_latency_and_why(examples_built: tuple[Project, DoitRun],
                                                                          cpu_target: str) -> None:
    proj, _ = examples_built
    done = proj.infbuild("report", "--json")
    assert done.returncode == 0, done.stderr
    rows = {r["recipe"]: r for r in json.loads(done.stdout)}
    manifest = json.loads((proj.artifacts / "manifest.json").read_text())
    assert set(rows) == set(EXAMPLES)
    for recipe, row in rows.items():
        target = manifest["recipes"][recipe]["targets"][cpu_target]
        assert (row["target"], row["preferred"], row["reason"]) == (cpu_target, target["preferred"],
                                                                    target["preferred_reason"])
        timed = target["bench"]["results"][row["preferred"]]["opt"]
        assert row["p50_ms"] == timed["p50_ms"] and row["shape"] == "opt" and re.fullmatch(r"2 of [23]", row["verified"])
    table = proj.infbuild("report").stdout
    assert table.startswith("| recipe | target | preferred | p50 ms (95 % interval) |") and "| mlp |" in table

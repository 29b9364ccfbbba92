"""`infbuild plan --json`: what a runner of each kind must build, with keys, as a CI matrix's input (no build)."""
from __future__ import annotations

import json

from helpers import H100, GpuHost, Project, mlp_recipe, trt_recipe


def test_plan_lists_per_target_the_stale_stages_with_their_keys(project: Project, cpu_target: str, tmp_path) -> None:
    project.add_recipe("mlp.yaml", mlp_recipe())
    done = project.infbuild("plan", "--json")
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)
    tasks = {t: {s["task"]: s for s in stages} for t, stages in plan["targets"].items()}
    assert set(tasks) == {"portable", cpu_target}
    assert set(tasks["portable"]) == {"export:mlp", "onnx:mlp", "reference:mlp"}
    assert all(s["reason"] == "never built" for s in tasks["portable"].values())
    assert len(tasks["portable"]["export:mlp"]["key"]) == 64  # the others' keys read its program: known after it
    assert tasks["portable"]["onnx:mlp"]["key"] is None and tasks[cpu_target]["verify:mlp"]["key"] is None
    assert {m["target"] for m in plan["matrix"]["include"]} == {"portable", cpu_target}
    gpu = GpuHost(tmp_path / "gpu")
    project.add_recipe("mlp.yaml", trt_recipe())
    on_gpu = json.loads(project.infbuild("plan", "--json", env=gpu.env(project)).stdout)
    assert {s["stage"] for s in on_gpu["targets"][H100]} >= {"trt_timing_cache", "trt_engine", "verify"}


def test_staleness_reasons_are_data_rendered_at_the_edge(tmp_path) -> None:
    from infbuild.reasons import Reason

    assert str(Reason("key_changed", parts=("recipe (dims)", "packages (torch 2.12 → 2.13)"))) == \
        "key changed: recipe (dims), packages (torch 2.12 → 2.13)"
    assert str(Reason("upstream_missing", "export:mlp")) == "upstream stage export:mlp is not built"
    p = Project(tmp_path / "proj")
    p.add_recipe("mlp.yaml", mlp_recipe())
    status = p.infbuild("status", "--json")
    assert status.returncode == 1
    states = json.loads(status.stdout)
    assert {(s["state"], s["kind"], s["reason"]) for s in states} == {("stale", "never_built", "never built")}

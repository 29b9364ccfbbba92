"""Real sizes: a dim whose opt is 1 still gets artifacts that accept min..max (exports trace it at 2), and an artifact
whose exported inputs fix a dim the recipe declares dynamic is never stamped: a located error names the dim."""
from __future__ import annotations

import numpy as np
import pytest
from helpers import Project, mlp_recipe

pytestmark = pytest.mark.slow

FIXES_BATCH = '''\
import torch


class FixedBatch(torch.nn.Module):
    """Reshapes to batch 2 whatever it is given: its export can only ever accept batch 2."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(10, 1)

    def forward(self, x):
        return self.lin(x.reshape(2, 10))


def model():
    torch.manual_seed(0)
    return FixedBatch()
'''


def test_a_dim_whose_opt_is_1_is_traced_so_every_batch_in_range_works(tmp_path) -> None:
    from infbuild.runtime import load

    p = Project(tmp_path / "proj")
    p.add_recipe("mlp.yaml", mlp_recipe(opt=1, max=4))
    result = p.doit("build")
    assert result.returncode == 0, result.output[-3000:]
    for backend in ("onnxruntime", "aoti"):
        model = load(p.artifacts, "mlp", backend=backend)
        for batch in (1, 2, 3, 4):
            assert model(x=np.ones((batch, 10), np.float32))["y"].shape == (batch, 1), (backend, batch)
    export = (p.stage("mlp", "portable", "onnx") / "export.json").read_text()
    assert '"x": [\n      "batch",' in export  # symbolic in the graph, not [1, 10]


def test_an_export_that_fixes_a_dynamic_dim_is_never_stamped(tmp_path) -> None:
    p = Project(tmp_path / "proj")
    (p.root / "examples" / "fixed.py").write_text(FIXES_BATCH)
    p.add_recipe("fixed.yaml", "name: fixed\nmodel: {factory: 'examples.fixed:model'}\ninputs:\n"
                               "  x: {shape: [batch, 10], dtype: float32}\ndims:\n  batch: {min: 1, opt: 2, max: 4}\n"
                               "outputs: [y]\nbench: {enabled: false}\n")
    result = p.doit("build")
    assert result.returncode != 0 and result.events is not None
    errors = {e["task"]: e.get("error", "") for e in result.events if e["event"] == "failure"}
    # the ONNX exporter falls back to tracing, which fixes the dim silently: the graph's inputs are checked
    assert errors["onnx:fixed"] == ("recipes/fixed.yaml:6: dims.batch: the ONNX export fixed x axis 0 (batch) to 2: it "
                                    "would not accept 1..4; make the model keep batch dynamic, or declare it static "
                                    "(min = opt = max = 2)")
    # torch.export refuses: its "Constraints violated" becomes the same located line
    assert errors["aoti:fixed"].startswith("recipes/fixed.yaml:6: dims.batch: the model's code fixes batch to 2")
    assert not list(p.artifacts.glob("fixed/*/onnx/stamp.json")) and not list(p.artifacts.glob("fixed/*/aoti/stamp.json"))


SLOW_FACTORY = '''\
import time

import torch


class Head(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(10, 1)

    def forward(self, x):
        return self.lin(x)


def model():
    print("[model] loading weights", flush=True)
    time.sleep(3)  # a long silent phase (a big checkpoint, a slow export)
    torch.manual_seed(0)
    return Head()
'''


def test_a_long_silent_stage_says_it_is_alive_and_records_its_peak_memory(tmp_path) -> None:
    import json

    p = Project(tmp_path / "proj")
    (p.root / "examples" / "slow.py").write_text(SLOW_FACTORY)
    p.add_recipe("slow.yaml", "name: slow\nmodel: {factory: 'examples.slow:model'}\ninputs:\n"
                              "  x: {shape: [batch, 10], dtype: float32}\ndims:\n  batch: {min: 1, max: 4}\n"
                              "outputs: [y]\nbackends: [onnxruntime]\nbench: {enabled: false}\n")
    result = p.doit("onnx:slow", env=p.env(INFBUILD_HEARTBEAT_S="1"))
    assert result.returncode == 0, result.output[-2000:]
    assert result.events is not None
    beats = [e for e in result.events if e["event"] == "progress"]
    assert beats and beats[0]["task"] == "onnx:slow" and beats[0]["phase"] == "[model] loading weights"
    console = p.doit("reference:slow", env=p.env(INFBUILD_HEARTBEAT_S="1"), reporter="console")
    assert "[reference:slow] still running (0:0" in console.output and "last: [model] loading weights" in console.output
    stamp = json.loads((p.stage("slow", "portable", "onnx") / "stamp.json").read_text())
    assert stamp["peak_rss_mb"] > 50  # torch and the exporter, at least

"""Real sizes: a dim whose opt is 1 still gets artifacts that accept min..max (exports trace it at 2), and an artifact
whose exported inputs fix a dim the recipe declares dynamic is never stamped: a located error names the dim."""
from __future__ import annotations

import json

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


FIXED_RECIPE = ("name: fixed\nmodel: {factory: 'examples.fixed:model'}\ninputs:\n  x: {shape: [batch, 10], dtype: float32}\n"
                "dims:\n  batch: {min: 1, opt: 2, max: 4}\noutputs: [y]\nbench: {enabled: false}\n")


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
    p.add_recipe("fixed.yaml", FIXED_RECIPE)
    result = p.doit("build")
    assert result.returncode != 0 and result.events is not None
    errors = {e["task"]: e.get("error", "") for e in result.events if e["event"] == "failure"}
    # torch.export refuses (the export stage, before anything expensive): its "Constraints violated" becomes a
    # located line, and no model stage runs
    assert errors["export:fixed"].startswith("recipes/fixed.yaml:6: dims.batch: the model's code fixes batch to 2")
    assert not list(p.artifacts.glob("fixed/*/*/stamp.json"))


def test_an_onnx_graph_that_fixes_a_dynamic_dim_is_refused_by_the_onnx_stage(tmp_path) -> None:
    """The ONNX exporter falls back to tracing where torch.export refuses, which fixes the dim silently: the onnx
    stage checks its graph's inputs against the recipe (run here by itself, as its worker would)."""
    from infbuild.errors import FieldError
    from infbuild.project import load_project
    from infbuild.recipe_load import load_recipes
    from infbuild.stages.onnx.run import run
    from infbuild.stages.request import Job

    p = Project(tmp_path / "proj")
    (p.root / "examples" / "fixed.py").write_text(FIXES_BATCH)
    p.add_recipe("fixed.yaml", FIXED_RECIPE)
    recipe = load_recipes(load_project(p.root))[0]
    out = tmp_path / "staging"
    out.mkdir()
    with pytest.raises(FieldError) as refused:
        run(Job("onnx", recipe, p.root, out=out, upstream={}, device="cpu", target="portable", tools={}))
    assert (refused.value.field, refused.value.message) == (
        "dims.batch", "the ONNX export fixed x axis 0 (batch) to 2: it would not accept 1..4; make the model keep "
        "batch dynamic, or make it static (write 2 for batch in the inputs' shapes)")


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
    beats = [e for e in result.events if e["event"] == "progress" and e["task"] == "export:slow"]
    assert beats and beats[0]["phase"] == "[model] loading weights"
    console = p.doit("reference:slow", env=p.env(INFBUILD_HEARTBEAT_S="1"), reporter="console")
    assert "[reference:slow] still running (0:0" in console.output and "last: [model] loading weights" in console.output
    stamp = json.loads((p.stage("slow", "portable", "onnx") / "stamp.json").read_text())
    assert stamp["peak_rss_mb"] > 50  # torch and the exporter, at least


def test_a_comment_edit_re_exports_and_stops_there_a_real_change_rebuilds(tmp_path) -> None:
    """Early cut-off: the model stages read the exported program's digest, not the source text."""
    from helpers import SMALL_BENCH

    p = Project(tmp_path / "proj")
    p.add_recipe("mlp.yaml", mlp_recipe(bench=SMALL_BENCH) + "variants: {onnxruntime: [int8_dynamic]}\n")
    first = p.doit("build")
    assert first.returncode == 0, first.output[-3000:]
    models = p.root / "examples" / "models.py"
    source = models.read_text()
    edited = source.replace("def mlp(", "# a comment edit\ndef mlp(").replace('"""The classic', '"""An edited docstring. The classic')
    assert edited.count("a comment edit") == 1 and "An edited docstring" in edited
    models.write_text(edited)
    again = p.doit("build")
    assert again.returncode == 0, again.output[-3000:]
    assert again.built() == {"export:mlp"}  # onnx, reference, aoti, the int8 variant, verify and bench stay
    notes = {e["task"]: e.get("note") for e in again.events or [] if e["event"] == "uptodate"}
    assert notes["aoti:mlp"] == notes["onnx:mlp"] == "model source changed, exported program identical"
    status = p.infbuild("status")
    assert status.returncode == 0, status.stdout + status.stderr
    assert "up to date: model source changed, exported program identical" in status.stdout
    models.write_text(source.replace("nn.ReLU()", "nn.GELU()"))  # what the model computes
    changed = p.doit("build")
    assert changed.returncode == 0, changed.output[-3000:]
    assert {"export:mlp", "onnx:mlp", "reference:mlp", "aoti:mlp", "onnx_int8_dynamic:mlp", "verify:mlp",
            "bench:mlp"} <= changed.built()


def test_the_program_digest_is_the_same_for_two_exports_and_ignores_source_lines() -> None:
    """torch numbers sym_size nodes from a process-wide counter and records stack traces with line numbers: the
    digest sees neither, and sees a change in what the program computes or in a weight."""
    import torch

    from infbuild.stages.export.program import program_digest

    class Flat(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(12, 3)

        def forward(self, x):
            return self.lin(x.reshape(x.shape[0], -1)) * x.shape[0]

    def program(model: torch.nn.Module) -> torch.export.ExportedProgram:
        batch = torch.export.Dim("batch", min=1, max=8)
        return torch.export.export(model, (torch.ones(2, 3, 4),), dynamic_shapes=({0: batch},))

    def export(model: torch.nn.Module) -> dict:
        return program_digest(program(model))

    torch.manual_seed(0)
    model = Flat()
    first = export(model)
    renumbered = program(model)
    for node in renumbered.graph.nodes:  # what another export in a busier process gets
        node.meta["stack_trace"] = 'File "models.py", line 99, in forward'
        if node.name.startswith("sym_size_int"):
            node.name = "sym_size_int_7"
    assert "sym_size_int_7" in [n.name for n in renumbered.graph.nodes]
    assert program_digest(renumbered) == first == export(model)
    with torch.no_grad():
        model.lin.bias[0] += 1
    assert export(model)["weights"] != first["weights"] and export(model)["graph"] == first["graph"]

    class Doubled(Flat):
        def forward(self, x):
            return super().forward(x) * 2

    assert export(Doubled())["graph"] != first["graph"]


def test_an_export_above_the_protobuf_limit_says_its_weights_are_external(tmp_path) -> None:
    """Above 2 GiB torch writes model.onnx.data whatever external_data says: export.json records what was
    written, and the build says why (a sparse 3 GB file stands in for GPT-2 774M's weights)."""
    from infbuild.stages.onnx.run import external_data

    with open(tmp_path / "model.onnx.data", "wb") as f:
        f.truncate(3_100_000_000)
    written, note = external_data(False, tmp_path)
    assert written is True and note is not None
    assert note.startswith("the weights (3.10 GB) exceed ONNX's 2 GiB protobuf limit, so they were written as "
                           "external data (model.onnx.data)")
    assert external_data(True, tmp_path) == (True, None)
    (tmp_path / "model.onnx.data").unlink()
    assert external_data(False, tmp_path) == (False, None)
    assert external_data(True, tmp_path)[1] == ("stages.onnx.external_data is true but the exporter kept the weights "
                                                "inside model.onnx")


def test_a_failed_artifact_fails_the_build_but_the_others_are_verified_timed_and_preferred(tmp_path, cpu_target) -> None:
    """AOTI fails for real (its C++ compiler does not exist): the build fails, naming it, yet verify judges the ONNX
    artifact (and records AOTI as failed to build), bench times it and prefers it; fixed, the build goes green."""
    from helpers import SMALL_BENCH

    broken = "stages:\n  aoti: {inductor_configs: {cpp.cxx: [null, /nonexistent/g++]}}\n"
    p = Project(tmp_path / "proj")
    p.add_recipe("mlp.yaml", mlp_recipe(bench=SMALL_BENCH) + broken)
    result = p.doit("build")
    assert result.returncode != 0 and result.events is not None
    failed = {e["task"]: e["error"] for e in result.events if e["event"] == "failure"}
    assert set(failed) == {"aoti:mlp", "verify:mlp"}, failed  # the build gate fails the run without repeating them
    assert result.summary()["failed"] == 2
    target = cpu_target
    assert "/nonexistent/g++" in (p.artifacts / "mlp" / target / "aoti.failed.log").read_text()
    assert "aoti: failed to build: aoti:mlp: AOTInductor compile failed" in failed["verify:mlp"]
    verify = json.loads((p.stage("mlp", target, "verify") / "report.json").read_text())
    assert verify["results"]["onnxruntime"]["passed"] is True
    assert verify["results"]["aoti"]["passed"] is False
    assert verify["results"]["aoti"]["error"].startswith("failed to build: aoti:mlp:")
    bench = json.loads((p.stage("mlp", target, "bench") / "report.json").read_text())
    assert bench["preferred"] == "onnxruntime" and "aoti" not in bench["results"], bench["results"]
    assert "opt" in bench["results"]["onnxruntime"]
    assert not (p.stage("mlp", target, "aoti") / "stamp.json").exists()

    # verify asked for by itself fails too (no gate runs after it); aoti by itself fails as before
    alone = p.doit("verify:mlp")
    assert alone.returncode != 0 and {e["task"] for e in alone.events or [] if e["event"] == "failure"} == {
        "aoti:mlp", "verify:mlp"}
    assert p.doit("aoti:mlp").returncode != 0

    p.add_recipe("mlp.yaml", mlp_recipe(bench=SMALL_BENCH))
    fixed = p.doit("build")
    assert fixed.returncode == 0, fixed.output[-3000:]
    assert {"aoti:mlp", "verify:mlp", "bench:mlp"} <= fixed.built()
    assert not list(p.artifacts.glob("mlp/*/*.failed.log"))

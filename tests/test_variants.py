"""Precision and runtime variants: each variant its own stage (key, folder, verify and bench results), verified
against the fp32 eager reference within its precision's budget, the fastest within budget preferred, and loadable
by name. Real builds on this CPU: onnxruntime's optimiser and quantizers, AOTInductor in bfloat16."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import BERT, GPT2, SMALL_BENCH, Project, build, mlp_recipe

from infbuild import stage as registry
from infbuild.fingerprint import host_fingerprint
from infbuild.host import Host
from infbuild.plan import plan_recipe
from infbuild.preferred import choose_preferred
from infbuild.recipe import Recipe

pytestmark = pytest.mark.slow  # real builds (see the README's test tiers)

VARIANTS = "variants:\n  onnxruntime: [optimized, int8_dynamic, int8_static]\n  aoti: [bf16, fp16]\n"
BF16_CPU = bool({"avx512_bf16", "amx_bf16"} & set(host_fingerprint()["cpu"]["flags"]))
FP16_CPU = bool({"avx512_fp16", "amx_fp16"} & set(host_fingerprint()["cpu"]["flags"]))


def _recipe(**budgets: float) -> str:
    text = mlp_recipe(name="m", bench=SMALL_BENCH) + VARIANTS
    if budgets:
        text = text.replace("verify: {rtol: 0.001, atol: 1.0e-4}", "verify: {rtol: 0.001, atol: 1.0e-4, budgets: {int8: {"
                            + ", ".join(f"{k}: {v:.3e}" for k, v in budgets.items()) + "}}}")
    return text


@pytest.fixture(scope="module")
def variants_built(tmp_path_factory: pytest.TempPathFactory) -> Project:
    p = Project.with_recipes(tmp_path_factory.mktemp("variants") / "p", {"m.yaml": _recipe()})
    build(p, INFBUILD_CACHE="off")
    return p


def test_each_variant_is_a_stage_built_verified_and_timed(variants_built: Project, cpu_target: str) -> None:
    p = variants_built
    report = json.loads((p.stage("m", cpu_target, "verify") / "report.json").read_text())
    wanted = ["onnxruntime", "aoti", "onnxruntime:optimized", "onnxruntime:int8_dynamic", "onnxruntime:int8_static",
              "onnxruntime:onnxscript_fused+int8_dynamic", "onnxruntime:onnxscript_fused+int8_static",
              "aoti:bf16", "aoti:fp16"]
    assert report["backends"] == wanted  # each int8 variant is also tried after onnxscript's fusion (int8_after)
    for chain in ("onnxruntime:onnxscript_fused+int8_dynamic", "onnxruntime:onnxscript_fused+int8_static"):
        # an MLP has nothing to fuse: the fusion link is declined, and with it the chains that start with it
        assert report["results"][chain]["status"].startswith("not built: its link onnx_onnxscript_fused was declined")
    for name in ("onnxruntime:optimized", "onnxruntime:int8_dynamic", "onnxruntime:int8_static"):
        stage = registry.artifacts()[name]
        folder = p.stage("m", cpu_target, stage.name)
        info = json.loads((folder / "variant.json").read_text())
        assert info["variant"] == stage.variant and (folder / "model.onnx").stat().st_size > 0
        result = report["results"][name]
        assert result["passed"] is True and result["precision"] == stage.precision, result
    assert report["results"]["onnxruntime:int8_static"]["budget"] == {"rel_l2": 0.1, "cosine": 0.99}
    assert 0 < report["results"]["onnxruntime:int8_dynamic"]["rel_l2_err"] < 0.1  # quantized: close, not exact
    if BF16_CPU:
        bf16 = report["results"]["aoti:bf16"]
        assert bf16["passed"] is True and 0 < bf16["rel_l2_err"] < 3e-2
        info = json.loads((p.stage("m", cpu_target, "aoti_bf16") / "aoti.json").read_text())
        assert info["compute_dtype"] == "bfloat16" and info["precision_mode"] == "autocast"
    if FP16_CPU:
        fp16 = report["results"]["aoti:fp16"]
        assert fp16["passed"] is True and 0 < fp16["rel_l2_err"] < 1e-2 and fp16["budget"]["rel_l2"] == 1e-2
    else:
        assert report["results"]["aoti:fp16"] == {"passed": None, "status": "not buildable here"}
    bench = json.loads((p.stage("m", cpu_target, "bench") / "report.json").read_text())
    unbuilt = {name for name, ok in (("aoti:bf16", BF16_CPU), ("aoti:fp16", FP16_CPU)) if not ok} | \
        {"onnxruntime:onnxscript_fused+int8_dynamic", "onnxruntime:onnxscript_fused+int8_static"}  # declined
    assert set(wanted) - unbuilt <= set(bench["results"])
    markdown = (p.stage("m", cpu_target, "bench") / "report.md").read_text()
    assert "| onnxruntime:int8_static |" in markdown and "error (rel L2)" in markdown
    assert (p.stage("m", cpu_target, "bench") / "pareto.png").stat().st_size > 0
    manifest = json.loads((p.artifacts / "manifest.json").read_text())
    here = manifest["recipes"]["m"]["targets"][cpu_target]
    assert manifest["schema"] == 2 and here["preferred"] in wanted
    assert here["artifacts"]["onnxruntime:int8_static"] == {"stage": "onnx_int8_static", "backend": "onnxruntime",
                                                            "variant": "int8_static", "precision": "int8"}
    timed = {n: r[bench["primary_shape"]]["p50_ms"] for n, r in bench["results"].items() if n in wanted}
    fastest, primary = min(timed, key=lambda n: timed[n]), bench["primary_shape"]
    if here["preferred"] != fastest:  # every one passed: the fastest, unless the measurements cannot tell them apart
        assert here["preferred_reason"].startswith("tied at"), here["preferred_reason"]
        assert bench["results"][here["preferred"]][primary]["p50_ci_ms"][0] <= \
            bench["results"][fastest][primary]["p50_ci_ms"][1]  # intervals overlap


def test_a_variant_is_loaded_by_name(variants_built: Project) -> None:
    from infbuild.runtime import load

    x = np.random.default_rng(0).standard_normal((3, 10)).astype(np.float32)
    fp32 = load(variants_built.artifacts, "m", backend="onnxruntime")(x=x)["y"]
    int8 = load(variants_built.artifacts, "m", backend="onnxruntime", variant="int8_dynamic")
    assert int8.backend == "onnxruntime:int8_dynamic"
    y = int8(x=x)["y"]
    assert y.shape == fp32.shape and np.linalg.norm(y - fp32) / np.linalg.norm(fp32) < 0.1
    assert load(variants_built.artifacts, "m", backend="onnxruntime:optimized").backend == "onnxruntime:optimized"


def test_a_variant_outside_its_budget_is_reported_and_never_preferred(tmp_path: Path, cpu_target: str) -> None:
    p = Project.with_recipes(tmp_path / "p", {"m.yaml": _recipe(rel_l2=1e-9, cosine=0.999)})
    result = build(p, INFBUILD_CACHE="off")  # the build passes: a variant is an offer, not the recipe's contract
    assert result.returncode == 0
    report = json.loads((p.stage("m", cpu_target, "verify") / "report.json").read_text())
    for name in ("onnxruntime:int8_dynamic", "onnxruntime:int8_static"):
        assert report["results"][name]["passed"] is False
        assert report["results"][name]["status"].startswith("outside its int8 budget (rel_l2 ")
    assert report["failures"] == []
    here = json.loads((p.artifacts / "manifest.json").read_text())["recipes"]["m"]["targets"][cpu_target]
    assert here["preferred"] not in ("onnxruntime:int8_dynamic", "onnxruntime:int8_static")
    from infbuild.errors import ArtifactError
    from infbuild.runtime import load

    with pytest.raises(ArtifactError, match="has not passed verification .outside its int8 budget"):
        load(p.artifacts, "m", backend="onnxruntime", variant="int8_static")


def test_the_fastest_failed_variant_is_never_preferred() -> None:
    verify = {"onnxruntime": {"passed": True}, "onnxruntime:int8_static": {"passed": False}}
    bench = {"primary_shape": "opt", "results": {"onnxruntime": {"opt": {"p50_ms": 1.0}},
                                                  "onnxruntime:int8_static": {"opt": {"p50_ms": 0.1}}}}
    assert choose_preferred(verify, bench, ["onnxruntime", "onnxruntime:int8_static"]) == "onnxruntime"


def test_changing_one_variants_options_rebuilds_only_it_and_its_consumers(tmp_path: Path) -> None:
    p = Project.with_recipes(tmp_path / "p", {"m.yaml": _recipe()})
    build(p, INFBUILD_CACHE="off")
    p.add_recipe("m.yaml", _recipe() + "stages: {onnx_variants: {calibration: entropy}}\n")
    result = build(p, INFBUILD_CACHE="off")
    # the calibrated link, in both chains that end with it (declined again here: nothing of the MLP fuses)
    assert result.stages_ran() == {"onnx_int8_static:m", "onnx_onnxscript_fused+int8_static:m", "verify:m", "bench:m"}


def test_variants_are_planned_where_the_target_can_run_them(tmp_path: Path) -> None:
    fp = host_fingerprint()
    recipe = Recipe.from_dict({**_recipe_dict(), "variants": {"onnxruntime": ["fp16", "int8_dynamic"], "aoti": ["bf16"]}})
    no_bf16 = {**fp, "cpu": {**fp["cpu"], "flags": [f for f in fp["cpu"]["flags"] if "bf16" not in f]}}
    planned = {s.stage.name: s for s in plan_recipe(recipe, Host(no_bf16, tmp_path), tmp_path / "artifacts")}
    assert planned["onnx_int8_dynamic"].not_buildable is None and planned["onnx_int8_dynamic"].upstream == ("onnx",)
    if fp["gpus"] == []:
        assert planned["onnx_fp16"].not_buildable == "no CUDA GPU on this host (nvidia-smi finds none)"
    assert planned["aoti_bf16"].not_buildable == "this CPU has no bf16 instructions (avx512_bf16 or amx_bf16)"
    assert set(planned["verify"].upstream) >= {"reference", "onnx", "aoti", "onnx_int8_dynamic"}
    assert "aoti_bf16" not in planned["verify"].upstream  # not buildable here, and not required


def _recipe_dict() -> dict:
    from helpers import STAGE_DEFAULTS

    from infbuild.stages.bench import DEFAULTS as BENCH_DEFAULTS
    from infbuild.stages.verify import DEFAULT_TOLERANCES

    return {"name": "m", "file": "recipes/m.yaml",
            "model": {"factory": "examples.models:mlp", "kwargs": {}, "weights": None, "dtype": "float32", "sources": []},
            "inputs": {"x": {"shape": ["batch", 10], "dtype": "float32", "low": -1.0, "high": 1.0}},
            "dims": {"batch": {"min": 1, "opt": 8, "max": 64}}, "outputs": ["y"], "backends": ["onnxruntime", "aoti"],
            "stages": STAGE_DEFAULTS, "verify": dict(DEFAULT_TOLERANCES["float32"]), "bench": dict(BENCH_DEFAULTS),
            "package": None}


def test_tensorrt_fp16_variant_argv_on_trt10_and_trt11(tmp_path: Path) -> None:
    """With the trtexec STAND-IN (tests/standins/): TensorRT 10 builds the fp32 graph with --fp16; TensorRT 11 (strongly
    typed only) builds the onnx_fp16 variant's graph and takes no precision flag."""
    from helpers import H100, GpuHost, trt_recipe, write_trtexec

    host = GpuHost(tmp_path / "host")
    p = Project.with_recipes(tmp_path / "p", {"mlp.yaml": trt_recipe() + "variants: {tensorrt: [fp16]}\n"})
    result = build(p, host.env(p))
    assert {"onnx_fp16:mlp", "trt_engine_fp16:mlp", "trt_engine:mlp"} <= result.stages_ran()
    fp16_run = next(r for r in host.runs() if ".trt_engine_fp16.staging" in " ".join(r["argv"]))
    assert "--fp16" in fp16_run["argv"] and any(a.endswith("/portable/onnx/model.onnx") for a in fp16_run["argv"])
    manifest = json.loads((p.artifacts / "manifest.json").read_text())
    verify = manifest["recipes"]["mlp"]["targets"][H100]["verify"]
    assert verify["tensorrt:fp16"]["passed"] is None  # not verifiable here: no TensorRT Python package

    write_trtexec(host.bin, "11.0.0")
    result = build(p, host.env(p))
    assert {"trt_engine_fp16:mlp", "trt_engine:mlp"} <= result.stages_ran()
    fp16_run = [r for r in host.runs() if ".trt_engine_fp16.staging" in " ".join(r["argv"])][-1]
    assert "--fp16" not in fp16_run["argv"] and fp16_run["trt"] == "11.0.0"
    assert any(a.endswith(f"/{H100}/onnx_fp16/model.onnx") for a in fp16_run["argv"])


def test_transformer_fusion_on_a_hugging_face_encoder(tmp_path: Path, cpu_target: str) -> None:
    pytest.importorskip("transformers")
    recipe = BERT.format(dtype="float32", bench="bench: {enabled: false}\n") + \
        "backends: [onnxruntime]\nvariants: {onnxruntime: [fused]}\n"
    p = Project.with_recipes(tmp_path / "p", {"bert.yaml": recipe})
    build(p, INFBUILD_CACHE="off")
    info = json.loads((p.stage("bert", cpu_target, "onnx_fused") / "variant.json").read_text())
    assert info["model_type"] == "bert" and sum(info["fused"].values()) > 0, info  # fused operators were found
    result = json.loads((p.stage("bert", cpu_target, "verify") / "report.json").read_text())["results"]["onnxruntime:fused"]
    assert result["passed"] is True and result["precision"] == "fp32"  # fp32 variant: the elementwise rule


def test_a_variant_its_tool_cannot_build_is_recorded_and_the_build_goes_on(tmp_path: Path, cpu_target: str) -> None:
    """onnxruntime's GPT-2 fusion fails on this exporter's graph (IndexError inside the optimizer): the variant is
    stamped as declined, verify reports why, and the recipe's own artifact is verified as usual."""
    pytest.importorskip("transformers")
    recipe = GPT2 + "backends: [onnxruntime]\nvariants: {onnxruntime: [fused]}\n" \
        "stages: {onnx_variants: {fusion_model_type: gpt2}}\nbench: {enabled: false}\n"
    p = Project.with_recipes(tmp_path / "p", {"gpt2.yaml": recipe})
    result = build(p, INFBUILD_CACHE="off", INFBUILD_WORKERS="subprocess")  # a Python per stage: that mode runs too
    assert "verify:gpt2" in result.stages_ran()
    # a failing tool's scratch (model-sized <uuid>.data, sym_shape_infer_temp.onnx) stays inside the staging folder
    assert sorted(f.name for f in p.root.iterdir()) == ["artifacts", "dodo.py", "examples", "pyproject.toml", "recipes"]
    results = json.loads((p.stage("gpt2", cpu_target, "verify") / "report.json").read_text())["results"]
    assert results["onnxruntime"]["passed"] is True
    fused = results["onnxruntime:fused"]
    if fused["passed"] is None:  # declined by this onnxruntime (1.32): recorded with the optimizer's error
        assert fused["status"].startswith("not built: ")
        info = json.loads((p.stage("gpt2", cpu_target, "onnx_fused") / "variant.json").read_text())
        assert info["failed"] and not (p.stage("gpt2", cpu_target, "onnx_fused") / "model.onnx").exists()
    else:  # a later onnxruntime fuses it: then it is verified like any variant
        assert fused["passed"] is True


def test_session_settings_are_in_the_key_the_report_and_what_load_uses(tmp_path: Path, cpu_target: str,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """runtime.onnxruntime: execution providers in order (those this onnxruntime lacks are skipped, runs_on says
    which ran) and thread counts; verify and bench use them, the key holds them, load applies what bench measured."""
    settings = "runtime: {onnxruntime: {execution_providers: [DnnlExecutionProvider, CPUExecutionProvider], " \
               "inter_op_threads: 1, intra_op_threads: 2}}\n"
    p = Project.with_recipes(tmp_path / "p", {"m.yaml": mlp_recipe(name="m", bench=SMALL_BENCH) + settings})
    build(p, INFBUILD_CACHE="off")
    report = json.loads((p.stage("m", cpu_target, "bench") / "report.json").read_text())
    assert report["runtime"]["onnxruntime"]["intra_op_threads"] == 2
    assert report["runs_on"]["onnxruntime"] == "CPUExecutionProvider"  # no oneDNN provider in this onnxruntime
    stamp = json.loads((p.stage("m", cpu_target, "verify") / "stamp.json").read_text())
    assert stamp["inputs"]["recipe"]["runtime"]["onnxruntime"]["inter_op_threads"] == 1
    seen: dict = {}
    from infbuild.stages.onnx import runner

    real = runner.OnnxRuntimeRunner.__init__

    def spy(self: object, folder: Path, outputs: tuple, device: str, threads: int | None, settings: dict | None = None) -> None:
        seen.update(settings or {}, threads=threads)
        real(self, folder, outputs, device, threads, settings)  # type: ignore[arg-type]

    monkeypatch.setattr(runner.OnnxRuntimeRunner, "__init__", spy)
    from infbuild.runtime import load

    load(p.artifacts, "m", backend="onnxruntime")
    assert seen["intra_op_threads"] == 2 and seen["execution_providers"][0] == "DnnlExecutionProvider"
    p.add_recipe("m.yaml", mlp_recipe(name="m", bench=SMALL_BENCH) + settings.replace("intra_op_threads: 2", "intra_op_threads: 1"))
    assert build(p, INFBUILD_CACHE="off").stages_ran() == {"verify:m", "bench:m"}  # settings: in verify's and bench's keys


def test_autocast_keeps_the_residual_stream_and_the_outputs_in_float32() -> None:
    """aoti:bf16 computes under torch.autocast by default: the weights stay float32, the matrix product runs in
    bfloat16, the residual addition and the LayerNorm in float32, so the output is not rounded to bfloat16 (the whole
    model cast, ``mode: cast``, rounds it: larger error); both export with torch.export as the stage does."""
    import copy

    import torch

    from infbuild.stages.model import reduced_precision

    class Block(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear, self.norm = torch.nn.Linear(64, 64), torch.nn.LayerNorm(64)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
            return (self.norm(x + self.linear(x)) * 4,)

    torch.manual_seed(0)
    model, x = Block().eval(), torch.randn(8, 16, 64)
    with torch.no_grad():
        want = model(x)[0]
        errors = {}
        for mode in ("autocast", "cast"):
            reduced = reduced_precision(copy.deepcopy(model), torch.bfloat16, mode)
            got = reduced(x)[0]
            assert got.dtype == torch.float32
            assert reduced.model.linear.weight.dtype == (torch.float32 if mode == "autocast" else torch.bfloat16)
            exported = torch.export.export(reduced, (x,), strict=False).module()
            torch.testing.assert_close(exported(x)[0], got)
            errors[mode] = float((got - want).abs().max())
    assert 0 < errors["autocast"] < errors["cast"] / 2, errors

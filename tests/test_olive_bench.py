"""The head-to-head with Olive (benchmarks/olive.py) without Olive: its recipes are valid infbuild recipes, its
Olive workflow configs name the passes in order with the model's shapes, and a failed Olive run is reported by
its error line, not by the log lines Olive prints after the traceback."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from helpers import Project, loader_project

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import olive  # noqa: E402  (benchmarks/olive.py, not Olive itself)
import olive_models  # noqa: E402

from infbuild.recipe_load import load_file  # noqa: E402


@pytest.mark.parametrize("name", sorted(olive_models.MODELS))
def test_each_model_recipe_is_a_valid_infbuild_recipe(tmp_path: Path, name: str) -> None:
    p = Project.with_recipes(tmp_path / "p", {f"{name}.json": json.dumps(olive_models.recipe(name))})
    recipe, problems = load_file(p.root / "recipes" / f"{name}.json", loader_project(p.root, globs=("recipes/*.json",)))
    assert recipe is not None, problems
    spec = olive_models.MODELS[name]
    assert recipe.dims["batch"].min < recipe.dims["batch"].max and recipe.dims["seq"].opt == spec["seq"]
    assert recipe.model.attention == "eager"
    assert "onnxruntime:onnxscript_fused+int8_dynamic" in recipe.artifacts()  # int8 after onnxscript's fusion


def test_olive_workflow_config_runs_the_passes_in_order(tmp_path: Path) -> None:
    config = olive.olive_config("bert_4x256", [*olive.WORKFLOWS["dynamo+ortopt"], olive.INT8], tmp_path / "out")
    assert [p["type"] for p in config["passes"].values()] == ["OnnxConversion", "OrtTransformersOptimization",
                                                              "OnnxDynamicQuantization"]
    assert list(config["passes"].values())[1]["model_type"] == "bert"
    io = config["input_model"]["io_config"]
    assert io["input_shapes"] == [[4, 256], [4, 256]] and io["output_names"] == ["last_hidden_state", "pooler_output"]
    assert config["input_model"]["model_loader"] == "load_bert_4x256"
    assert callable(getattr(olive_models, config["input_model"]["model_loader"]))


def test_a_failed_olive_run_is_reported_by_its_error_line() -> None:
    log = ("Traceback (most recent call last):\n  File \"x.py\", line 1\nIndexError: list index out of range\n"
           "[2026-12-06 23:02:17,951] [INFO] [engine.py:476:_dump_run_history_internal] Please install tabulate\n")
    assert olive._reason(log, 1) == "IndexError: list index out of range"
    assert olive._reason("", 3) == "exit 3, no model written"


def test_the_full_precision_choice_is_benchs_choice_without_bf16_and_fp16() -> None:
    """The second table's infbuild row: what bench prefers once the bf16/fp16 variants are set aside (a CPU without
    those instructions never builds them), by infbuild's own rule (fastest within budget)."""
    def result(ms: float) -> dict:
        return {"opt": {"p50_ms": ms, "p50_ci_ms": [ms * 0.99, ms * 1.01]}}

    target = {
        "artifacts": {"onnxruntime": {"precision": "fp32"}, "aoti:bf16": {"precision": "bf16"},
                      "onnxruntime:int8_dynamic": {"precision": "int8"}, "onnxruntime:int8_static": {"precision": "int8"}},
        "verify": {"onnxruntime": {"passed": True}, "aoti:bf16": {"passed": True},
                   "onnxruntime:int8_dynamic": {"passed": True}, "onnxruntime:int8_static": {"passed": False}},
        "bench": {"primary_shape": "opt", "results": {"onnxruntime": result(2.0), "aoti:bf16": result(1.0),
                                                      "onnxruntime:int8_dynamic": result(1.5),
                                                      "onnxruntime:int8_static": result(1.2)}},
    }
    assert olive.full_precision_preferred(target) == "onnxruntime:int8_dynamic"  # int8_static failed its budget
    assert olive.full_precision_preferred({"artifacts": {"aoti:bf16": {"precision": "bf16"}}}) is None

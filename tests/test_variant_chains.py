"""Variant chains (``fused+int8_dynamic``): each link its own stage reading the model.onnx of the chain one link
shorter, so chains share links; changing one link's options rebuilds that link and what follows, nothing else.
onnxscript's fusion (attention included) as a variant and a link; ``model.attention`` chooses a Hugging Face model's
attention implementation for every stage."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import BERT, GPT2, Project, build, loader_project

from infbuild import stage as registry
from infbuild.fingerprint import host_fingerprint
from infbuild.host import Host
from infbuild.plan import plan_recipe
from infbuild.recipe import Recipe
from infbuild.recipe_load import load_file
from infbuild.recipe_schema import assemble


def _loaded(root: Path, text: str) -> tuple[Recipe | None, list]:
    p = Project.with_recipes(root / f"p{len(list(root.glob('p*')))}", {"m.yaml": text})
    return load_file(p.root / "recipes" / "m.yaml", loader_project(p.root, globs=("recipes/*.yaml",)))


def _load(root: Path, text: str) -> Recipe:
    recipe, problems = _loaded(root, text)
    assert recipe is not None, problems
    return recipe


def _host(root: Path) -> Host:
    return Host(host_fingerprint(), root)


def _bert(variants: str, stages: str = "", attention: str = "eager") -> str:
    text = BERT.format(dtype="float32", bench="bench: {enabled: false}\n")
    return text.replace("dtype: float32}", f"dtype: float32, attention: {attention}}}") + \
        f"backends: [onnxruntime]\nvariants: {{onnxruntime: [{variants}]}}\n{stages}"


def test_a_chain_reads_the_chain_one_link_shorter_and_int8_is_tried_after_fusion(tmp_path: Path) -> None:
    recipe = _load(tmp_path, _bert("fused, fused+int8_dynamic"))
    planned = {p.stage.name: p for p in plan_recipe(recipe, _host(tmp_path), tmp_path / "artifacts")}
    assert planned["onnx_fused"].upstream == ("onnx",)
    assert planned["onnx_fused+int8_dynamic"].upstream == ("onnx_fused",)
    assert planned["onnx_fused+int8_dynamic"].stage.precision == "int8"
    assert recipe.artifacts() == ["onnxruntime", "onnxruntime:fused", "onnxruntime:fused+int8_dynamic"]
    # asking for an int8 variant also tries it after onnxscript's fusion (int8_after), a chain of its own
    asked = _load(tmp_path, _bert("int8_static"))
    assert asked.artifacts() == ["onnxruntime", "onnxruntime:int8_static", "onnxruntime:onnxscript_fused+int8_static"]
    planned = {p.stage.name: p for p in plan_recipe(asked, _host(tmp_path), tmp_path / "artifacts")}
    assert planned["onnx_onnxscript_fused+int8_static"].upstream == ("onnx_onnxscript_fused", "reference")
    assert "onnx_onnxscript_fused" in planned and "onnx_fused" not in planned  # a link is planned, not judged
    none = _load(tmp_path, _bert("int8_static", "stages: {onnx_variants: {int8_after: []}}\n"))
    assert none.artifacts() == ["onnxruntime", "onnxruntime:int8_static"]


def test_the_schema_offers_every_registered_variant_and_refuses_an_unknown_chain(tmp_path: Path) -> None:
    enum = assemble()["properties"]["variants"]["properties"]["onnxruntime"]["items"]["enum"]
    assert enum == [s.variant for s in registry.stages() if s.backend == "onnxruntime" and s.variant]
    assert {"fused+int8_dynamic", "onnxscript_fused+fused+int8_static", "optimized+fp16"} <= set(enum)
    recipe, problems = _loaded(tmp_path, _bert("int8_dynamic+fused"))
    assert recipe is None and len(problems) == 1
    assert "variants.onnxruntime" in str(problems[0]) and "int8_dynamic+fused" in str(problems[0])


@pytest.mark.slow
def test_chains_build_verify_and_rebuild_only_the_link_that_changed(tmp_path: Path, cpu_target: str) -> None:
    pytest.importorskip("transformers")
    p = Project.with_recipes(tmp_path / "p", {"bert.yaml": _bert("fused, int8_dynamic, fused+int8_dynamic")})
    first = build(p, INFBUILD_CACHE="off")
    links = {"onnx_fused", "onnx_int8_dynamic", "onnx_fused+int8_dynamic", "onnx_onnxscript_fused",
             "onnx_onnxscript_fused+int8_dynamic"}
    assert {f"{s}:bert" for s in links} <= first.stages_ran()
    results = json.loads((p.stage("bert", cpu_target, "verify") / "report.json").read_text())["results"]
    for artifact in ("onnxruntime:fused+int8_dynamic", "onnxruntime:onnxscript_fused+int8_dynamic"):
        assert results[artifact]["passed"] is True and results[artifact]["precision"] == "int8", results[artifact]
    chain = json.loads((p.stage("bert", cpu_target, "onnx_onnxscript_fused+int8_dynamic") / "variant.json").read_text())
    assert chain["chain"] == ["onnxscript_fused", "int8_dynamic"] and chain["source"] == "onnx_onnxscript_fused"
    fused = json.loads((p.stage("bert", cpu_target, "onnx_onnxscript_fused") / "variant.json").read_text())["fused"]
    assert fused.get("attention", 0) + fused.get("mha1", 0) + fused.get("mha2", 0) > 0, fused  # attention fused
    import onnx  # the fused attention is quantized too: its packed weights are initializers the quantizer reads
    quantized = onnx.load(str(p.stage("bert", cpu_target, "onnx_onnxscript_fused+int8_dynamic") / "model.onnx"))
    assert "QAttention" in {node.op_type for node in quantized.graph.node}
    program = json.loads((p.stage("bert", "portable", "export") / "program.json").read_text())
    plain = p.stage("bert", cpu_target, "onnx_int8_dynamic")
    assert json.loads((plain / "variant.json").read_text())["embeddings"] == "float32"
    assert _quantized_lookups(plain / "model.onnx") == 0  # the embedding tables stay float: Gather reads them as they are

    # a quantizer option: the int8 link of every chain rebuilds, the fusion links stay
    p.add_recipe("bert.yaml", _bert("fused, int8_dynamic, fused+int8_dynamic",
                                    "stages: {onnx_variants: {per_channel: true, quantize_embeddings: true}}\n"))
    again = build(p, INFBUILD_CACHE="off")
    assert again.stages_ran() == {"onnx_int8_dynamic:bert", "onnx_fused+int8_dynamic:bert",
                                  "onnx_onnxscript_fused+int8_dynamic:bert", "verify:bert"}
    assert json.loads((plain / "variant.json").read_text())["embeddings"] == "int8"
    assert _quantized_lookups(plain / "model.onnx") >= 1  # the word embedding at least, now int8 + DequantizeLinear
    # a fusion option: that link and the chain after it, not the other links
    p.add_recipe("bert.yaml", _bert("fused, int8_dynamic, fused+int8_dynamic", "stages: {onnx_variants: {per_channel: "
                                    "true, quantize_embeddings: true, optimization_level: basic}}\n"))
    third = build(p, INFBUILD_CACHE="off")
    assert "onnx_fused:bert" in third.stages_ran()
    assert third.stages_ran() <= {"onnx_fused:bert", "onnx_fused+int8_dynamic:bert", "verify:bert"}

    # the attention implementation is the model's: sdpa exports another program
    p.add_recipe("bert.yaml", _bert("fused", attention="sdpa"))
    build(p, INFBUILD_CACHE="off")
    assert json.loads((p.stage("bert", "portable", "export") / "program.json").read_text())["digest"] \
        != program["digest"]


def _quantized_lookups(model: Path) -> int:
    """Gather nodes that look up an 8-bit table (quantize_dynamic's embedding quantization: a DequantizeLinear after)."""
    import onnx

    graph = onnx.load(str(model)).graph
    eight_bit = {i.name for i in graph.initializer if i.data_type in (onnx.TensorProto.UINT8, onnx.TensorProto.INT8)}
    return sum(1 for node in graph.node if node.op_type == "Gather" and node.input[0] in eight_bit)


@pytest.mark.slow
def test_a_chain_after_a_declined_link_is_declined_with_its_reason(tmp_path: Path, cpu_target: str) -> None:
    """onnxruntime's GPT-2 fusion fails on this exporter's graph (IndexError): the chain after it says so."""
    pytest.importorskip("transformers")
    recipe = GPT2 + "backends: [onnxruntime]\nvariants: {onnxruntime: [fused+int8_dynamic]}\n" \
        "stages: {onnx_variants: {fusion_model_type: gpt2, int8_after: []}}\nbench: {enabled: false}\n"
    p = Project.with_recipes(tmp_path / "p", {"gpt2.yaml": recipe})
    build(p, INFBUILD_CACHE="off")
    results = json.loads((p.stage("gpt2", cpu_target, "verify") / "report.json").read_text())["results"]
    fused = json.loads((p.stage("gpt2", cpu_target, "onnx_fused") / "variant.json").read_text())
    chain = results["onnxruntime:fused+int8_dynamic"]
    if fused.get("failed"):  # declined by this onnxruntime (1.32)
        assert chain["passed"] is None and chain["status"].startswith("not built: its link onnx_fused was declined: ")
        assert fused["failed"][:40] in chain["status"]
    else:  # a later onnxruntime fuses it: then the chain is verified like any variant
        assert chain["passed"] is True


def test_attention_on_a_model_that_cannot_choose_it_names_the_field(tmp_path: Path) -> None:
    from helpers import mlp_recipe

    text = mlp_recipe(extra_model="  attention: eager\n")
    p = Project.with_recipes(tmp_path / "p", {"mlp.yaml": text})
    done = p.doit("build")
    assert done.returncode != 0
    assert "model.attention" in done.output and "set_attn_implementation" in done.output, done.output[-2000:]


@pytest.mark.slow
def test_static_int8_calibrates_on_generated_batches_and_leaves_the_costliest_nodes_in_float(
        tmp_path: Path, cpu_target: str) -> None:
    """int8_static calibrates on the reference inputs plus generated batches, measures its error on held-out
    batches and, above the target, leaves in float the nodes whose quantization costs the most: never worse than
    quantizing everything, and exactly that with the target off."""
    pytest.importorskip("transformers")
    p = Project.with_recipes(tmp_path / "p", {"bert.yaml": _bert("int8_static", "stages: {onnx_variants: {int8_after: []}}\n")})
    build(p, INFBUILD_CACHE="off")
    info = json.loads((p.stage("bert", cpu_target, "onnx_int8_static") / "variant.json").read_text())
    assert info["generated_samples"] == 8 and info["reference_samples"] >= 1
    assert info["samples"] == info["generated_samples"] + info["reference_samples"]
    assert 0 < info["error"] <= info["error_all_quantized"] and info["error_target"] == 0.02
    if info["error_all_quantized"] > 0.02:  # the sensitivity pass ran: it names the nodes it left in float
        assert info["sensitivity"]["candidates"] > 0
        assert len(info["excluded"]) <= info["sensitivity"]["candidates"] // 4
        assert (info["error"] < info["error_all_quantized"]) == bool(info["excluded"])
    results = json.loads((p.stage("bert", cpu_target, "verify") / "report.json").read_text())["results"]
    assert results["onnxruntime:int8_static"]["passed"] is True

    p.add_recipe("bert.yaml", _bert("int8_static", "stages: {onnx_variants: {int8_after: [], static_error_target: null, "
                                                   "calibration_batches: 0}}\n"))
    again = build(p, INFBUILD_CACHE="off")
    assert again.stages_ran() == {"onnx_int8_static:bert", "verify:bert"}  # its link's options: nothing else
    off = json.loads((p.stage("bert", cpu_target, "onnx_int8_static") / "variant.json").read_text())
    assert off["excluded"] == [] and off["generated_samples"] == 0 and "sensitivity" not in off
    assert off["error"] == off["error_all_quantized"]

"""The side files stages write beside their artifacts (aoti.json, export.json, program.json, variant.json, the
reference folder, triton.json, image.json, the reports) each have one typed reader and writer, in their stage's
package: nobody else names the file, each writes what the inline writers before it wrote (byte for byte: a tree
built before is read the same), and a damaged file reads as "no record", never as a crash."""
from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from infbuild.errors import ArtifactError
from infbuild.stages.aoti.info import AotiInfo
from infbuild.stages.export.info import ProgramInfo, parameter_count
from infbuild.stages.onnx.info import ExportInfo, graph_digest
from infbuild.stages.onnx_variants.info import VariantInfo, declined_in
from infbuild.stages.package.image_info import ImageInfo
from infbuild.stages.reference.layout import Reference, ReferenceWriter, sample_inputs_in
from infbuild.stages.triton.summary import TritonSummary

PACKAGE = Path(__file__).resolve().parents[1] / "infbuild"
OWNERS = {"aoti.json": "stages/aoti/info.py", "export.json": "stages/onnx/info.py",
          "program.json": "stages/export/info.py", "program.pt2": "stages/export/info.py",
          "variant.json": "stages/onnx_variants/info.py", "reference.json": "stages/reference/layout.py",
          "opt.npz": "stages/reference/layout.py", "input.": "stages/reference/layout.py",
          "output.": "stages/reference/layout.py", "triton.json": "stages/triton/summary.py",
          "image.json": "stages/package/image_info.py", "report.json": "reports.py"}


def _names(tree: ast.AST) -> list[tuple[int, str]]:
    """String constants (not docstrings, not messages: whole strings and f-string pieces) naming a side file."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in OWNERS:
            found.append((node.lineno, node.value))
    return found


def test_only_its_owner_names_a_side_file() -> None:
    found = [f"{path.relative_to(PACKAGE)}:{line}: {name}" for path in sorted(PACKAGE.rglob("*.py"))
             for line, name in _names(ast.parse(path.read_text(encoding="utf-8")))
             if str(path.relative_to(PACKAGE)) != OWNERS[name]]
    assert not found, f"side files named outside their owner (read them through it): {found}"


def test_the_check_finds_a_name_written_inline() -> None:
    tree = ast.parse('p = folder / "aoti.json"\nq = f"{label}.npz"\nd = {f"input.{k}": v}\n"""aoti.json, in a docstring"""')
    assert _names(tree) == [(1, "aoti.json"), (3, "input.")]


def _old_format(value: dict[str, Any]) -> str:
    """What the stages' inline writers wrote before the records existed."""
    return json.dumps(value, indent=2, sort_keys=True) + "\n"


AOTI = {"cpu_isa_env": None, "device": "cpu", "inductor_configs": {"aot_inductor.check_lowerbound": False},
        "torch": "2.13.0+cpu"}
EXPORT = {"external_data": False, "external_data_requested": False, "graph_sha256": "9b" * 32, "initializers": 9,
          "inputs": {"images": ["batch", 3, 32, 32]}, "nodes": 8, "onnx": "1.23.2", "opset": 18, "opset_requested": 18,
          "outputs": {"logits": ["batch", 10]}, "torch": "2.13.0+cpu"}
PROGRAM = {"digest": "0c" * 32, "graph": "27" * 32, "nodes": 36, "parameters": 14989, "torch": "2.13.0+cpu",
           "weights": "78" * 32}
VARIANT = {"variant": "onnxscript_fused+int8_static", "chain": ["onnxscript_fused", "int8_static"],
           "source": "onnx_onnxscript_fused", "weights": "int8", "activations": "uint8", "error": 0.0192,
           "excluded": ["/attn/MatMul"], "onnxruntime": "1.32.0", "bytes": 1000, "source_bytes": 4000, "seconds": 1.5}
TRITON = {"preferred": "aoti", "target": "cpu-x86_64-avx512", "version": 1,
          "models": {"seq": {"artifact": "aoti", "platform": "python"}}}
IMAGE = {"reference": "127.0.0.1:5000/m:1-cpu", "builder": "oci", "pushed": True, "digest": "sha256:" + "ab" * 32,
         "size": 1234, "base": "python:3.11-slim", "files": ["a"], "labels": {"x": "y"}, "signed": {"signature": "s"}}


@pytest.mark.parametrize("record, value, name", [
    (AotiInfo, AOTI, "aoti.json"), (AotiInfo, {**AOTI, "compute_dtype": "bfloat16"}, "aoti.json"),
    (ExportInfo, EXPORT, "export.json"), (ProgramInfo, PROGRAM, "program.json"), (VariantInfo, VARIANT, "variant.json"),
    (VariantInfo, {"variant": "fused", "failed": "IndexError: list index out of range"}, "variant.json"),
    (TritonSummary, TRITON, "triton.json"), (ImageInfo, IMAGE, "image.json")],
    ids=["aoti", "aoti-bf16", "export", "program", "variant", "declined", "triton", "image"])
def test_a_record_reads_the_old_format_and_writes_it_back_byte_for_byte(tmp_path: Path, record: Any,
                                                                         value: dict[str, Any], name: str) -> None:
    (tmp_path / name).write_text(_old_format(value), encoding="utf-8")
    read = record.read(tmp_path)
    assert read is not None
    out = tmp_path / "again"
    out.mkdir()
    read.write(out)
    assert (out / name).read_text(encoding="utf-8") == _old_format(value)
    assert record.read(out) == read


@pytest.mark.parametrize("record, name", [(AotiInfo, "aoti.json"), (ExportInfo, "export.json"),
                                          (ProgramInfo, "program.json"), (VariantInfo, "variant.json"),
                                          (TritonSummary, "triton.json"), (ImageInfo, "image.json")])
@pytest.mark.parametrize("content", [None, "", "{", "[1, 2]", '{"device": 3}', "\udcff"])
def test_a_missing_or_damaged_record_reads_as_none(tmp_path: Path, record: Any, name: str, content: str | None) -> None:
    if content is not None:
        (tmp_path / name).write_bytes(content.encode("utf-8", "surrogateescape"))
    assert record.read(tmp_path) is None


def test_the_lenient_readers_of_single_fields(tmp_path: Path) -> None:
    assert parameter_count(tmp_path) == 0 and graph_digest(tmp_path) is None and declined_in(tmp_path) is None
    (tmp_path / "program.json").write_text('{"parameters": 100000000}')  # what a planner's estimate reads alone
    (tmp_path / "export.json").write_text('{"graph_sha256": "' + "ab" * 32 + '"}')
    (tmp_path / "variant.json").write_text('{"variant": "fused", "failed": "no attention to fuse"}')
    assert parameter_count(tmp_path) == 100_000_000 and graph_digest(tmp_path) == "ab" * 32
    assert declined_in(tmp_path) == "no attention to fuse"
    (tmp_path / "program.json").write_text('{"parameters": true}')
    assert parameter_count(tmp_path) == 0


def test_the_reference_folder_round_trips(tmp_path: Path) -> None:
    writer = ReferenceWriter(tmp_path, 7, "2.13.0+cpu")
    rng = np.random.default_rng(0)
    for label, batch in (("opt", 4), ("min", 1), ("sample0", 2)):
        writer.add(label, {"ids": rng.integers(0, 9, (batch, 8))}, {"logits": rng.standard_normal((batch, 3)).astype("f4")})
    writer.close()
    reference = Reference.read(tmp_path)
    assert (reference.seed, reference.torch, sorted(reference.shapes)) == (7, "2.13.0+cpu", ["min", "opt", "sample0"])
    assert reference.shapes["min"].inputs == {"ids": [1, 8]} and reference.shapes["opt"].outputs == {"logits": [4, 3]}
    inputs, outputs = reference.sample("sample0")
    assert inputs["ids"].shape == (2, 8) and outputs["logits"].dtype == np.float32
    assert reference.output_dtypes(("logits",)) == {"logits": "float32"}
    assert [s["ids"].shape[0] for s in sample_inputs_in(tmp_path)] == [4, 1, 2]  # opt first, then by label
    old = {"seed": 7, "torch": "2.13.0+cpu", "shapes": {label: {"inputs": s.inputs, "outputs": s.outputs}
                                                       for label, s in reference.shapes.items()}}
    assert (tmp_path / "reference.json").read_text(encoding="utf-8") == _old_format(old)


@pytest.mark.parametrize("content", [None, "{", '{"seed": 0, "torch": "x"}', '{"seed": 0, "torch": "x", "shapes": {"opt": 1}}'])
def test_a_damaged_reference_is_an_artifact_error_naming_the_file(tmp_path: Path, content: str | None) -> None:
    if content is not None:
        (tmp_path / "reference.json").write_text(content)
    with pytest.raises(ArtifactError, match=r"reference\.json is missing or damaged"):
        Reference.read(tmp_path)

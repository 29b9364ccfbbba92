"""Planning and keys in-process, on simulated hosts (no doit, no torch, no build): which stages a recipe gets, in
what order, reading which upstream stages, in which target folder and on which device, whether this host can
build them and why not; what a stage key reads (and what it does not), and why a stage is stale. Also the stage
registry's own consistency, and the design rule that nothing outside the stage declarations branches on a stage
name."""
from __future__ import annotations

import ast
import copy
import importlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import A10G, H100, REPO, VALID_RECIPE, loader_project

from infbuild import stage as registry
from infbuild.artifacts import commit, new_staging, remove_stage
from infbuild.fingerprint import TOOLS, cpu_target, cuda_target, host_fingerprint
from infbuild.folder import UNSTAMPED, unsafe_name
from infbuild.hashing import DigestCache, sha256_file
from infbuild.host import NO_GPU, Host
from infbuild.keys import key_inputs, stage_key, staleness
from infbuild.plan import is_required, plan, plan_recipe
from infbuild.recipe import BACKENDS, Recipe
from infbuild.recipe_load import load_file
from infbuild.recipe_schema import SHIPPED as SCHEMA_PATH
from infbuild.reports import VerifyReport
from infbuild.stage import PlannedStage, Stage
from infbuild.stamp import Stamp, read_stamp

CPU = "cpu-x86_64-avx2"
GPUS = [
    {"index": "0", "uuid": "GPU-aaaa", "name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0",
     "driver": "550.54.15", "memory_mib": 81559, "target": H100},
    {"index": "1", "uuid": "GPU-bbbb", "name": "NVIDIA A10G", "compute_capability": "8.6", "driver": "550.54.15",
     "memory_mib": 23028, "target": A10G},
]


def fingerprint(gpus: list[dict[str, Any]] | None = None, torch: str = "2.13.0+cpu", isa: str = "avx2",
                trtexec: dict[str, Any] | None = None) -> dict[str, Any]:
    """A host's fingerprint shaped like ``host_fingerprint()``'s, targets derived the same way."""
    fp: dict[str, Any] = {
        "cpu": {"arch": "x86_64", "model": "Simulated CPU", "isa": isa, "flags": ["avx", "avx2", "fma"], "count": 8},
        "os": {"system": "Linux", "release": "6.1.0", "libc": "glibc 2.36"},
        "compiler": {"gxx": "12.2.0"},
        "gpus": list(gpus or []),
        "cuda": {"version": "12.4" if gpus else None, "visible_devices": None},
        "tools": {"torch": torch, "onnx": "1.17.0", "onnxscript": "0.2.0", "onnxruntime": "1.20.0",
                  "onnxruntime-gpu": None, "tensorrt": None, "doit": "0.37.0", "docker": "7.1.0", "infbuild": "0.1.0"},
        "tensorrt": trtexec or {"trtexec": None, "version": None},
    }
    fp["targets"] = {"cpu": cpu_target(fp), "cuda": cuda_target(fp)}
    return fp


CUDA_TORCH = "2.13.0"  # a CUDA build of torch (judged from its version, as the planner does without importing it)
TRTEXEC = {"trtexec": "/opt/tensorrt/bin/trtexec", "version": "10.3.0"}


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv("TRTEXEC", raising=False)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A project root holding the model's module (examples/models.py, never imported here)."""
    loader_project(tmp_path, stub_factory=True)
    (tmp_path / "recipes").mkdir()
    return tmp_path


def recipe(root: Path, changes: dict[str, Any] | None = None, name: str = "mlp") -> Recipe:
    """The MLP recipe (tests' ``mlp_recipe()``, bench off) with dotted-path changes, loaded as a file would be."""
    data = copy.deepcopy(VALID_RECIPE)
    data["name"] = name
    for path, value in (changes or {}).items():
        parts = path.split(".")
        parent = data
        for part in parts[:-1]:
            parent = parent.setdefault(part, {})
        parent[parts[-1]] = value
    file = root / "recipes" / f"{name}.json"
    file.write_text(json.dumps(data), encoding="utf-8")
    loaded, problems = load_file(file, loader_project(root, globs=("recipes/*.json",)))
    assert loaded is not None and not problems, [p.render() for p in problems]
    return loaded


def planned(root: Path, r: Recipe, fp: dict[str, Any] | None = None, required: frozenset[str] = frozenset()
            ) -> dict[str, PlannedStage]:
    """Stage name -> planned stage, in build order."""
    return {p.stage.name: p for p in plan_recipe(r, Host(fp or fingerprint(), root), root / "artifacts", required)}


def inputs_of(root: Path, stages: dict[str, PlannedStage], name: str, fp: dict[str, Any] | None = None
              ) -> dict[str, Any]:
    """A stage's key inputs; the export stage is stamped first where it is missing (every build exports first)."""
    if "export" in stages[name].upstream and read_stamp(stages["export"].folder) is None:
        stamp_as_built(root, stages, "export", fp)
    return key_inputs(stages[name], fp or fingerprint(), root, DigestCache(None), stages)


def key_of(root: Path, stages: dict[str, PlannedStage], name: str, fp: dict[str, Any] | None = None) -> str:
    return stage_key(inputs_of(root, stages, name, fp))


def why_stale(root: Path, stages: dict[str, PlannedStage], name: str, fp: dict[str, Any] | None = None) -> str | None:
    """The staleness reason as status renders it (None: up to date)."""
    reason = staleness(stages[name], fp or fingerprint(), root, DigestCache(None), stages)
    return None if reason is None else str(reason)


def stamp_as_built(root: Path, stages: dict[str, PlannedStage], name: str, fp: dict[str, Any] | None = None,
                   verdicts: dict[str, bool | None] | None = None, contents: dict[str, str] | None = None) -> Stamp:
    """Commit a stage folder holding its required outputs under its current key, as a build would (the judging
    stage's report says each artifact passed, or ``verdicts``)."""
    p = stages[name]
    inputs = inputs_of(root, stages, name, fp)
    staging = new_staging(p.folder)
    if p.stage.judges:
        backends = list(p.recipe.backends)
        results = {b: {"passed": (verdicts or {}).get(b, True)} for b in backends}
        VerifyReport(backends, p.recipe.verify["rtol"], p.recipe.verify["atol"], "rule", results).write(staging)
    if name == "export" and not contents:  # the program follows the model's sources and weights, as a real export's
        contents = {"program.json": json.dumps({k: inputs.get(k) for k in ("sources", "weights", "recipe")})}
    for output, text in (contents or {}).items():
        (staging / output).write_text(text, encoding="utf-8")
    for output in p.stage.outputs.required:
        if not (staging / output).exists():
            (staging / output).write_text(f"{p.task_name} {output}\n", encoding="utf-8")
    return commit(staging, p.folder, Stamp(stage_key(inputs), name, p.recipe.name, target=p.target, files={},
                                           fingerprint=fp or fingerprint(), inputs=inputs), p.stage.outputs)


def stamp_buildable(root: Path, stages: dict[str, PlannedStage], fp: dict[str, Any] | None = None) -> None:
    for name, p in stages.items():
        if p.not_buildable is None:
            stamp_as_built(root, stages, name, fp)


# --- the plan -----------------------------------------------------------------------------------------------

def test_cpu_host_plans_the_default_backends_in_build_order(root: Path) -> None:
    r = recipe(root, {"backends": ["onnxruntime", "aoti"]})
    stages = planned(root, r)
    assert list(stages) == ["export", "onnx", "reference", "aoti", "verify"]
    assert {n: p.upstream for n, p in stages.items()} == {
        "export": (), "onnx": ("export",), "reference": ("export",), "aoti": ("export",),
        "verify": ("reference", "onnx", "aoti")}
    assert {n: (p.target, p.device) for n, p in stages.items()} == {
        "export": ("portable", "cpu"), "onnx": ("portable", "cpu"), "reference": ("portable", "cpu"),
        "aoti": (CPU, "cpu"), "verify": (CPU, "cpu")}
    assert all(p.not_buildable is None for p in stages.values())
    assert [p.task_name for p in stages.values()] == ["export:mlp", "onnx:mlp", "reference:mlp", "aoti:mlp",
                                                      "verify:mlp"]
    assert stages["aoti"].folder == root / "artifacts" / "mlp" / CPU / "aoti"
    assert stages["onnx"].folder == root / "artifacts" / "mlp" / "portable" / "onnx"
    assert tuple(recipe(root).backends) == BACKENDS  # what a recipe without backends gets
    assert list(planned(root, recipe(root))) == list(stages)


def test_plan_of_many_recipes_is_each_recipes_plan(root: Path) -> None:
    a, b = recipe(root, name="a"), recipe(root, {"backends": ["aoti"]}, name="b")
    host = Host(fingerprint(), root)
    everything = plan([a, b], host, root / "artifacts")
    assert [p.task_name for p in everything] == ["export:a", "onnx:a", "reference:a", "aoti:a", "verify:a",
                                                 "export:b", "reference:b", "aoti:b", "verify:b"]


def test_artifact_stages_follow_the_backends(root: Path) -> None:
    only_aoti = planned(root, recipe(root, {"backends": ["aoti"]}))
    assert list(only_aoti) == ["export", "reference", "aoti", "verify"]
    assert only_aoti["verify"].upstream == ("reference", "aoti")
    only_ort = planned(root, recipe(root, {"backends": ["onnxruntime"]}))
    assert list(only_ort) == ["export", "onnx", "reference", "verify"] and only_ort["verify"].upstream == ("reference", "onnx")


def test_bench_is_planned_only_when_enabled(root: Path) -> None:
    assert "bench" not in planned(root, recipe(root))  # mlp_recipe(): bench: {enabled: false}
    stages = planned(root, recipe(root, {"bench": {"shapes": ["opt"], "iterations": 5}}))
    assert list(stages) == ["export", "onnx", "reference", "aoti", "verify", "bench"]
    bench = stages["bench"]
    assert bench.upstream == ("export", "verify", "onnx", "aoti")  # the verified artifacts and verify's verdicts
    assert (bench.target, bench.device, bench.not_buildable) == (CPU, "cpu", None)


def test_tensorrt_stages_only_for_the_tensorrt_backend(root: Path) -> None:
    assert not {"trt_timing_cache", "trt_engine"} & set(planned(root, recipe(root)))
    stages = planned(root, recipe(root, {"backends": ["onnxruntime", "tensorrt"]}))
    assert list(stages) == ["export", "onnx", "reference", "trt_timing_cache", "trt_engine", "verify"]
    assert stages["trt_timing_cache"].upstream == ("onnx",)
    assert stages["trt_engine"].upstream == ("onnx", "trt_timing_cache")
    trt_only = planned(root, recipe(root, {"backends": ["tensorrt"]}))
    assert "onnx" in trt_only and trt_only["onnx"].not_buildable is None  # TensorRT's input, though no backend


def test_tensorrt_without_a_gpu_is_not_buildable_and_verify_goes_on_without_it(root: Path) -> None:
    stages = planned(root, recipe(root, {"backends": ["onnxruntime", "tensorrt"]}))
    for name in ("trt_timing_cache", "trt_engine"):
        p = stages[name]
        assert (p.target, p.device, p.not_buildable) == ("cuda-unavailable", "cuda", NO_GPU)
        assert not p.required and not is_required(p, frozenset())
    assert stages["verify"].upstream == ("reference", "onnx")
    assert stages["verify"].not_buildable is None and stages["verify"].target == CPU


@pytest.mark.parametrize("how", ["stage", "task", "recipe"])
def test_a_required_tensorrt_engine_blocks_verify(root: Path, how: str) -> None:
    """Required (stages.tensorrt.required, or required={"trt_engine"} / {"trt_engine:mlp"}): verify reads the
    engine, so on a host that cannot build it verify is not buildable either (and fails instead of skipping)."""
    changes: dict[str, Any] = {"backends": ["onnxruntime", "tensorrt"]}
    if how == "recipe":
        changes["stages.tensorrt.required"] = True
    required = {"stage": frozenset({"trt_engine"}), "task": frozenset({"trt_engine:mlp"}), "recipe": frozenset()}[how]
    stages = planned(root, recipe(root, changes), required=required)
    assert is_required(stages["trt_engine"], required)
    assert stages["verify"].upstream == ("reference", "onnx", "trt_engine")
    assert stages["verify"].not_buildable == NO_GPU
    assert stages["trt_engine"].required is (how == "recipe")


def test_tensorrt_on_a_gpu_host_runs_on_its_gpu(root: Path) -> None:
    fp = fingerprint(GPUS, torch=CUDA_TORCH, trtexec=TRTEXEC)
    stages = planned(root, recipe(root, {"backends": ["onnxruntime", "tensorrt"]}), fp)
    for name in ("trt_timing_cache", "trt_engine", "verify"):
        assert (stages[name].target, stages[name].device, stages[name].not_buildable) == (H100, "cuda", None), name
    assert dict(stages["trt_engine"].tools) == TRTEXEC
    assert stages["verify"].upstream == ("reference", "onnx", "trt_engine")
    no_trtexec = planned(root, recipe(root, {"backends": ["tensorrt"]}), fingerprint(GPUS, torch=CUDA_TORCH))
    assert (no_trtexec["trt_engine"].not_buildable or "").startswith("trtexec not found")


def test_a_fleet_of_one_gpu_kind_shares_tensorrt_keys_whatever_its_host_cpus_and_driver_patches(root: Path) -> None:
    """Two H100 runners on different host CPUs (ISA flags, compiler, libc) and driver patch levels build the same
    TensorRT stages; an A10G (another compute capability) does not; a hardware-compatible engine (ampere+) is shared
    by both; a dynamic int8 graph is keyed on nothing of the host; AOTInductor stays keyed on the CPU it targets."""
    import copy as copying

    h100_a = fingerprint([GPUS[0]], torch=CUDA_TORCH, trtexec=TRTEXEC)
    h100_b = copying.deepcopy(h100_a)
    h100_b["cpu"].update(isa="avx512", flags=["avx", "avx2", "avx512f", "fma"])
    h100_b["compiler"]["gxx"], h100_b["os"]["libc"] = "13.1.0", "glibc 2.39"
    h100_b["gpus"][0]["driver"] = "550.90.07"  # the same major (550), another patch level
    a10g = fingerprint([GPUS[1]], torch=CUDA_TORCH, trtexec=TRTEXEC)
    r = recipe(root, {"backends": ["onnxruntime", "tensorrt"], "variants": {"onnxruntime": ["int8_dynamic"]}})

    def trt_keys(fp: dict[str, Any], rec: Recipe = r) -> dict[str, str]:
        stages = planned(root, rec, fp)
        stamp_as_built(root, stages, "onnx", fp, contents={"export.json": json.dumps({"graph_sha256": "ab" * 32})})
        timing = key_of(root, stages, "trt_timing_cache", fp)
        stamp_as_built(root, stages, "trt_timing_cache", fp)  # same bytes for every host: the engines' keys compare
        return {"trt_timing_cache": timing, "trt_engine": key_of(root, stages, "trt_engine", fp),
                **({"onnx_int8_dynamic": key_of(root, stages, "onnx_int8_dynamic", fp)} if "onnx_int8_dynamic" in stages else {})}

    a, b, other = trt_keys(h100_a), trt_keys(h100_b), trt_keys(a10g)
    assert a == b
    assert a["trt_timing_cache"] != other["trt_timing_cache"] and a["trt_engine"] != other["trt_engine"]
    assert a["onnx_int8_dynamic"] == other["onnx_int8_dynamic"]  # a graph transform: no hardware in its key
    compatible = recipe(root, {"backends": ["onnxruntime", "tensorrt"], "stages.tensorrt.hardware_compatibility_level": "ampere+"})
    assert trt_keys(h100_a, compatible)["trt_engine"] == trt_keys(a10g, compatible)["trt_engine"]
    newer_driver = copying.deepcopy(h100_a)
    newer_driver["gpus"][0]["driver"] = "580.65.06"  # another major: a new floor
    assert trt_keys(newer_driver)["trt_engine"] != a["trt_engine"]
    cpu_a, cpu_b = fingerprint(isa="avx2"), copying.deepcopy(fingerprint(isa="avx2"))
    cpu_b["compiler"]["gxx"] = "13.1.0"
    plain = recipe(root)
    assert key_of(root, planned(root, plain, cpu_a), "aoti", cpu_a) != key_of(root, planned(root, plain, cpu_b), "aoti", cpu_b)


def test_cuda_visible_devices_selects_the_gpu(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    stages = planned(root, recipe(root, {"backends": ["tensorrt"]}), fingerprint(GPUS, torch=CUDA_TORCH, trtexec=TRTEXEC))
    assert stages["trt_engine"].target == A10G


def test_aoti_device_auto_follows_the_installed_torch(root: Path) -> None:
    """On a GPU host: a CUDA torch compiles AOTI for the GPU (and the recipe's device stages go to the GPU's
    target); a "+cpu" torch compiles for the CPU (the CPU target), like a host without a GPU."""
    r = recipe(root)
    on_gpu = planned(root, r, fingerprint(GPUS, torch=CUDA_TORCH))
    assert {n: (p.target, p.device) for n, p in on_gpu.items()} == {
        "export": ("portable", "cpu"), "onnx": ("portable", "cpu"), "reference": ("portable", "cpu"),
        "aoti": (H100, "cuda"), "verify": (H100, "cuda")}
    cpu_torch = planned(root, r, fingerprint(GPUS, torch="2.13.0+cpu"))
    assert {n: (p.target, p.device) for n, p in cpu_torch.items()} == {
        "export": ("portable", "cpu"), "onnx": ("portable", "cpu"), "reference": ("portable", "cpu"),
        "aoti": (CPU, "cpu"), "verify": (CPU, "cpu")}
    assert all(p.not_buildable is None for p in (*on_gpu.values(), *cpu_torch.values()))


def test_aoti_device_cuda_needs_a_gpu_and_a_cuda_torch(root: Path) -> None:
    r = recipe(root, {"stages": {"aoti": {"device": "cuda"}}})
    no_gpu = planned(root, r)
    assert no_gpu["aoti"].not_buildable == NO_GPU and no_gpu["aoti"].device == "cuda"
    assert no_gpu["verify"].upstream == ("reference", "onnx") and no_gpu["verify"].not_buildable is None
    cpu_torch = planned(root, r, fingerprint(GPUS, torch="2.13.0+cpu"))
    assert cpu_torch["aoti"].not_buildable == "the installed torch (2.13.0+cpu) is a CPU build"
    assert planned(root, r, fingerprint(GPUS, torch=CUDA_TORCH))["aoti"].not_buildable is None
    assert planned(root, recipe(root, {"stages": {"aoti": {"device": "cpu"}}}),
                   fingerprint(GPUS, torch=CUDA_TORCH))["aoti"].device == "cpu"


def test_a_simulated_host_from_infbuild_fingerprint(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """INFBUILD_FINGERPRINT merged over what is detected: the planner sees that host."""
    monkeypatch.setenv("INFBUILD_FINGERPRINT", json.dumps({"gpus": GPUS[:1], "tools": {"torch": CUDA_TORCH}}))
    host_fingerprint.cache_clear()
    try:
        fp = host_fingerprint()
    finally:
        monkeypatch.delenv("INFBUILD_FINGERPRINT")
        host_fingerprint.cache_clear()
    assert fp["targets"]["cuda"] == H100
    assert planned(root, recipe(root), fp)["aoti"].target == H100


def test_package_is_planned_last_on_the_device_target(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = {"image": "registry.example.com/ml/mlp", "version": "1.0.0", "builder": "oci"}
    assert "package" not in planned(root, recipe(root))
    stages = planned(root, recipe(root, {"package": package}))
    assert list(stages)[-1] == "package"
    p = stages["package"]
    assert (p.upstream, p.target, p.device, p.not_buildable) == (("verify", "onnx", "aoti"), CPU, "cpu", None)
    with_bench = planned(root, recipe(root, {"package": package, "bench": {"enabled": True}}))
    assert with_bench["package"].upstream == ("verify", "bench", "onnx", "aoti")
    assert planned(root, recipe(root, {"package": package}), fingerprint(GPUS, torch=CUDA_TORCH))["package"].target == H100
    socket = root / "docker.sock"
    monkeypatch.setenv("DOCKER_HOST", f"unix://{socket}")
    docker = recipe(root, {"package": {**package, "builder": "docker"}})
    assert (planned(root, docker)["package"].not_buildable or "").startswith("no Docker engine")
    socket.write_text("")
    assert planned(root, docker)["package"].not_buildable is None


# --- keys ---------------------------------------------------------------------------------------------------

def test_key_inputs_name_what_the_stage_reads(root: Path) -> None:
    fp = fingerprint()
    stages = planned(root, recipe(root), fp)
    export = inputs_of(root, stages, "export", fp)
    assert set(export) == {"stage", "version", "recipe", "fingerprint", "tools", "sources", "weights"}
    assert export["sources"] == {"examples/models.py": sha256_file(root / "examples" / "models.py")}
    assert export["weights"] == {} and export["fingerprint"] == {} and export["tools"] == {"torch": "2.13.0+cpu"}
    onnx = inputs_of(root, stages, "onnx", fp)  # the model as its exported program, not its source text
    assert set(onnx) == {"stage", "version", "recipe", "fingerprint", "tools", "upstream"}
    program = read_stamp(stages["export"].folder)
    assert program is not None and onnx["upstream"] == {"export": {"program": program.files["program.json"]["sha256"]}}
    assert (onnx["stage"], onnx["version"]) == ("onnx", registry.get("onnx").version)
    assert onnx["recipe"] == registry.get("onnx").fields(stages["onnx"].recipe)
    assert onnx["recipe"]["options"] == stages["onnx"].recipe.stages["onnx"]
    assert onnx["fingerprint"] == {}  # portable: the host does not enter its key
    assert onnx["tools"] == {"torch": "2.13.0+cpu", "onnx": "1.17.0", "onnxscript": "0.2.0"}
    assert len(stage_key(onnx)) == 64
    aoti = inputs_of(root, stages, "aoti", fp)
    assert aoti["fingerprint"] == {"arch": "x86_64", "isa": "avx2", "flags": ["avx", "avx2", "fma"], "gxx": "12.2.0",
                                   "libc": "glibc 2.36"}
    assert aoti["tools"] == {"torch": "2.13.0+cpu"}
    with pytest.raises(registry.UpstreamMissing, match="reference"):
        inputs_of(root, stages, "verify", fp)  # its key reads its upstream stamps
    stamp_buildable(root, {n: p for n, p in stages.items() if n != "verify"}, fp)
    verify = inputs_of(root, stages, "verify", fp)
    assert "sources" not in verify and set(verify["upstream"]) == {"reference", "onnx", "aoti"}
    onnx_stamp = read_stamp(stages["onnx"].folder)
    assert onnx_stamp is not None and verify["upstream"]["onnx"] == {"key": onnx_stamp.key, "files": onnx_stamp.digests()}


@pytest.mark.parametrize("change,changes", [
    ({"bench": {"enabled": True, "iterations": 7}}, set()),
    ({"verify": {"rtol": 0.002, "atol": 1e-4}}, {"verify"}),
    ({"stages.onnx.opset": 17}, {"onnx"}),
    ({"stages.aoti.max_autotune": True}, {"aoti"}),
    ({"stages.reference.seed": 3}, {"reference"}),
    ({"stages.onnx.external_data": True}, {"onnx"}),
    ({"dims.batch.max": 128}, {"export", "onnx", "reference", "aoti"}),
    ({"model.kwargs": {"seed": 1}}, {"export", "onnx", "reference", "aoti"}),
    ({"description": "no stage reads this"}, set()),
])
def test_a_key_changes_with_what_its_stage_reads_and_nothing_else(root: Path, change: dict[str, Any],
                                                                  changes: set[str]) -> None:
    before = planned(root, recipe(root))
    stamp_buildable(root, {n: p for n, p in before.items() if n != "verify"})
    keys = {n: key_of(root, before, n) for n in before}
    after = planned(root, recipe(root, change))
    assert {n for n in before if key_of(root, after, n) != keys[n]} == changes


def test_how_a_reduced_precision_variant_computes_is_in_its_key_alone(root: Path) -> None:
    """stages.aoti_variants.mode (autocast or the whole model cast) rebuilds the bf16/fp16 packages, not the fp32 one."""
    fp = fingerprint()
    fp["cpu"]["flags"] = [*fp["cpu"]["flags"], "avx512_bf16", "amx_bf16", "avx512_fp16"]
    with_variants = {"backends": ["onnxruntime", "aoti"], "variants": {"aoti": ["bf16", "fp16"]}}
    before = planned(root, recipe(root, with_variants), fp)
    assert before["aoti_bf16"].not_buildable is None
    stamp_buildable(root, {n: p for n, p in before.items() if n != "verify"}, fp)
    keys = {n: key_of(root, before, n, fp) for n in before}
    after = planned(root, recipe(root, {**with_variants, "stages.aoti_variants.mode": "cast"}), fp)
    assert {n for n in before if key_of(root, after, n, fp) != keys[n]} == {"aoti_bf16", "aoti_fp16"}
    assert inputs_of(root, before, "aoti_bf16", fp)["recipe"]["mode"] == "autocast"


def test_portable_keys_do_not_read_the_host_and_device_keys_do(root: Path) -> None:
    avx2, avx512 = fingerprint(isa="avx2"), fingerprint(isa="avx512")
    a, b = planned(root, recipe(root), avx2), planned(root, recipe(root), avx512)
    assert key_of(root, a, "onnx", avx2) == key_of(root, b, "onnx", avx512)
    assert key_of(root, a, "reference", avx2) == key_of(root, b, "reference", avx512)
    assert key_of(root, a, "aoti", avx2) != key_of(root, b, "aoti", avx512)
    assert b["aoti"].folder.parent.name == "cpu-x86_64-avx512"


def test_a_source_edit_re_exports_and_the_model_stages_follow_the_exported_program(root: Path) -> None:
    """Early cut-off: a source edit makes the export stage stale; the model stages read its program's digest, so
    they rebuild only when the re-export gives another program (a comment edit gives the same one)."""
    stages = planned(root, recipe(root))
    stamp_buildable(root, stages)
    keys = {n: key_of(root, stages, n) for n in ("onnx", "reference", "aoti")}
    (root / "examples" / "models.py").write_text("# a comment\n" + (root / "examples" / "models.py").read_text())
    assert why_stale(root, stages, "export") == "key changed: sources (examples/models.py)"
    assert {n: why_stale(root, stages, n) for n in keys} == {n: None for n in keys}
    program = (stages["export"].folder / "program.json").read_text()
    stamp_as_built(root, stages, "export", contents={"program.json": program})  # the same program
    assert {n: key_of(root, stages, n) for n in keys} == keys
    assert {n: why_stale(root, stages, n) for n in keys} == {n: None for n in keys}
    stamp_as_built(root, stages, "export", contents={"program.json": '{"graph": "another"}'})  # a real change
    assert {n: why_stale(root, stages, n) for n in keys} == {n: "key changed: upstream (export)" for n in keys}
    assert why_stale(root, stages, "verify") is None  # stale once its upstream rebuilds (status: "upstream ... will be")


def test_a_weights_edit_changes_the_model_stages_keys_only(root: Path) -> None:
    """(Was end to end in test_staleness: a weights change reruns the model stages, and verify because it reads them.)"""
    (root / "weights").mkdir()
    (root / "weights" / "mlp.pt").write_bytes(b"state dict, seed 5")
    stages = planned(root, recipe(root, {"model.weights": "weights/mlp.pt"}))
    stamp_buildable(root, stages)
    (root / "weights" / "mlp.pt").write_bytes(b"state dict, seed 6")
    assert {n: why_stale(root, stages, n) for n in stages} == {  # the rest: once the exported program changes
        "export": "key changed: weights (weights/mlp.pt)", "onnx": None, "reference": None, "aoti": None, "verify": None}


def test_touching_files_or_losing_the_bookkeeping_rebuilds_nothing(root: Path) -> None:
    """mtimes never decide: touched sources, weights and outputs, a deleted doit DB or digest cache change no key.
    (Was end to end in test_staleness.)"""
    import os
    import time

    stages = planned(root, recipe(root))
    stamp_buildable(root, stages)
    digests = DigestCache(root / "artifacts" / ".infbuild" / "digests.json")
    before = {n: staleness(p, fingerprint(), root, digests, stages) for n, p in stages.items()}
    digests.save()
    assert before == {n: None for n in stages}
    later = time.time() + 100
    for path in root.rglob("*"):
        if path.is_file():
            os.utime(path, (later, later))
    (root / "artifacts" / ".infbuild" / "digests.json").unlink()
    (root / "artifacts" / ".doit.db").write_bytes(b"not a database")
    fresh = DigestCache(root / "artifacts" / ".infbuild" / "digests.json")
    assert {n: staleness(p, fingerprint(), root, fresh, stages) for n, p in stages.items()} == before


def test_a_truncated_or_deleted_output_is_stale_with_the_file_named(root: Path) -> None:
    """(Was end to end in test_staleness; the rebuild itself is pinned there for an AOTI package.)"""
    stages = planned(root, recipe(root))
    stamp_buildable(root, stages)
    onnx = stages["onnx"].folder / "model.onnx"
    onnx.write_bytes(onnx.read_bytes()[:3])
    assert (why_stale(root, stages, "onnx") or "").startswith("file model.onnx changed size")
    onnx.unlink()
    assert why_stale(root, stages, "onnx") == "file model.onnx is missing"


# --- staleness ----------------------------------------------------------------------------------------------

def test_staleness_says_why(root: Path) -> None:
    stages = planned(root, recipe(root))
    assert {n: why_stale(root, stages, n) for n in stages} == {n: "never built" for n in stages}
    stamp_buildable(root, stages)
    assert {n: why_stale(root, stages, n) for n in stages} == {n: None for n in stages}
    remove_stage(stages["reference"].folder)
    assert why_stale(root, stages, "reference") == "never built"
    assert why_stale(root, stages, "verify") == "upstream stage reference is not built"
    stages["reference"].folder.mkdir(parents=True)
    assert why_stale(root, stages, "reference") == "no valid stamp (unfinished or damaged build)"
    stamp_as_built(root, stages, "reference")
    assert why_stale(root, stages, "verify") is None
    edited = planned(root, recipe(root, {"verify": {"rtol": 0.002, "atol": 1e-4}}))
    assert {n: why_stale(root, edited, n) for n in edited} == {
        "export": None, "onnx": None, "reference": None, "aoti": None, "verify": "key changed: recipe (verify)"}
    (stages["aoti"].folder / "model.pt2").write_text("truncated")
    assert (why_stale(root, stages, "aoti") or "").startswith("file model.pt2 changed size")


def test_a_failed_verification_is_never_up_to_date(root: Path) -> None:
    stages = planned(root, recipe(root))
    stamp_buildable(root, stages)
    p = stages["verify"]
    inputs = inputs_of(root, stages, "verify")
    staging = new_staging(p.folder)
    for output in p.stage.outputs.required:
        (staging / output).write_text("{}")
    commit(staging, p.folder, Stamp(stage_key(inputs), "verify", "mlp", target=CPU, files={}, fingerprint=fingerprint(),
                                    inputs=inputs, passed=False), p.stage.outputs)
    assert why_stale(root, stages, "verify") == "last verification failed"


def test_bench_key_reads_which_artifacts_passed_not_the_tolerances(root: Path) -> None:
    bench = {"bench": {"shapes": ["opt"], "iterations": 5}}
    stages = planned(root, recipe(root, bench))
    stamp_buildable(root, stages)
    assert why_stale(root, stages, "bench") is None
    looser = planned(root, recipe(root, {**bench, "verify": {"rtol": 0.002, "atol": 1e-4}}))
    assert why_stale(root, looser, "verify") == "key changed: recipe (verify)"
    stamp_as_built(root, looser, "verify")  # the same artifacts pass: nothing new to measure
    assert why_stale(root, looser, "bench") is None
    stamp_as_built(root, looser, "verify", verdicts={"aoti": False})
    assert why_stale(root, looser, "bench") == "key changed: upstream (verify)"
    stamp_as_built(root, looser, "verify")
    more = planned(root, recipe(root, {"bench": {"shapes": ["opt"], "iterations": 7}}))
    assert why_stale(root, more, "bench") == "key changed: recipe (bench)"


def test_exported_stack_traces_name_site_packages_wherever_the_environment_lives() -> None:
    """A .venv inside the project (the README's set-up) gives the same ONNX bytes as one elsewhere."""
    from infbuild.stages.onnx.run import portable_path

    root = Path("/work/proj")
    inside = portable_path("/work/proj/.venv/lib/python3.11/site-packages/torch/nn/modules/linear.py", root)
    elsewhere = portable_path("/opt/venv/lib/python3.11/site-packages/torch/nn/modules/linear.py", root)
    assert inside == elsewhere == "<site-packages>/torch/nn/modules/linear.py"
    assert portable_path("/work/proj/examples/models.py", root) == "examples/models.py"


# --- the registry -------------------------------------------------------------------------------------------

def test_every_stage_declaration_is_consistent() -> None:
    stages = registry.stages()
    names = [s.name for s in stages]
    assert len(set(names)) == len(names)
    assert {s.scope for s in stages} <= {"portable", "device", "cuda"}
    for index, s in enumerate(stages):
        package = getattr(s, "module", "") or s.name  # a backend's variants share its stage's package
        assert (REPO / "infbuild" / "stages" / package / "run.py").is_file()  # the worker code it runs
        if package == s.name:
            assert importlib.import_module(f"infbuild.stages.{s.name}").STAGE is s  # declared in its own package
        assert registry.get(s.name) is s
        assert set(s.needs) <= set(names[:index]), f"{s.name} needs a stage registered after it"
        assert isinstance(s.version, int) and s.version >= 1
        assert s.outputs.required and not set(s.outputs.required) & UNSTAMPED
        assert all(unsafe_name(n) is None for n in s.outputs.required)
        assert set(s.tools) <= set(TOOLS) | {"trtexec"}
        assert s.doc
    artifacts = [getattr(s, "artifact", s.backend) for s in stages if s.backend]
    assert len(set(artifacts)) == len(artifacts)  # one stage per artifact
    backends = registry.backends()
    assert all(registry.for_backend(b) is s and s.backend == b for b, s in backends.items())
    schema = json.loads(SCHEMA_PATH.read_text())
    assert set(backends) == set(schema["properties"]["backends"]["items"]["enum"]) >= set(BACKENDS)
    judges = [s for s in stages if s.judges]
    assert judges == [registry.judge()]
    assert not any(s.backend for s in judges)


def test_the_registry_refuses_a_second_declaration_and_a_need_declared_later() -> None:
    onnx = registry.get("onnx")
    with pytest.raises(ValueError, match="registered twice"):
        registry.register(Stage("onnx", 1, "portable", "again", onnx.outputs))
    with pytest.raises(ValueError, match="registered before it"):
        registry.register(Stage("later", 1, "portable", "needs what is unknown", onnx.outputs, needs=("nowhere",)))
    assert [s.name for s in registry.stages()].count("onnx") == 1 and "later" not in {s.name for s in registry.stages()}


RULE_FILES = ("plan.py", "keys.py", "manifest.py", "runtime", "engine")


def stage_name_comparisons(source: str, where: str, names: set[str]) -> list[str]:
    """Comparisons (==, !=, in, match/case) of a string constant that is one of ``names``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        operands: list[ast.expr] = []
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
        elif isinstance(node, ast.MatchValue):
            operands = [node.value]
        for operand in operands:
            items = operand.elts if isinstance(operand, (ast.Tuple, ast.List, ast.Set)) else [operand]
            if any(isinstance(i, ast.Constant) and i.value in names for i in items):
                found.append(f"{where}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_no_stage_name_is_compared_outside_the_stage_declarations() -> None:
    """The design rule: planning, keys, the manifest, the runtime and the engine ask the Stage objects (and the
    registry) what a stage does; none of them branches on a stage's name (`stage == "verify"`, `in ("onnx", ...)`)."""
    names = {s.name for s in registry.stages()}
    sample = 'if p.stage.name == "verify":\n    pass\nx = name in ("bench", "x")\nmatch name:\n    case "onnx":\n        pass\n'
    assert len(stage_name_comparisons(sample, "sample", names)) == 3  # what the scan catches
    package = REPO / "infbuild"
    files = [f for entry in RULE_FILES for f in ([package / entry] if entry.endswith(".py")
                                                 else sorted((package / entry).rglob("*.py")))]
    assert len(files) > len(RULE_FILES)
    found = [c for f in files for c in stage_name_comparisons(f.read_text(encoding="utf-8"),
                                                              str(f.relative_to(REPO)), names)]
    assert found == [], "stage names compared outside infbuild/stages/:\n" + "\n".join(found)


def test_planning_and_keys_never_import_torch() -> None:
    code = ("import sys\n"
            "import infbuild.plan, infbuild.keys, infbuild.stages, infbuild.engine\n"
            "from infbuild import stage\n"
            "stage.stages()\n"
            "print(sorted(m for m in ('torch', 'onnx', 'onnxruntime', 'numpy') if m in sys.modules))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"

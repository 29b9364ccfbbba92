"""TensorRT stages against STAND-INS for trtexec and nvidia-smi (tests/standins/; no GPU or TensorRT here):
targets, keys, the timing cache, TensorRT 10 vs 11 flags, not-buildable and strict mode, failures, locking."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from helpers import A10G, H100, STANDINS, GpuHost, Project, build, tasks, trt_recipe, write_trtexec

from infbuild.errors import FieldError
from infbuild.recipe import Recipe
from infbuild.trtexec import engine_argv, parse_version, shape_flags, timing_cache_argv

pytestmark = pytest.mark.slow  # real builds (see the README's test tiers)

TRT = {"trt_timing_cache", "trt_engine"}


def recipe_with(tensorrt: dict) -> Recipe:
    from helpers import STAGE_DEFAULTS

    from infbuild.stages.bench import DEFAULTS as BENCH_DEFAULTS

    base = {"name": "m", "file": "recipes/m.yaml", "lines": {"stages.tensorrt.precision": 14},
            "model": {"factory": "examples.models:mlp", "kwargs": {}, "weights": None, "dtype": "float32", "sources": []},
            "inputs": {"x": {"shape": ["batch", 10], "dtype": "float32", "low": -1, "high": 1},
                       "mask": {"shape": ["batch", "seq"], "dtype": "bool", "low": 0, "high": 2}},
            "dims": {"batch": {"min": 1, "opt": 8, "max": 32}, "seq": {"min": 4, "opt": 16, "max": 64}},
            "outputs": ["y"], "backends": ["tensorrt"], "verify": {"rtol": 1e-3, "atol": 1e-4}, "bench": dict(BENCH_DEFAULTS),
            "stages": {**STAGE_DEFAULTS, "tensorrt": {**STAGE_DEFAULTS["tensorrt"], **tensorrt}}}
    return Recipe.from_dict(base)


# --- argv, from the recipe ------------------------------------------------------------------------------

def test_shapes_come_from_the_named_dims() -> None:
    assert shape_flags(recipe_with({})) == ["--minShapes=x:1x10,mask:1x4", "--optShapes=x:8x10,mask:8x16",
                                            "--maxShapes=x:32x10,mask:32x64"]


def test_engine_argv_has_exports_cache_and_options() -> None:
    recipe = recipe_with({"builder_optimization_level": 5, "workspace_mib": 2048, "hardware_compatibility_level": "ampere+",
                          "version_compatible": True, "sparsity": "enable", "extra_args": ["--maxAuxStreams=2"]})
    argv = engine_argv(Path("/t/trtexec"), recipe, "10.3.0", onnx=Path("/a/model.onnx"), cache=Path("/c/timing.cache"), out=Path("/o"))
    assert argv[:4] == ["/t/trtexec", "--onnx=/a/model.onnx", "--saveEngine=/o/model.engine",
                        "--timingCacheFile=/c/timing.cache"]
    for flag in ("--builderOptimizationLevel=5", "--memPoolSize=workspace:2048M", "--hardwareCompatibilityLevel=ampere+",
                 "--versionCompatible", "--sparsity=enable", "--maxAuxStreams=2", "--separateProfileRun",
                 "--profilingVerbosity=detailed", "--exportLayerInfo=/o/layers.json", "--exportProfile=/o/profile.json",
                 "--exportTimes=/o/times.json"):
        assert flag in argv
    cache_argv = timing_cache_argv(Path("/t/trtexec"), recipe, "10.3.0", onnx=Path("/a/model.onnx"), cache=Path("/o/timing.cache"))
    assert "--skipInference" in cache_argv and not any(a.startswith("--saveEngine") for a in cache_argv)


def test_precision_flags_on_trt10_and_a_clear_error_on_trt11() -> None:
    recipe = recipe_with({"precision": ["fp16", "int8"], "strongly_typed": True})
    argv = engine_argv(Path("trtexec"), recipe, "10.3.0", onnx=Path("m.onnx"), cache=Path("c"), out=Path("o"))
    assert {"--fp16", "--int8", "--stronglyTyped"} <= set(argv)
    with pytest.raises(FieldError) as info:
        engine_argv(Path("trtexec"), recipe, "11.0.0", onnx=Path("m.onnx"), cache=Path("c"), out=Path("o"))
    assert info.value.field == "stages.tensorrt.precision"
    assert "model.dtype: float16 or bfloat16" in info.value.message
    argv11 = engine_argv(Path("trtexec"), recipe_with({"strongly_typed": True}), "11.0.0", onnx=Path("m.onnx"), cache=Path("c"),
                         out=Path("o"))
    assert "--stronglyTyped" not in argv11  # always on in 11, the flag is a deprecated no-op


def test_version_banner_parsing() -> None:
    assert parse_version("&&&& RUNNING TensorRT.trtexec [TensorRT v100300] # trtexec") == "10.3.0"
    assert parse_version("&&&& RUNNING TensorRT.trtexec [TensorRT v110100] # trtexec") == "11.1.0"
    assert parse_version("[TensorRT v8601]") == "8.6.1"


# --- builds with the stand-ins ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> GpuHost:
    return GpuHost(tmp_path_factory.mktemp("gpuhost"))


@pytest.fixture(scope="module")
def proj(tmp_path_factory: pytest.TempPathFactory, host: GpuHost) -> Project:
    p = Project(tmp_path_factory.mktemp("trt") / "proj")
    p.add_recipe("mlp.yaml", trt_recipe())
    result = p.doit("build", env=host.env(p))
    assert result.returncode == 0, result.output[-3000:]
    assert result.stages_ran() == tasks("mlp", {"export", "onnx", "reference", "verify"} | TRT)
    return p


def test_engine_and_exports_land_in_the_gpu_target(proj: Project, host: GpuHost) -> None:
    engine = proj.stage("mlp", H100, "trt_engine")
    stamp = json.loads((engine / "stamp.json").read_text())
    assert {"model.engine", "layers.json", "profile.json", "times.json", "build.log", "engine.json"} <= set(stamp["files"])
    assert stamp["inputs"]["tools"]["trtexec"] == "10.3.0"
    assert stamp["inputs"]["fingerprint"]["compute_capability"] == "9.0"
    cache_run, engine_run = host.runs()[-2:]
    assert "--skipInference" in cache_run["argv"]
    assert "--minShapes=x:1x10" in engine_run["argv"] and "--maxShapes=x:64x10" in engine_run["argv"]
    # the engine build loads a copy of the target's timing cache; the cache stage's file is not rewritten
    cache_stamp = json.loads((proj.stage("mlp", H100, "trt_timing_cache") / "stamp.json").read_text())
    from infbuild.hashing import sha256_file

    assert sha256_file(proj.stage("mlp", H100, "trt_timing_cache") / "timing.cache") == cache_stamp["files"]["timing.cache"]["sha256"]
    assert "Loaded" in (engine / "build.log").read_text()
    manifest = json.loads((proj.artifacts / "manifest.json").read_text())
    verify = manifest["recipes"]["mlp"]["targets"][H100]["verify"]
    assert verify["onnxruntime"]["passed"] is True
    assert verify["tensorrt"] == {"passed": None, "status": "not verifiable here: the tensorrt Python package is not installed"}
    assert manifest["recipes"]["mlp"]["targets"][H100]["preferred"] == "onnxruntime"


def test_second_build_runs_nothing(proj: Project, host: GpuHost) -> None:
    assert build(proj, host.env(proj)).stages_ran() == set()


def test_weights_only_change_keeps_the_timing_cache(proj: Project, host: GpuHost) -> None:
    proj.add_recipe("mlp.yaml", trt_recipe(seed=3))
    ran = build(proj, host.env(proj)).stages_ran()
    assert ran == tasks("mlp", {"export", "onnx", "reference", "trt_engine", "verify"})


def test_trt_option_change_rebuilds_cache_and_engine(proj: Project, host: GpuHost) -> None:
    proj.add_recipe("mlp.yaml", trt_recipe(seed=3, tensorrt="{builder_optimization_level: 4}"))
    assert build(proj, host.env(proj)).stages_ran() == tasks("mlp", {"verify"} | TRT)
    assert "--builderOptimizationLevel=4" in host.runs()[-1]["argv"]


def test_tensorrt_upgrade_rebuilds_engines(proj: Project, host: GpuHost) -> None:
    write_trtexec(host.bin, "10.4.0")
    assert build(proj, host.env(proj)).stages_ran() == tasks("mlp", {"verify"} | TRT)
    assert host.runs()[-1]["trt"] == "10.4.0"


def test_other_gpu_builds_beside_and_coming_back_rebuilds_nothing(proj: Project, host: GpuHost) -> None:
    ran = build(proj, host.env(proj, CUDA_VISIBLE_DEVICES="1")).stages_ran()
    assert ran == tasks("mlp", {"verify"} | TRT)
    assert (proj.stage("mlp", A10G, "trt_engine") / "model.engine").is_file()
    assert (proj.stage("mlp", H100, "trt_engine") / "model.engine").is_file()
    assert build(proj, host.env(proj)).stages_ran() == set()
    assert build(proj, host.env(proj, CUDA_VISIBLE_DEVICES="1")).stages_ran() == set()


def test_failed_trtexec_fails_with_log_tail_and_keeps_the_full_log(proj: Project, host: GpuHost) -> None:
    proj.add_recipe("mlp.yaml", trt_recipe(seed=3, tensorrt="{builder_optimization_level: 2}"))
    result = proj.doit("build", env=host.env(proj, FAKE_TRTEXEC_FAIL="1"))
    assert result.returncode != 0
    assert "trt_timing_cache:mlp: trtexec failed (exit 1); last lines:" in result.output
    assert "Failed to parse onnx file" in result.output
    failed_log = proj.artifacts / "mlp" / H100 / "trt_timing_cache.failed.log"
    assert "While parsing node number 3" in failed_log.read_text()
    stamp = json.loads((proj.stage("mlp", H100, "trt_timing_cache") / "stamp.json").read_text())
    assert stamp["inputs"]["recipe"]["options"]["builder_optimization_level"] == 4  # the old one, not replaced
    assert not list((proj.artifacts / "mlp" / H100).glob(".trt_*"))
    assert build(proj, host.env(proj)).stages_ran() == tasks("mlp", {"verify"} | TRT)
    assert not failed_log.exists()


def test_trt11_rejects_precision_flags_with_a_located_error(proj: Project, host: GpuHost) -> None:
    write_trtexec(host.bin, "11.0.0")
    proj.add_recipe("mlp.yaml", trt_recipe(seed=3, tensorrt="{precision: [fp16]}"))
    result = proj.doit("build", env=host.env(proj))
    assert result.returncode != 0
    assert ("recipes/mlp.yaml:14: stages.tensorrt.precision: TensorRT 11.0.0 removed the builder precision flags "
            "(--fp16)") in result.output
    write_trtexec(host.bin, "10.4.0")
    proj.add_recipe("mlp.yaml", trt_recipe(seed=3, tensorrt="{precision: [fp16]}"))
    build(proj, host.env(proj))
    assert "--fp16" in host.runs()[-1]["argv"]


def test_shell_metacharacters_reach_trtexec_literally(proj: Project, host: GpuHost, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    proj.add_recipe("mlp.yaml", trt_recipe(seed=3, tensorrt=f"{{extra_args: ['--tempdir=$(touch {marker}); rm -rf /']}}"))
    build(proj, host.env(proj))
    assert f"--tempdir=$(touch {marker}); rm -rf /" in host.runs()[-1]["argv"]
    assert not marker.exists()


def test_gpu_stages_are_serialized_under_parallel_builds(tmp_path: Path, host: GpuHost) -> None:
    p = Project(tmp_path / "proj")
    for i in range(2):
        p.add_recipe(f"m{i}.yaml", trt_recipe(name=f"m{i}", seed=i))
    log = tmp_path / "runs.jsonl"
    result = p.doit("-n", "2", "build", env={**host.env(p, FAKE_TRTEXEC_SLEEP="1.0"), "FAKE_TRTEXEC_LOG": str(log)})
    assert result.returncode == 0, result.output[-3000:]
    runs = sorted((json.loads(line) for line in log.read_text().splitlines()), key=lambda r: r["start"])
    assert len(runs) == 4
    for before, after in zip(runs, runs[1:]):
        assert after["start"] >= before["end"], "two trtexec runs overlapped"


def test_not_buildable_without_gpu_or_trtexec_unless_required(tmp_path: Path, host: GpuHost) -> None:
    p = Project(tmp_path / "proj")
    p.add_recipe("mlp.yaml", trt_recipe())
    no_gpu = p.env(PATH=f"{host.bin}:{os.environ['PATH']}", XDG_CACHE_HOME=str(host.root / "cache"))
    listing = p.run(sys.executable, "-m", "doit", "list", "--all", env=no_gpu).stdout
    assert "trt_engine:mlp" in listing and "(not buildable here: no CUDA GPU" in listing
    result = p.doit("build", env=no_gpu)
    assert result.returncode == 0 and not (TRT & {t.split(":")[0] for t in result.ran})
    status = p.infbuild("status", env=no_gpu)
    assert status.returncode == 0 and "trt_engine:mlp" in status.stdout and "not buildable here: no CUDA GPU" in status.stdout
    target = json.loads((p.artifacts / "manifest.json").read_text())["recipes"]["mlp"]["targets"]
    assert next(iter(t["verify"] for n, t in target.items() if n.startswith("cpu-")))["tensorrt"]["status"] == "not buildable here"

    no_trtexec = p.env(PATH=f"{STANDINS}:/usr/bin:/bin", XDG_CACHE_HOME=str(host.root / "cache"))
    status = p.infbuild("status", env=no_trtexec)
    assert "trt_engine:mlp" in status.stdout and "not buildable here: trtexec not found" in status.stdout

    strict = p.doit("build", "require=trt_engine", env=no_gpu)
    assert strict.returncode != 0 and "trt_timing_cache:mlp: not buildable here: no CUDA GPU" in strict.output
    p.add_recipe("mlp.yaml", trt_recipe(tensorrt="{required: true}"))
    strict = p.doit("build", env=no_gpu)
    assert strict.returncode != 0 and "not buildable here: no CUDA GPU" in strict.output


def test_swapping_the_tensorrt_libraries_trtexec_loads_is_seen(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Same trtexec binary, another libnvinfer found through LD_LIBRARY_PATH (a tar install beside a deb one):
    the cached version is keyed on the libraries the loader resolves, so the new version is read. A real ELF
    program and real shared libraries, built here with gcc, stand in for trtexec and libnvinfer."""
    import shutil as _shutil
    import subprocess as _subprocess

    from infbuild import trtexec

    if _shutil.which("gcc") is None or _shutil.which("ldd") is None:
        pytest.skip("needs gcc and ldd")
    for version_code in ("100300", "100500"):
        lib_dir = tmp_path / f"trt-{version_code}"
        lib_dir.mkdir()
        (lib_dir / "v.c").write_text(f"int trt_version(void) {{ return {version_code}; }}\n")
        _subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(lib_dir / "libnvinfer.so.10"), str(lib_dir / "v.c")],
                        check=True)
    main = tmp_path / "main.c"
    main.write_text('#include <stdio.h>\nint trt_version(void);\n'
                    'int main(void) { printf("&&&& RUNNING TensorRT.trtexec [TensorRT v%d]\\n", trt_version()); return 0; }\n')
    binary = tmp_path / "trtexec"
    _subprocess.run(["gcc", "-o", str(binary), str(main), f"-L{tmp_path / 'trt-100300'}", "-l:libnvinfer.so.10"],
                    check=True)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    found = {}
    for version_code in ("100300", "100500", "100300"):
        monkeypatch.setenv("LD_LIBRARY_PATH", str(tmp_path / f"trt-{version_code}"))
        trtexec.version.cache_clear()
        found.setdefault(version_code, []).append(trtexec.version(binary))
    assert found == {"100300": ["10.3.0", "10.3.0"], "100500": ["10.5.0"]}

"""Bench results and preferred selection; the runtime: loading every backend built here, refusing the wrong
target, digest mismatches, and input validation."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import DoitRun, Project

from infbuild.errors import ArtifactError, InputError
from infbuild.preferred import choose_preferred

pytestmark = pytest.mark.slow  # real builds (see the README's test tiers)


@pytest.fixture
def host_env(monkeypatch: pytest.MonkeyPatch):
    """Simulate another host in this process (the fingerprint is cached per process)."""
    from infbuild.fingerprint import host_fingerprint

    def simulate(override: dict | None) -> None:
        if override is None:
            monkeypatch.delenv("INFBUILD_FINGERPRINT", raising=False)
        else:
            monkeypatch.setenv("INFBUILD_FINGERPRINT", json.dumps(override))
        host_fingerprint.cache_clear()

    yield simulate
    monkeypatch.delenv("INFBUILD_FINGERPRINT", raising=False)
    host_fingerprint.cache_clear()


@pytest.fixture
def artifacts_copy(examples_built: tuple[Project, DoitRun], tmp_path: Path) -> Path:
    proj, _ = examples_built
    dest = tmp_path / "artifacts"
    shutil.copytree(proj.artifacts, dest, ignore=shutil.ignore_patterns(".doit.db*", ".infbuild"))
    return dest


def reference(proj: Project, recipe: str, label: str) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    data = np.load(proj.stage(recipe, "portable", "reference") / f"{label}.npz")
    return ({k[6:]: data[k] for k in data.files if k.startswith("input.")},
            {k[7:]: data[k] for k in data.files if k.startswith("output.")})


def test_bench_report_table_and_plot(examples_built: tuple[Project, DoitRun], cpu_target: str) -> None:
    proj, _ = examples_built
    folder = proj.stage("convnet", cpu_target, "bench")
    report = json.loads((folder / "report.json").read_text())
    assert report["threads"] == 1 and report["rounds"] == 3 and report["iterations"] == 50
    assert set(report["results"]) == {"onnxruntime", "aoti", "eager", "torch_compile"}
    for per_shape in report["results"].values():
        assert set(per_shape) == {"min", "opt", "max"}
        for r in per_shape.values():
            assert 0 < r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"] and r["throughput"] > 0
            assert r["p50_ci_ms"][0] <= r["p50_ms"] <= r["p50_ci_ms"][1]
            # up to 50 timed calls x 3 rounds: fewer once the p50 is stable or past max_seconds, never under 6
            assert 6 <= r["samples"] <= 150, r
    assert report["runs_on"] == {"onnxruntime": "CPUExecutionProvider", "aoti": "cpu", "eager": "cpu", "torch_compile": "cpu"}
    table = (folder / "report.md").read_text()
    assert "| backend | runs on | verified | error (rel L2) | set-up s | shape | p50 ms | p50 95 % interval |" in table
    assert f"Preferred at `opt`: **{report['preferred']}** — {report['preferred_reason']}." in table
    assert re.search(r"\| onnxruntime \| CPUExecutionProvider \| yes \| [\d.e+-]+ \| [\d.]+ \| opt \|", table)
    assert set(report["setup_s"]) == set(report["results"]) and report["setup_s"]["torch_compile"] > 0
    assert (folder / "latency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_preferred_is_never_a_failed_or_unverified_artifact() -> None:
    bench = {"primary_shape": "opt", "results": {"aoti": {"opt": {"p50_ms": 0.1}}, "onnxruntime": {"opt": {"p50_ms": 0.5}},
                                                 "tensorrt": {"opt": {"p50_ms": 0.01}}, "eager": {"opt": {"p50_ms": 0.001}}}}
    verify = {"aoti": {"passed": False}, "onnxruntime": {"passed": True}, "tensorrt": {"passed": None}}
    assert choose_preferred(verify, bench, ["onnxruntime", "aoti", "tensorrt"]) == "onnxruntime"
    verify["aoti"]["passed"] = True
    assert choose_preferred(verify, bench, ["onnxruntime", "aoti", "tensorrt"]) == "aoti"
    assert choose_preferred({"aoti": {"passed": False}}, bench, ["aoti"]) is None
    assert choose_preferred({"aoti": {"passed": True}, "onnxruntime": {"passed": True}}, None, ["onnxruntime", "aoti"]) == "onnxruntime"


def test_bench_is_not_rerun_by_a_noop_build_but_force_reruns_it(examples_built: tuple[Project, DoitRun]) -> None:
    proj, _ = examples_built
    assert "bench:mlp" in proj.doit("build").uptodate
    done = proj.infbuild("bench", "--force", "mlp")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert ".  bench:mlp" in done.stdout and ".  bench:convnet" not in done.stdout
    assert re.search(r"\| onnxruntime \| CPUExecutionProvider \| yes \| [\d.e+-]+ \| [\d.]+ \| opt \|", done.stdout)


@pytest.mark.parametrize("backend", ["onnxruntime", "aoti"])
def test_runtime_loads_every_backend_built_here(examples_built: tuple[Project, DoitRun], backend: str) -> None:
    from infbuild.runtime import load

    proj, _ = examples_built
    for recipe in ("mlp", "convnet", "seqblock"):
        model = load(proj.artifacts, recipe, backend=backend)
        inputs, expected = reference(proj, recipe, "max")
        outputs = model(**inputs)
        for name, value in expected.items():
            np.testing.assert_allclose(outputs[name], value, rtol=1e-3, atol=1e-4)


def test_runtime_defaults_to_preferred_and_accepts_torch_tensors(examples_built: tuple[Project, DoitRun]) -> None:
    import torch

    from infbuild.runtime import load

    proj, _ = examples_built
    manifest = json.loads((proj.artifacts / "manifest.json").read_text())
    model = load(proj.artifacts / "manifest.json", "seqblock")
    assert model.backend == manifest["recipes"]["seqblock"]["targets"][model.target]["preferred"]
    assert model(x=torch.randn(1, 50, 64))["latents"].shape == (1, 50, 64)


def test_runtime_refuses_a_tampered_target_fingerprint(artifacts_copy: Path, cpu_target: str) -> None:
    from infbuild.runtime import load

    manifest = json.loads((artifacts_copy / "manifest.json").read_text())
    other = "avx2" if not cpu_target.endswith("avx2") else "avx512"
    manifest["recipes"]["mlp"]["targets"][cpu_target]["fingerprint"]["cpu"]["isa"] = other
    (artifacts_copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError) as info:
        load(artifacts_copy, "mlp")
    message = str(info.value)
    assert f"refusing artifacts built for {cpu_target}" in message
    assert f"the manifest's fingerprint for it says cpu-x86_64-{other}" in message and "doit build" in message


def test_runtime_refuses_another_host_target_unless_overridden(examples_built: tuple[Project, DoitRun], host_env,
                                                               cpu_target: str) -> None:
    from infbuild.runtime import load

    proj, _ = examples_built
    other = "avx2" if not cpu_target.endswith("avx2") else "avx512"
    host_env({"cpu": {"isa": other}})
    with pytest.raises(ArtifactError) as info:
        load(proj.artifacts, "mlp")
    assert f"no artifacts for this host (cpu-x86_64-{other}" in str(info.value)
    assert f"built for: {cpu_target}" in str(info.value) and "doit build" in str(info.value)
    with pytest.raises(ArtifactError) as info:
        load(proj.artifacts, "mlp", target=cpu_target)
    assert f"refusing artifacts built for {cpu_target}" in str(info.value)
    assert f"this host is cpu-x86_64-{other}" in str(info.value)
    with pytest.warns(RuntimeWarning, match="MISMATCHED"):
        model = load(proj.artifacts, "mlp", target=cpu_target, allow_target_mismatch=True)
    assert model(x=np.ones((2, 10), np.float32))["y"].shape == (2, 1)


def _gpu(name: str, cap: str) -> dict:
    from infbuild.fingerprint import slug

    return {"index": "0", "uuid": f"GPU-{slug(name)}", "name": name, "compute_capability": cap, "driver": "550.54.15",
            "memory_mib": 1, "target": f"cuda-sm{cap.replace('.', '')}-{slug(name)}"}


def test_runtime_refuses_an_engine_for_another_gpu_naming_both(artifacts_copy: Path, cpu_target: str, host_env) -> None:
    """An artifact built on an H100 (sm90), loaded on an A10G (sm86) host: one message naming both GPUs."""
    from infbuild.runtime import load

    manifest = json.loads((artifacts_copy / "manifest.json").read_text())
    targets = manifest["recipes"]["mlp"]["targets"]
    h100 = _gpu("NVIDIA H100 80GB HBM3", "9.0")
    entry = targets.pop(cpu_target)
    entry["fingerprint"]["gpus"] = [h100]
    targets[h100["target"]] = entry
    (artifacts_copy / "manifest.json").write_text(json.dumps(manifest))
    host_env({"gpus": [_gpu("NVIDIA A10G", "8.6")]})
    with pytest.raises(ArtifactError) as info:
        load(artifacts_copy, "mlp")
    message = str(info.value)
    assert "no artifacts for this host (cuda-sm86-nvidia-a10g (NVIDIA A10G, sm 8.6" in message
    assert f"; {cpu_target} (" in message  # the host's CPU target is named too
    assert "built for: cuda-sm90-nvidia-h100-80gb-hbm3 (NVIDIA H100 80GB HBM3, sm 9.0" in message
    assert "doit build" in message and "\n" not in message
    with pytest.raises(ArtifactError, match="refusing artifacts built for cuda-sm90-nvidia-h100-80gb-hbm3 .*"
                                            "this host's GPU is cuda-sm86-nvidia-a10g"):
        load(artifacts_copy, "mlp", target=h100["target"])


def test_runtime_refuses_artifacts_whose_digest_differs(artifacts_copy: Path) -> None:
    from infbuild.runtime import load

    onnx_file = artifacts_copy / "mlp" / "portable" / "onnx" / "model.onnx"
    data = bytearray(onnx_file.read_bytes())
    data[-1] ^= 0xFF
    onnx_file.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="does not match its stamped sha256"):
        load(artifacts_copy, "mlp", backend="onnxruntime")


@pytest.mark.parametrize("inputs,message", [
    ({"x": np.ones((2000, 10), np.float32)}, "axis 0 (batch) is 2000, outside 1..1024"),
    ({"x": np.ones((2, 10), np.float64)}, "dtype float64, expected float32"),
    ({"x": np.ones((2, 10, 1), np.float32)}, "rank 3"),
    ({"x": np.ones((2, 11), np.float32)}, "axis 1 is 11, expected 10"),
    ({"y": np.ones((2, 10), np.float32)}, "missing x; unknown y"),
])
def test_runtime_validates_inputs(examples_built: tuple[Project, DoitRun], inputs: dict, message: str) -> None:
    from infbuild.runtime import load

    proj, _ = examples_built
    model = load(proj.artifacts, "mlp", backend="aoti")
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        model(**inputs)


def test_the_remembered_shapes_fast_path_still_refuses_bad_inputs(examples_built: tuple[Project, DoitRun]) -> None:
    """Shape checks run once per set of input shapes; every later call at those shapes is still checked for its
    names, its dtype (part of what is remembered) and NaN/inf, and a strided view is made contiguous."""
    from infbuild.runtime import load

    proj, _ = examples_built
    model = load(proj.artifacts, "mlp", backend="onnxruntime")
    good = np.linspace(-1, 1, 20, dtype=np.float32).reshape(2, 10)
    want = model(x=good)["y"]
    np.testing.assert_array_equal(model(x=good)["y"], want)  # the remembered path gives the same answer
    for poison in (np.nan, np.inf, -np.inf):
        bad = good.copy()
        bad[1, 3] = poison
        with pytest.raises(InputError, match="holds NaN or infinite values"):
            model(x=bad)
    with pytest.raises(InputError, match="dtype float64, expected float32"):
        model(x=good.astype(np.float64))
    with pytest.raises(InputError, match="dtype >f4, expected float32"):  # same shape, other byte order
        model(x=good.astype(">f4"))
    import torch

    np.testing.assert_array_equal(model(x=torch.from_numpy(good))["y"], want)  # a tensor of a remembered shape
    with pytest.raises(InputError, match="missing x; unknown y"):
        model(y=good)
    odd = type("Odd", (), {"shape": [2, 10], "dtype": np.float32})()  # array-like attributes, unhashable shape
    with pytest.raises(InputError, match="not a numeric array"):
        model(x=odd)
    lookalike = type("Lookalike", (), {"shape": (2, 10), "dtype": np.dtype(np.float32)})()  # a remembered shape
    with pytest.raises(InputError, match="not a numeric array"):
        model(x=lookalike)
    strided = np.repeat(good, 2, axis=1)[:, ::2]
    assert not strided.flags.c_contiguous
    np.testing.assert_array_equal(model(x=strided)["y"], want)
    lenient = load(proj.artifacts, "mlp", backend="onnxruntime", check_finite=False)
    lenient(x=np.full((2, 10), np.nan, np.float32))
    model.SHAPES_REMEMBERED = 2  # past the limit every new set of shapes is checked on every call
    for batch in (1, 3, 4, 5):
        model(x=np.ones((batch, 10), np.float32))
    with pytest.raises(InputError, match="outside 1..1024"):
        model(x=np.ones((2000, 10), np.float32))


def test_infbuild_run_cli(examples_built: tuple[Project, DoitRun], tmp_path: Path) -> None:
    proj, _ = examples_built
    inputs, expected = reference(proj, "mlp", "opt")
    np.save(tmp_path / "x.npy", inputs["x"])
    done = proj.infbuild("run", "mlp", "--input", f"x={tmp_path / 'x.npy'}", "--backend", "aoti",
                         "--output", str(tmp_path / "out.npz"))
    assert done.returncode == 0, done.stderr
    np.testing.assert_allclose(np.load(tmp_path / "out.npz")["y"], expected["y"], rtol=1e-4, atol=1e-5)
    np.save(tmp_path / "bad.npy", np.ones((4, 3), np.float32))
    bad = proj.infbuild("run", "mlp", "--input", f"x={tmp_path / 'bad.npy'}")
    assert bad.returncode == 1 and bad.stderr.strip() == "mlp: input x axis 1 is 3, expected 10"


def test_an_aoti_package_is_refused_by_another_torch_release(artifacts_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A serving image or an upgraded environment with another torch: refused with both versions, before loading."""
    import torch

    from infbuild.runtime import load

    built = torch.__version__
    monkeypatch.setattr(torch, "__version__", "2.99.0+cpu")
    with pytest.raises(ArtifactError, match=rf"compiled with torch {re.escape(built)}; this process has torch 2\.99\.0"):
        load(artifacts_copy, "mlp", backend="aoti")


def _timed(p50s: dict[str, float], spread: float = 0.01, setup: dict[str, float] | None = None,
           other: dict[str, float] | None = None) -> dict:
    results = {b: {"opt": {"p50_ms": v, "p50_ci_ms": [v * (1 - spread), v * (1 + spread)]}} for b, v in p50s.items()}
    for b, v in (other or {}).items():
        results[b]["max"] = {"p50_ms": v, "p50_ci_ms": [v, v]}
    return {"primary_shape": "opt", "results": results, **({"setup_s": setup} if setup else {})}


def test_preferred_needs_a_difference_the_measurements_support_and_says_which_rule_decided() -> None:
    from infbuild.preferred import preference

    verify = {"onnxruntime": {"passed": True}, "aoti": {"passed": True}}
    order = ["onnxruntime", "aoti"]
    name, why = preference(verify, _timed({"aoti": 1.0, "onnxruntime": 1.2}), order)
    assert name == "aoti" and why == ("fastest at opt, 1.20x faster than onnxruntime (95 % intervals of the p50 do "
                                      "not overlap)")
    # ViT-base's case: AOTI 0.8 % faster at opt on noisy samples, onnxruntime 16 % faster at the other shape
    tied = _timed({"aoti": 1.0, "onnxruntime": 1.008}, other={"aoti": 2.0, "onnxruntime": 1.72})
    name, why = preference(verify, tied, order)
    assert name == "onnxruntime" and why.startswith("tied at opt with onnxruntime (95 % intervals of the p50 overlap); "
                                                    "fastest over all benchmarked shapes (opt, max: geometric mean")
    even = _timed({"aoti": 1.0, "onnxruntime": 1.005}, setup={"aoti": 2.6, "onnxruntime": 0.3})
    assert preference(verify, even, order) == (
        "onnxruntime", "tied at opt with onnxruntime (95 % intervals of the p50 overlap) and over all shapes; the "
        "quickest to set up (0.30 s)")
    assert preference(verify, _timed({"aoti": 1.0, "onnxruntime": 1.005}), order)[0] == "onnxruntime"  # recipe order
    old = {"primary_shape": "opt", "results": {"aoti": {"opt": {"p50_ms": 1.0}}, "onnxruntime": {"opt": {"p50_ms": 1.01}}}}
    assert preference(verify, old, order)[0] == "aoti"  # a report without intervals: as before

    # BERT on an AMX CPU: bf16 and int8 tied in speed; the more accurate one is preferred, whatever it takes to set up
    errs = {"aoti:bf16": 0.0055, "onnxruntime:int8_dynamic": 0.0145, "onnxruntime": 2.7e-7, "aoti": 1.6e-7}
    scored = {b: {"passed": True, "rel_l2_err": e} for b, e in errs.items()}
    both = _timed({"onnxruntime:int8_dynamic": 1.0, "aoti:bf16": 1.001},
                  setup={"onnxruntime:int8_dynamic": 0.1, "aoti:bf16": 2.0})
    assert preference(scored, both, list(errs)) == (
        "aoti:bf16", "tied at opt with aoti:bf16 (95 % intervals of the p50 overlap) and over all shapes; the most "
        "accurate (rel L2 0.0055)")
    # float32 rounding is no difference: two fp32 artifacts tie in accuracy and set-up time decides
    assert preference(scored, _timed({"aoti": 1.0, "onnxruntime": 1.005}, setup={"aoti": 2.6, "onnxruntime": 0.3}),
                      order)[0] == "onnxruntime"
    close = {**scored, "aoti:bf16": {"passed": True, "rel_l2_err": 0.012}}  # within 1.5x: tied, set-up decides
    assert preference(close, both, list(errs))[0] == "onnxruntime:int8_dynamic"


def test_a_slow_model_is_timed_within_the_budget_warm_up_included() -> None:
    """A 0.2 s call with the defaults (10 warm-up, 50 timed, 3 rounds, 1 s): warm-up is bounded by time too and
    the timed calls stop at the budget once 6 are taken over the rounds (3 at a shape that is not the primary one),
    instead of 3 x (13 + 10) calls."""
    import time as clock

    from infbuild.stages.bench import DEFAULTS as BENCH_DEFAULTS
    from infbuild.stages.bench.run import MIN_SAMPLES, MIN_SAMPLES_OTHER, _time_one

    calls = []
    seconds = [0.2]

    def call() -> None:
        calls.append(1)
        clock.sleep(seconds[0])

    bucket: list[int] = []
    started = clock.perf_counter()
    for round_index in range(BENCH_DEFAULTS["rounds"]):
        _time_one(call, bucket, dict(BENCH_DEFAULTS), round_index, lambda: None)  # type: ignore[arg-type]
    assert len(bucket) == MIN_SAMPLES and len(calls) == MIN_SAMPLES + 1  # one warm-up call, in the first round
    assert clock.perf_counter() - started < 1.9
    calls.clear()
    bucket.clear()
    for round_index in range(BENCH_DEFAULTS["rounds"]):  # the set-up's first call took 0.5 s: no warm-up at all
        _time_one(call, bucket, dict(BENCH_DEFAULTS), round_index, lambda: None, first_ns=500_000_000)  # type: ignore[arg-type]
    assert len(calls) == len(bucket) == MIN_SAMPLES
    calls.clear()
    bucket.clear()
    seconds[0] = 0.5  # a 0.5 s call at a shape other than the primary one: 3 calls, the budget nearly kept
    for round_index in range(BENCH_DEFAULTS["rounds"]):
        _time_one(call, bucket, dict(BENCH_DEFAULTS), round_index, lambda: None, first_ns=500_000_000,  # type: ignore[arg-type]
                  min_samples=MIN_SAMPLES_OTHER)
    assert len(calls) == len(bucket) == MIN_SAMPLES_OTHER


def test_a_fast_model_stops_once_its_p50_is_stable() -> None:
    from infbuild.stages.bench import DEFAULTS as BENCH_DEFAULTS
    from infbuild.stages.bench.run import STABLE_AFTER, _time_one

    bucket: list[int] = []
    opts = dict(BENCH_DEFAULTS, iterations=1000, max_seconds=60.0)
    _time_one(lambda: sum(range(200)), bucket, opts, 0, lambda: None)  # type: ignore[arg-type]
    assert STABLE_AFTER <= len(bucket) < 1000

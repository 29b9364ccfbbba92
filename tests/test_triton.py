"""Serving with Triton: the repository `doit build` writes, served by a REAL tritonserver (the nvidia-pytriton
wheel's, Python backend) on loopback and queried with tritonclient over HTTP and gRPC; the configs of models that
server cannot load (its wheel has no ONNX Runtime or TensorRT backend) parsed with Triton's own model-config
protobuf. TensorRT engines come from the STAND-IN trtexec (no TensorRT here)."""
from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
from helpers import H100, GpuHost, Project, build, problems_of, tasks, trt_recipe

pytestmark = pytest.mark.slow  # real builds (see the README's test tiers)

SEQ = """\
name: seq
model:
  factory: examples.models:sequence_block
  kwargs: {{hidden: 32, heads: 2}}
inputs:
  x: {{shape: [batch, seq, 32], dtype: float32}}
dims:
  batch: {{min: 1, opt: 2, max: 8}}
  seq: {{min: 4, opt: 16, max: 32}}
outputs: [y]
bench: {{shapes: [opt], warmup: 1, iterations: 5, rounds: 1, baselines: [eager]}}
triton: {{artifacts: all, onnxruntime: {onnxruntime}, dynamic_batching: {{max_queue_delay_microseconds: 200000}}}}
{extra}"""


def seq_recipe(onnxruntime: str = "native", extra: str = "") -> str:
    return SEQ.format(onnxruntime=onnxruntime, extra=extra)


def require_tritonserver() -> None:
    from infbuild.triton.server import ServerError, locate

    try:
        locate()
    except ServerError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"{exc}: .ci/run must install it")
        pytest.skip(str(exc))


def parse_config(path: Path) -> Any:
    """A config.pbtxt parsed by Triton's own ModelConfig protobuf (as tritonserver reads it)."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def repository(proj: Project, target: str) -> Path:
    return proj.stage("seq", target, "triton") / "repository"


def aoti_model(proj: Project, target: str) -> str:
    """The AOTI package's Triton model name: the recipe's own while it is the preferred artifact (a rebuild with new
    timings may change which one is)."""
    manifest = json.loads((proj.artifacts / "manifest.json").read_text())
    return "seq" if manifest["recipes"]["seq"]["targets"][target]["preferred"] == "aoti" else "seq_aoti"


@pytest.fixture(scope="module")
def proj(tmp_path_factory: pytest.TempPathFactory) -> Project:
    p = Project(tmp_path_factory.mktemp("triton") / "proj")
    p.add_recipe("seq.yaml", seq_recipe())
    result = build(p)
    assert "triton:seq" in result.stages_ran()
    return p


def test_repository_configs_parse_with_tritons_own_protobuf(proj: Project, cpu_target: str) -> None:
    from tritonclient.grpc import model_config_pb2 as pb

    repo = repository(proj, cpu_target)
    manifest = json.loads((proj.artifacts / "manifest.json").read_text())
    target = manifest["recipes"]["seq"]["targets"][cpu_target]
    preferred = target["preferred"]
    other = "seq_aoti" if preferred == "onnxruntime" else "seq_onnxruntime"
    assert sorted(p.name for p in repo.iterdir()) == ["seq", other]  # the preferred one under the recipe's name
    assert target["triton"]["repository"] == f"seq/{cpu_target}/triton/repository"
    assert target["triton"]["models"]["seq"]["artifact"] == preferred
    native = parse_config(repo / ("seq" if preferred == "onnxruntime" else "seq_onnxruntime") / "config.pbtxt")
    python = parse_config(repo / ("seq_aoti" if preferred == "onnxruntime" else "seq") / "config.pbtxt")
    for config in (native, python):
        assert config.max_batch_size == 8  # dims.batch.max: the batch axis is Triton's, the rest -1 where dynamic
        assert [(t.name, t.data_type, list(t.dims)) for t in config.input] == [("x", pb.TYPE_FP32, [-1, 32])]
        assert [(t.name, t.data_type, list(t.dims)) for t in config.output] == [("y", pb.TYPE_FP32, [-1, 32])]
        assert config.dynamic_batching.max_queue_delay_microseconds == 200000
        assert [(g.kind, g.count) for g in config.instance_group] == [(pb.ModelInstanceGroup.KIND_CPU, 1)]
    assert native.platform == "onnxruntime_onnx" and native.default_model_filename == "model.onnx"
    assert (repo / native.name / "1" / "model.onnx").is_file()
    bench = json.loads((proj.stage("seq", cpu_target, "bench") / "report.json").read_text())
    assert native.parameters["intra_op_thread_count"].string_value == str(bench["threads"])  # the settings bench timed
    assert python.backend == "python"
    assert {k: v.string_value for k, v in python.parameters.items()} == {
        "INFBUILD_RECIPE": "seq", "INFBUILD_TARGET": cpu_target, "INFBUILD_ARTIFACT": "aoti"}
    served = repo / python.name / "1" / "artifacts" / "seq" / cpu_target / "aoti"
    assert (served / "model.pt2").read_bytes() == (proj.stage("seq", cpu_target, "aoti") / "model.pt2").read_bytes()


def test_second_build_runs_nothing(proj: Project) -> None:
    assert build(proj).stages_ran() == set()


def test_a_triton_option_rebuilds_only_the_repository(proj: Project, cpu_target: str) -> None:
    proj.add_recipe("seq.yaml", seq_recipe(onnxruntime="python"))
    assert build(proj).stages_ran() == {"triton:seq"}
    for folder in sorted(repository(proj, cpu_target).iterdir()):  # the preferred artifact and the other
        assert parse_config(folder / "config.pbtxt").backend == "python"


@pytest.fixture(scope="module")
def served(proj: Project, cpu_target: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real tritonserver over the repository with both artifacts in the Python backend."""
    require_tritonserver()
    from infbuild.triton import server

    proj.add_recipe("seq.yaml", seq_recipe(onnxruntime="python"))
    build(proj)
    with server.start(repository(proj, cpu_target), tmp_path_factory.mktemp("tritonserver")) as running:
        running.wait_ready(sorted(p.name for p in repository(proj, cpu_target).iterdir()))
        yield running


def clients(running: Any) -> list[tuple[Any, Any]]:
    import tritonclient.grpc as grpc
    import tritonclient.http as http

    return [(http, http.InferenceServerClient(running.http_url)), (grpc, grpc.InferenceServerClient(running.grpc_url))]


def infer(module: Any, client: Any, model: str, x: np.ndarray, datatype: str = "FP32") -> np.ndarray:
    tensor = module.InferInput("x", list(x.shape), datatype)
    tensor.set_data_from_numpy(x)
    return client.infer(model, [tensor]).as_numpy("y")


def test_served_models_answer_like_the_eager_reference(proj: Project, served: Any, cpu_target: str) -> None:
    for label in ("min", "opt", "max"):
        with np.load(proj.stage("seq", "portable", "reference") / f"{label}.npz") as sample:
            x, expected = sample["input.x"], sample["output.y"]
        for module, client in clients(served):  # HTTP and gRPC
            for model in sorted(p.name for p in repository(proj, cpu_target).iterdir()):
                np.testing.assert_allclose(infer(module, client, model, x), expected, rtol=1e-3, atol=1e-4)


def test_dynamic_batcher_joins_concurrent_requests(proj: Project, served: Any, cpu_target: str) -> None:
    import tritonclient.http as http

    aoti = aoti_model(proj, cpu_target)
    client = http.InferenceServerClient(served.http_url, concurrency=6)
    before = client.get_inference_statistics(aoti)["model_stats"][0]
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal((1, 12, 32)).astype(np.float32) for _ in range(6)]
    pending = []
    for x in xs:  # six requests in flight at once (the client's own concurrency, not threads: it is not thread-safe)
        tensor = http.InferInput("x", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x)
        pending.append(client.async_infer(aoti, [tensor]))
    answers = [request.get_result().as_numpy("y") for request in pending]
    alone = [infer(http, client, aoti, x) for x in xs]
    for joined, single in zip(answers, alone):
        np.testing.assert_allclose(joined, single, rtol=1e-4, atol=1e-5)  # each request gets its own rows back
    after = client.get_inference_statistics(aoti)["model_stats"][0]
    inferences = after["inference_count"] - before["inference_count"]
    executions = after["execution_count"] - before["execution_count"]
    assert inferences == 12 and executions < 12, (inferences, executions)  # some of the 6 concurrent ones ran together


def test_bad_requests_get_tritons_error_and_the_server_keeps_serving(proj: Project, served: Any, cpu_target: str) -> None:
    aoti = aoti_model(proj, cpu_target)
    from tritonclient.utils import InferenceServerException

    for module, client in clients(served):
        cases = [(np.zeros((1, 40, 32), np.float32), "FP32", "outside 4..32"),  # a dim outside the built range
                 (np.zeros((1, 8, 32), np.float64), "FP64", "data-type is 'FP64'"),  # a dtype the model does not take
                 (np.zeros((9, 8, 32), np.float32), "FP32", "batch-size must be <= 8"),  # above max_batch_size
                 (np.zeros((1, 8, 31), np.float32), "FP32", "unexpected shape")]  # a fixed dim of another size
        for x, datatype, message in cases:
            with pytest.raises(InferenceServerException) as info:
                infer(module, client, aoti, x, datatype)
            assert message in str(info.value)
        assert infer(module, client, aoti, np.zeros((1, 8, 32), np.float32)).shape == (1, 8, 32)


def test_model_refuses_to_load_on_another_target(proj: Project, served: Any, cpu_target: str,
                                                 tmp_path: Path) -> None:
    from infbuild.triton import server

    aoti = aoti_model(proj, cpu_target)
    other = "avx2" if not cpu_target.endswith("-avx2") else "avx512"
    simulated = json.dumps({"cpu": {"isa": other}})
    with server.start(repository(proj, cpu_target), tmp_path, models=[aoti],
                      env={"INFBUILD_FINGERPRINT": simulated}) as running:
        deadline = time.time() + 90  # until the model has refused (the server logs it), not a fixed wait
        while time.time() < deadline and "refusing artifacts built for" not in running.log() \
                and running.process.poll() is None:
            time.sleep(0.25)
        assert not running.model_ready(aoti)
        log = running.log()
    assert f"refusing artifacts built for {cpu_target}" in log and f"this host is cpu-x86_64-{other}" in log


def test_serve_refuses_a_tampered_repository(proj: Project, cpu_target: str) -> None:
    config = repository(proj, cpu_target) / aoti_model(proj, cpu_target) / "config.pbtxt"
    original = config.read_bytes()
    config.write_bytes(original.replace(b"max_batch_size: 8", b"max_batch_size: 64"))
    try:
        done = proj.infbuild("serve", "seq")
        assert done.returncode != 0
        assert "refusing to serve" in done.stderr and f"{config.parent.name}/config.pbtxt" in done.stderr
    finally:
        config.write_bytes(original)


def test_fresh_bench_numbers_alone_do_not_rebuild_the_repository(proj: Project) -> None:
    before = json.loads((proj.artifacts / "manifest.json").read_text())["recipes"]["seq"]
    result = proj.infbuild("bench", "--force", "seq")
    assert result.returncode == 0, result.stderr[-2000:]
    after = json.loads((proj.artifacts / "manifest.json").read_text())["recipes"]["seq"]
    target = next(t for t in after["targets"] if t != "portable")
    rebuilt = build(proj).stages_ran()
    if after["targets"][target]["preferred"] == before["targets"][target]["preferred"]:
        assert "triton:seq" not in rebuilt  # new timings, same preferred artifact: same repository
    assert build(proj).stages_ran() == set()


def test_repository_key_reads_the_preferred_choice_not_the_timings(proj: Project, cpu_target: str, tmp_path: Path) -> None:
    """In-process, on copies of the built folders: timings that keep the preferred artifact give the same key view;
    timings that change it do not."""
    import shutil

    from infbuild import stage as registry
    from infbuild.project import load_project
    from infbuild.recipe_load import load_recipes
    from infbuild.stamp import read_stamp

    recipe = next(r for r in load_recipes(load_project(proj.root)) if r.name == "seq")
    folders = {"verify": proj.stage("seq", cpu_target, "verify"), "reference": proj.stage("seq", "portable", "reference"),
               "onnx": proj.stage("seq", "portable", "onnx"), "aoti": proj.stage("seq", cpu_target, "aoti"),
               "bench": tmp_path / cpu_target / "bench"}
    shutil.copytree(proj.stage("seq", cpu_target, "bench"), folders["bench"])
    report_path = folders["bench"] / "report.json"
    report = json.loads(report_path.read_text())

    def view(scale: dict[str, float]) -> dict[str, Any]:
        data = json.loads(json.dumps(report))
        for backend, factor in scale.items():
            for timing in data["results"][backend].values():
                for k in ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "min_ms"):
                    timing[k] *= factor
        report_path.write_text(json.dumps(data))
        upstream = {name: (folder, read_stamp(folder)) for name, folder in folders.items()}
        return registry.get("triton").upstream_view(recipe, upstream)

    first = view({"onnxruntime": 1.0, "aoti": 10.0})  # onnxruntime clearly fastest
    assert first["served"]["preferred"] == "onnxruntime"
    assert view({"onnxruntime": 2.0, "aoti": 12.0}) == first  # new numbers, same choice: same key
    flipped = view({"onnxruntime": 10.0, "aoti": 1.0})
    assert flipped["served"]["preferred"] == "aoti" and flipped != first


# --- TensorRT: a GPU host simulated with STAND-INS (nvidia-smi, trtexec) ----------------------------------------

def test_gpu_target_serves_only_verified_artifacts_on_kind_gpu(tmp_path: Path) -> None:
    from tritonclient.grpc import model_config_pb2 as pb

    host, proj = GpuHost(tmp_path / "gpu"), Project(tmp_path / "proj")
    proj.add_recipe("mlp.yaml", trt_recipe() + "triton: {artifacts: [tensorrt, onnxruntime]}\n")
    result = build(proj, host.env(proj))
    assert tasks("mlp", {"trt_engine", "verify", "triton"}) <= result.stages_ran()
    summary = json.loads((proj.stage("mlp", H100, "triton") / "triton.json").read_text())
    # the stand-in's engine cannot be run here, so verify could not pass it: it is not served
    assert {m["artifact"] for m in summary["models"].values()} == {"onnxruntime"}
    config = parse_config(proj.stage("mlp", H100, "triton") / "repository" / "mlp" / "config.pbtxt")
    assert [g.kind for g in config.instance_group] == [pb.ModelInstanceGroup.KIND_GPU]
    assert config.max_batch_size == 64 and list(config.input[0].dims) == [10]


def test_tensorrt_model_carries_each_gpus_engine_by_compute_capability(tmp_path: Path) -> None:
    from infbuild.triton.config import Batching, Tensor
    from infbuild.triton.repository import Engine, pick_engines, tensorrt_model, write

    engines = []
    for target, cc in ((H100, "9.0"), ("cuda-sm86-nvidia-a10g", "8.6"), ("cuda-sm90-nvidia-h100-pcie", "9.0")):
        folder = tmp_path / target / "trt_engine"
        folder.mkdir(parents=True)
        (folder / "model.engine").write_bytes(f"STAND-IN engine for {target}".encode())
        engines.append(Engine(target, cc, folder, f"key-{target}"))
    chosen, skipped = pick_engines(engines[0], engines[1:])
    assert sorted(chosen) == ["8.6", "9.0"] and chosen["9.0"].target == H100  # this target's engine first
    assert len(skipped) == 1 and "cuda-sm90-nvidia-h100-pcie" in skipped[0]
    model = tensorrt_model("mlp", "tensorrt", chosen, own="9.0", inputs=[Tensor("x", "float32", (-1, 10))],
                           outputs=[Tensor("y", "float32", (-1, 4))], batch=Batching(64, {}), instances=1, version="1")
    write(tmp_path / "repo", [model])
    config = parse_config(tmp_path / "repo" / "mlp" / "config.pbtxt")
    assert config.platform == "tensorrt_plan" and config.default_model_filename == "model_sm90.plan"
    assert dict(config.cc_model_filenames) == {"8.6": "model_sm86.plan", "9.0": "model_sm90.plan"}
    for cc, filename in config.cc_model_filenames.items():
        assert (tmp_path / "repo" / "mlp" / "1" / filename).read_bytes() == (chosen[cc].folder / "model.engine").read_bytes()


# --- recipes ----------------------------------------------------------------------------------------------------

def test_triton_section_errors_name_the_field(project: Project) -> None:
    text = seq_recipe(extra="package: {image: example.com/seq, version: '1', serve: triton}\n")
    project.add_recipe("seq.yaml", text.replace("triton: {artifacts: all,", "triton: {artifacts: [aoti, tensorrt], max_batch_size: 16,"))
    no_triton = "".join(line for line in text.splitlines(keepends=True) if not line.startswith("triton:"))
    project.add_recipe("other.yaml", no_triton.replace("name: seq", "name: other"))
    problems = problems_of(project)
    assert any("triton.artifacts[1]" in p and "'tensorrt' is not an artifact the recipe builds" in p for p in problems)
    assert any("triton.max_batch_size" in p and "above dims.batch.max (8)" in p for p in problems)
    assert any("other.yaml" in p and "package.serve" in p and "needs a triton section" in p for p in problems)


# --- the Triton image (package.serve: triton), with a real Docker engine and registry (services fixture) ---------

def image_recipe(services: dict, builder: str) -> str:
    return seq_recipe(onnxruntime="python", extra=f"""\
package:
  image: {services['registry'].address}/ml/seq-triton
  version: 2.0.0
  base: {{cpu: "{services['base']}"}}
  serve: triton
  builder: {builder}
  push: false
  oci_layout: {str(builder == 'oci').lower()}
""")


def test_triton_image_holds_the_repository_and_starts_tritonserver(proj: Project, services: dict, cpu_target: str) -> None:
    proj.add_recipe("seq.yaml", image_recipe(services, "docker"))
    env = proj.env(DOCKER_HOST=services["dockerd"].host)
    assert proj.doit("build", env=env).stages_ran() >= {"package:seq"}
    info = json.loads((proj.stage("seq", cpu_target, "package") / "image.json").read_text())
    image = services["dockerd"].client.images.get(info["reference"])
    assert image.attrs["Config"]["Cmd"] == ["tritonserver", "--model-repository=/models"]
    assert "PYTHONPATH=/opt/infbuild/python" in image.attrs["Config"]["Env"]
    assert image.labels["dev.infbuild.serve"] == "triton" and image.labels["dev.infbuild.target"] == cpu_target
    repo = repository(proj, cpu_target)
    stamped = json.loads((repo.parent / "stamp.json").read_text())["files"]
    listing = services["dockerd"].client.containers.run(
        info["reference"], ["sh", "-c", "cd /models && sha256sum $(find . -type f) && ls /opt/infbuild/python/infbuild/runtime"],
        remove=True, network_mode="none").decode()
    for name, meta in stamped.items():
        if name.startswith("repository/"):
            assert f"{meta['sha256']}  ./{name[len('repository/'):]}" in listing
    assert "triton.py" in listing  # the Python-backend model's code, on PYTHONPATH
    # the daemonless builder gives the same command and environment
    proj.add_recipe("seq.yaml", image_recipe(services, "oci"))
    assert proj.doit("build", env=env).stages_ran() == {"package:seq"}
    layout = proj.stage("seq", cpu_target, "package") / "oci"
    index = json.loads((layout / "index.json").read_text())
    manifest = json.loads((layout / "blobs" / "sha256" / index["manifests"][0]["digest"].split(":")[1]).read_text())
    config = json.loads((layout / "blobs" / "sha256" / manifest["config"]["digest"].split(":")[1]).read_text())["config"]
    assert config["Cmd"] == ["tritonserver", "--model-repository=/models"]
    assert "PYTHONPATH=/opt/infbuild/python" in config["Env"] and config["Labels"]["dev.infbuild.serve"] == "triton"


# --- what serve refuses to start -----------------------------------------------------------------------------------

@pytest.mark.parametrize("plant", ["symlinked_model", "fifo_config", "pycache_link"])
def test_serve_refuses_links_fifos_and_special_files(proj: Project, cpu_target: str, tmp_path: Path, plant: str) -> None:
    """A symlinked model folder (its model.py would be run by --load-model), a FIFO as config.pbtxt (would hang the
    server's start) or a __pycache__ link: one line, nothing started, nothing followed or opened."""
    repo = repository(proj, cpu_target)
    if plant == "symlinked_model":
        evil = tmp_path / "elsewhere"
        (evil / "1").mkdir(parents=True)
        (evil / "config.pbtxt").write_text('name: "evil"\nbackend: "python"\n')
        (evil / "1" / "model.py").write_text("raise SystemExit('attacker code ran')\n")
        planted = repo / "evil"
        planted.symlink_to(evil, target_is_directory=True)
        expect = "evil: a symbolic link"
    elif plant == "fifo_config":
        (repo / "evil").mkdir()
        planted = repo / "evil"
        os.mkfifo(planted / "config.pbtxt")
        expect = "evil/config.pbtxt: a FIFO"
    else:
        planted = repo / aoti_model(proj, cpu_target) / "1" / "__pycache__"
        planted.symlink_to(tmp_path, target_is_directory=True)
        expect = "__pycache__: a symbolic link"
    try:
        done = proj.run(sys.executable, "-m", "infbuild.cli", "serve", "seq", timeout=60)
    finally:
        if planted.is_symlink():
            planted.unlink()
        else:
            shutil.rmtree(planted)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "refusing to serve" in done.stderr and expect in done.stderr, done.stderr


def test_serve_runs_only_what_the_wheel_installed(tmp_path: Path) -> None:
    """The Python-backend stub is copied afresh on every start into a private folder and checked, with the server
    binary, against the nvidia-pytriton wheel's RECORD: a stub replaced by a script is refused, never run."""
    from dataclasses import replace

    from infbuild.triton import server

    require_tritonserver()
    install = server.locate()
    first = server.backends_with_stub(install, tmp_path)
    stub = first / "python" / "triton_python_backend_stub"
    stub.write_text("#!/bin/sh\necho attacker\n")  # what an earlier serve left can be anything
    second = server.backends_with_stub(install, tmp_path)
    assert second != first and not first.exists()
    assert (second / "python" / "triton_python_backend_stub").read_bytes() == install.stub.read_bytes()
    fake = tmp_path / "stub"
    fake.write_text("#!/bin/sh\necho attacker\n")
    with pytest.raises(server.ServerError, match="not a file of the nvidia-pytriton wheel's RECORD"):
        server.backends_with_stub(replace(install, stub=fake), tmp_path)
    copy = tmp_path / "copied-stub"
    copy.write_text("#!/bin/sh\necho attacker\n")
    with pytest.raises(server.ServerError, match="does not match the nvidia-pytriton wheel's RECORD"):
        server.check_executables(install, {copy: install.stub})


def test_serve_with_trusted_keys_refuses_a_repository_no_trusted_key_signed(proj: Project, tmp_path: Path) -> None:
    """Served on another machine (not this one, whose own key signed the build) trusting another key only."""
    from helpers import make_keypair

    other = make_keypair(tmp_path, "other")
    done = proj.run(sys.executable, "-m", "infbuild.cli", "serve", "seq", timeout=60,
                    env=proj.env(INFBUILD_TRUSTED_KEYS=str(other.public), XDG_CONFIG_HOME=str(tmp_path / "elsewhere")))
    assert done.returncode == 1 and "refusing to serve" in done.stderr
    assert "stage.sig: signed by key" in done.stderr and "which is not trusted" in done.stderr


def test_a_signed_triton_image_verifies_with_its_repository(proj: Project, services: dict, cpu_target: str,
                                                           tmp_path: Path) -> None:
    from helpers import make_keypair

    ci = make_keypair(tmp_path, "ci")
    proj.add_recipe("seq.yaml", image_recipe(services, "oci").replace("push: false", "push: true"))
    resigned = proj.infbuild("sign", "--all", env=proj.env(INFBUILD_SIGNING_KEY=str(ci.private)))  # a key rotation
    assert resigned.returncode == 0 and "signed" in resigned.stdout, resigned.stderr
    env = proj.env(DOCKER_HOST=services["dockerd"].host, INFBUILD_SIGNING_KEY=str(ci.private), INFBUILD_CACHE="off",
                   INFBUILD_FORCE="triton,package")
    result = proj.doit("build", env=env)
    assert result.returncode == 0, result.output[-3000:]
    info = json.loads((proj.stage("seq", cpu_target, "package") / "image.json").read_text())
    done = proj.infbuild("verify-image", info["reference"], "--key", str(ci.public))
    assert done.returncode == 0, done.stderr
    assert f"/opt/infbuild/seq/{cpu_target}/triton" in done.stdout
    assert f"/models/{aoti_model(proj, cpu_target)}/1/artifacts/seq/{cpu_target}/aoti" in done.stdout

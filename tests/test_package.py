"""Packaging against a real Docker engine and a real OCI registry (started by the `services` fixture)."""
from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from helpers import SMALL_BENCH, Project, mlp_recipe

from infbuild.package.contents import image_stamp
from infbuild.stamp import read_stamp

pytestmark = pytest.mark.slow  # real builds (see the README's test tiers)

SECRET = "s3cr3t-registry-password-do-not-leak"


def recipe(services: dict, builder: str, seed: int = 0, image: str | None = None, base: str | None = None,
           push: bool = True, extra: str = "") -> str:
    image = image or f"{services['registry'].address}/ml/mlp-{builder}"
    return mlp_recipe(seed=seed, bench=SMALL_BENCH) + f"""\
package:
  image: {image}
  version: 1.4.0
  base: {{cpu: "{base or services['base']}"}}
  include: all
  builder: {builder}
  push: {str(push).lower()}
  oci_layout: {str(builder == 'oci').lower()}
  registry: {{username_env: REG_USER, password_env: REG_PASS}}
  source: https://example.com/ml/mlp
{extra}"""


def env(proj: Project, services: dict, **extra: str) -> dict[str, str]:
    """The packaging tests' environment: their subject is the image, so the model stages the session's MLP build
    already has come from its cache (read-only), not from compiles of their own."""
    return proj.env(DOCKER_HOST=services["dockerd"].host, REG_USER="ci", REG_PASS=SECRET,
                    **{"INFBUILD_CACHE": f"local:{services['mlp_cache']}#ro", **extra})


def image_info(proj: Project, target: str) -> dict:
    return json.loads((proj.stage("mlp", target, "package") / "image.json").read_text())


def run_in(services: dict, reference: str, command: str) -> str:
    client = services["dockerd"].client
    return client.containers.run(reference, ["sh", "-c", command], remove=True, network_mode="none").decode()


def expected_digests(proj: Project, target: str) -> dict[str, str]:
    out = {}
    for stage, folder_target in (("onnx", "portable"), ("aoti", target), ("verify", target)):
        folder = proj.stage("mlp", folder_target, stage)
        stamp = read_stamp(folder)
        assert stamp is not None
        for name, meta in stamp.files.items():
            out[f"/opt/infbuild/mlp/{folder_target}/{stage}/{name}"] = meta["sha256"]
        # the stamp travels too: the runtime in the image checks the files against it, never the index alone; the
        # verify stage's, so that the verdict is the one given on exactly these bytes; and each folder's signature
        out[f"/opt/infbuild/mlp/{folder_target}/{stage}/stamp.json"] = hashlib.sha256(image_stamp(stamp)).hexdigest()
        out[f"/opt/infbuild/mlp/{folder_target}/{stage}/stage.sig"] = hashlib.sha256(
            (folder / "stage.sig").read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def docker_proj(tmp_path_factory: pytest.TempPathFactory, services: dict) -> Project:
    p = Project(tmp_path_factory.mktemp("pkg-docker") / "proj")
    p.add_recipe("mlp.yaml", recipe(services, "docker", push=False, extra="  dockerfile: ['ENV MODEL_HOME=/opt/infbuild']\n"))
    result = p.doit("build", env=env(p, services))
    assert result.returncode == 0, result.output[-4000:]
    assert "package:mlp" in result.ran
    p.last_output = result.printed  # type: ignore[attr-defined]
    return p


def test_docker_image_has_tag_labels_and_the_artifacts(docker_proj: Project, services: dict, cpu_target: str) -> None:
    info = image_info(docker_proj, cpu_target)
    reference = f"{services['registry'].address}/ml/mlp-docker:1.4.0-{cpu_target}"
    assert info["reference"] == reference
    image = services["dockerd"].client.images.get(reference)
    labels = image.labels
    assert labels["org.opencontainers.image.title"] == "mlp"
    assert labels["org.opencontainers.image.version"] == "1.4.0"
    assert labels["org.opencontainers.image.source"] == "https://example.com/ml/mlp"
    assert labels["dev.infbuild.target"] == cpu_target
    assert labels["dev.infbuild.preferred"] in ("onnxruntime", "aoti")
    assert json.loads(labels["dev.infbuild.fingerprint"])["targets"]["cpu"] == cpu_target
    digests = expected_digests(docker_proj, cpu_target)
    assert labels["dev.infbuild.artifact.aoti.sha256.model.pt2"] == digests[f"/opt/infbuild/mlp/{cpu_target}/aoti/model.pt2"]
    assert "MODEL_HOME=/opt/infbuild" in image.attrs["Config"]["Env"]
    listing = run_in(services, reference, "find /opt/infbuild -type f | sort; sha256sum $(find /opt/infbuild -type f)")
    for path, digest in digests.items():
        assert f"{digest}  {path}" in listing
    packaged = json.loads(run_in(services, reference, "cat /opt/infbuild/manifest.json"))
    assert packaged["recipes"]["mlp"]["targets"][cpu_target]["preferred"] == labels["dev.infbuild.preferred"]
    # only the files that go in, never the whole artifacts tree
    assert sorted(info["files"]) == sorted([p.lstrip("/") for p in digests] + ["opt/infbuild/manifest.json"])
    manifest = json.loads((docker_proj.artifacts / "manifest.json").read_text())
    assert manifest["recipes"]["mlp"]["targets"][cpu_target]["image"]["reference"] == reference


def test_credentials_never_leak(docker_proj: Project, services: dict, cpu_target: str) -> None:
    assert SECRET not in docker_proj.last_output  # type: ignore[attr-defined]
    for path in docker_proj.artifacts.rglob("*"):
        if path.is_file() and path.stat().st_size < 5_000_000:
            assert SECRET.encode() not in path.read_bytes(), path
    image = services["dockerd"].client.images.get(image_info(docker_proj, cpu_target)["reference"])
    assert SECRET not in json.dumps(image.attrs)


def test_docker_package_rebuilds_only_when_contents_change(docker_proj: Project, services: dict, cpu_target: str) -> None:
    assert "package:mlp" in docker_proj.doit("build", env=env(docker_proj, services)).uptodate
    docker_proj.add_recipe("mlp.yaml", recipe(services, "docker", push=False, extra="  dockerfile: ['ENV MODEL_HOME=/opt/infbuild']\n")
                           .replace("iterations: 5", "iterations: 6"))  # new timings, same artifacts: no new image
    result = docker_proj.doit("build", env=env(docker_proj, services))
    assert "bench:mlp" in result.ran and "package:mlp" in result.uptodate
    docker_proj.add_recipe("mlp.yaml", recipe(services, "docker", seed=1, push=False))
    result = docker_proj.doit("build", env=env(docker_proj, services))
    assert result.returncode == 0 and "package:mlp" in result.ran


def test_docker_builder_pushes_to_the_registry(docker_proj: Project, services: dict, cpu_target: str) -> None:
    docker_proj.add_recipe("mlp.yaml", recipe(services, "docker", seed=1, push=True))
    result = docker_proj.doit("build", env=env(docker_proj, services))
    assert result.returncode == 0 and "package:mlp" in result.ran, result.output[-3000:]
    info = image_info(docker_proj, cpu_target)
    assert info["pushed"] is True and info["repo_digests"]
    inspect = subprocess.run(["skopeo", "inspect", "--tls-verify=false", f"docker://{info['reference']}"],
                             capture_output=True, text=True)
    assert inspect.returncode == 0, inspect.stderr
    assert json.loads(inspect.stdout)["Labels"]["dev.infbuild.target"] == cpu_target


def test_docker_engine_missing_is_not_buildable_unless_required(docker_proj: Project, services: dict) -> None:
    no_engine = docker_proj.env(DOCKER_HOST="unix:///nonexistent/docker.sock")
    status = docker_proj.infbuild("status", env=no_engine)
    assert "package:mlp" in status.stdout and "not buildable here: no Docker engine" in status.stdout
    strict = docker_proj.doit("build", "require=package", env=no_engine)
    assert strict.returncode != 0 and "package:mlp: not buildable here: no Docker engine" in strict.output


@pytest.fixture(scope="module")
def oci_proj(tmp_path_factory: pytest.TempPathFactory, services: dict) -> Project:
    p = Project(tmp_path_factory.mktemp("pkg-oci") / "proj")
    p.add_recipe("mlp.yaml", recipe(services, "oci"))
    result = p.doit("build", env=env(p, services))
    assert result.returncode == 0, result.output[-4000:]
    return p


def test_daemonless_image_runs_in_the_engine(oci_proj: Project, services: dict, cpu_target: str) -> None:
    info = image_info(oci_proj, cpu_target)
    services["dockerd"].client.images.pull(info["reference"])
    listing = run_in(services, info["reference"], "sha256sum $(find /opt/infbuild -type f)")
    for path, digest in expected_digests(oci_proj, cpu_target).items():
        assert f"{digest}  {path}" in listing
    labels = services["dockerd"].client.images.get(info["reference"]).labels
    assert labels["dev.infbuild.target"] == cpu_target


def test_oci_layout_is_valid_and_builds_are_reproducible(oci_proj: Project, services: dict, cpu_target: str,
                                                         tmp_path: Path) -> None:
    folder = oci_proj.stage("mlp", cpu_target, "package")
    first = image_info(oci_proj, cpu_target)["digest"]
    bundle = tmp_path / "bundle"
    done = subprocess.run(["umoci", "unpack", "--image", f"{folder / 'oci'}:1.4.0-{cpu_target}", str(bundle)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr  # umoci checks every layer against the config's diff_ids
    model = bundle / "rootfs" / "opt" / "infbuild" / "mlp" / "portable" / "onnx" / "model.onnx"
    assert hashlib.sha256(model.read_bytes()).hexdigest() == expected_digests(oci_proj, cpu_target)[
        "/opt/infbuild/mlp/portable/onnx/model.onnx"]
    from infbuild.runtime import load  # the image's own manifest and stamps are enough to load and check it

    packaged = load(bundle / "rootfs" / "opt" / "infbuild", "mlp")
    assert packaged(x=np.ones((2, 10), np.float32))["y"].shape == (2, 1)
    inspect = subprocess.run(["skopeo", "inspect", "--tls-verify=false", f"docker://{image_info(oci_proj, cpu_target)['reference']}"],
                             capture_output=True, text=True)
    assert inspect.returncode == 0 and json.loads(inspect.stdout)["Digest"] == first
    result = oci_proj.doit("build", env=env(oci_proj, services, INFBUILD_FORCE="package"))
    assert result.returncode == 0 and "package:mlp" in result.ran
    again = image_info(oci_proj, cpu_target)
    assert again["digest"] == first
    assert again["uploaded_bytes"] == 0  # everything was already in the registry


def test_push_after_an_artifact_change_uploads_only_the_new_layer(oci_proj: Project, services: dict, cpu_target: str) -> None:
    before = image_info(oci_proj, cpu_target)
    oci_proj.add_recipe("mlp.yaml", recipe(services, "oci", seed=2))
    result = oci_proj.doit("build", env=env(oci_proj, services))
    assert result.returncode == 0 and "package:mlp" in result.ran
    after = image_info(oci_proj, cpu_target)
    assert after["digest"] != before["digest"]
    manifest = json.loads((oci_proj.stage("mlp", cpu_target, "package") / "oci" / "blobs" / "sha256" /
                           after["digest"].split(":")[1]).read_text())
    base_layers = {layer["digest"] for layer in manifest["layers"][:-1]}
    assert len(after["uploaded_blobs"]) == 2  # the artifact layer and the config
    assert not base_layers & set(after["uploaded_blobs"])
    assert after["uploaded_bytes"] <= after["layer_size"] + 10_000


@pytest.mark.parametrize("case", ["missing_base", "unreachable_registry", "rejected_push"])
def test_packaging_errors_are_clear_and_keep_the_previous_image(oci_proj: Project, services: dict, cpu_target: str,
                                                                tmp_path: Path, case: str) -> None:
    from services import RegistryServer

    oci_proj.add_recipe("mlp.yaml", recipe(services, "oci", seed=2))  # a steady state, whatever ran before
    assert oci_proj.doit("build", env=env(oci_proj, services)).returncode == 0
    previous = image_info(oci_proj, cpu_target)
    manifest_before = (oci_proj.artifacts / "manifest.json").read_text()
    server = None
    if case == "missing_base":
        text, expect = recipe(services, "oci", seed=2, base=f"{services['registry'].address}/base/nothing:1"), \
            f"image {services['registry'].address}/base/nothing:1 not found"
    elif case == "unreachable_registry":
        text, expect = recipe(services, "oci", seed=2, image="127.0.0.1:9/ml/mlp"), "registry 127.0.0.1:9 unreachable"
    else:
        server = RegistryServer(tmp_path / "ro", readonly=True)
        text, expect = recipe(services, "oci", seed=2, image=f"{server.address}/ml/mlp"), f"registry {server.address}:"
    try:
        oci_proj.add_recipe("mlp.yaml", text)
        result = oci_proj.doit("build", env=env(oci_proj, services))
    finally:
        if server:
            server.stop()
    assert result.returncode != 0 and "Traceback" not in result.output
    assert f"package:mlp: {expect}" in result.output, result.output[-2000:]
    assert image_info(oci_proj, cpu_target) == previous
    assert (oci_proj.artifacts / "manifest.json").read_text() == manifest_before
    oci_proj.add_recipe("mlp.yaml", recipe(services, "oci", seed=2))
    assert oci_proj.doit("build", env=env(oci_proj, services)).returncode == 0

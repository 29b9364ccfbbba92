"""Signed images against a real registry on loopback: an image pushed by a build with a signing key carries a
signature over its manifest digest and an SLSA provenance v1 statement as OCI referrers; ``infbuild verify-image``
checks both and every stage folder inside; a tampered layer, a re-tagged image and another key are refused; the
folders inside verify with the OpenSSF model-signing CLI and load only with a trusted key."""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from helpers import SMALL_BENCH, KeyPair, Project, make_keypair, mlp_recipe, model_signing_verify

pytestmark = pytest.mark.slow


def recipe(services: dict, builder: str, version: str = "1.4.0", seed: int = 0, repo: str = "signed") -> str:
    return mlp_recipe(seed=seed, bench=SMALL_BENCH) + f"""\
backends: [onnxruntime]
package:
  image: {services['registry'].address}/ml/{repo}-{builder}
  version: {version}
  base: {{cpu: "{services['base']}"}}
  include: all
  builder: {builder}
  push: true
  oci_layout: {str(builder == 'oci').lower()}
"""


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, KeyPair]:
    folder = tmp_path_factory.mktemp("keys")
    return {"ci": make_keypair(folder, "ci"), "other": make_keypair(folder, "other")}


def build(proj: Project, services: dict, keys: dict[str, KeyPair]) -> None:
    result = proj.doit("build", env=proj.env(DOCKER_HOST=services["dockerd"].host, XDG_CONFIG_HOME=str(proj.root / "cfg"),
                                             INFBUILD_SIGNING_KEY=str(keys["ci"].private),
                                             INFBUILD_TRUSTED_KEYS=str(keys["ci"].public)))
    assert result.returncode == 0, result.output[-4000:]


@pytest.fixture(scope="module")
def oci_proj(tmp_path_factory: pytest.TempPathFactory, services: dict, keys: dict[str, KeyPair]) -> Project:
    p = Project(tmp_path_factory.mktemp("signed-oci") / "proj")
    p.add_recipe("mlp.yaml", recipe(services, "oci"))
    build(p, services, keys)
    return p


def reference(proj: Project, target: str) -> str:
    return json.loads((proj.stage("mlp", target, "package") / "image.json").read_text())["reference"]


def verify_image(proj: Project, ref: str, key: Path):
    return proj.infbuild("verify-image", ref, "--key", str(key))


def test_pushed_image_is_signed_with_provenance_and_verifies(oci_proj: Project, keys: dict[str, KeyPair],
                                                             cpu_target: str, services: dict) -> None:
    ref = reference(oci_proj, cpu_target)
    info = json.loads((oci_proj.stage("mlp", cpu_target, "package") / "image.json").read_text())
    assert info["signed"]["digest"] == info["digest"] and info["signed"]["key"]
    done = verify_image(oci_proj, ref, keys["ci"].public)
    assert done.returncode == 0, done.stderr
    assert f"@{info['digest']}: signed by key" in done.stdout and "recipe mlp 1.4.0" in done.stdout
    for folder in ("/opt/infbuild/mlp/portable/onnx", f"/opt/infbuild/mlp/{cpu_target}/verify"):
        assert folder in done.stdout
    # the referrers as a registry client sees them (this registry has no referrers API: the fallback tag's index)
    address = services["registry"].address
    index = json.loads(urllib.request.urlopen(urllib.request.Request(
        f"http://{address}/v2/ml/signed-oci/manifests/{info['digest'].replace(':', '-')}",
        headers={"Accept": "application/vnd.oci.image.index.v1+json"})).read())
    types = sorted(m["artifactType"] for m in index["manifests"])
    assert types == ["application/vnd.dev.cosign.artifact.sig.v1+json", "application/vnd.dev.sigstore.bundle.v0.3+json"]
    # the provenance names the commit-independent facts of this build: recipe, stage keys, base digest, builder
    bundle = json.loads((oci_proj.stage("mlp", cpu_target, "package") / "provenance.sigstore.json").read_text())
    import base64

    statement = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    assert statement["predicateType"] == "https://slsa.dev/provenance/v1"
    assert statement["subject"][0]["digest"]["sha256"] == info["digest"].split(":")[1]
    definition = statement["predicate"]["buildDefinition"]
    onnx_key = json.loads((oci_proj.stage("mlp", "portable", "onnx") / "stamp.json").read_text())["key"]
    assert definition["internalParameters"]["stage_keys"]["onnx"] == onnx_key
    assert any(d["digest"].get("sha256") == info["base_digest"].split(":")[1] for d in definition["resolvedDependencies"])
    assert statement["predicate"]["runDetails"]["builder"]["version"]["torch"]


def test_another_key_is_refused(oci_proj: Project, keys: dict[str, KeyPair], cpu_target: str) -> None:
    done = verify_image(oci_proj, reference(oci_proj, cpu_target), keys["other"].public)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "signature is not by key" in done.stderr


def _client(services: dict, repo: str):
    """A plain distribution-API client: what an attacker with push rights to the repository has."""
    from infbuild.package.reference import parse
    from infbuild.package.registry import Registry

    return Registry(parse(f"{services['registry'].address}/{repo}:x"))


def _registry_manifest(services: dict, repo: str, tag: str) -> tuple[bytes, str]:
    found = _client(services, repo).raw_manifest(tag)
    assert found is not None
    return found


def _put(services: dict, repo: str, tag: str, data: bytes, content_type: str) -> None:
    _client(services, repo).push_manifest(tag, data, content_type)


def _push_blob(services: dict, repo: str, data: bytes) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    _client(services, repo).push_blob(digest, data)
    return digest


def test_a_tampered_layer_is_refused(oci_proj: Project, keys: dict[str, KeyPair], cpu_target: str,
                                     services: dict) -> None:
    """An attacker with push rights replaces the model in the image's layer and re-pushes it under the same tag: the
    image now has a digest nobody signed."""
    repo, tag = "ml/signed-oci", f"1.4.0-{cpu_target}"
    raw, media = _registry_manifest(services, repo, tag)
    manifest = json.loads(raw)
    layer = manifest["layers"][-1]
    blob = _client(services, repo).blob(layer["digest"])
    source = tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob)))
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for member in source:
            data = source.extractfile(member).read() if member.isfile() else None
            if member.name.endswith("onnx/model.onnx"):
                data = data[:-1] + bytes([data[-1] ^ 1])
            tar.addfile(member, io.BytesIO(data) if data is not None else None)
    tampered = gzip.compress(out.getvalue(), mtime=0)
    manifest["layers"][-1] = {**layer, "digest": _push_blob(services, repo, tampered), "size": len(tampered)}
    try:
        _put(services, repo, tag, json.dumps(manifest).encode(), media)
        done = verify_image(oci_proj, f"{services['registry'].address}/{repo}:{tag}", keys["ci"].public)
        assert done.returncode == 1 and "no signature is attached to it" in done.stderr, done.stderr
    finally:
        _put(services, repo, tag, raw, media)  # put the signed image back for the other tests
    assert verify_image(oci_proj, f"{services['registry'].address}/{repo}:{tag}", keys["ci"].public).returncode == 0


def test_a_retagged_signed_image_is_refused(oci_proj: Project, keys: dict[str, KeyPair], cpu_target: str,
                                            services: dict, tmp_path: Path) -> None:
    """A genuine signed image of an older version moved under today's tag is refused by the tag it was signed as."""
    old = Project(tmp_path / "old")
    old.add_recipe("mlp.yaml", recipe(services, "oci", version="1.3.0", seed=3))
    build(old, services, keys)
    repo = "ml/signed-oci"
    raw, media = _registry_manifest(services, repo, f"1.3.0-{cpu_target}")
    _put(services, repo, f"1.5.0-{cpu_target}", raw, media)
    done = verify_image(oci_proj, f"{services['registry'].address}/{repo}:1.5.0-{cpu_target}", keys["ci"].public)
    assert done.returncode == 1 and "signed as tag '1.3.0-" in done.stderr and "re-tagged" in done.stderr
    assert verify_image(old, f"{services['registry'].address}/{repo}:1.3.0-{cpu_target}", keys["ci"].public).returncode == 0


def test_folders_in_the_image_verify_with_model_signing_and_load_only_trusted(
        oci_proj: Project, keys: dict[str, KeyPair], cpu_target: str, tmp_path: Path) -> None:
    import subprocess

    layout = oci_proj.stage("mlp", cpu_target, "package") / "oci"
    bundle = tmp_path / "bundle"
    done = subprocess.run(["umoci", "unpack", "--image", f"{layout}:1.4.0-{cpu_target}", str(bundle)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    root = bundle / "rootfs" / "opt" / "infbuild"
    onnx = root / "mlp" / "portable" / "onnx"
    assert model_signing_verify(onnx, keys["ci"].public).returncode == 0
    assert model_signing_verify(root / "mlp" / cpu_target / "verify", keys["ci"].public).returncode == 0
    assert model_signing_verify(onnx, keys["other"].public).returncode != 0
    from infbuild.errors import ArtifactError
    from infbuild.runtime import load

    model = load(root, "mlp", trusted_keys=[keys["ci"].public])
    assert model(x=np.ones((2, 10), np.float32))["y"].shape == (2, 1)
    with pytest.raises(ArtifactError, match=r"stage\.sig: signed by key \w+, which is not trusted"):
        load(root, "mlp", trusted_keys=[keys["other"].public])
    model_file = onnx / "model.onnx"
    data = bytearray(model_file.read_bytes())
    data[100] ^= 1
    model_file.write_bytes(bytes(data))
    assert model_signing_verify(onnx, keys["ci"].public).returncode != 0  # any byte changed: the independent tool says no


def test_docker_builder_images_are_signed_too(services: dict, keys: dict[str, KeyPair], cpu_target: str,
                                             tmp_path: Path) -> None:
    p = Project(tmp_path / "docker")
    p.add_recipe("mlp.yaml", recipe(services, "docker"))
    build(p, services, keys)
    ref = reference(p, cpu_target)
    done = verify_image(p, ref, keys["ci"].public)
    assert done.returncode == 0, done.stderr
    assert f"/opt/infbuild/mlp/{cpu_target}/verify" in done.stdout
    assert verify_image(p, ref, keys["other"].public).returncode == 1

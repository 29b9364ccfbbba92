"""Trusted builds: what a cache serves, the runtime loads, a stage reads and the server serves is what a trusted key
signed, for exactly that stage key. The attacks are real: a forged AOTInductor package whose .so runs code when
loaded, entries re-signed by another key or replayed under another key, files edited in place, sources edited while
a worker runs."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from helpers import KeyPair, Project, copy_built, make_keypair, mlp_recipe, model_signing_verify

pytestmark = pytest.mark.slow

EVIL_C = """
#include <stdio.h>
__attribute__((constructor)) static void run_on_load(void) {
    FILE *f = fopen("%s", "w");
    if (f) { fputs("the forged package's code ran\\n", f); fclose(f); }
}
"""


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, KeyPair]:
    folder = tmp_path_factory.mktemp("keys")
    return {name: make_keypair(folder, name) for name in ("ci", "attacker", "other")}


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory):
    from services import RegistryServer, require_binaries

    require_binaries()
    server = RegistryServer(tmp_path_factory.mktemp("registry"))
    yield server.address
    server.stop()


@pytest.fixture(scope="module")
def producer(tmp_path_factory: pytest.TempPathFactory, keys: dict[str, KeyPair], registry: str) -> dict:
    """The protected branch's CI job: builds the MLP (ONNX + AOTI) signed by the CI key into a local and a registry
    cache."""
    root = tmp_path_factory.mktemp("producer")
    p = Project(root / "proj")
    p.add_recipe("mlp.yaml", mlp_recipe())
    caches = {"local": f"local:{root / 'cache'}", "oci": f"oci:{registry}/ml/cache#rw"}
    result = p.doit("build", env=p.env(INFBUILD_CACHE=",".join(caches.values()), XDG_CONFIG_HOME=str(root / "cfg"),
                                       INFBUILD_SIGNING_KEY=str(keys["ci"].private)))
    assert result.returncode == 0, result.output[-3000:]
    assert result.built() == {"export:mlp", "onnx:mlp", "reference:mlp", "aoti:mlp", "verify:mlp"}
    return {"proj": p, "caches": caches, "root": root}


def consumer(tmp_path: Path, name: str = "consumer") -> Project:
    p = Project(tmp_path / name)
    p.add_recipe("mlp.yaml", mlp_recipe())
    return p


def consumer_env(p: Project, cache: str, trusted: KeyPair | None = None, **extra: str) -> dict[str, str]:
    env = p.env(INFBUILD_CACHE=cache, XDG_CONFIG_HOME=str(p.root / "cfg"), **extra)
    if trusted is not None:
        env["INFBUILD_TRUSTED_KEYS"] = str(trusted.public)
    return env


def test_a_ci_signed_cache_restores_everything_for_a_consumer_trusting_the_ci_key(
        producer: dict, keys: dict[str, KeyPair], tmp_path: Path, cpu_target: str) -> None:
    for kind in ("local", "oci"):
        p = consumer(tmp_path, kind)
        result = p.doit("build", env=consumer_env(p, producer["caches"][kind].removesuffix("#rw"), keys["ci"]))
        assert result.returncode == 0, result.output[-3000:]
        assert result.built() == set() and len(result.restored()) == 5
        assert "no trusted key signed" not in result.output
        # the restored folders carry the CI key's signature, which the model-signing CLI verifies on its own
        for stage, target in (("onnx", "portable"), ("aoti", cpu_target)):
            done = model_signing_verify(p.stage("mlp", target, stage), keys["ci"].public)
            assert done.returncode == 0, done.stdout + done.stderr


def test_entries_signed_by_another_key_are_all_misses(producer: dict, keys: dict[str, KeyPair], tmp_path: Path) -> None:
    p = consumer(tmp_path)
    result = p.doit("build", env=consumer_env(p, producer["caches"]["local"], keys["other"]))
    assert result.returncode == 0, result.output[-3000:]
    assert result.restored() == set() and len(result.built()) == 5
    ci = json.loads((producer["proj"].stage("mlp", "portable", "onnx") / "stage.sig").read_text())
    hint = ci["verificationMaterial"]["publicKey"]["hint"][:16]
    # export, onnx, reference and aoti: their entries are there and refused (verify's key differs: it reads the new
    # AOTI build)
    assert result.output.count(f"not signed by a trusted key: signed by key {hint}, which is not trusted") == 4


def _evil_package(genuine: Path, dest: Path, marker: Path) -> Path:
    """The genuine AOTI package with its .so replaced by one whose constructor writes ``marker`` when loaded."""
    source = dest.parent.parent / "evil.c"
    source.write_text(EVIL_C % marker)
    evil_so = source.with_suffix(".so")
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(evil_so), str(source)], check=True)
    with zipfile.ZipFile(genuine) as zin, zipfile.ZipFile(dest, "w") as zout:
        replaced = 0
        for item in zin.infolist():
            data = zin.read(item)
            if item.filename.endswith(".so"):
                data, replaced = evil_so.read_bytes(), replaced + 1
            zout.writestr(item, data)
    assert replaced, "the genuine package holds no .so"
    return dest


def _forge(cache_spec: str, key: str, folder: Path, signature: str, keys: dict[str, KeyPair]) -> None:
    """What an attacker with write access does: the entry under the genuine key, its stamp rewritten to match the
    forged files, and its signature kept, stripped, or replaced by one of the attacker's own key."""
    from infbuild.artifacts import list_files
    from infbuild.cache.config import parse_entry
    from infbuild.signing import stage_signature
    from infbuild.signing.dsse import SigningKey
    from infbuild.stamp import Stamp

    cache = parse_entry(cache_spec if cache_spec.startswith("local") else cache_spec + "#rw", Path("/"))
    entry = cache.peek(key)
    assert entry is not None
    entry["files"] = list_files(folder)
    if signature == "stripped":
        entry.pop("signature", None)
    elif signature == "attacker":
        stamp = Stamp.from_json({k: v for k, v in entry.items() if k != "signature"})
        entry["signature"] = stage_signature.sign(SigningKey.read(keys["attacker"].private), stamp)
    assert cache.put(key, entry, folder, replace=True)


@pytest.mark.parametrize("kind,signature", [("local", "attacker"), ("local", "stripped"), ("local", "kept"),
                                            ("oci", "attacker")])
def test_a_forged_aoti_entry_is_a_miss_and_its_code_never_runs(producer: dict, keys: dict[str, KeyPair], tmp_path: Path,
                                                               cpu_target: str, kind: str, signature: str) -> None:
    genuine = producer["proj"].stage("mlp", cpu_target, "aoti")
    cache = producer["caches"][kind].removesuffix("#rw")
    backup = tmp_path / "backup"
    shutil.copytree(genuine, backup)
    forged = tmp_path / "forged"
    forged.mkdir()
    marker = tmp_path / "PWNED"
    _evil_package(genuine / "model.pt2", forged / "model.pt2", marker)
    shutil.copy(genuine / "aoti.json", forged / "aoti.json")
    if signature == "attacker":  # the forgery is real: loading the package runs its code
        probe = subprocess.run([sys.executable, "-c", "import sys, torch._inductor as i; i.aoti_load_package(sys.argv[1])",
                                str(forged / "model.pt2")], capture_output=True, text=True, timeout=300)
        assert marker.exists(), probe.stderr[-2000:]
        marker.unlink()
    key = json.loads((genuine / "stamp.json").read_text())["key"]
    _forge(cache, key, forged, signature, keys)
    try:
        p = consumer(tmp_path)
        result = p.doit("build", env=consumer_env(p, cache, keys["ci"]))
        assert result.returncode == 0, result.output[-3000:]
        assert "aoti:mlp" in result.built() and {"onnx:mlp", "reference:mlp"} <= result.restored()
        why = {"attacker": "which is not trusted", "stripped": "unsigned", "kept": "model.pt2 differs from the signed sha256"}
        where = f"cache {cache}: entry " if kind == "local" else f"cache {cache}: entry {cache.split(':', 1)[1]}:{key}"
        assert where in result.output and "not signed by a trusted key: " in result.output, result.printed[-5000:]
        assert why[signature] in result.output, result.output[-3000:]
        assert not marker.exists()  # never restored, never loaded: verify ran on the package built here
        assert result.summary().get("failed", 0) == 0
        if signature == "stripped":  # without trusted keys the same entry is restored on its consistency, warned
            q = consumer(tmp_path, "untrusting")
            loose = q.doit("aoti:mlp", env=consumer_env(q, cache))
            assert loose.returncode == 0 and "aoti:mlp" in loose.restored()
            assert "restoring entries no trusted key signed, on their consistency alone" in loose.output
    finally:
        from infbuild.cache.config import parse_entry

        stamp = json.loads((backup / "stamp.json").read_text())
        honest = {**{k: v for k, v in stamp.items() if k != "inputs"},
                  "signature": json.loads((backup / "stage.sig").read_text())}
        parse_entry(cache if kind == "local" else cache + "#rw", Path("/")).put(key, honest, backup, replace=True)


def test_a_genuine_entry_replayed_under_another_key_is_a_miss(producer: dict, keys: dict[str, KeyPair],
                                                             tmp_path: Path) -> None:
    """The CI-signed ONNX of yesterday's model moved under the key of today's: signed, consistent, and refused."""
    from infbuild.cache.config import parse_entry

    cache = producer["caches"]["local"]
    old_key = json.loads((producer["proj"].stage("mlp", "portable", "onnx") / "stamp.json").read_text())["key"]
    today = Project(tmp_path / "today")
    today.add_recipe("mlp.yaml", mlp_recipe(seed=5))
    from infbuild.engine import BuildContext

    exported = today.doit("export:mlp", env=consumer_env(today, cache, keys["ci"]))  # onnx's key reads its program
    assert exported.returncode == 0, exported.output[-2000:]
    os.environ["INFBUILD_CACHE"] = "off"
    try:
        ctx = BuildContext.load(today.root)
        new_key = ctx.key(ctx.planned["onnx:mlp"])[0]
    finally:
        del os.environ["INFBUILD_CACHE"]
    local = parse_entry(cache, Path("/"))
    entry = local.peek(old_key)
    assert entry is not None and new_key != old_key
    local.put(new_key, {**entry, "key": new_key}, producer["proj"].stage("mlp", "portable", "onnx"), replace=True)
    result = today.doit("onnx:mlp", env=consumer_env(today, cache, keys["ci"]))
    assert result.returncode == 0 and "onnx:mlp" in result.built()
    assert f"signed for key {old_key[:16]!r}, not {new_key[:16]!r} (replayed or relabelled)" in result.output


def test_a_laptop_key_is_trusted_for_its_own_local_cache_only(producer: dict, keys: dict[str, KeyPair], registry: str,
                                                               tmp_path: Path) -> None:
    """No CI key on a laptop: its builds are signed by its own machine key (made on first use), which its local cache
    trusts next to the CI key; the shared registry cache trusts the CI key only."""
    config = tmp_path / "laptop-config"
    local, shared = f"local:{tmp_path / 'laptop-cache'}", f"oci:{registry}/ml/laptop"
    first = Project(tmp_path / "first")
    first.add_recipe("mlp.yaml", mlp_recipe(seed=7))
    env = first.env(INFBUILD_CACHE=f"{local},{shared}#rw", XDG_CONFIG_HOME=str(config),
                    INFBUILD_TRUSTED_KEYS=str(keys["ci"].public))
    assert first.doit("build", env=env).returncode == 0
    machine = config / "infbuild" / "machine-key.pem"
    assert machine.is_file() and oct(machine.stat().st_mode & 0o777) == "0o600"
    assert model_signing_verify(first.stage("mlp", "portable", "onnx"), machine.with_suffix(".pub")).returncode == 0
    again = Project(tmp_path / "again")
    again.add_recipe("mlp.yaml", mlp_recipe(seed=7))
    hits = again.doit("build", env={**env, "INFBUILD_CACHE": local})
    assert hits.returncode == 0 and hits.built() == set() and len(hits.restored()) == 5
    elsewhere = Project(tmp_path / "elsewhere")
    elsewhere.add_recipe("mlp.yaml", mlp_recipe(seed=7))
    misses = elsewhere.doit("onnx:mlp", env={**env, "INFBUILD_CACHE": shared})
    assert misses.returncode == 0 and misses.built() == {"export:mlp", "onnx:mlp"} and "which is not trusted" in misses.output


# --- the runtime, the CLI, the stages themselves ------------------------------------------------------------------

@pytest.fixture
def built(producer: dict, tmp_path: Path) -> Project:
    return copy_built(producer["proj"], tmp_path / "built")


def test_load_and_run_refuse_untrusted_artifacts_and_load_trusted_ones(built: Project, keys: dict[str, KeyPair],
                                                                      tmp_path: Path, cpu_target: str) -> None:
    from infbuild.errors import ArtifactError
    from infbuild.runtime import load

    x = np.ones((2, 10), np.float32)
    for backend in ("onnxruntime", "aoti"):
        model = load(built.artifacts, "mlp", backend=backend, trusted_keys=[keys["ci"].public])
        assert model(x=x)["y"].shape == (2, 1)
        with pytest.raises(ArtifactError, match=r"refusing (onnx|aoti): .*stage\.sig: signed by key \w+, which is not trusted"):
            load(built.artifacts, "mlp", backend=backend, trusted_keys=[keys["other"].public])
    np.save(tmp_path / "x.npy", x)
    refused = built.infbuild("run", "mlp", "--input", f"x={tmp_path / 'x.npy'}",
                             env=built.env(INFBUILD_TRUSTED_KEYS=str(keys["other"].public)))
    assert refused.returncode == 1 and "which is not trusted" in refused.stderr and "Traceback" not in refused.stderr
    ok = built.infbuild("run", "mlp", "--input", f"x={tmp_path / 'x.npy'}",
                        env=built.env(INFBUILD_TRUSTED_KEYS=str(keys["ci"].public)))
    assert ok.returncode == 0, ok.stderr
    (built.stage("mlp", cpu_target, "aoti") / "stage.sig").unlink()
    with pytest.raises(ArtifactError, match=r"aoti/stage\.sig: no signature \(stage\.sig is missing\)"):
        load(built.artifacts, "mlp", backend="aoti", trusted_keys=[keys["ci"].public])
    assert load(built.artifacts, "mlp", backend="aoti")  # without trusted keys an unsigned artifact loads (as before)
    status = built.infbuild("status", env=built.env(XDG_CONFIG_HOME=str(tmp_path / "cfg")))
    assert "aoti:mlp" in status.stdout and "unsigned (infbuild sign signs it)" in status.stdout
    signed = built.infbuild("sign", env=built.env(INFBUILD_SIGNING_KEY=str(keys["ci"].private)))
    assert signed.returncode == 0 and "signed 1 stage(s)" in signed.stdout
    assert load(built.artifacts, "mlp", backend="aoti", trusted_keys=[keys["ci"].public])


def test_verify_and_a_stage_refuse_an_unsigned_or_tampered_upstream(built: Project, keys: dict[str, KeyPair]) -> None:
    """A stamped model.onnx edited in place (same size, same mtime), then a verify option change: verify refuses to
    read it instead of judging it, and names the file; with trusted keys, another key's signature is refused too."""
    onnx = built.stage("mlp", "portable", "onnx") / "model.onnx"
    stat = onnx.stat()
    data = bytearray(onnx.read_bytes())
    data[-20] ^= 1
    onnx.write_bytes(bytes(data))
    os.utime(onnx, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    built.add_recipe("mlp.yaml", mlp_recipe(rtol=2e-3))
    result = built.doit("build", env=built.env(INFBUILD_CACHE="off"))
    assert result.returncode != 0
    assert "verify:mlp: refusing to read onnx:mlp" in result.output
    assert "model.onnx: sha256 differs from the stamp" in result.output
    data[-20] ^= 1
    onnx.write_bytes(bytes(data))
    untrusted = built.doit("build", env=built.env(INFBUILD_CACHE="off", INFBUILD_TRUSTED_KEYS=str(keys["other"].public),
                                                  XDG_CONFIG_HOME=str(built.root / "cfg")))
    assert untrusted.returncode != 0 and "verify:mlp: refusing to read" in untrusted.output
    assert "stage.sig: signed by key" in untrusted.output and "which is not trusted" in untrusted.output


def test_load_accepts_only_bytes_verify_judged(built: Project, cpu_target: str) -> None:
    """After a model change, `doit onnx:mlp` leaves a new ONNX verify never saw: load refuses it on the old report's
    word; with the verify stamp deleted and the manifest's verdict edited, it refuses too."""
    from infbuild.errors import ArtifactError
    from infbuild.runtime import load

    built.add_recipe("mlp.yaml", mlp_recipe(seed=3))
    assert built.doit("onnx:mlp", env=built.env(INFBUILD_CACHE="off")).returncode == 0
    with pytest.raises(ArtifactError, match="not verified: verify judged another build of onnx"):
        load(built.artifacts, "mlp", backend="onnxruntime")
    (built.stage("mlp", cpu_target, "verify") / "stamp.json").unlink()
    manifest_path = built.artifacts / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["recipes"]["mlp"]["targets"][cpu_target].setdefault("verify", {})["aoti"] = {"passed": True}
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="not verified: no verify stamp"):
        load(built.artifacts, "mlp", backend="aoti")


SELF_EDITING = '''\
import pathlib

import torch

def model():
    here = pathlib.Path(__file__)
    here.write_text(here.read_text() + "# saved while the worker ran\\n")  # an editor saving mid-build
    return Model()


class Model(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(4, 2)

    def forward(self, x):
        return self.linear(x)
'''


def test_a_source_edited_while_the_worker_runs_is_never_stamped(tmp_path: Path) -> None:
    p = Project(tmp_path / "proj")
    (p.root / "examples" / "editing.py").write_text(SELF_EDITING)
    p.add_recipe("m.yaml", "name: m\nmodel: {factory: 'examples.editing:model'}\ninputs:\n"
                           "  x: {shape: [batch, 4], dtype: float32}\ndims:\n  batch: {min: 1, max: 4}\n"
                           "outputs: [y]\nbackends: [onnxruntime]\nbench: {enabled: false}\n")
    result = p.doit("onnx:m", env=p.env(INFBUILD_CACHE="off"))
    assert result.returncode != 0
    # the export stage reads the sources (the model stages read its program)
    assert "export:m: its inputs changed while it was built (sources (examples/editing.py)): not stamped" in result.output
    assert not (p.stage("m", "portable", "export") / "stamp.json").exists()
    assert not (p.stage("m", "portable", "onnx") / "stamp.json").exists()
    status = p.infbuild("status", env=p.env(INFBUILD_CACHE="off"))
    assert "export:m" in status.stdout and "never built" in status.stdout

"""Hostile or broken state: tampered cache entries, stamps and manifests, read-only trees, edits that keep
mtimes, hostile registries. Each is a miss that is rebuilt, a repair, or one line naming what is wrong: never a
poisoned artifact, never a traceback."""
from __future__ import annotations

import http.server
import json
import os
import shutil
import subprocess
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
from helpers import Project, copy_built, mlp_recipe
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from infbuild import stage as stage_registry
from infbuild.artifacts import commit, list_files
from infbuild.cache import Wanted, restore
from infbuild.cache.local import LocalCache
from infbuild.errors import ArtifactError, InputError
from infbuild.folder import Outputs
from infbuild.stamp import Stamp, read_stamp

PLANNED = {"onnx", "reference", "aoti", "verify"}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, mlp_built: tuple[Project, Path]) -> tuple[Project, Path]:
    """The MLP recipe built (a copy of the session's build), its stages stored in a local cache of its own."""
    root = tmp_path_factory.mktemp("hostile")
    p = copy_built(mlp_built[0], root / "proj")
    shutil.copytree(mlp_built[1], root / "cache")
    return p, root / "cache"


def fresh_copy(built: tuple[Project, Path], tmp_path: Path) -> tuple[Project, Path]:
    """A copy of the built project (artifacts included) and of its cache, free to damage."""
    p, cache = built
    copy = Project(tmp_path / "proj")
    shutil.copytree(p.root / "recipes", copy.root / "recipes", dirs_exist_ok=True)
    shutil.copytree(p.artifacts, copy.artifacts, ignore=shutil.ignore_patterns(".doit.db*", ".infbuild"))
    shutil.copytree(cache, tmp_path / "cache")
    return copy, tmp_path / "cache"


def entry_of(cache: Path, stage: str) -> Path:
    for path in (cache / "entries").glob("*.json"):
        if json.loads(path.read_text())["stage"] == stage:
            return path
    raise AssertionError(f"no {stage} entry")


def clean_output(result_output: str) -> None:
    assert "Traceback" not in result_output, result_output[-3000:]


def test_relabelled_cache_entry_is_a_miss_and_the_stage_is_built(built: tuple[Project, Path], tmp_path: Path,
                                                                  cpu_target: str) -> None:
    """The onnx entry copied over the aoti key and relabelled with that key: never stamped as aoti."""
    _, cache = built
    cache = Path(shutil.copytree(cache, tmp_path / "cache"))
    onnx_entry, aoti_entry = entry_of(cache, "onnx"), entry_of(cache, "aoti")
    forged = json.loads(onnx_entry.read_text())
    forged["key"] = aoti_entry.stem
    aoti_entry.write_text(json.dumps(forged))
    p = Project(tmp_path / "clone")
    p.add_recipe("mlp.yaml", mlp_recipe())
    result = p.doit("build", env=p.env(INFBUILD_CACHE=f"local:{cache}"))
    assert result.returncode == 0, result.output[-3000:]
    clean_output(result.output)
    assert "aoti:mlp" in result.built() and "aoti:mlp" not in result.restored()
    assert f"cache local:{cache}: entry {aoti_entry} unusable (the stamp is labelled stage 'onnx', not 'aoti')" \
        in result.output
    stamp = read_stamp(p.stage("mlp", cpu_target, "aoti"))
    assert stamp is not None and set(stamp.files) == {"model.pt2", "aoti.json"}
    assert p.infbuild("verify-artifacts").returncode == 0


@pytest.mark.parametrize("files,why", [
    ({"stamp.json": b"{}", "model.onnx": b"x", "export.json": b"{}"}, "infbuild's own bookkeeping"),
    ({"x": b"1", "x/y": b"2", "model.onnx": b"x", "export.json": b"{}"}, "both as a file and as a folder"),
    ({"model.onnx": b"x"}, "lacks the required output(s) export.json"),
    ({"model.onnx": b"x", "export.json": b"{}", "evil.so": b"x"}, "holds file(s) this stage never produces: evil.so"),
])
def test_malformed_entries_are_misses_naming_cache_and_entry(tmp_path: Path, files: dict[str, bytes], why: str,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    cache, key = forge_entry(tmp_path, files)
    staging = tmp_path / "stage" / ".staging"
    staging.mkdir(parents=True)
    assert restore([cache], wanted_onnx(key), staging) is None
    assert list(staging.iterdir()) == []
    err = capsys.readouterr().out
    assert f"cache {cache.name}: entry {cache.where(key)} unusable (" in err and why in err and "building instead" in err


def wanted_onnx(key: str) -> Wanted:
    return Wanted(key, "onnx", "mlp", "portable", stage_registry.get("onnx").outputs)


def forge_entry(tmp_path: Path, files: dict[str, bytes], key: str = "k" * 64, **stamp_fields: Any) -> tuple[LocalCache, str]:
    """Write an entry straight into a local cache folder, as an attacker with write access to it would."""
    import hashlib

    cache = LocalCache(tmp_path / "cache")
    metas = {}
    for name, data in files.items():
        sha = hashlib.sha256(data).hexdigest()
        blob = cache.path / "blobs" / sha[:2] / sha
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        metas[name] = {"sha256": sha, "size": len(data)}
    stamp = {"key": key, "stage": "onnx", "recipe": "mlp", "target": "portable", "fingerprint": {}, "files": metas,
             **stamp_fields}
    (cache.path / "entries").mkdir(parents=True, exist_ok=True)
    (cache.path / "entries" / f"{key}.json").write_text(json.dumps(stamp))
    return cache, key


NAMES = st.sampled_from(["model.onnx", "export.json", "model.onnx.data", "model.graph.onnx", "stamp.json",
                         "worker.log", "../escape", "/abs", "a/../../b", "x", "x/y", "", ".", "a\\b", "sub/model.onnx",
                         "model.onnx/inner", "ok.txt"])


@settings(max_examples=150, derandomize=True, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(files=st.dictionaries(NAMES, st.binary(max_size=16), max_size=6),
       label=st.fixed_dictionaries({}, optional={"stage": st.sampled_from(["onnx", "aoti", 3]),
                                                 "recipe": st.sampled_from(["mlp", "other", None]),
                                                 "target": st.sampled_from(["portable", "cpu-x86_64-avx2"])}),
       size_lie=st.integers(-2, 2), json_garbage=st.booleans())
def test_generated_cache_entries_never_poison_a_stage(tmp_path_factory: pytest.TempPathFactory, files: dict[str, bytes],
                                                      label: dict[str, Any], size_lie: int, json_garbage: bool) -> None:
    """Whatever an entry holds: no exception, nothing written outside the staging folder, and a hit restores
    exactly the files the stage must produce, byte for byte as its stamp says."""
    tmp = tmp_path_factory.mktemp("entry")
    cache, key = forge_entry(tmp, files, **label)
    entry = cache.path / "entries" / f"{key}.json"
    stamp = json.loads(entry.read_text())
    if size_lie and stamp["files"]:
        stamp["files"][sorted(stamp["files"])[0]]["size"] += size_lie
    entry.write_text("[" * 100000 if json_garbage and size_lie == 2 else json.dumps(stamp))
    outside = tmp / "stage"
    staging = outside / ".staging"
    staging.mkdir(parents=True)
    before = sorted(str(p) for p in tmp.rglob("*") if cache.path not in p.parents)
    hit = restore([cache], wanted_onnx(key), staging)
    after = sorted(str(p) for p in tmp.rglob("*") if cache.path not in p.parents and staging not in p.parents)
    assert after == before
    if hit is None:
        assert list(staging.iterdir()) == []
        return
    restored = list_files(staging)
    assert stage_registry.get("onnx").outputs.problem(restored) is None
    assert {n: (m["sha256"], m["size"]) for n, m in restored.items()} == \
        {n: (m["sha256"], m["size"]) for n, m in hit.stamp.files.items()}
    assert (hit.stamp.stage, hit.stamp.recipe, hit.stamp.target) == ("onnx", "mlp", "portable")


def test_commit_refuses_a_folder_that_is_not_the_stage_output(tmp_path: Path) -> None:
    staging = tmp_path / ".staging"
    staging.mkdir()
    (staging / "model.onnx").write_bytes(b"x")
    with pytest.raises(ArtifactError, match="lacks the required output"):
        commit(staging, tmp_path / "onnx", Stamp("k" * 64, "onnx", "mlp", target="portable", files={}),
               Outputs(("model.onnx", "export.json")))
    assert not (tmp_path / "onnx").exists() and not (staging / "stamp.json").exists()


def test_a_stamp_lacking_required_outputs_is_stale_and_reported(built: tuple[Project, Path], tmp_path: Path,
                                                                cpu_target: str) -> None:
    """aoti's folder and stamp replaced by onnx's outputs with the aoti key: stale, and verify-artifacts says so."""
    p, _ = fresh_copy(built, tmp_path)
    aoti, onnx_dir = p.stage("mlp", cpu_target, "aoti"), p.stage("mlp", "portable", "onnx")
    stamp = json.loads((aoti / "stamp.json").read_text())
    forged = json.loads((onnx_dir / "stamp.json").read_text())
    shutil.rmtree(aoti)
    shutil.copytree(onnx_dir, aoti)
    forged.update(key=stamp["key"], inputs=stamp["inputs"], stage="aoti", target=cpu_target)
    (aoti / "stamp.json").write_text(json.dumps(forged))
    status = p.infbuild("status", env=p.env(INFBUILD_CACHE="off"))
    assert status.returncode == 1
    assert "aoti:mlp" in status.stdout and "the stamp lacks the required output(s) aoti.json, model.pt2" in status.stdout
    check = p.infbuild("verify-artifacts", env=p.env(INFBUILD_CACHE="off"))
    assert check.returncode == 1 and "aoti:mlp" in check.stdout and "lacks the required output" in check.stdout
    clean_output(check.stdout + check.stderr)


def test_manifest_replaced_by_a_folder_is_repaired_by_the_build(built: tuple[Project, Path], tmp_path: Path) -> None:
    p, _ = fresh_copy(built, tmp_path)
    (p.artifacts / "manifest.json").unlink()
    (p.artifacts / "manifest.json").mkdir()
    check = p.infbuild("verify-artifacts", env=p.env(INFBUILD_CACHE="off"))
    assert check.returncode == 1
    assert "manifest.json: not a regular file" in check.stdout and "the manifest is broken" in check.stdout
    assert "stage(s) with tampered" not in check.stdout
    result = p.doit("build", env=p.env(INFBUILD_CACHE="off"))
    assert result.returncode == 0, result.output[-2000:]
    clean_output(result.output)
    assert result.stages_ran() == set() and "was not a file: moved aside" in result.output
    assert json.loads((p.artifacts / "manifest.json").read_text())["recipes"]["mlp"]
    assert p.infbuild("verify-artifacts", env=p.env(INFBUILD_CACHE="off")).returncode == 0


@pytest.mark.parametrize("damage,message", [
    (lambda m: [1, 2], "is damaged (no 'recipes' object)"),
    (lambda m: {**m, "recipes": {"mlp": []}}, "is damaged (recipes.mlp is not an object)"),
    (lambda m: {**m, "recipes": {"mlp": {**m["recipes"]["mlp"], "targets": 3}}}, "recipes.mlp.targets is not an object"),
])
def test_runtime_names_a_damaged_manifest_and_the_repair(built: tuple[Project, Path], tmp_path: Path, damage: Any,
                                                         message: str) -> None:
    from infbuild.runtime import load

    p, _ = fresh_copy(built, tmp_path)
    manifest = json.loads((p.artifacts / "manifest.json").read_text())
    (p.artifacts / "manifest.json").write_text(json.dumps(damage(manifest)))
    with pytest.raises(ArtifactError) as info:
        load(p.artifacts, "mlp")
    assert message in str(info.value) and "doit build" in str(info.value) and "\n" not in str(info.value)


def test_runtime_takes_io_and_files_from_the_stamped_build_not_the_index(built: tuple[Project, Path], tmp_path: Path,
                                                                        cpu_target: str) -> None:
    """Edited dims, an unknown dtype, emptied file lists and hostile file names in the manifest change nothing the
    runtime does: it checks every file against the stage's own stamp and takes bounds from it."""
    from infbuild.runtime import load

    p, _ = fresh_copy(built, tmp_path)
    path = p.artifacts / "manifest.json"
    manifest = json.loads(path.read_text())
    entry = manifest["recipes"]["mlp"]
    entry["io"]["dims"]["batch"]["max"] = 4096
    entry["io"]["inputs"]["x"]["dtype"] = "complex128"
    entry["targets"][cpu_target]["stages"]["aoti"]["files"] = {"/etc/passwd": {"sha256": "0", "size": 1}}
    entry["targets"]["portable"]["stages"]["onnx"]["files"] = {}
    path.write_text(json.dumps(manifest))
    for backend in ("aoti", "onnxruntime"):
        model = load(p.artifacts, "mlp", backend=backend)
        assert model(x=np.ones((2, 10), np.float32))["y"].shape == (2, 1)
        with pytest.raises(InputError, match=r"is 2048, outside 1\.\.64"):
            model(x=np.ones((2048, 10), np.float32))
    onnx_file = p.stage("mlp", "portable", "onnx") / "model.onnx"
    onnx_file.write_bytes(onnx_file.read_bytes()[:-1] + b"\0")
    with pytest.raises(ArtifactError, match="does not match its stamped sha256"):
        load(p.artifacts, "mlp", backend="onnxruntime")


def test_runtime_refuses_a_stamp_edited_to_list_other_files(built: tuple[Project, Path], tmp_path: Path) -> None:
    from infbuild.runtime import load

    p, _ = fresh_copy(built, tmp_path)
    folder = p.stage("mlp", "portable", "onnx")
    stamp = json.loads((folder / "stamp.json").read_text())
    stamp["files"] = {}
    (folder / "stamp.json").write_text(json.dumps(stamp))
    with pytest.raises(ArtifactError, match="stamp.json was altered .*lacks the required output"):
        load(p.artifacts, "mlp", backend="onnxruntime")


@pytest.mark.parametrize("value,message", [
    (np.array([[np.nan] * 10], np.float32), "holds NaN or infinite values"),
    (np.array([[np.inf] * 10], np.float32), "holds NaN or infinite values"),
    ([[1.0] * 10, [1.0] * 9], "is not"),
    ("text", "dtype <U4"),
])
def test_runtime_refuses_non_finite_and_ragged_inputs(built: tuple[Project, Path], value: Any, message: str) -> None:
    from infbuild.runtime import load

    p, _ = built
    model = load(p.artifacts, "mlp", backend="onnxruntime")
    with pytest.raises(InputError, match=message):
        model(x=value)
    lenient = load(p.artifacts, "mlp", backend="onnxruntime", check_finite=False)
    assert np.isnan(lenient(x=np.full((1, 10), np.nan, np.float32))["y"]).all()


def test_runtime_says_a_backend_was_not_built_for_the_recipe(built: tuple[Project, Path]) -> None:
    from infbuild.runtime import load

    p, _ = built
    with pytest.raises(ArtifactError, match="no tensorrt artifact: the recipe was not built for it "
                                            r"\(its backends: aoti, onnxruntime\)"):
        load(p.artifacts, "mlp", backend="tensorrt")


def test_lock_path_that_is_a_folder_is_one_line_and_nothing_runs(built: tuple[Project, Path], tmp_path: Path) -> None:
    p, _ = fresh_copy(built, tmp_path)
    (p.artifacts / ".infbuild").mkdir(exist_ok=True)
    (p.artifacts / ".infbuild" / "build.lock").mkdir()
    result = p.doit("build", env=p.env(INFBUILD_CACHE="off"))
    assert result.returncode == 1
    clean_output(result.output)
    assert f"infbuild: cannot write or read {p.artifacts / '.infbuild' / 'build.lock'}: must be a file" in result.output


def test_artifacts_path_that_cannot_be_a_folder_is_one_line(tmp_path: Path) -> None:
    p = Project(tmp_path / "proj")
    p.add_recipe("mlp.yaml", mlp_recipe())
    p.artifacts.write_text("not a folder")
    result = p.doit("build", env=p.env(INFBUILD_CACHE="off"))
    assert result.returncode == 1
    clean_output(result.output)
    assert f"infbuild: cannot write or read {p.artifacts}" in result.output


@contextmanager
def read_only(folder: Path) -> Iterator[None]:
    """``folder`` read-only for this process: a read-only bind mount as root (chmod does not bind root), else chmod."""
    if os.geteuid() != 0:
        os.chmod(folder, 0o555)
        try:
            yield
        finally:
            os.chmod(folder, 0o755)
        return
    mounted = subprocess.run(["mount", "--bind", str(folder), str(folder)], capture_output=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot bind-mount here: {mounted.stderr.decode()[:200]}")
    try:
        if subprocess.run(["mount", "-o", "remount,ro,bind", str(folder)], capture_output=True, check=False).returncode:
            pytest.skip("cannot remount read-only here")
        yield
    finally:
        subprocess.run(["umount", str(folder)], capture_output=True, check=False)


def test_read_only_artifacts_is_one_line(built: tuple[Project, Path], tmp_path: Path) -> None:
    p, _ = fresh_copy(built, tmp_path)
    (p.artifacts / ".infbuild").mkdir(exist_ok=True)
    with read_only(p.artifacts):
        result = p.doit("build", env=p.env(INFBUILD_CACHE="off"))
    assert result.returncode == 1, result.output[-2000:]
    assert f"infbuild: cannot write or read {p.artifacts}: the folder is not writable" in result.output
    clean_output(result.output)


def test_in_place_edit_keeping_size_and_mtime_rebuilds(built: tuple[Project, Path], tmp_path: Path) -> None:
    """A source edit that keeps size, mtime and inode (cp -p, touch -r, editors that keep mtimes) is seen."""
    p, _ = fresh_copy(built, tmp_path)
    assert p.infbuild("status", env=p.env(INFBUILD_CACHE="off")).returncode == 0
    source = p.root / "examples" / "models.py"
    st = source.stat()
    text = source.read_text()
    edited = text.replace("Example models", "Example modelz", 1)
    assert len(edited) == len(text) and edited != text
    with open(source, "r+") as f:  # in place: same inode, same size
        f.write(edited)
    os.utime(source, ns=(st.st_atime_ns, st.st_mtime_ns))
    after = source.stat()
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (st.st_size, st.st_mtime_ns, st.st_ino)
    status = p.infbuild("status", env=p.env(INFBUILD_CACHE="off"))
    assert status.returncode == 1 and "key changed: sources (examples/models.py)" in status.stdout


# --- a hostile registry ------------------------------------------------------------------------------------------

class HostileRegistry(http.server.BaseHTTPRequestHandler):
    """An OCI registry answering as an attacker would: set ``mode`` on the server."""

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        mode = self.server.mode  # type: ignore[attr-defined]
        self.server.requests.append(self.path)  # type: ignore[attr-defined]
        if mode == "not-json":
            return self._send(b"<html>surprise</html>", "application/vnd.oci.image.manifest.v1+json")
        if mode == "endless-index":
            index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                     "manifests": [{"digest": "sha256:" + "1" * 64, "platform": {"os": "linux", "architecture": "amd64"}}]}
            return self._send(json.dumps(index).encode(), index["mediaType"])
        if mode == "huge-layer":
            if "/manifests/" in self.path:
                return self._send(json.dumps(self.server.manifest).encode(),  # type: ignore[attr-defined]
                                  "application/vnd.oci.image.manifest.v1+json")
            if self.server.config_digest in self.path:  # type: ignore[attr-defined]
                return self._send(self.server.config)  # type: ignore[attr-defined]
            self.server.huge_fetched = True  # type: ignore[attr-defined]
            return self._send(b"\0" * (300 << 20))
        self.send_error(404)

    def _send(self, body: bytes, media: str = "application/octet-stream") -> None:
        self.send_response(200)
        self.send_header("Content-Type", media)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass


@pytest.fixture
def hostile_registry() -> Iterator[http.server.ThreadingHTTPServer]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), HostileRegistry)
    server.requests = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("mode", ["not-json", "endless-index"])
def test_a_registry_answering_garbage_is_a_miss_with_one_warning(hostile_registry: Any, mode: str, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from infbuild.cache.registry_cache import RegistryCache

    hostile_registry.mode = mode
    address = f"127.0.0.1:{hostile_registry.server_address[1]}"
    os.environ["INFBUILD_INSECURE_REGISTRY"] = address
    try:
        cache = RegistryCache(f"{address}/cache/{mode}")
        staging = tmp_path / ".staging"
        staging.mkdir()
        assert restore([cache], wanted_onnx("a" * 64), staging) is None
    finally:
        del os.environ["INFBUILD_INSECURE_REGISTRY"]
    out = capsys.readouterr().out
    assert out.count("warning:") == 1 and "unusable" in out and "building instead" in out
    assert len(hostile_registry.requests) <= 4


def test_a_registry_layer_larger_than_its_stamp_is_never_downloaded(hostile_registry: Any, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    import hashlib

    from infbuild.cache.registry_cache import RegistryCache

    data = {"model.onnx": b"onnx", "export.json": b"{}"}
    files = {n: {"sha256": hashlib.sha256(d).hexdigest(), "size": len(d)} for n, d in data.items()}
    stamp = {"key": "b" * 64, "stage": "onnx", "recipe": "mlp", "target": "portable", "fingerprint": {}, "files": files}
    config = json.dumps(stamp).encode()
    config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
    layers = [{"mediaType": "application/vnd.infbuild.file.v1", "digest": "sha256:" + m["sha256"],
               "size": m["size"] if n == "export.json" else 300 << 20,
               "annotations": {"org.opencontainers.image.title": n}} for n, m in files.items()]
    hostile_registry.mode = "huge-layer"
    hostile_registry.manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                                 "config": {"mediaType": "x", "digest": config_digest, "size": len(config)},
                                 "layers": layers}
    hostile_registry.config, hostile_registry.config_digest = config, config_digest
    hostile_registry.huge_fetched = False
    address = f"127.0.0.1:{hostile_registry.server_address[1]}"
    os.environ["INFBUILD_INSECURE_REGISTRY"] = address
    try:
        staging = tmp_path / ".staging"
        staging.mkdir()
        assert restore([RegistryCache(f"{address}/cache/huge")], wanted_onnx("b" * 64), staging) is None
    finally:
        del os.environ["INFBUILD_INSECURE_REGISTRY"]
    assert hostile_registry.huge_fetched is False
    assert "layer descriptor (314572800 bytes" in capsys.readouterr().out


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real OCI registry (Debian's docker-registry) on loopback."""
    if shutil.which("docker-registry") is None:
        pytest.skip("needs docker-registry (Debian: docker-registry)")
    from services import RegistryServer

    server = RegistryServer(tmp_path_factory.mktemp("registry"))
    os.environ["INFBUILD_INSECURE_REGISTRY"] = server.address
    try:
        yield server.address
    finally:
        del os.environ["INFBUILD_INSECURE_REGISTRY"]
        server.stop()


@pytest.mark.parametrize("forgery,why", [
    ({"stage": "aoti", "target": "cpu-x86_64-avx2"}, "the stamp is labelled stage 'aoti', not 'onnx'"),
    ({"recipe": "other"}, "the stamp is labelled recipe 'other', not 'mlp'"),
    ({"extra": "stamp.json"}, "infbuild's own bookkeeping"),
    ({"extra": "evil.so"}, "holds file(s) this stage never produces: evil.so"),
])
def test_registry_cache_entries_follow_the_same_rule(registry: str, tmp_path: Path, forgery: dict[str, str], why: str,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """A forged entry pushed to a real registry under the key being built is a miss naming the cache and entry."""
    import hashlib

    from infbuild.cache.registry_cache import RegistryCache

    folder = tmp_path / "files"
    folder.mkdir()
    names = ["model.onnx", "export.json"] + ([forgery["extra"]] if "extra" in forgery else [])
    for name in names:
        (folder / name).write_bytes(f"bytes of {name}".encode())
    files = {n: {"sha256": hashlib.sha256((folder / n).read_bytes()).hexdigest(), "size": (folder / n).stat().st_size}
             for n in names}
    key = hashlib.sha256(why.encode()).hexdigest()
    stamp = {"key": key, "stage": "onnx", "recipe": "mlp", "target": "portable", "fingerprint": {}, "files": files,
             **{k: v for k, v in forgery.items() if k != "extra"}}
    cache = RegistryCache(f"{registry}/hostile/cache", writable=True)
    assert cache.put(key, stamp, folder)
    staging = tmp_path / ".staging"
    staging.mkdir()
    assert restore([cache], wanted_onnx(key), staging) is None and list(staging.iterdir()) == []
    out = capsys.readouterr().out
    assert f"cache {cache.name}: entry {registry}/hostile/cache:{key} unusable (" in out and why in out
    honest = {**stamp, "stage": "onnx", "recipe": "mlp", "target": "portable",
              "files": {n: m for n, m in files.items() if n in ("model.onnx", "export.json")}}
    honest_key = hashlib.sha256(b"honest" + why.encode()).hexdigest()
    assert cache.put(honest_key, {**honest, "key": honest_key}, folder)
    hit = restore([cache], wanted_onnx(honest_key), staging)
    assert hit is not None and sorted(p.name for p in staging.iterdir()) == ["export.json", "model.onnx"]

"""Shared artifact caches: a fresh clone with a warm cache builds nothing; only stale keys miss; targets never
cross; bad entries are misses, never crashes; concurrent writers; a real OCI registry as a cache."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import SMALL_BENCH, GpuHost, Project, copy_built, mlp_recipe, tasks, trt_recipe

pytestmark = pytest.mark.slow  # real builds (see the README's test tiers)

CACHEABLE = {"export", "onnx", "reference", "aoti", "verify", "bench"}


def clone(tmp_path: Path, name: str, recipes: dict[str, str]) -> Project:
    return Project.with_recipes(tmp_path / name, recipes)


RECIPES = {"a.yaml": mlp_recipe(name="a", seed=0, bench=SMALL_BENCH), "b.yaml": mlp_recipe(name="b", seed=1, bench=SMALL_BENCH)}


@pytest.fixture(scope="module")
def warm(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A cache warmed by one cold build of two recipes."""
    root = tmp_path_factory.mktemp("cache")
    cache = f"local:{root / 'cache'}"
    first = clone(root, "first", RECIPES)
    result = first.doit("build", env=first.env(INFBUILD_CACHE=cache))
    assert result.returncode == 0, result.output[-3000:]
    assert result.restored() == set() and len(result.built()) == 12
    return root, cache


def test_fresh_clone_with_warm_cache_builds_nothing(warm: tuple[Path, str], tmp_path: Path) -> None:
    _, cache = warm
    second = clone(tmp_path, "second", RECIPES)
    result = second.doit("build", env=second.env(INFBUILD_CACHE=cache))
    assert result.returncode == 0, result.output[-3000:]
    assert result.built() == set()
    assert result.restored() == tasks("a", CACHEABLE) | tasks("b", CACHEABLE)
    assert {k: result.summary().get(k, 0) for k in ("built", "restored", "uptodate")} == {"built": 0, "restored": 12,
                                                                                           "uptodate": 0}
    third = clone(tmp_path, "third", RECIPES)
    console = third.doit("build", env=third.env(INFBUILD_CACHE=cache), reporter="console")
    assert console.returncode == 0  # the console's summary line says the same
    assert re.search(r"infbuild: 0 built \(0\.0s\), 12 restored from local:\S+ \([\d.]+s\), 0 up to date", console.output)
    status = second.infbuild("status", env=second.env(INFBUILD_CACHE=cache))
    assert status.returncode == 0
    stamp = json.loads((second.stage("a", "portable", "onnx") / "stamp.json").read_text())
    assert stamp["restored_from"] == cache


def test_edited_recipe_misses_only_its_stale_keys(warm: tuple[Path, str], tmp_path: Path) -> None:
    _, cache = warm
    edited = dict(RECIPES, **{"a.yaml": RECIPES["a.yaml"].replace("rtol: 0.001", "rtol: 0.002")})
    p = clone(tmp_path, "edited", edited)
    result = p.doit("build", env=p.env(INFBUILD_CACHE=cache))
    assert result.returncode == 0
    assert result.built() == {"verify:a"}
    assert result.restored() == (tasks("a", CACHEABLE) | tasks("b", CACHEABLE)) - {"verify:a"}


def test_entries_of_one_target_never_restore_on_another(warm: tuple[Path, str], tmp_path: Path, cpu_target: str) -> None:
    _, cache = warm
    other = "avx2" if not cpu_target.endswith("avx2") else "avx512"
    p = clone(tmp_path, "other-host", {"a.yaml": RECIPES["a.yaml"]})
    result = p.doit("build", env=p.env(INFBUILD_CACHE=cache, INFBUILD_FINGERPRINT=json.dumps({"cpu": {"isa": other}})))
    assert result.returncode == 0
    assert result.restored() == {"export:a", "onnx:a", "reference:a"}  # portable stages only
    assert result.built() == {"aoti:a", "verify:a", "bench:a"}


@pytest.fixture(scope="module")
def a_built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Project, Path]:
    """Recipe ``a`` built once with its stages in a local cache: tests whose subject is what happens to a cache
    entry afterwards copy both instead of compiling first."""
    root = tmp_path_factory.mktemp("a-built")
    first = clone(root, "first", {"a.yaml": mlp_recipe(name="a")})
    assert first.doit("build", env=first.env(INFBUILD_CACHE=f"local:{root / 'cache'}")).returncode == 0
    return first, root / "cache"


def copied(a_built: tuple[Project, Path], tmp_path: Path) -> tuple[Project, str]:
    """A private copy of ``a_built``'s project and cache (the cache as an INFBUILD_CACHE entry)."""
    shutil.copytree(a_built[1], tmp_path / "cache")
    return copy_built(a_built[0], tmp_path / "first"), f"local:{tmp_path / 'cache'}"


def _local_root(cache: str) -> Path:
    return Path(cache.split(":", 1)[1])


def test_tampered_blob_is_a_miss_and_a_rebuild(a_built: tuple[Project, Path], tmp_path: Path) -> None:
    first, cache = copied(a_built, tmp_path)
    recipes = {"a.yaml": mlp_recipe(name="a")}
    onnx_sha = json.loads((first.stage("a", "portable", "onnx") / "stamp.json").read_text())["files"]["model.onnx"]["sha256"]
    blob = _local_root(cache) / "blobs" / onnx_sha[:2] / onnx_sha
    blob.write_bytes(blob.read_bytes()[:-10] + b"0123456789")
    second = clone(tmp_path, "second", recipes)
    result = second.doit("build", env=second.env(INFBUILD_CACHE=cache))
    assert result.returncode == 0, result.output[-3000:]
    assert "onnx:a" in result.built() and "reference:a" in result.restored()
    assert result.output.count("sha256 differs from the stamp (corrupted or tampered)") == 1
    truncated = clone(tmp_path, "third", recipes)
    ref_stamp = json.loads((first.stage("a", "portable", "reference") / "stamp.json").read_text())
    sha = ref_stamp["files"]["opt.npz"]["sha256"]
    ref_blob = _local_root(cache) / "blobs" / sha[:2] / sha
    ref_blob.write_bytes(ref_blob.read_bytes()[:100])
    result = truncated.doit("build", env=truncated.env(INFBUILD_CACHE=cache))
    assert result.returncode == 0 and "reference:a" in result.built() and "(truncated?)" in result.output


def test_path_traversal_entry_is_refused(a_built: tuple[Project, Path], tmp_path: Path) -> None:
    first, cache = copied(a_built, tmp_path)
    recipes = {"a.yaml": mlp_recipe(name="a")}
    key = json.loads((first.stage("a", "portable", "onnx") / "stamp.json").read_text())["key"]
    entry_path = _local_root(cache) / "entries" / f"{key}.json"
    entry = json.loads(entry_path.read_text())
    meta = entry["files"].pop("model.onnx")
    entry["files"]["../../../../escaped.onnx"] = meta
    entry_path.write_text(json.dumps(entry))
    second = clone(tmp_path, "second", recipes)
    result = second.doit("build", env=second.env(INFBUILD_CACHE=cache))
    assert result.returncode == 0
    assert "onnx:a" in result.built() and "would escape the stage folder" in result.output
    assert not list(tmp_path.rglob("escaped.onnx"))


def test_two_builds_populating_one_cache_at_once_agree_on_every_key(tmp_path: Path) -> None:
    """Two checkouts build the same recipes at once into one cache. The first entry written for a key stays and
    the other build adopts it, so both end with the same bytes behind every key (an AOTI package is not
    bit-reproducible, the ONNX export must not depend on the checkout's path) and a third checkout restores all."""
    cache = f"local:{tmp_path / 'cache'}"
    recipes = {"a.yaml": mlp_recipe(name="a"), "b.yaml": mlp_recipe(name="b", seed=1)}
    projects = [clone(tmp_path, f"p{i}", recipes) for i in range(2)]
    procs = [subprocess.Popen([sys.executable, "-m", "doit", "build"], cwd=p.root, env=p.env(INFBUILD_CACHE=cache),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for p in projects]
    outputs = [proc.communicate(timeout=600)[0] for proc in procs]
    assert all(proc.returncode == 0 for proc in procs), [o[-3000:] for o in outputs]
    for p in projects:
        assert p.infbuild("status", env=p.env(INFBUILD_CACHE=cache)).returncode == 0
    stamps = [{s.parent.relative_to(p.artifacts).as_posix(): json.loads(s.read_text()) for s in p.artifacts.glob("*/*/*/stamp.json")}
              for p in projects]
    assert stamps[0].keys() == stamps[1].keys() and len(stamps[0]) == 10
    for stage, stamp in stamps[0].items():
        other = stamps[1][stage]
        assert stamp["key"] == other["key"], stage
        assert {n: m["sha256"] for n, m in stamp["files"].items()} == {n: m["sha256"] for n, m in other["files"].items()}, stage
    from infbuild import stage as registry
    from infbuild.cache import Wanted
    from infbuild.cache.local import LocalCache

    local = LocalCache(_local_root(cache))
    entries = local.entries()
    assert len(entries) == 10  # one per key: the later writer adopted the entry instead of adding its own
    for index, e in enumerate(entries):  # every entry complete and intact, exactly its stage's outputs
        staging = tmp_path / f"check-{index}"
        staging.mkdir()
        wanted = Wanted(e["key"], e["stage"], e["recipe"], e["target"], registry.get(e["stage"]).outputs)
        assert local.get(wanted, staging) is not None and any(staging.iterdir())
    third = clone(tmp_path, "p2", recipes)
    result = third.doit("build", env=third.env(INFBUILD_CACHE=cache))
    assert result.returncode == 0 and result.built() == set() and len(result.restored()) == 10


def test_a_build_that_loses_the_race_adopts_the_cached_outputs(a_built: tuple[Project, Path], tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch, cpu_target: str) -> None:
    """A stage built while another build stored the same key first ends with the cached bytes (the cache keeps its
    first entry), so what depends on it restores from the cache too."""
    from infbuild.engine import share
    from infbuild.keys import key_inputs, stage_key
    from infbuild.stamp import read_stamp
    from infbuild.tasks import context

    first, cache = copied(a_built, tmp_path)
    recipes = {"a.yaml": mlp_recipe(name="a")}
    cached = read_stamp(first.stage("a", cpu_target, "aoti"))
    second = clone(tmp_path, "second", recipes)  # the build that lost the race: its own package, not yet stored
    assert second.doit("build", env=second.env(INFBUILD_CACHE="off")).returncode == 0
    own = read_stamp(second.stage("a", cpu_target, "aoti"))
    assert own is not None and cached is not None
    assert own.key == cached.key and own.files["model.pt2"] != cached.files["model.pt2"]

    monkeypatch.setenv("INFBUILD_CACHE", cache)
    ctx = context(str(second.root))
    p = ctx.planned["aoti:a"]
    key, inputs = ctx.key(p)
    assert key == stage_key(key_inputs(p, ctx.fingerprint, ctx.project.root, ctx.digests, ctx.siblings(p)))
    share(ctx, p, key, inputs, own, ctx.caches)
    adopted = read_stamp(second.stage("a", cpu_target, "aoti"))
    assert adopted is not None and adopted.files == cached.files and adopted.restored_from == cache
    result = second.doit("build", env=second.env(INFBUILD_CACHE=cache))
    assert result.returncode == 0 and result.built() == set() and "verify:a" in result.restored()


def test_cache_cli_stats_ls_push_pull_gc(a_built: tuple[Project, Path], tmp_path: Path) -> None:
    cache = f"local:{tmp_path / 'cache'}"
    p = copy_built(a_built[0], tmp_path / "p")
    env = p.env(INFBUILD_CACHE=cache)
    assert "push: 5 stage(s)" in p.infbuild("cache", "push", env=env).stdout
    stats = p.infbuild("cache", "stats", env=env).stdout
    assert re.search(r"local:\S+ \(writable\): 5 entries, [\d.]+ MB", stats)
    listing = p.infbuild("cache", "ls", env=env).stdout
    assert "aoti" in listing and "onnx" in listing
    shutil.rmtree(p.artifacts / "a")
    assert "pull: 5 stage(s)" in p.infbuild("cache", "pull", env=env).stdout
    assert p.infbuild("status", env=env).returncode == 0
    gc = p.infbuild("cache", "gc", "--max-size", "0", env=env).stdout
    assert "evicted 5 entries" in gc
    assert "0 entries, 0.0 MB" in p.infbuild("cache", "stats", env=env).stdout


def test_registry_cache_shares_builds_and_a_down_registry_degrades(services: dict, tmp_path: Path) -> None:
    cache = f"oci:{services['registry'].address}/infbuild/cache#rw"
    recipes = {"a.yaml": mlp_recipe(name="a")}
    first = clone(tmp_path, "first", recipes)
    result = first.doit("build", env=first.env(INFBUILD_CACHE=cache))
    assert result.returncode == 0, result.output[-3000:]
    second = clone(tmp_path, "second", recipes)
    result = second.doit("build", env=second.env(INFBUILD_CACHE=f"oci:{services['registry'].address}/infbuild/cache"))
    assert result.returncode == 0
    assert result.built() == set() and len(result.restored()) == 5
    down = clone(tmp_path, "down", recipes)
    result = down.doit("build", env=down.env(INFBUILD_CACHE="oci:127.0.0.1:9/infbuild/cache#rw"))
    assert result.returncode == 0 and len(result.built()) == 5
    assert result.output.count("warning: cache oci:127.0.0.1:9/infbuild/cache unavailable") == 1


def test_ci_flow_a_cpu_job_acts_for_a_gpu_target_from_the_cache(tmp_path: Path) -> None:
    """examples/ci/github-actions.yml: the GPU job builds and saves its fingerprint; a CPU job given that
    fingerprint restores every stage (TensorRT ones included) and builds nothing."""
    host = GpuHost(tmp_path / "gpu")
    cache = f"local:{tmp_path / 'cache'}"
    recipes = {"mlp.yaml": trt_recipe().replace("bench: {enabled: false}\n", SMALL_BENCH)}
    gpu_job = clone(tmp_path, "gpu-job", recipes)
    result = gpu_job.doit("build", env=host.env(gpu_job, INFBUILD_CACHE=cache))
    assert result.returncode == 0, result.output[-3000:]
    assert {"trt_engine:mlp", "bench:mlp"} <= result.built()
    fingerprint = tmp_path / "fingerprint.json"
    fingerprint.write_text(gpu_job.infbuild("fingerprint", "--json", env=host.env(gpu_job)).stdout)
    cpu_job = clone(tmp_path, "cpu-job", recipes)
    cpu_env = cpu_job.env(INFBUILD_CACHE=cache, INFBUILD_FINGERPRINT=f"@{fingerprint}", PATH="/usr/bin:/bin:"
                          + str(Path(sys.executable).parent))
    pulled = cpu_job.infbuild("cache", "pull", env=cpu_env)
    assert pulled.returncode == 0 and "pull: 7 stage(s)" in pulled.stdout, pulled.stdout + pulled.stderr
    result = cpu_job.doit("build", env=cpu_env)
    assert result.returncode == 0 and result.stages_ran() == set(), result.output[-2000:]
    assert (cpu_job.stage("mlp", "cuda-sm90-nvidia-h100-80gb-hbm3", "trt_engine") / "model.engine").is_file()

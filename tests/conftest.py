"""Fixtures: throwaway infbuild projects (copies of the examples) and a doit runner that reports which
tasks ran. Builds are real: torch.onnx export, AOTInductor compiles, onnxruntime."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@dataclass
class DoitRun:
    returncode: int
    output: str
    ran: list[str]  # tasks whose actions executed ('.  task')
    uptodate: list[str]  # tasks doit skipped ('-- task')

    def stages_ran(self) -> set[str]:
        return {t for t in self.ran if ":" in t}


class Project:
    """A temporary project laid out like the repo: dodo.py, pyproject.toml, examples/, recipes/."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.artifacts = root / "artifacts"
        (root / "recipes").mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / "dodo.py", root / "dodo.py")
        shutil.copytree(REPO / "examples", root / "examples", ignore=shutil.ignore_patterns("__pycache__"))
        (root / "pyproject.toml").write_text(
            '[tool.infbuild]\nrecipes = ["recipes/*.yaml", "recipes/*.json"]\n', encoding="utf-8")

    def add_recipe(self, name: str, text: str) -> Path:
        path = self.root / "recipes" / name
        path.write_text(text, encoding="utf-8")
        return path

    def copy_example_recipes(self) -> None:
        for path in (REPO / "recipes").iterdir():
            shutil.copy(path, self.root / "recipes" / path.name)

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("INFBUILD_")}
        env.update(extra)
        return env

    def run(self, *argv: str, env: dict[str, str] | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
        return subprocess.run(list(argv), cwd=self.root, env=env or self.env(), capture_output=True, text=True,
                              timeout=timeout, check=False)

    def doit(self, *args: str, env: dict[str, str] | None = None) -> DoitRun:
        done = self.run(sys.executable, "-m", "doit", *(args or ("build",)), env=env)
        output = done.stdout + done.stderr
        ran = re.findall(r"^\.  (\S+)$", output, flags=re.M)
        uptodate = re.findall(r"^-- (\S+)$", output, flags=re.M)
        return DoitRun(done.returncode, output, ran, uptodate)

    def infbuild(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        return self.run(sys.executable, "-m", "infbuild.cli", *args, env=env)

    def stage(self, recipe: str, target: str, stage: str) -> Path:
        return self.artifacts / recipe / target / stage


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return Project(tmp_path / "proj")


@pytest.fixture(scope="session")
def cpu_target() -> str:
    from infbuild.fingerprint import host_fingerprint

    return host_fingerprint()["targets"]["cpu"]


@pytest.fixture(scope="session")
def examples_built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Project, DoitRun]:
    """The repo's example recipes built once for the session (read-only for the tests that use it)."""
    proj = Project(tmp_path_factory.mktemp("examples") / "proj")
    proj.copy_example_recipes()
    result = proj.doit("build")
    assert result.returncode == 0, result.output[-4000:]
    return proj, result


MLP_RECIPE = """\
name: {name}
model:
  factory: examples.models:mlp
  kwargs: {{seed: {seed}}}
{extra_model}inputs:
  x: {{shape: [batch, 10], dtype: float32}}
dims:
  batch: {{min: 1, opt: {opt}, max: {max}}}
outputs: [y]
verify: {{rtol: {rtol}, atol: 1.0e-4}}
{bench}"""


SMALL_BENCH = "bench: {shapes: [opt], warmup: 1, iterations: 5, rounds: 1, baselines: [eager]}\n"


def mlp_recipe(name: str = "mlp", seed: int = 0, opt: int = 8, max: int = 64, rtol: float = 1e-3,
               extra_model: str = "", bench: str = "bench: {enabled: false}\n") -> str:
    """A small MLP recipe; bench is off unless asked for (most tests count stages without it)."""
    return MLP_RECIPE.format(name=name, seed=seed, opt=opt, max=max, rtol=rtol, extra_model=extra_model, bench=bench)


@pytest.fixture(scope="session")
def services(tmp_path_factory: pytest.TempPathFactory):
    """A real dockerd and a real registry on loopback, plus a busybox base image in both; stopped after."""
    from services import Dockerd, RegistryServer, busybox_rootfs_tar, require_binaries

    require_binaries()
    root = tmp_path_factory.mktemp("svc")
    registry = RegistryServer(root / "registry")
    dockerd = Dockerd(Path(tempfile.mkdtemp(prefix="dkr", dir="/tmp")))  # short path: unix socket length limit
    base = f"{registry.address}/base/busybox:1"
    try:
        dockerd.client.api.import_image_from_data(busybox_rootfs_tar(), repository=f"{registry.address}/base/busybox",
                                                  tag="1")
        for chunk in dockerd.client.api.push(f"{registry.address}/base/busybox", tag="1", stream=True, decode=True):
            assert "error" not in chunk, chunk
        yield {"dockerd": dockerd, "registry": registry, "base": base}
    finally:
        dockerd.stop()
        registry.stop()
        shutil.rmtree(dockerd.root, ignore_errors=True)

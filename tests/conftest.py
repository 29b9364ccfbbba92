"""Fixtures: throwaway infbuild projects (copies of the examples), the example recipes built once, and real
services for the packaging tests. Builds are real: torch.onnx export, AOTInductor compiles, onnxruntime.
The helpers these use (Project, DoitRun, recipe texts) are in helpers.py."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
from helpers import DoitRun, Project


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


@pytest.fixture(scope="session")
def mlp_built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Project, Path]:
    """The MLP recipe (``mlp_recipe()``) built once for the session, its stages stored in a local cache: fixtures
    whose subject is not the cold build copy it (``copy_built``) or restore from that cache instead of compiling."""
    from helpers import mlp_recipe

    root = tmp_path_factory.mktemp("mlp-built")
    proj = Project(root / "proj")
    proj.add_recipe("mlp.yaml", mlp_recipe())
    cache = root / "cache"
    result = proj.doit("build", env=proj.env(INFBUILD_CACHE=f"local:{cache}"))
    assert result.returncode == 0, result.output[-4000:]
    return proj, cache


@pytest.fixture(scope="session")
def services(tmp_path_factory: pytest.TempPathFactory, mlp_built: tuple[Project, Path]):
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
        yield {"dockerd": dockerd, "registry": registry, "base": base, "mlp_cache": mlp_built[1]}
    finally:
        dockerd.stop()
        registry.stop()
        shutil.rmtree(dockerd.root, ignore_errors=True)


def pytest_configure(config: pytest.Config) -> None:
    """This test session's machine key (infbuild makes one on first use under XDG_CONFIG_HOME) lives in a folder of
    its own, never in the user's home."""
    import os

    os.environ.setdefault("XDG_CONFIG_HOME", tempfile.mkdtemp(prefix="infbuild-test-config-"))


# Fixtures that build real artifacts: a test using one is in the slow tier (`python -m pytest -m "not slow"` is the
# developer's loop; CI runs everything). Modules made of builds mark themselves with ``pytestmark``.
BUILDING_FIXTURES = {"examples_built", "mlp_built", "services", "built", "proj", "producer", "oci_proj", "docker_proj", "warm",
                     "registry", "hostile_registry"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if BUILDING_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)

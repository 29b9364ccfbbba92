"""An interrupted build never leaves an artifact that looks complete, and the next build finishes the job."""
from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import Project, mlp_recipe

pytestmark = pytest.mark.slow  # real builds (see the README's test tiers)


def start_and_kill(proj: Project, sig: int, marker: str = "[aoti] compiling", delay: float = 1.0,
                   pids: list[int] | None = None, before_kill=None) -> int:
    proc = subprocess.Popen([sys.executable, "-m", "doit", "build"], cwd=proj.root, env=proj.env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    if pids is not None:
        pids.append(proc.pid)
    for line in proc.stdout:
        if line.startswith(marker):
            time.sleep(delay)
            if before_kill is not None:
                before_kill(proc.pid)
            proc.send_signal(sig)
            break
    proc.stdout.read()
    return proc.wait(timeout=60)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL], ids=["SIGTERM", "SIGINT", "SIGKILL"])
def test_killed_build_leaves_nothing_complete_and_next_build_finishes(project: Project, cpu_target: str, sig: int) -> None:
    project.add_recipe("mlp.yaml", mlp_recipe())
    assert start_and_kill(project, sig) != 0
    target = project.artifacts / "mlp" / cpu_target
    assert not (target / "aoti" / "stamp.json").exists()
    assert not (target / "aoti").exists()  # only a hidden staging folder may remain, never the final one
    if sig != signal.SIGKILL:
        assert not list(target.glob(".aoti.staging-*")), "an orderly interrupt removes its staging folder"
    time.sleep(1.0)  # a SIGKILLed build's worker notices its parent is gone within 0.5 s
    result = project.doit("build")
    assert result.returncode == 0, result.output[-3000:]
    assert result.stages_ran() == {"aoti:mlp", "verify:mlp"}  # onnx and reference had finished
    assert not list(target.glob(".aoti.*")), "leftover staging folders are cleaned up"
    assert (target / "aoti" / "stamp.json").is_file()


@pytest.mark.parametrize("marker,stage,rerun", [
    (".  onnx:mlp", "onnx", {"onnx", "reference", "aoti", "verify"}),
    (".  reference:mlp", "reference", {"reference", "aoti", "verify"}),
    ("[aoti] exporting", "aoti", {"aoti", "verify"}),
    (".  verify:mlp", "verify", {"verify"}),
])
def test_sigkill_during_each_stage_kind_rebuilds_exactly_the_unfinished(project: Project, cpu_target: str, marker: str,
                                                                        stage: str, rerun: set[str]) -> None:
    project.add_recipe("mlp.yaml", mlp_recipe())
    assert start_and_kill(project, signal.SIGKILL, marker, delay=0.3) != 0
    target = "portable" if stage in ("onnx", "reference") else cpu_target
    assert not (project.artifacts / "mlp" / target / stage / "stamp.json").exists()
    time.sleep(1.0)
    result = project.doit("build")
    assert result.returncode == 0, result.output[-3000:]
    assert result.stages_ran() == {f"{s}:mlp" for s in rerun}
    assert project.infbuild("verify-artifacts").returncode == 0


CRASHING = '''\
import os

import torch


def model():
    os.abort()  # a native crash in the stage (a segfaulting extension, an OOM kill): the worker dies, not the build
'''


def test_a_crashing_stage_fails_alone_and_the_warm_workers_go_on(project: Project) -> None:
    (project.root / "examples" / "crash.py").write_text(CRASHING)
    project.add_recipe("crash.yaml", "name: crash\nmodel: {factory: 'examples.crash:model'}\ninputs:\n"
                                     "  x: {shape: [batch, 10], dtype: float32}\ndims:\n  batch: {min: 1, max: 4}\n"
                                     "outputs: [y]\nbackends: [onnxruntime]\nbench: {enabled: false}\n")
    project.add_recipe("mlp.yaml", mlp_recipe() + "backends: [onnxruntime]\n")
    result = project.doit("build")
    assert result.returncode != 0
    assert "onnx:crash: stage worker failed (exit -6)" in result.output
    assert {"onnx:mlp", "reference:mlp", "verify:mlp"} <= result.built()  # forks of the same server kept working


def _workers_of(build: int) -> list[str]:
    """Processes still running for the build process ``build``: its warm-worker server and the stage workers forked
    from it (both carry the build's pid on their command line)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue  # gone meanwhile
        if b"infbuild.engine.forkserver" in args and str(build).encode() in args:
            found.append(f"{cmdline.parent.name}: {b' '.join(args).decode(errors='replace')}")
    return found


def test_a_sigkilled_build_leaves_no_worker_behind(project: Project) -> None:
    project.add_recipe("mlp.yaml", mlp_recipe())
    pids: list[int] = []
    seen: list[str] = []
    assert start_and_kill(project, signal.SIGKILL, "[aoti] compiling", delay=0.5, pids=pids,
                          before_kill=lambda pid: seen.extend(_workers_of(pid))) != 0
    assert len(seen) >= 2, seen  # the server and the AOTI stage forked from it were running
    deadline = time.time() + 3
    while time.time() < deadline and _workers_of(pids[0]):
        time.sleep(0.1)
    assert not _workers_of(pids[0]), "the server and its forks stop with the build"

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


def _interruptible() -> None:
    """The build gets Ctrl-C as a terminal would send it, whatever the test process inherited (a process started
    with SIGINT ignored, as a background job is, keeps ignoring it: then an interrupt test would test nothing)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_and_kill(proj: Project, sig: int, marker: str = "[aoti] compiling", delay: float = 1.0,
                   pids: list[int] | None = None, before_kill=None) -> int:
    proc = subprocess.Popen([sys.executable, "-m", "doit", "build"], cwd=proj.root, env=proj.env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=_interruptible)
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


# Each kill lands at a stage boundary of one project, and each next build resumes from what the last one left: the
# stage it was killed in is never stamped, and the build that finally completes runs exactly the unfinished stages.
MATRIX = [  # (marker in the build's output, seconds after it, signal, the stage it interrupts, its target)
    (".  onnx:mlp", 0.0, signal.SIGTERM, "onnx", "portable"),
    (".  reference:mlp", 0.0, signal.SIGINT, "reference", "portable"),
    ("[aoti] compiling with AOTInductor", 0.3, signal.SIGKILL, "aoti", "cpu"),
    (".  verify:mlp", 0.0, signal.SIGKILL, "verify", "cpu"),
]


def test_kills_at_each_stage_boundary_never_leave_a_stage_that_looks_complete(project: Project, cpu_target: str) -> None:
    project.add_recipe("mlp.yaml", mlp_recipe())
    for marker, delay, sig, stage, where in MATRIX:
        assert start_and_kill(project, sig, marker, delay=delay) != 0, marker
        folder = project.artifacts / "mlp" / (cpu_target if where == "cpu" else where)
        assert not (folder / stage / "stamp.json").exists(), marker
        if sig != signal.SIGKILL:
            assert not list(folder.glob(f".{stage}.staging-*")), "an orderly interrupt removes its staging folder"
        time.sleep(1.0)  # a SIGKILLed build's workers notice within half a second
    unfinished = {f"{stage}:mlp" for _, _, _, stage, where in MATRIX
                  if not (project.artifacts / "mlp" / (cpu_target if where == "cpu" else where) / stage / "stamp.json").exists()}
    assert "verify:mlp" in unfinished
    result = project.doit("build")
    assert result.returncode == 0, result.output[-3000:]
    assert result.stages_ran() == unfinished
    assert not list(project.artifacts.glob("mlp/*/.*.staging-*")), "leftover staging folders are cleaned up"
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
    assert "export:crash: stage worker failed (exit -6)" in result.output
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


def test_a_sigkill_during_an_aoti_compile_leaves_no_worker_and_nothing_complete(project: Project, cpu_target: str) -> None:
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
    target = project.artifacts / "mlp" / cpu_target
    assert not (target / "aoti").exists()  # only a hidden staging folder may remain, never the final one
    result = project.doit("build")
    assert result.returncode == 0, result.output[-3000:]
    assert result.stages_ran() == {"aoti:mlp", "verify:mlp"}  # export, onnx and reference had finished
    assert not list(target.glob(".aoti.*")), "leftover staging folders are cleaned up"
    assert (target / "aoti" / "stamp.json").is_file()

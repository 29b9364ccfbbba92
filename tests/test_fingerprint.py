"""Hardware fingerprint: fast, torch-free, no GPU is a normal answer; target slugs as in README, "What a build produces"."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import STANDINS

from infbuild.fingerprint import isa_level, slug


def fingerprint_json(env: dict[str, str]) -> dict:
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "infbuild.cli", "fingerprint", "--json"],
                          capture_output=True, text=True, env=env, check=True)
    assert "| torch" not in done.stderr, "fingerprinting must not import torch"
    return json.loads(done.stdout)


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INFBUILD_") and k != "CUDA_VISIBLE_DEVICES"}
    env.update(extra)
    return env


NO_DRIVER = """#!/bin/sh
# STAND-IN for nvidia-smi on a host without a working NVIDIA driver
echo "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver." >&2
exit 9
"""


@pytest.mark.parametrize("host", ["no nvidia-smi", "nvidia-smi without a driver"])
def test_fingerprint_is_fast_and_torch_free_without_gpu(tmp_path: Path, host: str) -> None:
    if host == "no nvidia-smi":
        env = clean_env(PATH=str(tmp_path))  # nothing on PATH (a real GPU host has /usr/bin/nvidia-smi)
    else:
        (tmp_path / "nvidia-smi").write_text(NO_DRIVER)
        (tmp_path / "nvidia-smi").chmod(0o755)
        env = clean_env(PATH=f"{tmp_path}:/usr/bin:/bin")
    started = time.perf_counter()
    fp = fingerprint_json(env)
    assert time.perf_counter() - started < 5  # includes the Python start-up; the probe itself is ~30 ms
    assert fp["gpus"] == [] and fp["targets"]["cuda"] is None
    assert fp["targets"]["cpu"] == f"cpu-{fp['cpu']['arch']}-{fp['cpu']['isa']}"
    assert fp["tools"]["torch"] and fp["tools"]["onnxruntime"]


def test_gpu_targets_from_nvidia_smi(tmp_path: Path) -> None:
    fp = fingerprint_json(clean_env(PATH=f"{STANDINS}:{os.environ['PATH']}"))
    assert [g["target"] for g in fp["gpus"]] == ["cuda-sm90-nvidia-h100-80gb-hbm3", "cuda-sm86-nvidia-a10g"]
    assert fp["targets"]["cuda"] == "cuda-sm90-nvidia-h100-80gb-hbm3"
    assert fp["cuda"]["version"] == "12.4" and fp["gpus"][0]["memory_mib"] == 81559
    selected = fingerprint_json(clean_env(PATH=f"{STANDINS}:{os.environ['PATH']}", CUDA_VISIBLE_DEVICES="1"))
    assert selected["targets"]["cuda"] == "cuda-sm86-nvidia-a10g"


def test_override_simulates_another_host() -> None:
    fp = fingerprint_json(clean_env(INFBUILD_FINGERPRINT='{"cpu": {"isa": "avx2"}}'))
    assert fp["targets"]["cpu"].endswith("-avx2")


def test_isa_levels_and_slugs() -> None:
    v3 = {"avx", "avx2", "fma", "bmi1", "bmi2", "f16c", "sse4_2"}
    assert isa_level("x86_64", v3) == "avx2"
    assert isa_level("x86_64", v3 | {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"}) == "avx512"
    assert isa_level("x86_64", {"sse4_2"}) == "sse4"
    assert isa_level("aarch64", {"asimd"}) == "neon"
    assert slug("NVIDIA GeForce RTX 4090") == "nvidia-geforce-rtx-4090"


def test_human_output_says_no_gpu() -> None:
    done = subprocess.run([sys.executable, "-m", "infbuild.cli", "fingerprint"], capture_output=True, text=True,
                          env=clean_env(PATH="/usr/bin:/bin"), check=True)
    assert "gpu      none" in done.stdout and "targets  cpu: cpu-" in done.stdout

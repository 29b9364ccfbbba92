"""What users and environments hand in is bounded and checked before it is used: sample files and --input arrays
(headers checked before any allocation, zip bombs, truncated and empty files, NaN), --output paths, settings read as
flags, INFBUILD_ROOT, and INFBUILD_FINGERPRINT (malformed, hostile, or naming a path)."""
from __future__ import annotations

import json
import os
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from helpers import Project, copy_built, deadline, mlp_recipe

from infbuild.arrays import read_npy, read_npz
from infbuild.errors import ConfigError


def _header(shape: tuple[int, ...], descr: str = "<f4") -> bytes:
    import io

    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": descr, "fortran_order": False, "shape": shape})
    return buffer.getvalue()


def write_hostile(folder: Path) -> dict[str, str]:
    """Sample files as an attacker or an accident makes them -> the message each must give."""
    folder.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(folder / "huge.npz", "w") as z:  # 236 bytes that declare 2^40 x 10 floats
        z.writestr("x.npy", _header((1 << 40, 10)) + b"\0" * 40)
    with zipfile.ZipFile(folder / "bomb.npz", "w", zipfile.ZIP_DEFLATED) as z:  # 335 MB of zeros in ~330 KB
        with z.open("x.npy", "w", force_zip64=True) as member:
            member.write(_header((1 << 23, 10)))
            chunk = b"\0" * (1 << 24)
            for _ in range((1 << 23) * 40 // len(chunk)):
                member.write(chunk)
    (folder / "empty.npz").write_bytes(b"")
    np.savez(folder / "good.npz", x=np.ones((4, 10), np.float32))
    (folder / "truncated.npz").write_bytes((folder / "good.npz").read_bytes()[:100])
    np.savez(folder / "nan.npz", x=np.full((4, 10), np.nan, np.float32))
    np.savez(folder / "objects.npz", x=np.array([{"a": 1}], dtype=object), allow_pickle=True)
    return {"huge": "x has shape [1099511627776, 10], outside ['batch', 10]",
            "bomb": "x has shape [8388608, 10], outside ['batch', 10]",
            "empty": "empty file", "truncated": "not a .npz file", "nan": "x holds NaN or infinite values",
            "objects": "holds Python objects"}


@pytest.mark.slow  # validate imports torch and each model
def test_hostile_sample_files_are_located_one_line_errors(tmp_path: Path) -> None:
    p = Project(tmp_path / "proj")
    expected = write_hostile(p.root / "samples")
    for name in expected:
        p.add_recipe(f"{name}.yaml", mlp_recipe(name=name) + f"samples: [samples/{name}.npz]\n")
    with deadline(240):
        done = p.infbuild("validate")
    assert done.returncode == 1 and "Traceback" not in done.stderr and "MemoryError" not in done.stderr
    lines = done.stderr.strip().splitlines()
    for name, message in expected.items():
        line = next((line for line in lines if line.startswith(f"recipes/{name}.yaml:")), "")
        assert "samples[0]: " in line and message in line, (name, done.stderr)
        assert "model.factory" not in line


def test_array_headers_are_checked_before_anything_is_allocated(tmp_path: Path) -> None:
    def refuse_big(name: str, shape: tuple[int, ...], dtype: np.dtype) -> None:
        if int(np.prod(shape)) > 1000:
            raise ValueError(f"{name}: too big")

    huge = tmp_path / "huge.npy"
    huge.write_bytes(_header((1 << 40, 10)))
    with pytest.raises(ValueError, match="too big"):
        read_npy(huge, refuse_big, "x")
    padded = tmp_path / "padded.npy"
    padded.write_bytes(_header((2, 2)) + b"\0" * 17)  # 16 bytes of data declared, 17 given
    with pytest.raises(ValueError, match="its header declares"):
        read_npy(padded, refuse_big, "x")
    fifo = tmp_path / "fifo.npz"
    os.mkfifo(fifo)
    with deadline(5), pytest.raises(ValueError, match="not a regular file"):
        read_npz(fifo, refuse_big)
    write_hostile(tmp_path / "s")
    with pytest.raises(ValueError, match="too big"):
        read_npz(tmp_path / "s" / "bomb.npz", refuse_big)


def test_run_input_and_output_paths_are_checked(mlp_built: tuple[Project, Path], tmp_path: Path) -> None:
    proj = copy_built(mlp_built[0], tmp_path / "proj")
    x = tmp_path / "x.npy"
    np.save(x, np.ones((2, 10), np.float32))
    huge = tmp_path / "huge.npy"
    huge.write_bytes(_header((1 << 40, 10)))
    cases = {f"x={huge}": "holds float32 [1099511627776, 10]; x is float32 ['batch', 10] with dims up to [64, 10]",
             f"x={tmp_path / 'missing.npy'}": "cannot read it"}
    for argument, message in cases.items():
        done = proj.infbuild("run", "mlp", "--input", argument)
        assert done.returncode == 1 and message in done.stderr and "Traceback" not in done.stderr, done.stderr
    for output, message in ((tmp_path / "nowhere" / "y.npz", "does not exist"), (tmp_path, "is a folder")):
        done = proj.infbuild("run", "mlp", "--input", f"x={x}", "--output", str(output))
        assert done.returncode == 1 and message in done.stderr, done.stderr
    written = tmp_path / "y.out"
    done = proj.infbuild("run", "mlp", "--input", f"x={x}", "--output", str(written))
    assert done.returncode == 0 and f"wrote {written}" in done.stdout and written.is_file()
    assert np.load(written)["y"].shape == (2, 1)


def test_flags_mean_what_they_say(mlp_built: tuple[Project, Path], tmp_path: Path, cpu_target: str) -> None:
    from infbuild import settings

    assert settings.flag("allow_target_mismatch", {"INFBUILD_ALLOW_TARGET_MISMATCH": "0"}) is False
    assert settings.flag("allow_target_mismatch", {"INFBUILD_ALLOW_TARGET_MISMATCH": "yes"}) is True
    with pytest.raises(ConfigError, match="INFBUILD_ALLOW_TARGET_MISMATCH='maybe': expected"):
        settings.flag("allow_target_mismatch", {"INFBUILD_ALLOW_TARGET_MISMATCH": "maybe"})
    proj = copy_built(mlp_built[0], tmp_path / "proj")
    x = tmp_path / "x.npy"
    np.save(x, np.ones((2, 10), np.float32))
    other = "avx2" if not cpu_target.endswith("avx2") else "avx512"
    for value, code in (("0", 1), ("1", 0)):
        done = proj.infbuild("run", "mlp", "--input", f"x={x}", "--target", cpu_target,
                             env=proj.env(INFBUILD_FINGERPRINT=json.dumps({"cpu": {"isa": other}}),
                                          INFBUILD_ALLOW_TARGET_MISMATCH=value))
        assert done.returncode == code, (value, done.stderr)
    root = proj.infbuild("status", env=proj.env(INFBUILD_ROOT=str(tmp_path / "nowhere")))
    assert root.returncode == 1 and "INFBUILD_ROOT=" in root.stderr and "no such folder" in root.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    nothing = proj.infbuild("status", env=proj.env(INFBUILD_ROOT=str(empty)))
    assert nothing.returncode == 1 and "no recipes" in nothing.stderr


@pytest.mark.parametrize("value,message", [
    ('{"cpu": null}', "cpu: must be an object like the detected one"),
    ('{"cpu": {"model": "a\\u0000b"}}', "cpu.model: holds a control character"),
    ("[" * 5000 + "]" * 5000, "not a JSON object"),
    ('{"cpu": {"isa": "../../../../../victim"}}', "is not a folder name"),
    ('{"gpus": [{"index": "0", "uuid": "u", "name": "x", "compute_capability": "9.0", "target": "../../x"}]}',
     "is not a folder name"),
    ("@FIFO", "not a regular file"),
])
def test_a_malformed_fingerprint_override_is_one_line(project: Project, tmp_path: Path, value: str, message: str) -> None:
    if value == "@FIFO":
        os.mkfifo(tmp_path / "fifo")
        value = f"@{tmp_path / 'fifo'}"
    done = project.run(sys.executable, "-m", "infbuild.cli", "fingerprint", env=project.env(INFBUILD_FINGERPRINT=value),
                       timeout=30)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and message in done.stderr, done.stderr


def test_a_target_naming_a_path_never_becomes_a_folder(tmp_path: Path) -> None:
    p = Project(tmp_path / "proj")
    p.add_recipe("mlp.yaml", mlp_recipe())
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious.txt").write_text("keep me")
    hostile = json.dumps({"cpu": {"isa": f"../../../{victim.name}"}})
    for command in (("build",), ("clean",)):
        done = p.doit(*command, env=p.env(INFBUILD_FINGERPRINT=hostile))
        assert done.returncode != 0 and "is not a folder name" in done.output
    assert sorted(p.name for p in victim.iterdir()) == ["precious.txt"]
    assert not (p.artifacts / "mlp").exists()

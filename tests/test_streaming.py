"""Big artifacts move through the caches in chunks: storing and restoring a 1 GiB file, locally and through a real
registry on loopback, stays within 100 MB of each process's baseline, and a local restore hard-links (or clones)
the cached blob instead of copying it. Runs ``benchmarks/streaming.py`` (which prints the same figures)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from services import require_binaries

pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "streaming.py"


def test_a_1_gib_artifact_is_stored_and_restored_in_bounded_memory_and_restored_by_link() -> None:
    require_binaries()
    done = subprocess.run([sys.executable, str(SCRIPT), "--mb", "1024", "--json"], capture_output=True, text=True,
                          timeout=900, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    figures = json.loads(done.stdout)
    operations = figures["operations"]
    assert set(operations) == {"local store", "local restore", "registry store", "registry restore"}
    for name, row in operations.items():
        assert row["peak_above_mb"] <= 100, (name, row)  # the file is 1024 MiB: it never was in memory whole
    assert operations["local restore"]["placed"] in ("reflink", "hardlink")  # a clone or a link, not a copy
    assert operations["registry restore"]["placed"] == "streamed"

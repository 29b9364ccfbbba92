"""Serial vs parallel build wall time over 4 independent example recipes.

    python benchmarks/parallel.py

Builds the three example recipes plus a second MLP (seed 1) from nothing twice, in fresh folders, without
a cache: once with `doit build`, once with `doit -n 2 build`, and prints both wall times and their ratio.
(Bench stages are left out: timing runs that compete for the same cores would measure the contention.)
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import example_project


def project(dest: Path) -> Path:
    """The examples plus a second MLP (seed 1): 4 independent recipes, bench stages off."""
    example_project(dest, bench=False)
    mlp = (dest / "recipes" / "mlp.yaml").read_text()
    (dest / "recipes" / "mlp2.yaml").write_text(mlp.replace("name: mlp", "name: mlp2").replace("seed: 0", "seed: 1"))
    return dest


def timed(folder: Path, *args: str) -> float:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "doit", *args, "build"], cwd=folder, capture_output=True, text=True,
                          env={**os.environ, "INFBUILD_CACHE": "off"})
    if done.returncode != 0:
        sys.exit(done.stdout[-3000:] + done.stderr[-3000:])
    return time.perf_counter() - started


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="infbuild-parallel-") as tmp:
        root = Path(tmp)
        print("warming the compiler caches (not timed) ...", flush=True)
        timed(project(root / "warmup"))
        print("serial ...", flush=True)
        serial = timed(project(root / "serial"))
        print("doit -n 2 ...", flush=True)
        parallel = timed(project(root / "parallel"), "-n", "2")
    print(f"\n{os.cpu_count()} cores, 4 recipes (16 stages), no cache")
    print("| build | wall s |\n|---|---:|")
    print(f"| doit build | {serial:.1f} |\n| doit -n 2 build | {parallel:.1f} |")
    print(f"serial / parallel = {serial / parallel:.2f}x")


if __name__ == "__main__":
    main()

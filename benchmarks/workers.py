"""Cold builds with warm stage workers (forks of one server that imported torch once) against a fresh Python per
stage (``INFBUILD_WORKERS=subprocess``), side by side in one run, as ratios:

    python benchmarks/workers.py [--recipes 50] [--rounds 1]

Two projects, each built cold in both modes (no cache, fresh artifacts every time), the modes interleaved:
the three example recipes (15 stages: ONNX, references, AOTInductor, verify, bench), and N generated MLP recipes
with ONNX Runtime only (4 stages each: onnx, reference, verify, bench), where the per-stage start-up is most of
the work.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, cpu, example_project

MLP = """\
name: mlp{i:02d}
model: {{factory: examples.models:mlp, kwargs: {{seed: {i}}}}}
inputs:
  x: {{shape: [batch, 10], dtype: float32}}
dims:
  batch: {{min: 1, opt: 8, max: 64}}
outputs: [y]
backends: [onnxruntime]
bench: {{shapes: [opt], warmup: 1, iterations: 5, rounds: 1, baselines: [eager]}}
"""


def cold_build(project: Path, workers: str) -> float:
    shutil.rmtree(project / "artifacts", ignore_errors=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("INFBUILD_")}
    env.update(INFBUILD_CACHE="off", INFBUILD_WORKERS=workers)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "doit", "build"], cwd=project, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"build failed in {project} ({workers}):\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipes", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="infbuild-workers-") as tmp:
        examples = example_project(Path(tmp) / "examples")
        many = example_project(Path(tmp) / "many", [])
        for i in range(args.recipes):
            (many / "recipes" / f"mlp{i:02d}.yaml").write_text(MLP.format(i=i))
        rows = []
        for label, project in (("3 example recipes (15 stages)", examples),
                               (f"{args.recipes} MLP recipes ({4 * args.recipes} stages)", many)):
            times: dict[str, list[float]] = {"subprocess": [], "warm": []}
            for _ in range(args.rounds):
                for mode in ("subprocess", "warm"):
                    print(f"building {label} cold with {mode} workers ...", flush=True)
                    times[mode].append(cold_build(project, mode))
            cold, warm = statistics.median(times["subprocess"]), statistics.median(times["warm"])
            rows.append((label, cold, warm))
    print(f"\n{os.cpu_count()} cores, {cpu()}, median of {args.rounds} round(s)")
    print("| project | a Python per stage s | warm workers s | warm / per stage |\n|---|---:|---:|---:|")
    for label, cold, warm in rows:
        print(f"| {label} | {cold:.1f} | {warm:.1f} | {warm / cold:.2f} |")



if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()

"""Preferred artifact vs eager PyTorch and vs the fastest backend, per example recipe, on this machine.

    python benchmarks/bench.py [--fresh]

Builds the examples in this checkout if anything is stale (`doit build`, which runs the bench stages),
`--fresh` reruns the bench stages for new numbers (`infbuild bench --force`), then prints, from
artifacts/manifest.json, p50 latencies measured side by side in one bench run and their ratios.
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = ("onnxruntime", "aoti", "tensorrt")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fresh", action="store_true", help="rerun the bench stages first")
    args = parser.parse_args()
    subprocess.run([sys.executable, "-m", "doit", "build"], cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    if args.fresh:
        subprocess.run([sys.executable, "-m", "infbuild.cli", "bench", "--force"], cwd=REPO, check=True,
                       stdout=subprocess.DEVNULL)
    manifest = json.loads((REPO / "artifacts" / "manifest.json").read_text())
    print("| recipe | target | shape | preferred | p50 ms | eager p50 ms | x eager | fastest (any) | x fastest |")
    print("|---|---|---|---|---:|---:|---:|---|---:|")
    notes = []
    for recipe, entry in sorted(manifest["recipes"].items()):
        for target, t in sorted(entry["targets"].items()):
            bench, preferred = t.get("bench"), t.get("preferred")
            if not bench or not preferred:
                continue
            results = bench["results"]
            report = json.loads((REPO / "artifacts" / recipe / target / "bench" / "report.json").read_text())
            size = {label: sum(math.prod(shape) for shape in inputs.values()) for label, inputs in report["shapes"].items()}
            shapes = sorted(results[preferred], key=lambda label: size.get(label, 0))  # smallest to largest
            for shape in dict.fromkeys([bench["primary_shape"], shapes[-1]]):
                p50 = results[preferred][shape]["p50_ms"]
                eager = results.get("eager", {}).get(shape, {}).get("p50_ms")
                fastest = min(results, key=lambda b: results[b].get(shape, {}).get("p50_ms", float("inf")))
                fast = results[fastest][shape]["p50_ms"]
                print(f"| {recipe} | {target} | {shape} | {preferred} | {p50:.4f} | "
                      f"{eager:.4f} | {eager / p50:.2f} | {fastest} | {fast / p50:.2f} |" if eager else
                      f"| {recipe} | {target} | {shape} | {preferred} | {p50:.4f} | - | - | {fastest} | {fast / p50:.2f} |")
            if recipe == "convnet":
                largest = shapes[-1]
                best = min((b for b in ARTIFACTS if b in results), key=lambda b: results[b][largest]["p50_ms"])
                gain = results["eager"][largest]["p50_ms"] / results[best][largest]["p50_ms"]
                notes.append(f"convnet at its largest batch ({largest}): {best} is {gain:.2f}x faster than eager "
                             f"({'several times: OK' if gain >= 3 else 'LESS than the 3x expected'})")
    print("\nx eager = eager p50 / preferred p50 (higher is better); x fastest = fastest p50 / preferred p50 "
          "(1.00 = the preferred is the fastest measured, baselines included).")
    for note in notes:
        print(note)


if __name__ == "__main__":
    main()

"""No-op build cost: wall time of `doit build` with nothing stale, over the example recipes and over 50
generated recipes, next to a bare `doit` run with an empty dodo.py, as ratios.

    python benchmarks/noop.py [--runs 7]

The examples are built first if anything is stale (that part is not timed). The 50 generated recipes are
copies of the MLP example under other names; their built folders are cloned from one real build (stage keys
do not depend on the recipe name), so the no-op path sees 50 fully built recipes without 50 compiles.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, example_project


def timed(cwd: Path, argv: list[str], runs: int) -> float:
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
        samples.append(time.perf_counter() - started)
        if done.returncode != 0:
            sys.exit(f"{' '.join(argv)} failed in {cwd}:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
        if "\n.  " in "\n" + done.stdout:
            sys.exit(f"not a no-op build in {cwd}: a stage ran\n{done.stdout[-2000:]}")
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    doit = [sys.executable, "-m", "doit"]
    with tempfile.TemporaryDirectory(prefix="infbuild-noop-") as tmp:
        root = Path(tmp)
        empty = root / "empty"
        empty.mkdir()
        (empty / "dodo.py").write_text("")

        examples = example_project(root / "examples")
        print("building the example recipes once (not timed) ...", flush=True)
        subprocess.run(doit + ["build"], cwd=examples, check=True, capture_output=True)

        many = example_project(root / "many", [])
        template = (REPO / "recipes" / "mlp.yaml").read_text()
        for i in range(50):
            (many / "recipes" / f"mlp{i:02d}.yaml").write_text(template.replace("name: mlp", f"name: mlp{i:02d}"))
        print("building one generated recipe, cloning it to 50 (not timed) ...", flush=True)
        subprocess.run(doit + ["bench:mlp00"], cwd=many,
                       check=True, capture_output=True)
        for i in range(1, 50):
            dest = many / "artifacts" / f"mlp{i:02d}"
            shutil.copytree(many / "artifacts" / "mlp00", dest)
            for stamp_path in dest.glob("*/*/stamp.json"):
                stamp = json.loads(stamp_path.read_text())
                stamp["recipe"] = f"mlp{i:02d}"
                stamp_path.write_text(json.dumps(stamp))
        subprocess.run(doit + ["build"], cwd=many, check=True, capture_output=True)  # manifest task

        bare = timed(empty, doit, args.runs)
        noop_examples = timed(examples, doit + ["build"], args.runs)
        noop_many = timed(many, doit + ["build"], args.runs)

    rows = [("bare doit, empty dodo.py", bare), ("no-op doit build, 3 example recipes (15 stages)", noop_examples),
            ("no-op doit build, 50 generated recipes (250 stages)", noop_many)]
    print(f"\nmedian of {args.runs} runs each, {sys.executable}")
    print(f"| {'what':<52} | {'wall s':>7} | {'x bare':>7} |")
    print(f"|{'-' * 54}|{'-' * 9}|{'-' * 9}|")
    for label, seconds in rows:
        print(f"| {label:<52} | {seconds:7.3f} | {seconds / bare:7.2f} |")


if __name__ == "__main__":
    main()

"""What calling through ``infbuild.runtime.load`` costs per call: the loaded Model (names, dtypes, shapes against
the recipe's dims, NaN/inf checked on every call) against its own runner called on inputs prepared once (the
model's call and nothing else), interleaved call by call in one run at 1 thread; and the checks alone.

    python benchmarks/load_overhead.py [--models gpt2_tiny,bert_small] [--calls 4000] [--keep DIR]

Models: those of benchmarks/olive_models.py (Hugging Face GPT-2 and BERT from configs), each as its fp32 ONNX model
and its dynamic int8 variant in onnxruntime and its AOTInductor package, against two baselines: the runner's prepared
call and the runtime's own public API. Target: overhead <= 2 % on GPT-2 tiny.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from olive_models import MODELS, feed, recipe

from common import cpu, example_project

ARTIFACTS = ("onnxruntime:int8_dynamic", "onnxruntime", "aoti")


def build(names: list[str], root: Path) -> Path:
    project = root / "project"
    if not project.exists():
        example_project(project, [])
    for name in names:
        data = {**recipe(name), "backends": ["onnxruntime", "aoti"], "variants": {"onnxruntime": ["int8_dynamic"]},
                "stages": {"onnx_variants": {"int8_after": []}}, "bench": {"enabled": False}}
        (project / "recipes" / f"{name}.json").write_text(json.dumps(data, indent=2))
    print(f"building {', '.join(names)} in {project} ...", flush=True)
    env = {**{k: v for k, v in os.environ.items() if k != "INFBUILD_CACHE"}, "INFBUILD_CACHE": "off"}
    subprocess.run([sys.executable, "-m", "doit", "build"], cwd=project, env=env, check=True, stdout=subprocess.DEVNULL)
    return project / "artifacts"


def paired(a: Callable[[], Any], b: Callable[[], Any], calls: int, blocks: int = 6) -> tuple[float, float]:
    """p50 (µs) of each, their calls alternating one by one (drift and noise land on both alike), in blocks that
    swap which goes first; medians over the blocks."""
    pa, pb = [], []
    for fn in (a, b) * 20:
        fn()
    clock = time.perf_counter
    for block in range(blocks):
        first, second = (a, b) if block % 2 == 0 else (b, a)
        t1, t2 = [], []
        for _ in range(calls // blocks):
            start = clock()
            first()
            middle = clock()
            second()
            t1.append(middle - start)
            t2.append(clock() - middle)
        ta, tb = (t1, t2) if block % 2 == 0 else (t2, t1)
        pa.append(statistics.median(ta))
        pb.append(statistics.median(tb))
    return statistics.median(pa) * 1e6, statistics.median(pb) * 1e6


def checks_only(fn: Callable[[], Any], calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="gpt2_tiny,bert_small")
    parser.add_argument("--calls", type=int, default=6000)
    parser.add_argument("--keep", type=Path, help="build in this folder (kept; a second run reuses the build)")
    args = parser.parse_args()
    names = args.models.split(",")
    with tempfile.TemporaryDirectory(prefix="infbuild-load-") as tmp:
        artifacts = build(names, args.keep or Path(tmp))
        from infbuild.runtime import load

        rows = []
        for name in names:
            inputs = feed(name)
            for artifact in ARTIFACTS:
                model = load(artifacts, name, backend=artifact, threads=1)
                raw = model.runner.prepare(model.validate(inputs))
                direct, through = paired(raw, lambda m=model, i=inputs: m(**i), args.calls)
                own, through_again = paired(public_call(model.runner, inputs), lambda m=model, i=inputs: m(**i), args.calls)
                checks = checks_only(lambda m=model, i=inputs: m.validate(i), args.calls)
                rows.append((name, artifact, direct, through, own, through_again, checks))
                print(f"  {name} {artifact}: prepared {direct:.1f} / load() {through:.1f} µs; its runtime's own API "
                      f"{own:.1f} / load() {through_again:.1f} µs", flush=True)
    print(f"\non {cpu()}, 1 thread, {args.calls} calls each alternating call by call in 6 blocks that swap "
          "which goes first: median of the blocks' p50. Against the runner's prepared call (what bench times: the "
          "session's or package's bare call on inputs converted once) and against the runtime's own public API on "
          "the same numpy arrays (onnxruntime's InferenceSession.run; an AOTInductor package called with tensors "
          "made from the arrays, outputs as numpy): what a user calling the artifact without infbuild gets.")
    print("| model | artifact | prepared call µs | through load() µs | overhead | runtime's own API µs | through load() µs "
          "| overhead | input checks alone µs |\n|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, artifact, direct, through, own, through_again, checks in rows:
        print(f"| {name} ({MODELS[name]['batch']}x{MODELS[name]['seq']}) | {artifact} | {direct:.1f} | {through:.1f} | "
              f"{through - direct:+.1f} µs, {100 * (through - direct) / direct:+.1f} % | {own:.1f} | {through_again:.1f} | "
              f"{through_again - own:+.1f} µs, {100 * (through_again - own) / own:+.1f} % | {checks:.2f} |")


def public_call(runner: Any, inputs: dict[str, Any]) -> Callable[[], Any]:
    """The artifact called through its runtime's public API, as a user would without infbuild."""
    if hasattr(runner, "session"):  # onnxruntime
        session, names = runner.session, list(runner.outputs)
        return lambda: session.run(names, inputs)
    import torch

    package = runner.model  # an AOTInductor package (AOTICompiledModel)

    def call() -> Any:
        with torch.inference_mode():
            out = package(**{n: torch.from_numpy(a) for n, a in inputs.items()})
        return [t.numpy() for t in (out if isinstance(out, (list, tuple)) else [out])]
    return call


if __name__ == "__main__":
    main()

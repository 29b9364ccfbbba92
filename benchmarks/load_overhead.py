"""What calling through ``infbuild.runtime.load`` costs per call: the loaded Model (names, dtypes, shapes against
the recipe's dims, NaN/inf checked on every call) against its own runner called on inputs prepared once (the
model's call and nothing else), interleaved call by call in one run at 1 thread; and the checks alone.

    python benchmarks/load_overhead.py [--models gpt2_tiny,bert_small] [--calls 12000] [--rounds 3] [--keep DIR]

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


def paired(a: Callable[[], Any], b: Callable[[], Any], calls: int, blocks: int = 12) -> tuple[float, float]:
    """(p50 of ``a``, what ``b`` costs over ``a``) in µs. Their calls alternate one by one (drift and noise land on
    both alike), in blocks that swap which goes first (the second call of a pair is timed differently from the
    first on this machine: ±3 µs). The cost is the median of the per-pair differences within each order, averaged
    over the two orders: a difference of medians varied by several µs from run to run where this stays within ~1."""
    for fn in (a, b) * 50:
        fn()
    clock = time.perf_counter
    base: list[float] = []
    by_order: tuple[list[float], list[float]] = ([], [])
    for block in range(blocks):
        first, second = (a, b) if block % 2 == 0 else (b, a)
        times_a, diffs = [], []
        for _ in range(calls // blocks):
            start = clock()
            first()
            middle = clock()
            second()
            end = clock()
            ta, tb = (middle - start, end - middle) if block % 2 == 0 else (end - middle, middle - start)
            times_a.append(ta)
            diffs.append(tb - ta)
        base.append(statistics.median(times_a))
        by_order[block % 2].append(statistics.median(diffs))
    cost = (statistics.median(by_order[0]) + statistics.median(by_order[1])) / 2
    return statistics.median(base) * 1e6, cost * 1e6


def rounds(a: Callable[[], Any], b: Callable[[], Any], calls: int, count: int) -> tuple[float, float, float, float]:
    """``paired`` ``count`` times: (p50 of ``a``, median cost, lowest and highest cost of the rounds), µs."""
    results = [paired(a, b, calls) for _ in range(count)]
    costs = sorted(cost for _, cost in results)
    return statistics.median(t for t, _ in results), statistics.median(costs), costs[0], costs[-1]


def checks_only(fn: Callable[[], Any], calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="gpt2_tiny,bert_small")
    parser.add_argument("--calls", type=int, default=12000)
    parser.add_argument("--rounds", type=int, default=3, help="measure each pair this many times (the table "
                        "shows the median and the range)")
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
                through = lambda m=model, i=inputs: m(**i)  # noqa: E731
                direct = rounds(raw, through, args.calls, args.rounds)
                own = rounds(public_call(model.runner, inputs), through, args.calls, args.rounds)
                checks = checks_only(lambda m=model, i=inputs: m.validate(i), args.calls)
                rows.append((name, artifact, direct, own, checks))
                print(f"  {name} {artifact}: prepared {direct[0]:.1f} µs, load() {direct[1]:+.1f} µs; its runtime's "
                      f"own API {own[0]:.1f} µs, load() {own[1]:+.1f} µs", flush=True)
    print(f"\non {cpu()}, 1 thread; each pair of calls alternating call by call, {args.calls} pairs in 12 blocks "
          "that swap which goes first; the cost is the median of the per-pair differences (averaged over the two "
          f"orders), the median of {args.rounds} rounds with their range in brackets. Against the runner's prepared "
          "call (what bench times: the session's or package's bare call on inputs converted once, outputs as the "
          "runtime returns them) and against the runtime's own public API on the same numpy arrays (onnxruntime's "
          "InferenceSession.run; an AOTInductor package called with tensors made from the arrays, outputs as "
          "numpy): what a user calling the artifact without infbuild gets. Input checks alone: the full "
          "validation (the slow path, which the first call at new shapes takes) in a loop.")
    print("| model | artifact | prepared call µs | load() over it | runtime's own API µs | load() over it "
          "| full input checks alone µs |\n|---|---|---:|---:|---:|---:|---:|")
    for name, artifact, direct, own, checks in rows:
        print(f"| {name} ({MODELS[name]['batch']}x{MODELS[name]['seq']}) | {artifact} | {direct[0]:.1f} | "
              f"{_cost(direct)} | {own[0]:.1f} | {_cost(own)} | {checks:.2f} |")


def _cost(measured: tuple[float, float, float, float]) -> str:
    base, cost, low, high = measured
    return f"{cost:+.1f} µs, **{100 * cost / base:+.1f} %** [{100 * low / base:+.1f}, {100 * high / base:+.1f}]"


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

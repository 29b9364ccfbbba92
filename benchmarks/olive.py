"""infbuild against Microsoft Olive, head to head on three Hugging Face models (benchmarks/olive_models.py: a BERT
of hidden 128 x 2 layers at 2x128 tokens, a tiny GPT-2 at 1x64, a BERT of hidden 256 x 4 layers at 4x256; random
weights from configs, eager attention on both sides). infbuild builds each with ``doit build`` (onnxruntime with
its int8 variants and chains, AOTInductor with bf16) and its preferred artifact (the manifest's) is called through
``infbuild.runtime.load(threads=1)``; Olive (its own virtual environment: olive-ai pins what it needs) runs its
workflows (export -> transformer fusion -> dynamic int8, and the fp32 graphs before the quantizer) and each result
is called in onnxruntime at 1 thread. All of them are timed interleaved in one run (blocks rotate through the
candidates; p50 of each block, median over blocks) and compared with the eager model at the same inputs.

    python benchmarks/olive.py [--models bert_small,gpt2_tiny,bert_4x256] [--blocks 7] [--reps 30]
                               [--olive-venv DIR] [--keep DIR] [--json FILE] [--plot FILE.png]

The table prints, per model, infbuild's preferred against Olive's fastest: both latencies, their ratio
(infbuild / Olive: <= 1.00 means infbuild is at least as fast) and both errors (max abs and cosine of the first
output against eager). A second table does the same for what bench prefers among the artifacts that compute in
fp32 or int8 (what a CPU without bf16/fp16 instructions is given), timed in the same interleaved run.
An Olive workflow that fails prints its one-line reason and is left out.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
from olive_models import INPUTS, MODELS, feed, model, recipe

from common import REPO, cpu, example_project

OLIVE = "olive-ai==0.13.0"
TORCH = "torch==2.13.0"  # the CPU wheel, installed first (a looser requirement pulls a CUDA build)
OLIVE_EXTRA = ["onnxruntime", "onnxscript", "requests"]  # Olive imports requests without declaring it
WORKFLOWS = {  # name -> Olive passes, in order
    "dynamo+onnxscript": [{"type": "OnnxConversion", "use_dynamo_exporter": True}, {"type": "OnnxScriptFusion"}],
    "dynamo+ortopt": [{"type": "OnnxConversion", "use_dynamo_exporter": True},
                      {"type": "OrtTransformersOptimization", "model_type": "{fusion}"}],
    "torchscript+ortopt": [{"type": "OnnxConversion"}, {"type": "OrtTransformersOptimization", "model_type": "{fusion}"}],
}
INT8 = {"type": "OnnxDynamicQuantization"}


def olive_venv(path: Path) -> Path:
    """Olive's own environment (made once): its python."""
    python = path / "bin" / "python"
    if not python.exists():
        print(f"installing {OLIVE} into {path} ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", TORCH], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", OLIVE, *OLIVE_EXTRA], check=True)
    return python


def olive_config(name: str, passes: list[dict[str, Any]], out: Path) -> dict[str, Any]:
    spec = MODELS[name]
    shape = [spec["batch"], spec["seq"]]
    axes = {i: {0: "batch", 1: "seq"} for i in INPUTS}
    steps = [{k: (v.format(**spec) if isinstance(v, str) else v) for k, v in p.items()} for p in passes]
    return {
        "input_model": {"type": "PyTorchModel", "model_script": str(REPO / "benchmarks" / "olive_models.py"),
                        "model_loader": f"load_{name}",
                        "io_config": {"input_names": list(INPUTS), "input_shapes": [shape, shape],
                                      "input_types": ["int64", "int64"], "output_names": spec["outputs"],
                                      "dynamic_axes": axes}},
        "passes": {f"p{i}_{s['type']}": s for i, s in enumerate(steps)},
        "log_severity_level": 3, "evaluate_input_model": False, "output_dir": str(out),
        "cache_dir": str(out.parent / "olive-cache"),
    }


def run_olive(python: Path, name: str, work: Path) -> dict[str, Path | str]:
    """Every workflow with and without int8 for one model: {workflow: its model.onnx, or why it failed}."""
    results: dict[str, Path | str] = {}
    for flow, passes in WORKFLOWS.items():
        for label, steps in ((flow, passes), (f"{flow}+int8", [*passes, INT8])):
            out = work / name / label
            found = sorted(out.rglob("*.onnx")) if out.exists() else []
            if not found:
                shutil.rmtree(out, ignore_errors=True)
                out.mkdir(parents=True)
                config = out / "config.json"
                config.write_text(json.dumps(olive_config(name, steps, out), indent=2))
                started = time.perf_counter()
                done = subprocess.run([str(python), "-m", "olive", "run", "--config", str(config)], cwd=out,
                                      capture_output=True, text=True,
                                      env={**os.environ, "OLIVE_DISABLE_TELEMETRY": "1", "PYTHONPATH": ""})
                found = sorted(out.rglob("*.onnx"))
                print(f"  olive {name} {label}: {'ok' if found else 'failed'} ({time.perf_counter() - started:.0f} s)",
                      flush=True)
                if not found:
                    (out / "olive.log").write_text(done.stdout + done.stderr)
                    results[label] = _reason(done.stdout + done.stderr, done.returncode)
                    continue
            results[label] = found[0]
    return results


def _reason(log: str, code: int) -> str:
    """A failed Olive run's one line: its last error line (Olive logs INFO lines after the traceback)."""
    lines = [line.strip() for line in log.splitlines() if line.strip()]
    errors = [line for line in lines if "Error" in line.split(":")[0] or "Exception" in line.split(":")[0]]
    return (errors or lines or [f"exit {code}, no model written"])[-1][:200]


def build_infbuild(names: list[str], root: Path) -> Path:
    project = root / "infbuild"
    if not project.exists():
        example_project(project, [])
    for name in names:
        (project / "recipes" / f"{name}.json").write_text(json.dumps(recipe(name), indent=2))
    print(f"building {', '.join(names)} with infbuild in {project} ...", flush=True)
    started = time.perf_counter()
    env = {k: v for k, v in os.environ.items() if k != "INFBUILD_CACHE"}
    done = subprocess.run([sys.executable, "-m", "doit", "build"], cwd=project, env={**env, "INFBUILD_CACHE": "off"},
                          capture_output=True, text=True)
    (root / "infbuild-build.log").write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        sys.exit(f"the infbuild build failed (log: {root / 'infbuild-build.log'})")
    print(f"  built in {time.perf_counter() - started:.0f} s", flush=True)
    return project / "artifacts"


def errors(got: np.ndarray, want: np.ndarray) -> dict[str, float]:
    a, b = got.astype(np.float64).ravel(), want.astype(np.float64).ravel()
    return {"max_abs": float(np.abs(a - b).max()), "cosine": float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))),
            "rel_l2": float(np.linalg.norm(a - b) / np.linalg.norm(b))}


def ort_call(path: Path, inputs: dict[str, np.ndarray]) -> Callable[[], Any]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    wanted = {i.name for i in session.get_inputs()}
    given = {k: v for k, v in inputs.items() if k in wanted}
    return lambda: session.run(None, given)


def timed(candidates: dict[str, Callable[[], Any]], blocks: int, reps: int) -> dict[str, float]:
    """Median over blocks of each block's p50 (ms); blocks rotate the order so drift spreads evenly."""
    names, p50s = list(candidates), {n: [] for n in candidates}
    for fn in candidates.values():
        for _ in range(5):
            fn()
    for block in range(blocks):
        for name in names[block % len(names):] + names[:block % len(names)]:
            fn, times = candidates[name], []
            for _ in range(reps):
                start = time.perf_counter()
                fn()
                times.append(time.perf_counter() - start)
            p50s[name].append(statistics.median(times) * 1e3)
    return {n: statistics.median(v) for n, v in p50s.items()}


def compare(name: str, artifacts: Path, olive: dict[str, Path | str], blocks: int, reps: int) -> dict[str, Any]:
    import torch

    from infbuild.runtime import load

    torch.set_num_threads(1)
    inputs = feed(name)
    first = MODELS[name]["outputs"][0]
    with torch.no_grad():
        want = model(name)(**{k: torch.from_numpy(v) for k, v in inputs.items()})[first].numpy()
    manifest = json.loads((artifacts / "manifest.json").read_text())["recipes"][name]
    target = next(t for t, here in manifest["targets"].items() if here.get("preferred"))
    preferred = manifest["targets"][target]["preferred"]
    ours = load(artifacts, name, threads=1)
    candidates: dict[str, Callable[[], Any]] = {f"infbuild {preferred}": lambda: ours(**inputs)}
    outs = {f"infbuild {preferred}": ours(**inputs)[first]}
    full = full_precision_preferred(manifest["targets"][target])
    if full is not None and full != preferred:  # what a CPU without bf16/fp16 instructions would be given
        other = load(artifacts, name, backend=full, threads=1)
        candidates[f"infbuild {full}"] = lambda: other(**inputs)
        outs[f"infbuild {full}"] = other(**inputs)[first]
    for label, path in olive.items():
        if isinstance(path, Path):
            try:
                call = ort_call(path, inputs)
                outs[f"olive {label}"] = call()[0]
            except Exception as exc:  # an Olive result onnxruntime refuses is reported, not timed
                olive[label] = f"onnxruntime cannot run it: {str(exc).splitlines()[0][:160]}"
                continue
            candidates[f"olive {label}"] = call
    p50 = timed(candidates, blocks, reps)
    rows = [{"candidate": c, "p50_ms": p50[c], **errors(outs[c], want)} for c in candidates]
    olive_rows = [r for r in rows if r["candidate"].startswith("olive ")]
    best = min(olive_rows, key=lambda r: r["p50_ms"]) if olive_rows else None
    by_name = {r["candidate"]: r for r in rows}
    without = by_name.get(f"infbuild {full}", rows[0])  # the preferred itself where it needs no bf16/fp16
    return {"model": name, "target": target, "rows": rows, "infbuild": rows[0], "infbuild_full_precision": without,
            "olive_best": best, "olive_failed": {k: v for k, v in olive.items() if isinstance(v, str)}}


def full_precision_preferred(target: dict[str, Any]) -> str | None:
    """What bench would have preferred among the target's artifacts that compute in fp32 or int8: what a CPU without
    bf16/fp16 instructions gets (there, those variants are not built). infbuild's own choice (preferred.py) over
    the same verify and bench results."""
    from infbuild.preferred import choose_preferred

    order = [a for a, info in target.get("artifacts", {}).items() if info.get("precision") not in ("bf16", "fp16")]
    return choose_preferred(target.get("verify") or {}, target.get("bench"), order) if order else None


def plot(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 4), squeeze=False)
    for ax, result in zip(axes[0], results):
        rows = sorted(result["rows"], key=lambda r: r["p50_ms"])
        ax.barh([r["candidate"] for r in rows], [r["p50_ms"] for r in rows],
                color=["tab:blue" if r["candidate"].startswith("infbuild") else "tab:gray" for r in rows])
        ax.set_title(result["model"])
        ax.set_xlabel("p50 ms, 1 thread")
        ax.invert_yaxis()
    fig.suptitle(f"infbuild vs Olive on {cpu()}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--blocks", type=int, default=7)
    parser.add_argument("--reps", type=int, default=30)
    parser.add_argument("--olive-venv", type=Path, default=Path.home() / ".cache" / "infbuild" / "olive-venv")
    parser.add_argument("--keep", type=Path, help="work in this folder (kept: a second run reuses both builds)")
    parser.add_argument("--json", type=Path, help="also write the results as JSON")
    parser.add_argument("--plot", type=Path, help="also draw every candidate's latency (PNG)")
    args = parser.parse_args()
    names = [n for n in args.models.split(",") if n]
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        sys.exit(f"--models: unknown {', '.join(unknown)} (known: {', '.join(MODELS)})")
    with tempfile.TemporaryDirectory(prefix="infbuild-olive-") as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        python = olive_venv(args.olive_venv)
        artifacts = build_infbuild(names, work)
        results = []
        for name in names:
            print(f"olive workflows for {name} ...", flush=True)
            olive = run_olive(python, name, work / "olive")
            print(f"timing {name} ({args.blocks} blocks x {args.reps} calls per candidate) ...", flush=True)
            results.append(compare(name, artifacts, olive, args.blocks, args.reps))
    report(results, args)


def report(results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    print(f"\non {cpu()}, 1 thread, p50 ms (median of {args.blocks} interleaved blocks of {args.reps} calls); "
          "errors of the first output against eager PyTorch")
    for result in results:
        print(f"\n{result['model']} ({result['target']})\n| candidate | p50 ms | rel L2 err | max abs err | cosine |"
              "\n|---|---:|---:|---:|---:|")
        for r in sorted(result["rows"], key=lambda r: r["p50_ms"]):
            print(f"| {r['candidate']} | {r['p50_ms']:.3f} | {r['rel_l2']:.3g} | {r['max_abs']:.3g} | {r['cosine']:.6f} |")
        for label, why in result["olive_failed"].items():
            print(f"| olive {label} | failed: {why} | | | |")
    print("\n| model | infbuild preferred | ms | Olive's fastest | ms | infbuild / Olive | infbuild rel L2, max abs "
          "| Olive rel L2, max abs |\n|---|---|---:|---|---:|---:|---|---|")
    for result in results:
        ours, best = result["infbuild"], result["olive_best"]
        if best is None:
            print(f"| {result['model']} | {ours['candidate']} | {ours['p50_ms']:.3f} | (every Olive workflow failed) | | | | |")
            continue
        print(f"| {result['model']} | {ours['candidate'].removeprefix('infbuild ')} | {ours['p50_ms']:.3f} | "
              f"{best['candidate'].removeprefix('olive ')} | {best['p50_ms']:.3f} | {ours['p50_ms'] / best['p50_ms']:.2f} | "
              f"{ours['rel_l2']:.3g}, {ours['max_abs']:.3g} | {best['rel_l2']:.3g}, {best['max_abs']:.3g} |")
    print("\nWithout bf16/fp16 (what bench prefers among the other artifacts: a CPU without AVX-512 BF16/AMX gets it), "
          "timed in the same run:\n| model | infbuild | ms | Olive's fastest | ms | infbuild / Olive | infbuild rel L2, "
          "max abs |\n|---|---|---:|---|---:|---:|---|")
    for result in results:
        ours, best = result["infbuild_full_precision"], result["olive_best"]
        if best is not None:
            print(f"| {result['model']} | {ours['candidate'].removeprefix('infbuild ')} | {ours['p50_ms']:.3f} | "
                  f"{best['candidate'].removeprefix('olive ')} | {best['p50_ms']:.3f} | "
                  f"{ours['p50_ms'] / best['p50_ms']:.2f} | {ours['rel_l2']:.3g}, {ours['max_abs']:.3g} |")
    if args.json:
        args.json.write_text(json.dumps({"cpu": cpu(), "results": results}, indent=2, default=str))
    if args.plot:
        plot(results, args.plot)
        print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()

"""Serving overhead: the same artifact called in-process through ``infbuild.runtime.load`` and through a local
Triton server (the repository ``doit build`` wrote, the nvidia-pytriton wheel's tritonserver, Python backend)
over gRPC and HTTP, one request in flight; p50 latency of each, their ratio and the difference, measured
interleaved in one run (rounds alternate between the three ways), and the time Triton reports inside the model
(``compute_infer``: the Python backend's execute, the artifact's call included).

    python benchmarks/serving.py [--requests 200] [--rounds 3] [--plot docs/triton-latency.png] [--keep DIR]

Models: the example sequence block (seqblock, seq_len 64) and conv net (batch 16), each as its AOTInductor
package and its ONNX model in onnxruntime (both served by the Python backend: the wheel's server has no ONNX
Runtime backend).
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import yaml

from common import REPO, example_project

TRITON = {"artifacts": "all", "onnxruntime": "python", "dynamic_batching": False}


def build(root: Path) -> None:
    project = example_project(root, [REPO / "recipes" / "seqblock.json", REPO / "recipes" / "convnet.yaml"])
    for path in sorted((project / "recipes").iterdir()):
        data = yaml.safe_load(path.read_text())  # JSON is YAML
        data.update(backends=["onnxruntime", "aoti"], triton=TRITON, bench={"shapes": ["opt"], "rounds": 1})
        path.unlink()
        path.with_suffix(".json").write_text(json.dumps(data, indent=2))
    print(f"building in {project} ...", flush=True)
    subprocess.run([sys.executable, "-m", "doit", "build"], cwd=project, check=True, stdout=subprocess.DEVNULL)


def p50(fn: Callable[[], Any], requests: int) -> list[float]:
    times = []
    for _ in range(requests):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return times


def measure(root: Path, recipe: str, requests: int, rounds: int) -> list[dict[str, Any]]:
    import tritonclient.grpc as grpc
    import tritonclient.http as http

    from infbuild.fingerprint import host_fingerprint
    from infbuild.runtime import load
    from infbuild.triton import server

    target = host_fingerprint()["targets"]["cpu"]
    folder = root / "artifacts" / recipe / target / "triton"
    summary = json.loads((folder / "triton.json").read_text())
    with np.load(root / "artifacts" / recipe / "portable" / "reference" / "opt.npz") as sample:
        inputs = {k[len("input."):]: sample[k] for k in sample.files if k.startswith("input.")}
    rows = []
    with server.start(folder / "repository", root / "tritonserver") as running:
        running.wait_ready(list(summary["models"]))
        clients = {"gRPC": (grpc, grpc.InferenceServerClient(running.grpc_url)),
                   "HTTP": (http, http.InferenceServerClient(running.http_url))}
        for name, model in summary["models"].items():
            local = load(root / "artifacts", recipe, backend=model["artifact"])
            ways: dict[str, Callable[[], Any]] = {"in-process load()": lambda m=local: m(**inputs)}
            for label, (module, client) in clients.items():
                tensors = []
                for key, value in inputs.items():
                    tensor = module.InferInput(key, list(value.shape), module.np_to_triton_dtype(value.dtype))
                    tensor.set_data_from_numpy(value)
                    tensors.append(tensor)
                ways[f"Triton {label}"] = (lambda c=client, t=tensors, m=name: c.infer(m, t))
            times: dict[str, list[float]] = {way: [] for way in ways}
            for fn in ways.values():
                p50(fn, 10)  # warm-up
            before = compute_time(clients["HTTP"][1], name)
            for _ in range(rounds):
                for way, fn in ways.items():
                    times[way] += p50(fn, requests)
            base = statistics.median(times["in-process load()"])
            after = compute_time(clients["HTTP"][1], name)
            compute = (after[0] - before[0]) / max(after[1] - before[1], 1) / 1e6  # the timed requests only
            for way, values in times.items():
                median = statistics.median(values)
                rows.append({"recipe": recipe, "artifact": model["artifact"], "way": way, "p50_ms": median,
                             "ratio": median / base, "overhead_ms": median - base,
                             "compute_ms": compute if way.startswith("Triton") else None})
    return rows


def compute_time(client: Any, model: str) -> tuple[int, int]:
    """Triton's cumulative time inside the model's execute (ns) and its count."""
    stats = client.get_inference_statistics(model)["model_stats"][0]["inference_stats"]["compute_infer"]
    return int(stats["ns"]), int(stats["count"])


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| model | artifact | called through | p50 ms | × in-process | + ms | in the model (Triton's compute_infer, mean ms) |",
             "|---|---|---|---:|---:|---:|---:|"]
    for r in rows:
        compute = "-" if r["compute_ms"] is None else f"{r['compute_ms']:.3f}"
        lines.append(f"| {r['recipe']} | {r['artifact']} | {r['way']} | {r['p50_ms']:.3f} | {r['ratio']:.2f} | "
                     f"{r['overhead_ms']:+.3f} | {compute} |")
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = sorted({(r["recipe"], r["artifact"]) for r in rows})
    ways = list(dict.fromkeys(r["way"] for r in rows))
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / len(ways)
    for i, way in enumerate(ways):
        values = [next(r["p50_ms"] for r in rows if (r["recipe"], r["artifact"]) == g and r["way"] == way) for g in groups]
        ax.bar([x + i * width for x in range(len(groups))], values, width, label=way)
    ax.set_xticks([x + width * (len(ways) - 1) / 2 for x in range(len(groups))], [f"{g[0]}\n{g[1]}" for g in groups])
    ax.set_ylabel("p50 latency, ms (one request in flight)")
    ax.set_title("infbuild artifacts: in-process vs through Triton (Python backend)")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=200, help="timed requests per way and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--plot", type=Path, help="also draw the table as a bar chart (PNG)")
    parser.add_argument("--keep", type=Path, help="build in this folder (kept) instead of a temporary one")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp) / "proj"
        if not (root / "artifacts").is_dir():
            build(root)
        rows = [row for recipe in ("seqblock", "convnet") for row in measure(root, recipe, args.requests, args.rounds)]
    print(table(rows))
    if args.plot:
        plot(rows, args.plot)
        print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()

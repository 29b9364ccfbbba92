"""A base-sized model through infbuild against the same steps run by hand, side by side in one run:

    python benchmarks/scale.py [--layers 12] [--json]

The model: BERT-base from its config (hidden 768, 12 layers, 12 heads, vocab 30522, 110M parameters, random
weights), batch 1..4 (opt 1: the batch-1 serving case) x seq 16..128 (opt 128), onnxruntime and AOTInductor,
the README's bench defaults. First by hand in a fresh process — ``torch.export`` + ``aoti_compile_and_package``,
``torch.onnx.export(dynamo=True)``, eager outputs at min/opt/max, onnxruntime and ``aoti_load_package`` compared
with them, each artifact and eager timed at the three shapes (one warm-up, five timed calls) — then ``doit build``
of the same recipe in a fresh project, each with its own empty inductor cache and no infbuild cache. Prints per
stage seconds and the ratios (targets: export and AOTI compile <= 1.2x, the whole cold build <= 2x the hand-run
total, bench <= 30 % of the cold build).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import cpu, example_project

RECIPE = """\
name: bert_base
model:
  factory: examples.hf:bert
  kwargs: {{hidden: 768, layers: {layers}, heads: 12, vocab: 30522, intermediate: 3072}}
inputs:
  input_ids: {{shape: [batch, seq], dtype: int64, low: 0, high: 30522}}
  attention_mask: {{shape: [batch, seq], dtype: int64, values: [1]}}
dims:
  batch: {{min: 1, opt: 1, max: 4}}
  seq: {{min: 16, opt: 128, max: 128}}
outputs: [last_hidden_state, pooler_output]
backends: [onnxruntime, aoti]
"""

BY_HAND = r'''
import json, sys, time, tempfile
from pathlib import Path
import numpy as np
import torch

sys.path.insert(0, sys.argv[1])
layers, out = int(sys.argv[2]), Path(sys.argv[3])
seconds = {}
t0 = time.perf_counter()
from examples.hf import bert
model = bert(hidden=768, layers=layers, heads=12, vocab=30522, intermediate=3072)
seconds["model"] = time.perf_counter() - t0
batch, seq = torch.export.Dim("batch", min=1, max=4), torch.export.Dim("seq", min=16, max=128)
shapes = {"min": (1, 16), "opt": (1, 128), "max": (4, 128)}
def inputs(shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"input_ids": torch.randint(0, 30522, shape, generator=g), "attention_mask": torch.ones(shape, dtype=torch.int64)}
trace = inputs((2, 128))  # batch traced at 2 (torch.export specialises a dim traced at 1)
dynamic = {"input_ids": {0: batch, 1: seq}, "attention_mask": {0: batch, 1: seq}}
t0 = time.perf_counter()
torch.onnx.export(model, (), str(out / "model.onnx"), kwargs=trace, dynamo=True, dynamic_shapes=dynamic,
                  input_names=["input_ids", "attention_mask"], output_names=["last_hidden_state", "pooler_output"])
seconds["onnx export"] = time.perf_counter() - t0
t0 = time.perf_counter()
program = torch.export.export(model, (), trace, dynamic_shapes=dynamic, strict=False)
seconds["torch.export"] = time.perf_counter() - t0
t0 = time.perf_counter()
torch._inductor.aoti_compile_and_package(program, package_path=str(out / "model.pt2"))
seconds["aoti compile"] = time.perf_counter() - t0 + seconds["torch.export"]
t0 = time.perf_counter()
reference = {}
with torch.inference_mode():
    for label, shape in shapes.items():
        x = inputs(shape)
        r = model(**x)
        reference[label] = (x, [r.last_hidden_state.numpy(), r.pooler_output.numpy()])
seconds["reference"] = time.perf_counter() - t0
t0 = time.perf_counter()
import onnxruntime as ort
opts = ort.SessionOptions(); opts.intra_op_num_threads = 1
session = ort.InferenceSession(str(out / "model.onnx"), opts, providers=["CPUExecutionProvider"])
package = torch._inductor.aoti_load_package(str(out / "model.pt2"))
def _values(out):
    return list(out.values()) if hasattr(out, "values") else list(out)
runners = {
    "onnxruntime": lambda x: session.run(None, {k: v.numpy() for k, v in x.items()}),
    "aoti": lambda x: [t.numpy() for t in _values(package(**x))],
}
for name, run in runners.items():
    for label, (x, want) in reference.items():
        got = run(x)
        for g, w in zip(got, want):
            assert np.allclose(g, w, rtol=1e-3, atol=1e-3), (name, label, float(np.abs(g - w).max()))
seconds["verify"] = time.perf_counter() - t0
torch.set_num_threads(1)  # as the bench stage times (bench.threads: 1)
opts.intra_op_num_threads = 1
t0 = time.perf_counter()
runners["eager"] = lambda x: model(**x)
with torch.inference_mode():
    for name, run in runners.items():
        for label, (x, _) in reference.items():
            run(x)
            for _ in range(5):
                run(x)
seconds["bench"] = time.perf_counter() - t0
print(json.dumps(seconds))
'''


def by_hand(layers: int, folder: Path, env: dict[str, str]) -> dict[str, float]:
    repo = str(Path(__file__).resolve().parents[1])
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", BY_HAND, repo, str(layers), str(folder)], capture_output=True,
                          text=True, env=env, check=False)
    if done.returncode != 0:
        sys.exit(f"the hand-run steps failed:\n{done.stderr[-4000:]}")
    seconds = json.loads(done.stdout.strip().splitlines()[-1])
    seconds["total"] = time.perf_counter() - started
    return seconds


def with_infbuild(layers: int, folder: Path, env: dict[str, str]) -> tuple[dict[str, float], float]:
    project = example_project(folder, recipes=[])
    (project / "recipes" / "bert_base.yaml").write_text(RECIPE.format(layers=layers))
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "doit", "run", "--reporter", "infbuild-jsonl", "build"], cwd=project,
                          capture_output=True, text=True, env=env, check=False)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"doit build failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    stages = {}
    for line in done.stdout.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("event") == "success" and ":" in event.get("task", "") and "seconds" in event:
            stages[event["task"].split(":")[0]] = float(event["seconds"])
    return stages, wall


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=12, help="encoder layers (12: BERT-base)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="infbuild-scale-") as tmp_s:
        tmp = Path(tmp_s)
        base = {k: v for k, v in os.environ.items() if not k.startswith(("INFBUILD_", "TORCHINDUCTOR_"))}
        (tmp / "hand").mkdir()
        print(f"BERT-base ({args.layers} layers) on {cpu()}: by hand ...", file=sys.stderr, flush=True)
        hand = by_hand(args.layers, tmp / "hand", {**base, "TORCHINDUCTOR_CACHE_DIR": str(tmp / "inductor-hand")})
        print("... and with infbuild (doit build)", file=sys.stderr, flush=True)
        stages, wall = with_infbuild(args.layers, tmp / "infbuild", {
            **base, "TORCHINDUCTOR_CACHE_DIR": str(tmp / "inductor-infbuild"), "INFBUILD_CACHE": "off",
            "XDG_CONFIG_HOME": str(tmp / "config")})
    pairs = [("export (onnx)", stages.get("onnx"), hand["onnx export"]),
             ("AOTI compile", stages.get("aoti"), hand["aoti compile"]),
             ("reference", stages.get("reference"), hand["reference"]),
             ("verify", stages.get("verify"), hand["verify"]),
             ("bench", stages.get("bench"), hand["bench"]),
             ("cold build (wall)", wall, hand["total"])]
    figures: dict[str, Any] = {"cpu": cpu(), "layers": args.layers, "hand": hand, "infbuild": stages,
                               "cold_build_s": wall, "bench_share": stages.get("bench", 0.0) / wall,
                               "ratios": {n: (a / b if a and b else None) for n, a, b in pairs}}
    if args.json:
        print(json.dumps(figures, indent=2))
        return 0
    print(f"BERT-base-sized ({args.layers} layers, {cpu()}), seconds; infbuild / by hand")
    print(f"{'step':<20} {'infbuild':>9} {'by hand':>9} {'ratio':>7}")
    for name, ours, theirs in pairs:
        ratio = f"{ours / theirs:.2f}" if ours and theirs else "-"
        print(f"{name:<20} {ours or 0:>9.1f} {theirs:>9.1f} {ratio:>7}")
    print(f"infbuild's export stage (torch.export + program digest, the early cut-off): {stages.get('export', 0):.1f} s")
    print(f"bench share of the cold build: {figures['bench_share']:.0%} (target <= 30 %)")
    print("targets: export and AOTI compile <= 1.2x, cold build <= 2x the hand-run total")
    return 0


if __name__ == "__main__":
    sys.exit(main())

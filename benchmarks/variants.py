"""Variants on this machine: per model, fp32 onnxruntime's p50 next to the preferred artifact's (the fastest within
its accuracy budget, variants included), their ratio and the preferred's error; and today's preferred (the
fastest of the recipe's own fp32 artifacts) to show nothing got slower. All measured in one bench run per model
(interleaved rounds, 1 thread).

    python benchmarks/variants.py [--rounds 3] [--keep DIR]

Models: the example recipes (MLP, sequence block, conv net), a Hugging Face BERT encoder and GPT-2 decoder from
small configs (random weights; hidden 256, 4 layers, sequence up to 128).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from common import REPO, example_project

ORT_VARIANTS = ["optimized", "int8_dynamic", "int8_static"]
HF = {
    "bert": {"factory": "examples.hf:bert", "outputs": ["last_hidden_state", "pooler_output"], "fusion": "bert",
             "inputs": {"input_ids": {"shape": ["batch", "seq"], "dtype": "int64", "low": 0, "high": 1000},
                        "attention_mask": {"shape": ["batch", "seq"], "dtype": "int64", "values": [1]}}},
    "gpt2": {"factory": "examples.hf:gpt2", "outputs": ["logits"], "fusion": "gpt2",
             "inputs": {"input_ids": {"shape": ["batch", "seq"], "dtype": "int64", "low": 0, "high": 1000}}},
}


def recipes(rounds: int) -> dict[str, dict[str, Any]]:
    bench = {"shapes": ["opt"], "rounds": rounds, "iterations": 100, "warmup": 10, "threads": 1, "baselines": ["eager"]}
    out = {}
    for path in sorted((REPO / "recipes").iterdir()):
        data = yaml.safe_load(path.read_text())
        data.update(backends=["onnxruntime", "aoti"], bench=bench,
                    variants={"onnxruntime": ORT_VARIANTS, "aoti": ["bf16"]})
        out[data["name"]] = data
    for name, spec in HF.items():
        out[name] = {"name": name, "model": {"factory": spec["factory"],
                                             "kwargs": {"hidden": 256, "layers": 4, "heads": 4, "vocab": 1000}},
                     "inputs": spec["inputs"], "dims": {"batch": {"min": 1, "opt": 4, "max": 8},
                                                        "seq": {"min": 8, "opt": 128, "max": 128}},
                     "outputs": spec["outputs"], "backends": ["onnxruntime", "aoti"], "bench": bench,
                     "stages": {"onnx_variants": {"fusion_model_type": spec["fusion"]}},
                     "variants": {"onnxruntime": [*ORT_VARIANTS, "fused"], "aoti": ["bf16"]}}
    return out


def row(name: str, artifacts: Path) -> dict[str, Any] | None:
    manifest = json.loads((artifacts / "manifest.json").read_text())
    targets = manifest["recipes"][name]["targets"]
    target = next(t for t in targets if t != "portable" and targets[t].get("bench"))
    here = targets[target]
    primary = here["bench"]["primary_shape"]
    p50 = {a: r[primary]["p50_ms"] for a, r in here["bench"]["results"].items() if primary in r}
    passed = {a for a, r in here["verify"].items() if r.get("passed") is True}
    today = min((a for a in ("onnxruntime", "aoti") if a in passed), key=lambda a: p50[a])
    best = here["preferred"]
    return {"model": name, "fp32_ort": p50["onnxruntime"], "preferred": best, "preferred_p50": p50[best],
            "ratio": p50["onnxruntime"] / p50[best], "error": here["verify"][best].get("rel_l2_err", 0.0),
            "today": today, "today_p50": p50[today], "eager": p50.get("eager")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--keep", help="build in this folder (kept) instead of a temporary one")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="infbuild-variants-") as tmp:
        root = example_project(Path(args.keep or tmp) / "variants", [])
        for name, data in recipes(args.rounds).items():
            (root / "recipes" / f"{name}.json").write_text(json.dumps(data, indent=2))
        print(f"building {len(recipes(args.rounds))} models with their variants in {root} ...", flush=True)
        done = subprocess.run([sys.executable, "-m", "doit", "build"], cwd=root, env={"INFBUILD_CACHE": "off",
                              **{k: v for k, v in __import__("os").environ.items() if k != "INFBUILD_CACHE"}})
        if done.returncode != 0:
            sys.exit("the build failed")
        rows = [r for name in recipes(args.rounds) if (r := row(name, root / "artifacts"))]
    print(f"\nbench p50 at the primary shape, 1 thread, {args.rounds} interleaved rounds, on this machine")
    print("| model | fp32 onnxruntime ms | preferred | preferred ms | x fp32 onnxruntime | preferred's rel L2 error "
          "| today's preferred (fp32 only) | its ms | preferred vs today |")
    print("|---|---:|---|---:|---:|---:|---|---:|---:|")
    for r in rows:
        print(f"| {r['model']} | {r['fp32_ort']:.4f} | {r['preferred']} | {r['preferred_p50']:.4f} | {r['ratio']:.2f} | "
              f"{r['error']:.3g} | {r['today']} | {r['today_p50']:.4f} | {r['today_p50'] / r['preferred_p50']:.2f} |")


if __name__ == "__main__":
    main()

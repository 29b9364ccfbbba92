"""The three models of the head-to-head with Olive (benchmarks/olive.py), shared by both sides: infbuild's recipes
and Olive's model script (Olive imports this file in its own environment and calls ``load_<model>``). Hugging Face
models from configs with the same random weights (seed 0) and eager attention on both sides (what Olive's
workflows export with); each called with input_ids and an all-ones attention_mask at one shape."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
VOCAB = 1000

MODELS: dict[str, dict[str, Any]] = {
    "bert_small": {"factory": "bert", "kwargs": {"hidden": 128, "layers": 2, "heads": 2, "vocab": VOCAB},
                   "batch": 2, "seq": 128, "outputs": ["last_hidden_state", "pooler_output"], "fusion": "bert"},
    "gpt2_tiny": {"factory": "gpt2", "kwargs": {"hidden": 64, "layers": 2, "heads": 2, "vocab": VOCAB},
                  "batch": 1, "seq": 64, "outputs": ["logits"], "fusion": "gpt2"},
    "bert_4x256": {"factory": "bert", "kwargs": {"hidden": 256, "layers": 4, "heads": 4, "vocab": VOCAB,
                                                 "positions": 512},
                   "batch": 4, "seq": 256, "outputs": ["last_hidden_state", "pooler_output"], "fusion": "bert"},
}
INPUTS = ("input_ids", "attention_mask")


def model(name: str) -> Any:
    """The eager model, with eager attention (the reference both sides are measured against)."""
    sys.path.insert(0, str(REPO))
    from examples import hf

    spec = MODELS[name]
    built = getattr(hf, spec["factory"])(**spec["kwargs"])
    built.set_attn_implementation("eager")
    return built


def feed(name: str, seed: int = 1) -> dict[str, Any]:
    """The inputs every artifact is timed and compared at (numpy, int64)."""
    import numpy as np

    spec = MODELS[name]
    ids = np.random.default_rng(seed).integers(0, VOCAB, size=(spec["batch"], spec["seq"]), dtype=np.int64)
    return {"input_ids": ids, "attention_mask": np.ones_like(ids)}


def recipe(name: str) -> dict[str, Any]:
    """infbuild's recipe for a model: onnxruntime with its int8 variants and fusions (the chains after onnxscript's
    fusion come with int8_after), AOTInductor with bf16; bench at the model's shape, 1 thread."""
    spec = MODELS[name]
    return {"name": name, "model": {"factory": f"examples.hf:{spec['factory']}", "kwargs": spec["kwargs"],
                                    "attention": "eager"},
            "inputs": {"input_ids": {"shape": ["batch", "seq"], "dtype": "int64", "low": 0, "high": VOCAB},
                       "attention_mask": {"shape": ["batch", "seq"], "dtype": "int64", "values": [1]}},
            "dims": {"batch": {"min": 1, "opt": spec["batch"], "max": 4},
                     "seq": {"min": 8, "opt": spec["seq"], "max": spec["seq"]}},
            "outputs": spec["outputs"], "backends": ["onnxruntime", "aoti"],
            "variants": {"onnxruntime": ["int8_dynamic", "int8_static", "fused", "onnxscript_fused"], "aoti": ["bf16"]},
            "stages": {"onnx_variants": {"fusion_model_type": spec["fusion"]}},
            "bench": {"shapes": ["opt"], "rounds": 3, "iterations": 50, "warmup": 5, "threads": 1, "baselines": []}}


class _Outputs:
    """The model as Olive's exporters take it: positional inputs, a tuple of the named outputs."""

    def __new__(cls, name: str) -> Any:
        import torch

        inner, outputs = model(name), MODELS[name]["outputs"]

        class Wrapped(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.inner = inner

            def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
                result = self.inner(input_ids=input_ids, attention_mask=attention_mask)
                return tuple(result[o] for o in outputs)

        return Wrapped().eval()


def load_bert_small(_path: Any = None) -> Any:
    return _Outputs("bert_small")


def load_gpt2_tiny(_path: Any = None) -> Any:
    return _Outputs("gpt2_tiny")


def load_bert_4x256(_path: Any = None) -> Any:
    return _Outputs("bert_4x256")

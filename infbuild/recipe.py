"""A recipe as the build reads it: validated, defaults applied (``Recipe``), with its dims and inputs. Loading and
checking recipe files is ``infbuild.recipe_load``; each stage's part of a recipe is declared by its package."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .errors import Problem
from .options import BenchOptions, PackageOptions, TritonOptions, VerifyOptions

BACKENDS = ("onnxruntime", "aoti")  # the default; "tensorrt" is opt-in
RESERVED_NAMES = {"manifest.json", "readme.md"}
FLOAT_DTYPES = ("float32", "float16", "bfloat16")


@dataclass(frozen=True)
class Dim:
    name: str
    min: int
    opt: int
    max: int


@dataclass(frozen=True)
class InputSpec:
    name: str
    shape: tuple[int | str, ...]
    dtype: str
    low: float
    high: float
    values: tuple[float, ...] = ()  # draw samples from these instead of [low, high)

    def concrete(self, dims: dict[str, Dim], which: str) -> tuple[int, ...]:
        """Shape with every named dim set to its ``min``, ``opt`` or ``max``."""
        return tuple(s if isinstance(s, int) else getattr(dims[s], which) for s in self.shape)


@dataclass(frozen=True)
class ModelSpec:
    factory: str
    kwargs: dict[str, Any]
    weights: str | None
    dtype: str
    sources: tuple[str, ...]
    attention: str | None = None  # a Hugging Face model's attention implementation ("eager", "sdpa"); None: its own


@dataclass(frozen=True)
class Recipe:
    """A validated recipe with defaults applied. ``file`` is relative to the project root."""

    name: str
    file: str
    model: ModelSpec
    inputs: tuple[InputSpec, ...]
    dims: dict[str, Dim]
    outputs: tuple[str, ...]
    backends: tuple[str, ...]
    stages: dict[str, dict[str, Any]]  # stages.<name> -> that stage's section (typed by its package: Section.of)
    verify: VerifyOptions  # rtol, atol, and per-output overrides under "outputs"
    bench: BenchOptions
    package: PackageOptions | None = None
    samples: tuple[str, ...] = ()  # the user's own sample inputs (.npz, relative to the project root)
    lines: dict[str, int] = field(default_factory=dict, compare=False, repr=False)
    variants: dict[str, tuple[str, ...]] = field(default_factory=dict)  # backend -> its variants to build
    runtime: dict[str, dict[str, Any]] = field(default_factory=dict)  # backend -> session settings (runtime:)
    triton: TritonOptions | None = None  # the Triton model repository (triton:), defaults applied

    def batch_dim(self) -> Dim | None:
        """The dim every input starts with, when it can start at 1: what Triton batches over (else None)."""
        name = leading_dim({i.name: {"shape": list(i.shape)} for i in self.inputs}, {d.name: {"min": d.min} for d in self.dims.values()})
        return self.dims[name] if name else None

    def artifacts(self) -> list[str]:
        """Every artifact the recipe asks for, in its order: its backends, then each backend's variants
        (``backend:variant``)."""
        return [*self.backends, *(f"{b}:{v}" for b in self.backends for v in self.variants.get(b, ()))]

    def bench_shapes(self) -> dict[str, dict[str, tuple[int, ...]]]:
        """Label -> concrete input shapes for every shape the bench stage times."""
        out = {}
        for entry in self.bench["shapes"]:
            if isinstance(entry, str):
                out[entry] = {i.name: i.concrete(self.dims, entry) for i in self.inputs}
            else:
                label = ",".join(f"{k}={v}" for k, v in entry.items())
                sizes = {d.name: entry.get(d.name, d.opt) for d in self.dims.values()}
                out[label] = {i.name: tuple(s if isinstance(s, int) else sizes[s] for s in i.shape) for i in self.inputs}
        return out

    def line(self, field_path: str) -> int:
        """Line of a dotted field path in the recipe file (nearest ancestor present)."""
        parts = field_path.replace("[", ".").replace("]", "").split(".")
        for cut in range(len(parts), 0, -1):
            key = ".".join(parts[:cut])
            if key in self.lines:
                return self.lines[key]
        return 1

    def locate(self, field_path: str, message: str) -> Problem:
        return Problem(self.file, self.line(field_path), field_path, message)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (for stage workers and keys); ``from_dict`` reverses it."""
        return {
            "name": self.name,
            "file": self.file,
            "model": {
                "factory": self.model.factory,
                "kwargs": self.model.kwargs,
                "weights": self.model.weights,
                "dtype": self.model.dtype,
                "sources": list(self.model.sources),
                **({"attention": self.model.attention} if self.model.attention else {}),
            },
            "inputs": {
                i.name: {"shape": list(i.shape), "dtype": i.dtype, "low": i.low, "high": i.high,
                         **({"values": list(i.values)} if i.values else {})} for i in self.inputs
            },
            "dims": {d.name: {"min": d.min, "opt": d.opt, "max": d.max} for d in self.dims.values()},
            "outputs": list(self.outputs),
            "backends": list(self.backends),
            "stages": self.stages,
            "verify": self.verify,
            "bench": self.bench,
            "package": self.package,
            "samples": list(self.samples),
            "lines": self.lines,
            "variants": {b: list(v) for b, v in self.variants.items()},
            "runtime": self.runtime,
            "triton": self.triton,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Recipe":
        m = d["model"]
        return cls(
            name=d["name"],
            file=d["file"],
            model=ModelSpec(m["factory"], m["kwargs"], m["weights"], m["dtype"], tuple(m["sources"]),
                            m.get("attention")),
            inputs=tuple(
                InputSpec(n, tuple(i["shape"]), i["dtype"], i["low"], i["high"], tuple(i.get("values") or ()))
                for n, i in d["inputs"].items()
            ),
            dims={n: Dim(n, v["min"], v["opt"], v["max"]) for n, v in d["dims"].items()},
            outputs=tuple(d["outputs"]),
            backends=tuple(d["backends"]),
            stages=d["stages"],
            verify=d["verify"],
            bench=d["bench"],
            package=d.get("package"),
            samples=tuple(d.get("samples") or ()),
            lines=d.get("lines", {}),
            variants={b: tuple(v) for b, v in (d.get("variants") or {}).items()},
            runtime=dict(d.get("runtime") or {}),
            triton=d.get("triton"),
        )


def leading_dim(inputs: Any, dims: Any) -> str | None:
    """The named dim at axis 0 of every input, when its min is 1 (Triton's batch dim), else None."""
    if not isinstance(inputs, dict) or not inputs or not isinstance(dims, dict):
        return None
    firsts = {(spec.get("shape") or [None])[0] if isinstance(spec, dict) and isinstance(spec.get("shape"), list) else None
              for spec in inputs.values()}
    name = firsts.pop() if len(firsts) == 1 else None
    if not isinstance(name, str) or not isinstance(dims.get(name), dict) or dims[name].get("min") != 1:
        return None
    return name

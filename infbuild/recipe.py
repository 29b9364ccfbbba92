"""Recipes: load, validate against the JSON Schema, check meaning, apply defaults.

Every problem of every file is collected and raised at once as a RecipeError whose lines read
``FILE:LINE: field.path: message``. Nothing here imports torch: planning a no-op build must stay cheap.
"""
from __future__ import annotations

import difflib
import glob
import importlib.util
import json
import math
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, cast

from .errors import Problem, RecipeError
from .options import BenchOptions, PackageOptions, StageOptions, TritonOptions, VerifyOptions
from .project import Project
from .recipe_cache import CheckedRecipes, content_key
from .recipe_file import INT_MAX, INT_MIN, FieldPath, RecipeFileError, field_name, line_of, parse_text, read_text

SCHEMA_PATH = Path(__file__).with_name("schema") / "recipe.schema.json"
CHECKER = (SCHEMA_PATH, Path(__file__).with_name("recipe_file.py"), Path(__file__))  # what decides a recipe passes
BACKENDS = ("onnxruntime", "aoti")  # the default; "tensorrt" is opt-in
RESERVED_NAMES = {"manifest.json", "readme.md"}
FLOAT_DTYPES = ("float32", "float16", "bfloat16")

NOT_FACTORY_MODULES = frozenset(sys.stdlib_module_names) | {"builtins", "__main__"}
"""Top-level modules a factory may never come from: the standard library cannot build a model, and calling
its callables with recipe kwargs (``subprocess:run``, ``os:system``) would run commands during validation."""

INPUT_RANGES: dict[str, tuple[float, float]] = {
    "float32": (-3.4028234663852886e38, 3.4028234663852886e38),
    "float16": (-65504.0, 65504.0),
    "bfloat16": (-3.3895313892515355e38, 3.3895313892515355e38),
    "int32": (-(2**31), 2**31),  # integer high is exclusive
    "int64": (INT_MIN, INT_MAX),
    "bool": (0, 2),
}
"""Bounds of each input dtype for ``low``/``high`` (sample inputs are drawn in low..high, integer high exclusive)."""

MAX_PROBLEMS_PER_FILE = 100
"""Problems reported per file; the rest are counted in one last line (a huge hostile file stays readable)."""

MAX_SOURCE_GLOBS = 256
"""Source globs expanded per recipe (each walks the file system)."""

_MAX_SUGGESTION_CANDIDATES = 200

# Tolerances by model dtype: |actual - reference| <= atol + rtol * |reference| elementwise.
DEFAULT_TOLERANCES = {
    "float32": {"rtol": 1e-3, "atol": 1e-4},
    "float16": {"rtol": 1e-2, "atol": 1e-3},
    "bfloat16": {"rtol": 5e-2, "atol": 1e-2},
}
DEFAULT_BUDGETS: dict[str, dict[str, float]] = {
    "fp16": {"rel_l2": 1e-2, "cosine": 0.9995},
    "bf16": {"rel_l2": 3e-2, "cosine": 0.999},
    "int8": {"rel_l2": 0.1, "cosine": 0.99},
}
"""Accuracy budgets of reduced-precision variants against the fp32 eager reference, by precision: the largest
relative L2 error and the smallest cosine similarity of any output at any verified shape. fp32 variants (an
optimised or fused graph) keep the recipe's elementwise rtol/atol rule."""
BENCH_DEFAULTS: BenchOptions = {
    "shapes": ["min", "opt", "max"], "primary": "opt", "warmup": 10, "iterations": 50, "max_seconds": 1.0, "rounds": 3,
    "threads": 1,
    "baselines": ["eager"], "torch_compile_mode": "default", "enabled": True,
}
PACKAGE_DEFAULTS: dict[str, Any] = {  # PackageOptions without image and version (required in the recipe)
    "base": {"cpu": "docker.io/library/python:3.11-slim", "cuda": "nvcr.io/nvidia/tensorrt:24.08-py3"},
    "include": "preferred", "push": False, "builder": "docker", "oci_layout": False, "registry": {},
    "dockerfile": [], "source": "", "serve": "files",
}
TRITON_BASE = "nvcr.io/nvidia/tritonserver:25.10-pyt-python-py3"
"""Default base of Triton images (package.serve: triton): Triton with its Python backend and PyTorch, which the
Python-backend models (AOTInductor packages, ONNX through infbuild.runtime) import."""
TRITON_DEFAULTS: dict[str, Any] = {"artifacts": "preferred", "onnxruntime": "native", "dynamic_batching": True,
                                   "instances": 1, "version": 1}
STAGE_DEFAULTS: StageOptions = {
    "onnx": {"opset": 18, "external_data": False, "graph_only": False},
    "reference": {"seed": 0},
    "aoti": {"device": "auto", "max_autotune": False, "inductor_configs": {}},
    "onnx_variants": {"optimization_level": "all", "fusion_model_type": "bert", "per_channel": False,
                      "calibration": "minmax"},
    "tensorrt": {"builder_optimization_level": None, "workspace_mib": None, "hardware_compatibility_level": "none",
                 "version_compatible": False, "sparsity": "disable", "precision": [], "strongly_typed": False,
                 "extra_args": [], "trtexec": None, "required": False},
}


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
    stages: StageOptions
    verify: VerifyOptions  # rtol, atol, and per-output overrides under "outputs"
    bench: BenchOptions = field(default_factory=lambda: BenchOptions(**BENCH_DEFAULTS))
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

    def budget(self, precision: str) -> dict[str, float]:
        """The accuracy budget of a reduced-precision variant: ``verify.budgets.<precision>`` over the defaults."""
        budgets: dict[str, Any] = dict(self.verify.get("budgets") or {})
        own: dict[str, float] = dict(budgets.get(precision) or {})
        return {**DEFAULT_BUDGETS.get(precision, {}), **own}

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
            model=ModelSpec(m["factory"], m["kwargs"], m["weights"], m["dtype"], tuple(m["sources"])),
            inputs=tuple(
                InputSpec(n, tuple(i["shape"]), i["dtype"], i["low"], i["high"], tuple(i.get("values") or ()))
                for n, i in d["inputs"].items()
            ),
            dims={n: Dim(n, v["min"], v["opt"], v["max"]) for n, v in d["dims"].items()},
            outputs=tuple(d["outputs"]),
            backends=tuple(d["backends"]),
            stages=d["stages"],
            verify=d["verify"],
            bench=d.get("bench", dict(BENCH_DEFAULTS)),
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


def _canonical(value: Any) -> str:
    """Key for uniqueness: JSON with sorted keys, integral floats as ints (JSON Schema: 1 == 1.0, true != 1)."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return json.dumps(value, sort_keys=True, default=repr)


def _unique_items(validator: Any, unique: Any, instance: Any, schema: Any) -> Any:
    """uniqueItems in linear time (jsonschema's own falls back to a quadratic scan for lists of objects)."""
    from jsonschema import ValidationError

    if unique and validator.is_type(instance, "array"):
        keys = [_canonical(item) for item in instance]
        if len(set(keys)) != len(keys):
            yield ValidationError("has non-unique elements")


@lru_cache(maxsize=1)
def _validator() -> Any:
    import jsonschema  # deferred: only needed when a recipe is (re)validated

    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    cls = jsonschema.validators.extend(jsonschema.Draft202012Validator, {"uniqueItems": _unique_items})
    return cls(schema)


def _json_text(value: Any, limit: int = 60) -> str:
    """A value as JSON for a message, cut to ``limit`` characters; never raises."""
    try:
        text = json.dumps(value, ensure_ascii=False, default=repr)
    except (TypeError, ValueError, RecursionError):
        text = type(value).__name__
    return text if len(text) <= limit else text[:limit] + "..."


def _describe(value: Any) -> str:
    kinds = {bool: "boolean", int: "integer", float: "number", str: "string", list: "array", dict: "object"}
    kind = "null" if value is None else kinds.get(type(value), type(value).__name__)
    return f"{kind} {_json_text(value, 40)}" if kind not in ("array", "object", "null") else kind


def _suggest(word: str, options: list[str]) -> str | None:
    """The closest option, if any; skipped for huge inputs (difflib is quadratic)."""
    if len(options) > _MAX_SUGGESTION_CANDIDATES or len(word) > 100:
        return None
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    return close[0] if close else None


def _schema_problems(data: Any, display: str, lines: dict[FieldPath, int]) -> list[Problem]:
    problems: list[Problem] = []
    for error in _validator().iter_errors(data):
        path: FieldPath = tuple(error.absolute_path)
        kind = error.validator
        if kind == "additionalProperties" and isinstance(error.instance, dict):
            known = list(error.schema.get("properties", {}))
            for key in sorted(set(error.instance) - set(known), key=str):
                close = _suggest(str(key), known)
                hint = f"; did you mean '{close}'?" if close else f" (known: {', '.join(known)})"
                problems.append(Problem(display, line_of(lines, path + (key,)), field_name(path + (key,)),
                                        f"unknown field{hint}"))
            continue
        if kind == "required":
            missing = [r for r in error.validator_value if r not in error.instance]
            for key in missing:
                problems.append(Problem(display, line_of(lines, path), field_name(path + (key,)),
                                        "missing required field"))
            continue
        if kind == "type":
            expected = error.validator_value
            expected = " or ".join(expected) if isinstance(expected, list) else expected
            message = f"expected {expected}, got {_describe(error.instance)}"
        elif kind == "enum":
            options = ", ".join(str(o) for o in error.validator_value)
            message = f"must be one of: {options} (got {_json_text(error.instance)})"
        elif kind == "pattern":
            message = _pattern_message(path, error.instance)
        elif kind == "propertyNames":
            message = f"invalid name {_json_text(error.instance)}: use letters, digits and '_' (not starting with a digit)"
        elif kind in ("minimum", "maximum"):
            word = "at least" if kind == "minimum" else "at most"
            message = f"must be {word} {error.validator_value} (got {_json_text(error.instance)})"
        elif kind in ("minItems", "minProperties"):
            message = "must not be empty"
        elif kind == "uniqueItems":
            message = "entries must be unique"
        else:
            message = error.message[:200]
        problems.append(Problem(display, line_of(lines, path), field_name(path), message))
    return problems


def _pattern_message(path: FieldPath, value: Any) -> str:
    if path == ("name",):
        return (f"{_json_text(value)} is not a valid recipe name: it becomes a folder under artifacts/, so use "
                "1-64 lowercase letters, digits, '.', '_' or '-', starting with a letter or digit (no '/', no '..')")
    if path == ("model", "factory"):
        return f"{_json_text(value)} is not of the form 'package.module:callable'"
    if len(path) >= 3 and path[-2] == "shape":
        return f"{_json_text(value)} is not a dim name (letters, digits, '_')"
    return f"{_json_text(value)} does not match the expected form"


def resolve_module_file(module: str, root: Path) -> Path | None:
    """Find a module's source file without importing it (nor any parent package)."""
    parts = module.split(".")
    for base in (root / Path(*parts[:-1]) / parts[-1],):
        if base.with_suffix(".py").is_file():
            return base.with_suffix(".py")
        if (base / "__init__.py").is_file():
            return base / "__init__.py"
    try:
        spec = importlib.util.find_spec(parts[0])
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if len(parts) == 1:
        return Path(spec.origin) if spec.origin and spec.origin not in ("built-in", "frozen") else None
    for location in spec.submodule_search_locations or []:
        base = Path(location, *parts[1:-1], parts[-1])
        if base.with_suffix(".py").is_file():
            return base.with_suffix(".py")
        if (base / "__init__.py").is_file():
            return base / "__init__.py"
    return None


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.resolve().relative_to(root))
    except ValueError:
        return str(path.resolve())


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def not_factory_module(module: str) -> bool:
    """Whether a factory's module is one no model can come from (standard library, builtins, __main__)."""
    return module.partition(".")[0] in NOT_FACTORY_MODULES


def _inside(path: Path, root: Path) -> bool:
    """Whether ``path``, with every symlink resolved, lies under ``root``."""
    try:
        return path.resolve().is_relative_to(root)
    except (OSError, RuntimeError, ValueError):  # a symlink loop, a NUL byte
        return False


Add = Callable[[FieldPath, str], None]


def _check_model(model: dict[str, Any], project: Project, add: Add) -> None:
    """factory (never the standard library, module findable), weights and sources inside the project."""
    factory = model.get("factory")
    if isinstance(factory, str) and ":" in factory:
        module = factory.partition(":")[0]
        if not_factory_module(module):
            add(("model", "factory"), f"'{module}' is a Python standard library module, not a model factory's "
                "module: refused without importing it")
        elif resolve_module_file(module, project.root) is None:
            add(("model", "factory"), f"module '{module}' not found under the project root ({project.root}) "
                "or among installed packages")
    weights = model.get("weights")
    if isinstance(weights, str) and weights:
        _check_project_file(weights, "weights file", project.root, lambda message: add(("model", "weights"), message))
    sources = model.get("sources")
    for index, pattern in enumerate(sources[:MAX_SOURCE_GLOBS] if isinstance(sources, list) else []):
        if isinstance(pattern, str):
            _check_source(pattern, project.root, _at(add, ("model", "sources", index)))


def _at(add: Add, path: FieldPath) -> Callable[[str], None]:
    """``add`` with its field path bound: for checks that only produce messages."""
    return lambda message: add(path, message)


def _check_project_file(name: str, what: str, root: Path, add: Callable[[str], None]) -> None:
    """A file the recipe names (weights, samples): inside the project, and there."""
    path = root / name
    if "\0" in name:
        add("a file name cannot hold a NUL character")
    elif not _inside(path, root):
        add(f"{what} '{name}' is outside the project root")
    elif not path.is_file():
        add(f"{what} '{name}' not found (relative to {root})")


def _check_source(pattern: str, root: Path, add: Callable[[str], None]) -> None:
    """A source glob stays inside the project: no absolute path or '..', no match resolving outside."""
    if "\0" in pattern:
        add("a file name cannot hold a NUL character")
        return
    if Path(pattern).is_absolute() or ".." in Path(pattern).parts:
        add(f"'{pattern}' is outside the project root (source globs are relative to it, without '..')")
        return
    matches = _glob_files(pattern, root)
    if not matches:
        add(f"glob '{pattern}' matches no file")
    outside = next((m for m in matches if not _inside(m, root)), None)
    if outside is not None:
        add(f"'{outside.relative_to(root)}' (matched by '{pattern}') is outside the project root "
            f"(it resolves to {outside.resolve()})")


def input_range(spec: dict[str, Any], model_dtype: str) -> tuple[str, Any, Any]:
    """An input's (dtype, low, high) with defaults: -1..1 for floats, 0..100 for integers, 0..2 for bool."""
    dtype = spec.get("dtype", model_dtype)
    is_float = dtype in FLOAT_DTYPES
    low = spec.get("low", -1.0 if is_float else 0)
    high = spec.get("high", 1.0 if is_float else (2 if dtype == "bool" else 100))
    return dtype, low, high


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_input_range(name: str, spec: dict[str, Any], model_dtype: Any, add: Add) -> None:
    """low < high, both within the input dtype's range, whole numbers for integer dtypes: what sample_inputs needs."""
    dtype, low, high = input_range(spec, model_dtype if model_dtype in FLOAT_DTYPES else "float32")
    if not (_is_number(low) and _is_number(high)) or not isinstance(dtype, str) or dtype not in INPUT_RANGES:
        return  # the schema or the number check reports it
    lowest, highest = INPUT_RANGES[dtype]
    for key, value in (("low", low), ("high", high)):
        if dtype not in FLOAT_DTYPES and not (isinstance(value, int) or value.is_integer()):
            add(("inputs", name, key), f"{key} ({value}) must be a whole number for {dtype} inputs")
        elif not lowest <= value <= highest:
            exclusive = "; high is exclusive" if dtype not in FLOAT_DTYPES else ""
            add(("inputs", name, key), f"{key} ({value}) is outside the range of {dtype} ({lowest}..{highest}{exclusive})")
    if low >= high:
        add(("inputs", name, "high"), f"high ({high}) must be greater than low ({low})")
    values = spec.get("values")
    if isinstance(values, list) and values:
        if "low" in spec or "high" in spec:
            add(("inputs", name, "values"), "give either values or low/high, not both")
        for index, value in enumerate(values):
            if not _is_number(value):
                continue  # the number check reports NaN/inf, the schema other types
            if dtype not in FLOAT_DTYPES and not (isinstance(value, int) or value.is_integer()):
                add(("inputs", name, "values", index), f"{value} must be a whole number for {dtype} inputs")
            elif not lowest <= value <= highest:
                add(("inputs", name, "values", index), f"{value} is outside the range of {dtype} ({lowest}..{highest})")


def _semantic(data: dict[str, Any], display: str, lines: dict[FieldPath, int], project: Project) -> list[Problem]:
    """Checks beyond the schema. Defensive: runs even on schema-invalid data, so all problems come at once."""
    problems: list[Problem] = []

    def add(path: FieldPath, message: str) -> None:
        problems.append(Problem(display, line_of(lines, path), field_name(path), message))

    model, dims = _obj(data.get("model")), _obj(data.get("dims"))
    bench, package = _obj(data.get("bench")), _obj(data.get("package"))
    _check_name(data.get("name"), add)
    _check_model(model, project, add)
    _check_samples(data.get("samples"), project.root, add)
    _check_dims(dims, add)
    used = _check_inputs(data.get("inputs"), dims, model.get("dtype", "float32"), add)
    _check_unused_dims(data.get("inputs"), dims, used, add)
    _check_bench_shapes(bench, dims, add)
    _check_package_image(package, add)
    _check_package_bases(package, add)
    _check_bench_primary(bench, add)
    _check_variants(data.get("variants"), data.get("backends"), add)
    _check_triton(data, _obj(data.get("triton")), package, add)
    return problems


def _check_triton(data: dict[str, Any], triton: dict[str, Any], package: dict[str, Any], add: Add) -> None:
    """The served artifacts are ones the recipe builds; the batch size fits the batch dim; an image that serves
    with Triton has a repository to serve."""
    backends: list[Any] = data["backends"] if isinstance(data.get("backends"), list) else list(BACKENDS)
    built = [*map(str, backends), *(f"{b}:{v}" for b, vs in _obj(data.get("variants")).items() if isinstance(vs, list)
                                    for v in vs)]
    chosen = triton.get("artifacts")
    for index, name in enumerate(chosen if isinstance(chosen, list) else []):
        if isinstance(name, str) and name not in built:
            add(("triton", "artifacts", index), f"'{name}' is not an artifact the recipe builds ({', '.join(built)})")
    size = triton.get("max_batch_size")
    if isinstance(size, int) and size > 0:
        batch = leading_dim(data.get("inputs"), data.get("dims"))
        if batch is None:
            add(("triton", "max_batch_size"), "the inputs have no batch dim (a named dim with min 1 that every input "
                "starts with): use 0")
        elif isinstance(_obj(_obj(data.get("dims")).get(batch)).get("max"), int) and size > data["dims"][batch]["max"]:
            add(("triton", "max_batch_size"), f"{size} is above dims.{batch}.max ({data['dims'][batch]['max']}) that the "
                "artifacts were built for")
    if package.get("serve") == "triton" and "triton" not in data:
        add(("package", "serve"), "serving with Triton needs a triton section (triton: {} for the defaults)")


def _check_variants(variants: Any, backends: Any, add: Add) -> None:
    """Variants only of backends the recipe builds."""
    built = backends if isinstance(backends, list) else list(BACKENDS)
    for backend in _obj(variants):
        if backend not in built:
            add(("variants", backend), f"the recipe does not build {backend} (backends: {', '.join(map(str, built))})")


def _check_name(name: Any, add: Add) -> None:
    """The recipe's name is not one the artifacts folder already uses."""
    if isinstance(name, str) and name.lower() in RESERVED_NAMES:
        add(("name",), f"'{name}' is reserved under artifacts/; choose another name")


def _check_samples(samples: Any, root: Path, add: Add) -> None:
    """Every sample file lies inside the project and is there."""
    for index, sample in enumerate(samples if isinstance(samples, list) else []):
        if isinstance(sample, str):
            _check_project_file(sample, "sample file", root, _at(add, ("samples", index)))


def _check_dims(dims: dict[str, Any], add: Add) -> None:
    """min <= opt <= max for every dim."""
    for dim_name, spec in dims.items():
        spec = _obj(spec)
        lo, hi, opt = spec.get("min"), spec.get("max"), spec.get("opt", spec.get("max"))
        if not (isinstance(lo, int) and isinstance(hi, int) and isinstance(opt, int)):
            continue
        if lo > hi:
            add(("dims", dim_name), f"min ({lo}) > max ({hi})")
        elif not lo <= opt <= hi:
            add(("dims", dim_name, "opt"), f"opt ({opt}) must lie within min..max ({lo}..{hi})")


def _check_inputs(inputs: Any, dims: dict[str, Any], model_dtype: Any, add: Add) -> set[str]:
    """Each input's shape names declared dims and its sample range fits its dtype; returns the dim names used."""
    used: set[str] = set()
    for input_name, spec in _obj(inputs).items():
        spec = _obj(spec)
        used |= _check_shape_dims(input_name, spec.get("shape"), dims, add)
        _check_input_range(input_name, spec, model_dtype, add)
    return used


def _check_shape_dims(input_name: str, shape: Any, dims: dict[str, Any], add: Add) -> set[str]:
    """Every named size in an input's shape is a declared dim; returns the names it uses."""
    used: set[str] = set()
    for index, size in enumerate(shape if isinstance(shape, list) else []):
        if isinstance(size, str):
            used.add(size)
            if size not in dims:
                close = _suggest(size, list(dims))
                hint = f"; did you mean '{close}'?" if close else " (declare it under dims)"
                add(("inputs", input_name, "shape", index), f"dim '{size}' is not declared{hint}")
    return used


def _check_unused_dims(inputs: Any, dims: dict[str, Any], used: set[str], add: Add) -> None:
    """Every declared dim is used by some input shape (when the inputs are readable at all)."""
    if isinstance(inputs, dict):
        for dim_name in sorted(set(dims) - used):
            add(("dims", dim_name), "declared but used by no input shape")


def _bench_shapes(bench: dict[str, Any]) -> list[Any]:
    shapes = bench.get("shapes", BENCH_DEFAULTS["shapes"])
    return shapes if isinstance(shapes, list) else []


def _bench_labels(bench: dict[str, Any]) -> list[str]:
    """The bench shapes' labels: a name ("opt") as it is, an object of dim sizes as dim=size,... (as Recipe.bench_shapes)."""
    return [entry if isinstance(entry, str) else ",".join(f"{k}={v}" for k, v in entry.items())
            for entry in _bench_shapes(bench) if isinstance(entry, (str, dict))]


def _check_bench_shapes(bench: dict[str, Any], dims: dict[str, Any], add: Add) -> None:
    """Every dim a bench shape sets is declared, and its size lies within the dim's range."""
    for index, entry in enumerate(_bench_shapes(bench)):
        if not isinstance(entry, dict):
            continue
        for dim_name, size in entry.items():
            spec = _obj(dims.get(dim_name))
            if dim_name not in dims:
                add(("bench", "shapes", index, dim_name), f"'{dim_name}' is not a declared dim")
            elif isinstance(size, int) and isinstance(spec.get("min"), int) and isinstance(spec.get("max"), int) \
                    and not spec["min"] <= size <= spec["max"]:
                add(("bench", "shapes", index, dim_name), f"{size} is outside {dim_name}'s range {spec['min']}..{spec['max']}")


def _check_package_image(package: dict[str, Any], add: Add) -> None:
    """package.image is an image repository: valid, and without a tag or digest (the tag is <version>-<target>)."""
    if isinstance(package.get("image"), str) and isinstance(package.get("version"), str):
        from .package.reference import ReferenceError_, parse

        try:
            ref = parse(f"{package['image']}:{package['version']}-cpu-x86_64-avx2")
            if ref.digest:
                add(("package", "image"), "give the repository without a digest")
        except ReferenceError_:
            add(("package", "image"), f"'{package['image']}' is not a valid image repository "
                "(lowercase registry/path, no tag: the tag is <version>-<target>)")


def _check_package_bases(package: dict[str, Any], add: Add) -> None:
    """Every package.base is a valid image reference."""
    for kind, base in _obj(package.get("base")).items():
        if isinstance(base, str):
            from .package.reference import ReferenceError_, parse

            try:
                parse(base)
            except ReferenceError_ as exc:
                add(("package", "base", kind), str(exc))


def _check_bench_primary(bench: dict[str, Any], add: Add) -> None:
    """bench.primary names one of the bench shapes."""
    primary = bench.get("primary", "opt")
    labels = _bench_labels(bench)
    if isinstance(primary, str) and labels and primary not in labels:
        add(("bench", "primary"), f"'{primary}' is not one of the bench shapes ({', '.join(labels)})")


def _package(options: dict[str, Any] | None) -> PackageOptions | None:
    if options is None:
        return None
    defaults = {"cpu": TRITON_BASE, "cuda": TRITON_BASE} if options.get("serve") == "triton" else PACKAGE_DEFAULTS["base"]
    base = {**defaults, **(options.get("base") or {})}
    return cast(PackageOptions, {**PACKAGE_DEFAULTS, **options, "base": base})


def _glob_files(pattern: str, root: Path) -> list[Path]:
    return sorted(Path(m) for m in glob.glob(str(root / pattern), recursive=True) if Path(m).is_file())


def _build(data: dict[str, Any], display: str, lines: dict[FieldPath, int], project: Project) -> Recipe:
    """Apply defaults to valid data."""
    model = data["model"]
    module = model["factory"].partition(":")[0]
    if model.get("sources"):
        sources = [_relative(f, project.root) for pattern in model["sources"] for f in _glob_files(pattern, project.root)]
    else:
        module_file = resolve_module_file(module, project.root)
        sources = [_relative(module_file, project.root)] if module_file else []
    dtype = model.get("dtype", "float32")
    dims = {}
    for dim_name, spec in (data.get("dims") or {}).items():
        dims[dim_name] = Dim(dim_name, spec["min"], spec.get("opt", spec["max"]), spec["max"])
    inputs = []
    for input_name, spec in data["inputs"].items():
        in_dtype, low, high = input_range(spec, dtype)
        inputs.append(InputSpec(input_name, tuple(spec["shape"]), in_dtype, low, high, tuple(spec.get("values") or ())))
    stages = cast(StageOptions, {
        stage: {**cast(dict[str, Any], defaults), **((data.get("stages") or {}).get(stage) or {})}
        for stage, defaults in STAGE_DEFAULTS.items()
    })
    return Recipe(
        name=data["name"],
        file=display,
        model=ModelSpec(model["factory"], model.get("kwargs") or {}, model.get("weights"), dtype, tuple(sorted(set(sources)))),
        inputs=tuple(inputs),
        dims=dims,
        outputs=tuple(data["outputs"]),
        backends=tuple(data.get("backends") or BACKENDS),
        stages=stages,
        verify=cast(VerifyOptions, {**DEFAULT_TOLERANCES[dtype], **(data.get("verify") or {})}),
        bench=cast(BenchOptions, {**BENCH_DEFAULTS, **(data.get("bench") or {})}),
        package=_package(data.get("package")),
        samples=tuple(data.get("samples") or ()),
        lines={field_name(p): line for p, line in lines.items() if p},
        variants={b: tuple(v) for b, v in (data.get("variants") or {}).items() if v},
        runtime={b: dict(v) for b, v in (data.get("runtime") or {}).items() if v},
        triton=None if data.get("triton") is None else cast(TritonOptions, {**TRITON_DEFAULTS, **data["triton"]}),
    )


def _check_file(path: Path, display: str, project: Project, checked: CheckedRecipes | None = None
                ) -> tuple[Recipe | None, list[Problem]]:
    """Parse, validate against the schema, check meaning, build: every problem of the file at once. A text that
    parsed and passed the schema before (``checked``) is not parsed or schema-checked again."""
    try:
        text = read_text(path)
    except RecipeFileError as exc:
        return None, [Problem(display, exc.line, "", exc.message)]
    key = content_key(text, path.suffix)
    hit = checked.get(key) if checked is not None else None
    problems: list[Problem] = []
    if hit is not None:
        data, lines = hit
    else:
        data, lines, problems = parse_text(text, path.suffix, display)
    if data is None and problems:
        return None, problems
    if not isinstance(data, dict):
        return None, problems + [Problem(display, 1, "", f"a recipe is a mapping of fields, got {_describe(data)}")]
    if hit is None:
        problems += _schema_problems(data, display, lines)
        if not problems and checked is not None:
            checked.put(key, data, lines)
    problems += _semantic(data, display, lines, project)
    if problems:
        return None, problems
    return _build(data, display, lines, project), []


def _capped(problems: list[Problem], display: str) -> list[Problem]:
    """At most MAX_PROBLEMS_PER_FILE problems (first by line), then one line counting the rest."""
    if len(problems) <= MAX_PROBLEMS_PER_FILE:
        return problems
    shown = sorted(problems, key=lambda p: (p.line, p.field))[:MAX_PROBLEMS_PER_FILE]
    rest = len(problems) - len(shown)
    return shown + [Problem(display, shown[-1].line, "~", f"{rest} more problem(s) not shown; fix the ones above first")]


def load_file(path: Path, project: Project, checked: CheckedRecipes | None = None
              ) -> tuple[Recipe | None, list[Problem]]:
    """Load one recipe file: (recipe, []) or (None, located problems). Never raises for anything in the file."""
    display = project.display(path)
    try:
        recipe, problems = _check_file(path, display, project, checked)
    except RecursionError:
        recipe, problems = None, [Problem(display, 1, "", "nesting too deep to check")]
    except Exception as exc:  # noqa: BLE001 - a hostile file must never turn into a traceback
        message = f"cannot check this recipe (an infbuild bug, please report it): {type(exc).__name__}: {exc}"
        recipe, problems = None, [Problem(display, 1, "", message[:300])]
    return recipe, _capped(problems, display)


def load_recipes(project: Project, paths: list[Path] | None = None) -> list[Recipe]:
    """Load and check every recipe (default: the project's globs); raise RecipeError listing all problems."""
    files = paths if paths is not None else project.recipe_files()
    recipes: list[Recipe] = []
    problems: list[Problem] = []
    checked = CheckedRecipes(project.artifacts / ".infbuild" / "recipes.json", CHECKER)
    for path in files:
        recipe, found = load_file(path, project, checked)
        problems.extend(found)
        if recipe is not None:
            recipes.append(recipe)
    if not problems:
        checked.save()
    first_seen: dict[str, Recipe] = {}
    for recipe in recipes:
        other = first_seen.setdefault(recipe.name, recipe)
        if other is not recipe:
            problems.append(recipe.locate("name", f"duplicate recipe name '{recipe.name}' "
                                          f"(also in {other.file}:{other.line('name')})"))
    if problems:
        raise RecipeError(problems)
    return sorted(recipes, key=lambda r: r.name)

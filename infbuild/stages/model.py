"""Build the recipe's model in a worker: import the factory, load weights, check forward()'s parameters,
make sample inputs from the named dims. Problems become FieldErrors that name the recipe field."""
from __future__ import annotations

import difflib
import importlib
import inspect
import re
import sys
import warnings
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from ..errors import FieldError, StageFailed
from ..recipe import Recipe
from ..recipe_load import not_factory_module
from ..runtime.backends import NUMPY_DTYPES
from .export.info import SAVED

TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
                "int64": torch.int64, "int32": torch.int32, "bool": torch.bool}
SHAPE_LABELS = ("opt", "min", "max")


def import_factory(spec: str, root: Path) -> Any:
    """The factory callable named ``module:attr.path``; never one from the standard library (nor imported)."""
    module_name, _, attr_path = spec.partition(":")
    if not_factory_module(module_name):
        raise FieldError("model.factory", f"'{module_name}' is a Python standard library module, not a model "
                         "factory's module: refused without importing it")
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    try:
        target: Any = importlib.import_module(module_name)
    except Exception as exc:  # any import failure is the user's module's problem
        raise FieldError("model.factory", f"cannot import '{module_name}': {type(exc).__name__}: {exc}") from None
    for part in attr_path.split("."):
        if not hasattr(target, part):
            names = [n for n in dir(target) if not n.startswith("_")]
            close = difflib.get_close_matches(part, names, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise FieldError("model.factory", f"'{module_name}' has no attribute '{attr_path}'{hint}")
        target = getattr(target, part)
    if not callable(target):
        raise FieldError("model.factory", f"'{spec}' is not callable (it is a {type(target).__name__})")
    _refuse_stdlib_callable(spec, target)
    return target


def _refuse_stdlib_callable(spec: str, target: Any) -> None:
    """A project module's attribute may still be a standard library callable (``mymod:subprocess.run``)."""
    if not (inspect.isroutine(target) or inspect.isclass(target)):
        return
    module = getattr(target, "__module__", None) or "builtins"
    if not_factory_module(module):
        raise FieldError("model.factory", f"'{spec}' is {module}.{getattr(target, '__qualname__', '?')}, from the "
                         "Python standard library: it cannot build a model (refused without calling it)")


def _state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors come in many types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise FieldError("model.weights", f"cannot load '{path.name}' with torch.load(weights_only=True): "
                         f"{type(exc).__name__}: {first[:200]}") from None
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise FieldError("model.weights", f"'{path.name}' is not a state dict (a mapping of names to tensors)")
    return loaded


IMPORTED_BY_MODEL: set[str] = set()  # modules first imported while building the model: its discovered deps


def build_model(recipe: Recipe, root: Path, device: str = "cpu") -> torch.nn.Module:
    """The recipe's model, cast and in eval mode, returning its outputs as the flat tuple the recipe names."""
    before = set(sys.modules)
    try:
        return flat_outputs(_build(recipe, root, device), recipe)
    finally:
        IMPORTED_BY_MODEL.update(set(sys.modules) - before)


def _choose_attention(model: torch.nn.Module, attention: str, factory: str) -> None:
    """A Hugging Face model's attention implementation, as ``model.attention`` chooses (``set_attn_implementation``)."""
    choose = getattr(model, "set_attn_implementation", None)
    if not callable(choose):
        raise FieldError("model.attention", f"'{factory}' returned a {type(model).__name__}, not a Hugging Face model "
                         "whose attention implementation can be chosen (it has no set_attn_implementation)")
    try:
        choose(attention)
    except Exception as exc:  # transformers refuses an implementation the model does not support
        raise FieldError("model.attention", f"{type(model).__name__} cannot use {attention} attention: "
                         f"{type(exc).__name__}: {exc}") from None


def _build(recipe: Recipe, root: Path, device: str) -> torch.nn.Module:
    factory = import_factory(recipe.model.factory, root)
    try:
        model = factory(**recipe.model.kwargs)
    except Exception as exc:
        raise FieldError("model.factory", f"calling '{recipe.model.factory}' with kwargs {recipe.model.kwargs} raised "
                         f"{type(exc).__name__}: {exc}") from None
    if not isinstance(model, torch.nn.Module):
        raise FieldError("model.factory", f"'{recipe.model.factory}' returned a {type(model).__name__}, "
                         "not a torch.nn.Module")
    if recipe.model.attention:
        _choose_attention(model, recipe.model.attention, recipe.model.factory)
    if recipe.model.weights:
        state = _state_dict(root / recipe.model.weights)
        result = model.load_state_dict(state, strict=False)
        if result.missing_keys or result.unexpected_keys:
            parts = []
            if result.missing_keys:
                parts.append(f"missing {', '.join(result.missing_keys[:5])}")
            if result.unexpected_keys:
                parts.append(f"unexpected {', '.join(result.unexpected_keys[:5])}")
            raise FieldError("model.weights", f"does not fit the model: {'; '.join(parts)}")
    check_forward(model, recipe)
    return model.to(device=device, dtype=TORCH_DTYPES[recipe.model.dtype]).eval()


def check_forward(model: torch.nn.Module, recipe: Recipe) -> None:
    """Recipe input names must be forward()'s parameters, and cover the required ones."""
    params = inspect.signature(model.forward).parameters
    if any(p.kind == p.VAR_KEYWORD for p in params.values()):
        return
    names = [n for n, p in params.items() if p.kind not in (p.VAR_POSITIONAL,)]
    for spec in recipe.inputs:
        if spec.name not in names:
            close = difflib.get_close_matches(spec.name, names, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise FieldError(f"inputs.{spec.name}", f"not a parameter of {type(model).__name__}.forward"
                             f"({', '.join(names)}){hint}")
    required = [n for n, p in params.items() if p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    missing = [n for n in required if n not in {i.name for i in recipe.inputs}]
    if missing:
        raise FieldError("inputs", f"{type(model).__name__}.forward requires {', '.join(missing)}, "
                         "which the recipe does not declare")


def user_samples(recipe: Recipe, root: Path) -> dict[str, dict[str, np.ndarray]]:
    """The recipe's own sample inputs, labelled ``sample_<file stem>``: one array per input name, cast to the
    input's dtype when that loses nothing, every shape within the dims the artifacts are built for, every value
    finite. Each array's header is checked before its data is read (a file declaring 2^40 elements, a zip bomb or a
    truncated file is one located error, never an allocation)."""
    from ..arrays import read_npz

    out: dict[str, dict[str, np.ndarray]] = {}
    specs = {i.name: i for i in recipe.inputs}
    for index, name in enumerate(recipe.samples):
        field = f"samples[{index}]"
        bound: dict[str, int] = {}

        def expect(array: str, shape: tuple[int, ...], dtype: np.dtype, name: str = name,
                   bound: dict[str, int] = bound) -> None:
            spec = specs.get(array)
            if spec is None:
                raise ValueError(f"'{name}' holds {array!r}; the recipe's inputs are {', '.join(specs)}")
            _check_sample(recipe, spec, name, shape, dtype, bound)

        try:
            arrays = read_npz(root / name, expect)
        except ValueError as exc:
            raise FieldError(field, str(exc).replace(str(root) + "/", "")) from None
        if sorted(arrays) != sorted(specs):
            raise FieldError(field, f"'{name}' holds {', '.join(sorted(arrays)) or 'nothing'}; the recipe's inputs "
                             f"are {', '.join(specs)}")
        for spec in recipe.inputs:
            array = arrays[spec.name]
            if array.dtype.kind in "fc" and not np.isfinite(array).all():
                raise FieldError(field, f"'{name}': {spec.name} holds NaN or infinite values (verify could not tell "
                                 "right from wrong on them)")
            arrays[spec.name] = np.ascontiguousarray(array.astype(np.dtype(NUMPY_DTYPES[spec.dtype])))
        label = "sample_" + "".join(c if c.isalnum() or c in "-_" else "_" for c in Path(name).stem)
        out[label if label not in out else f"{label}_{index}"] = arrays
    return out


def _check_sample(recipe: Recipe, spec: Any, name: str, shape: tuple[int, ...], dtype: np.dtype,
                  bound: dict[str, int]) -> None:
    """A sample array's header against its input: a dtype of the same kind, a shape within the dims."""
    target = np.dtype(NUMPY_DTYPES[spec.dtype])
    if not np.can_cast(dtype, target, casting="same_kind") or len(shape) != len(spec.shape):
        raise ValueError(f"'{name}': {spec.name} is {dtype} {list(shape)}, the recipe wants {spec.dtype} "
                         f"{list(spec.shape)}")
    ranges = ", ".join(f"{d.name} {d.min}..{d.max}" for d in recipe.dims.values())
    for size, want in zip(shape, spec.shape):
        if isinstance(want, int):
            ok = size == want
        else:
            dim = recipe.dims[want]
            ok = dim.min <= size <= dim.max and bound.setdefault(want, size) == size
        if not ok:
            raise ValueError(f"'{name}': {spec.name} has shape {list(shape)}, outside {list(spec.shape)} with dims "
                             f"{ranges}")


def shape_labels(recipe: Recipe) -> dict[str, dict[str, tuple[int, ...]]]:
    """Distinct concrete shapes to check: opt, min, max (duplicates dropped, e.g. for static inputs)."""
    labels: dict[str, dict[str, tuple[int, ...]]] = {}
    seen = set()
    for label in SHAPE_LABELS:
        shapes = {i.name: i.concrete(recipe.dims, label) for i in recipe.inputs}
        frozen = tuple(sorted(shapes.items()))
        if frozen not in seen:
            seen.add(frozen)
            labels[label] = shapes
    return labels


def trace_shapes(recipe: Recipe) -> dict[str, tuple[int, ...]]:
    """The input shapes exports trace with: ``opt``, except dynamic dims torch would specialise there
    (``stages.common.trace_sizes``: a dim whose opt is 1 is traced at 2)."""
    from .common import trace_sizes

    sizes = {d.name: d.opt for d in recipe.dims.values()} | trace_sizes(recipe)
    return {i.name: tuple(s if isinstance(s, int) else sizes[s] for s in i.shape) for i in recipe.inputs}


def specialised_dim(recipe: Recipe, message: str) -> FieldError | None:
    """torch.export's "Constraints violated ... specialized to a constant" as a located error on the dim it names."""
    if "Constraints violated" not in message and "specializ" not in message:
        return None
    dynamic = [d for d in recipe.dims.values() if d.min < d.max]
    named = next((d for d in dynamic if re.search(rf"\b{re.escape(d.name)}\b", message)), None)
    if named is None:
        return None
    constant = re.search(r"constant \((\d+)\)|inferred to be (?:a )?constant \((\d+)\)", message)
    value = next((g for g in (constant.groups() if constant else ()) if g), None)
    fixed = f" to {value}" if value else ""
    return FieldError(f"dims.{named.name}", f"the model's code fixes {named.name}{fixed} when exported (torch.export "
                      f"specialised it), so no artifact would accept {named.min}..{named.max}: make the model keep it "
                      f"dynamic, or make it static (write {value or 'its size'} for {named.name} in the inputs' shapes)")


def check_dynamic_axes(recipe: Recipe, exported: dict[str, list[Any]], what: str) -> None:
    """Every axis the recipe declares dynamic is symbolic in an exported artifact's inputs (``exported``: input name
    -> its dims, a name or None where symbolic, an int where fixed); a fixed one is a FieldError naming the dim."""
    for spec in recipe.inputs:
        dims = exported.get(spec.name)
        if dims is None:
            continue
        for axis, (want, got) in enumerate(zip(spec.shape, dims)):
            if isinstance(want, str) and recipe.dims[want].min < recipe.dims[want].max and isinstance(got, int):
                d = recipe.dims[want]
                raise FieldError(f"dims.{want}", f"the {what} fixed {spec.name} axis {axis} ({want}) to {got}: it would "
                                 f"not accept {d.min}..{d.max}; make the model keep {want} dynamic, or make it "
                                 f"static (write {got} for {want} in the inputs' shapes)")


def to_torch(recipe: Recipe, arrays: dict[str, np.ndarray], device: str = "cpu") -> dict[str, torch.Tensor]:
    dtypes = {i.name: TORCH_DTYPES[i.dtype] for i in recipe.inputs}
    return {name: torch.from_numpy(np.asarray(a)).to(device=device, dtype=dtypes[name]) for name, a in arrays.items()}


def dynamic_shapes(recipe: Recipe) -> dict[str, dict[int, Any] | None]:
    """torch.export dynamic_shapes from the recipe's named dims: one Dim object per name, shared by inputs."""
    dims = {d.name: torch.export.Dim(d.name, min=d.min, max=d.max) for d in recipe.dims.values()}
    return {
        spec.name: ({axis: dims[size] for axis, size in enumerate(spec.shape) if isinstance(size, str)} or None)
        for spec in recipe.inputs
    }


def export_program(recipe: Recipe, model: torch.nn.Module, example: dict[str, torch.Tensor]
                   ) -> torch.export.ExportedProgram:
    """``torch.export`` of the model at the trace shapes with the recipe's named dims, every declared dynamic axis
    checked symbolic; torch's specialisation of a dim becomes a FieldError naming it."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.export.export(model, (), example, dynamic_shapes=dynamic_shapes(recipe), strict=False)
    except Exception as exc:  # export failures come in many types
        raise specialised_dim(recipe, str(exc)) or \
            StageFailed(f"torch.export failed: {type(exc).__name__}: {str(exc).strip()[:2000]}") from None
    check_dynamic_axes(recipe, exported_input_dims(program), "exported program")
    return program


def saved_program(upstream: Mapping[str, Path]) -> torch.export.ExportedProgram | None:
    """The export stage's program, when the stage reads one (its files were rehashed before the worker started):
    the model stages compile what was exported once instead of building and exporting the model again."""
    folder = upstream.get("export")
    if folder is None or not (folder / SAVED).is_file():
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.export.load(folder / SAVED)


def exported_input_dims(program: torch.export.ExportedProgram) -> dict[str, list[Any]]:
    """Input name -> its dims in the exported program: an int where fixed, None where symbolic."""
    dims: dict[str, list[Any]] = {}
    user_inputs = set(program.graph_signature.user_inputs)
    for node in program.graph.nodes:
        value = node.meta.get("val")
        if node.op == "placeholder" and node.name in user_inputs and hasattr(value, "shape"):
            dims[node.name] = [int(s) if isinstance(s, int) else None for s in value.shape]
    return dims


def flatten(value: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """(name, leaf) pairs of a nested output in one documented order: a tensor is ``output``; dicts and
    ModelOutputs give their keys in order (nested ones joined with '.'); tuples and lists give ``output_<i>`` at the
    top and ``<name>.<i>`` below; None entries are skipped."""
    if isinstance(value, torch.Tensor) or value is None:
        return [(prefix or "output", value)] if value is not None else []
    if isinstance(value, dict):  # ModelOutput is an OrderedDict of its non-None fields
        return [pair for k, v in value.items() for pair in flatten(v, f"{prefix}.{k}" if prefix else str(k))]
    if isinstance(value, (tuple, list)):
        return [pair for i, v in enumerate(value) for pair in flatten(v, f"{prefix}.{i}" if prefix else f"output_{i}")]
    return [(prefix or "output", value)]  # not a tensor (a cache object, a number): nameable, never selectable


def select_outputs(result: Any, names: tuple[str, ...]) -> tuple[torch.Tensor, ...]:
    """The recipe's outputs from whatever the model returned: by name when every name is one of the flattened
    names, else by position when the model returned only tensors (a tensor, a tuple or a list)."""
    flat = flatten(result)
    by_name = dict(flat)
    if all(n in by_name for n in names):
        chosen = [by_name[n] for n in names]
    elif not _has_mapping(result) and len(flat) == len(names):
        chosen = [leaf for _, leaf in flat]
    else:
        found = ", ".join(f"{n} ({_kind(v)})" for n, v in flat) or "nothing"
        raise FieldError("outputs", f"the recipe names {', '.join(names)} but the model returns {found}: name "
                         "outputs after what it returns (dict keys, ModelOutput fields, or output_<i>)")
    bad = [n for n, v in zip(names, chosen) if not isinstance(v, torch.Tensor)]
    if bad:
        raise FieldError("outputs", f"{', '.join(bad)} is not a tensor ({_kind(by_name.get(bad[0]))})")
    return tuple(chosen)


def _has_mapping(value: Any) -> bool:
    if isinstance(value, dict):
        return True
    return isinstance(value, (tuple, list)) and any(_has_mapping(v) for v in value)


def _kind(value: Any) -> str:
    return f"tensor {list(value.shape)}" if isinstance(value, torch.Tensor) else type(value).__name__


class FlatOutputs(torch.nn.Module):
    """The user's model, returning exactly the recipe's outputs as a flat tuple of tensors, so that every artifact
    (ONNX, AOTInductor, TensorRT) takes and returns flat named tensors, and loading one never needs the model's
    library (no ModelOutput to unflatten)."""

    def __init__(self, model: torch.nn.Module, names: tuple[str, ...]) -> None:
        super().__init__()
        self.model = model
        self.names = names

    def forward(self, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, ...]:
        return select_outputs(self.model(*args, **kwargs), self.names)


class ReducedPrecision(torch.nn.Module):
    """A built model computing in ``dtype`` (bfloat16, float16) behind the same interface, float32 in and out.
    ``autocast``: the model as it is, run under ``torch.autocast`` (matrix products and convolutions in ``dtype``;
    normalisations, softmax, reductions and additions in float32, so the residual stream and the outputs are not
    rounded to ``dtype``). ``cast``: the whole model cast to ``dtype``, floating inputs cast on the way in and its
    flat outputs back to float32 on the way out (``reduced_precision``)."""

    def __init__(self, model: torch.nn.Module, dtype: torch.dtype, mode: str, device: str = "cpu") -> None:
        super().__init__()
        self.model = model.to(dtype) if mode == "cast" else model
        self.dtype, self.mode, self.device_type = dtype, mode, device.split(":")[0]

    def forward(self, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, ...]:
        if self.mode == "autocast":
            with torch.autocast(self.device_type, dtype=self.dtype):
                result = self.model(*args, **kwargs)
        else:
            def cast(v: Any) -> Any:
                return v.to(self.dtype) if isinstance(v, torch.Tensor) and v.is_floating_point() else v

            result = self.model(*[cast(a) for a in args], **{k: cast(v) for k, v in kwargs.items()})
        return tuple(v.float() if v.is_floating_point() else v for v in result)


def reduced_precision(model: torch.nn.Module, dtype: torch.dtype, mode: str, device: str = "cpu") -> torch.nn.Module:
    """``model`` (a built, flat-output model) in ReducedPrecision, keeping its forward() signature."""
    return _with_signature(ReducedPrecision, model)(model, dtype, mode, device).eval()


def _with_signature(base: type[torch.nn.Module], model: torch.nn.Module) -> type[torch.nn.Module]:
    """A subclass of ``base`` whose forward() has ``model.forward``'s signature (torch.export binds by it)."""
    signature = inspect.signature(model.forward)

    def forward(self: Any, *args: Any, **kwargs: Any) -> Any:
        return base.forward(self, *args, **kwargs)

    self_param = inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)
    forward.__signature__ = signature.replace(parameters=[self_param, *signature.parameters.values()])  # type: ignore[attr-defined]
    return type(f"{base.__name__}_{type(model).__name__}", (base,), {"forward": forward})


def flat_outputs(model: torch.nn.Module, recipe: Recipe) -> torch.nn.Module:
    """Wrap ``model`` in FlatOutputs with the model's own forward() signature (torch.export binds by it)."""
    return _with_signature(FlatOutputs, model)(model, tuple(recipe.outputs)).eval()


def output_list(result: Any, recipe: Recipe) -> list[torch.Tensor]:
    """The model's outputs in the recipe's order (``result`` of a FlatOutputs model, or anything a model returns)."""
    return list(select_outputs(result, tuple(recipe.outputs)))

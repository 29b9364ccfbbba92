"""Recipes: load, validate against the JSON Schema, check meaning, apply defaults.

Every problem of every file is collected and raised at once as a RecipeError whose lines read
``FILE:LINE: field.path: message``. Nothing here imports torch: planning a no-op build must stay cheap. What a
stage's own section of a recipe must hold (schema, defaults, checks) its package declares (``infbuild.section``).
"""
from __future__ import annotations

import difflib
import glob
import hashlib
import importlib.util
import json
import math
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, cast

from .errors import Problem, RecipeError
from .options import BenchOptions, PackageOptions, TritonOptions, VerifyOptions
from .project import Project
from .recipe import BACKENDS, FLOAT_DTYPES, RESERVED_NAMES, Dim, InputSpec, ModelSpec, Recipe
from .recipe_cache import CheckedRecipes, content_key
from .recipe_file import INT_MAX, INT_MIN, FieldPath, RecipeFileError, field_name, line_of, parse_text, read_text
from .recipe_schema import assemble, render
from .section import Add, obj, sections

CHECKER = (Path(__file__).with_name("recipe_file.py"), Path(__file__))  # with the schema: what decides a recipe passes
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
def checker_version() -> str:
    """The schema and the code that parse and schema-check a recipe: a change to any re-checks every recipe."""
    digest = hashlib.sha256(render(assemble()).encode())
    for path in CHECKER:
        digest.update(path.read_bytes())
    return digest.hexdigest()


@lru_cache(maxsize=1)
def _validator() -> Any:
    import jsonschema  # deferred: only needed when a recipe is (re)validated

    schema = assemble()  # the core and every stage's section (a plugin stage's too), as the shipped file holds them
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


def not_factory_module(module: str) -> bool:
    """Whether a factory's module is one no model can come from (standard library, builtins, __main__)."""
    return module.partition(".")[0] in NOT_FACTORY_MODULES


def _inside(path: Path, root: Path) -> bool:
    """Whether ``path``, with every symlink resolved, lies under ``root``."""
    try:
        return path.resolve().is_relative_to(root)
    except (OSError, RuntimeError, ValueError):  # a symlink loop, a NUL byte
        return False




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

    model, dims = obj(data.get("model")), obj(data.get("dims"))
    _check_name(data.get("name"), add)
    _check_model(model, project, add)
    _check_samples(data.get("samples"), project.root, add)
    _check_dims(dims, add)
    used = _check_inputs(data.get("inputs"), dims, model.get("dtype", "float32"), add)
    _check_unused_dims(data.get("inputs"), dims, used, add)
    _check_variants(data.get("variants"), data.get("backends"), add)
    for section in sections():
        section.problems(data, add)
    return problems


def _check_variants(variants: Any, backends: Any, add: Add) -> None:
    """Variants only of backends the recipe builds."""
    built = backends if isinstance(backends, list) else list(BACKENDS)
    for backend in obj(variants):
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
        spec = obj(spec)
        lo, hi, opt = spec.get("min"), spec.get("max"), spec.get("opt", spec.get("max"))
        if not (isinstance(lo, int) and isinstance(hi, int) and isinstance(opt, int)):
            continue
        if lo > hi:
            add(("dims", dim_name), f"min ({lo}) > max ({hi})")
        elif lo == hi:  # torch.export refuses such a Dim; a fixed size is written in the shapes
            add(("dims", dim_name), f"min equals max ({lo}): a named dim ranges; for a fixed size write {lo} "
                "in the inputs' shapes instead of the name")
        elif not lo <= opt <= hi:
            add(("dims", dim_name, "opt"), f"opt ({opt}) must lie within min..max ({lo}..{hi})")


def _check_inputs(inputs: Any, dims: dict[str, Any], model_dtype: Any, add: Add) -> set[str]:
    """Each input's shape names declared dims and its sample range fits its dtype; returns the dim names used."""
    used: set[str] = set()
    for input_name, spec in obj(inputs).items():
        spec = obj(spec)
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
    options = {section.path: section.options(data) for section in sections()}  # each stage's section, defaults applied
    stages = {path[1]: value for path, value in options.items() if path[0] == "stages" and value is not None}
    variants = {b: tuple(v) for b, v in (data.get("variants") or {}).items() if v}
    for section in sections():
        if section.more_variants is not None and options[section.path] is not None:
            variants = section.more_variants(cast("dict[str, Any]", options[section.path]), variants)
    return Recipe(
        name=data["name"],
        file=display,
        model=ModelSpec(model["factory"], model.get("kwargs") or {}, model.get("weights"), dtype,
                        tuple(sorted(set(sources))), model.get("attention")),
        inputs=tuple(inputs),
        dims=dims,
        outputs=tuple(data["outputs"]),
        backends=tuple(data.get("backends") or BACKENDS),
        stages=stages,
        verify=cast(VerifyOptions, options[("verify",)]),
        bench=cast(BenchOptions, options[("bench",)]),
        package=cast("PackageOptions | None", options[("package",)]),
        samples=tuple(data.get("samples") or ()),
        lines={field_name(p): line for p, line in lines.items() if p},
        variants=variants,
        runtime={b: dict(v) for b, v in (data.get("runtime") or {}).items() if v},
        triton=cast("TritonOptions | None", options[("triton",)]),
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
    except Exception as exc:  # a hostile file must never turn into a traceback
        message = f"cannot check this recipe (an infbuild bug, please report it): {type(exc).__name__}: {exc}"
        recipe, problems = None, [Problem(display, 1, "", message[:300])]
    return recipe, _capped(problems, display)


def load_recipes(project: Project, paths: list[Path] | None = None) -> list[Recipe]:
    """Load and check every recipe (default: the project's globs); raise RecipeError listing all problems."""
    files = paths if paths is not None else project.recipe_files()
    recipes: list[Recipe] = []
    problems: list[Problem] = []
    checked = CheckedRecipes(project.artifacts / ".infbuild" / "recipes.json", checker_version())
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

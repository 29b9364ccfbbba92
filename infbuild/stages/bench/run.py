"""bench stage: time every verified artifact and the eager / torch.compile baselines at the recipe's shapes.

Warm-up, then timed single calls; several rounds interleave backends in a rotating order so machine drift
hits all alike; a fixed thread count; CUDA work is synchronized before each clock read. Results: report.json,
report.md (a table) and latency.png (latency by shape, a line per backend).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ...errors import StageFailed
from ...options import BenchOptions
from ...preferred import preference
from ...recipe import Recipe
from ...reports import BenchReport, VerifyReport
from ...runtime.backends import load_backend
from ...stage import artifacts
from ..model import build_model, to_torch, user_samples
from ..request import Job
from ..samples import sample_inputs

BASELINES = ("eager", "torch_compile")
MIN_SAMPLES = 6  # timed calls per backend at the primary shape (over all rounds) even past bench.max_seconds
MIN_SAMPLES_OTHER = 3  # ... and at the other shapes (they only break ties: a slow model's budget is kept)
STABLE_WITHIN = 0.02  # a backend's timed calls in a round stop once its median's 95 % interval is within ±2 %
STABLE_AFTER = 10  # ... and it has at least this many samples
Call = Callable[[], Any]


def _torch_callers(module: Any, recipe: Recipe, shapes: dict[str, dict[str, np.ndarray]], device: str) -> dict[str, Call]:
    return {label: _torch_call(module, to_torch(recipe, arrays, device)) for label, arrays in shapes.items()}


def _torch_call(module: Any, tensors: dict[str, torch.Tensor]) -> Call:
    """A zero-argument call of ``module`` on tensors converted once (what the timings measure)."""
    def call() -> Any:
        with torch.inference_mode():
            return module(**tensors)
    return call


def median_interval(samples_ms: np.ndarray, z: float = 1.96) -> tuple[float, float]:
    """A distribution-free 95 % confidence interval of the median: the order statistics the binomial(n, 1/2)
    bounds pick (no assumption on the shape of the latency distribution)."""
    ordered = np.sort(samples_ms)
    n = ordered.size
    half = z * math.sqrt(n) / 2
    lo, hi = max(math.floor(n / 2 - half) - 1, 0), min(math.ceil(n / 2 + half), n - 1)
    return float(ordered[lo]), float(ordered[hi])


def _stable(bucket: list[int]) -> bool:
    """Whether the median of these samples is known to within STABLE_WITHIN (its interval's half-width)."""
    ms = np.asarray(bucket, dtype=np.float64)
    lo, hi = median_interval(ms)
    return (hi - lo) / 2 <= STABLE_WITHIN * float(np.median(ms))


def _stats(samples_ns: list[int], batch: int) -> dict[str, Any]:
    ms = np.asarray(samples_ns, dtype=np.float64) / 1e6
    p50 = float(np.percentile(ms, 50))
    lo, hi = median_interval(ms)
    return {"p50_ms": p50, "p50_ci_ms": [lo, hi], "p90_ms": float(np.percentile(ms, 90)),
            "p99_ms": float(np.percentile(ms, 99)), "mean_ms": float(ms.mean()), "min_ms": float(ms.min()),
            "throughput": batch / (p50 / 1e3), "samples": int(ms.size)}


def _plot(path: Path, labels: list[str], results: dict[str, dict[str, dict[str, float]]], title: str,
          ticks: dict[str, str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    for backend, per_shape in results.items():
        xs = [i for i, label in enumerate(labels) if label in per_shape]
        ax.plot(xs, [per_shape[labels[i]]["p50_ms"] for i in xs], marker="o",
                linestyle="--" if backend in BASELINES else "-", label=backend)
        ax.fill_between(xs, [per_shape[labels[i]]["p50_ms"] for i in xs], [per_shape[labels[i]]["p90_ms"] for i in xs],
                        alpha=0.15)
    ax.set_xticks(range(len(labels)), [f"{label}\n{ticks.get(label, '')}" for label in labels])
    ax.set_yscale("log")
    ax.set_xlabel("shape")
    ax.set_ylabel("latency, ms (p50 line, band to p90)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, bbox_inches="tight")  # labels near the edge stay inside the image
    plt.close(fig)


def _pareto(path: Path, primary: str, results: dict[str, dict[str, dict[str, float]]], verify: dict[str, Any],
            preferred: str | None, title: str) -> None:
    """Latency at the primary shape against accuracy (worst relative L2 error vs eager fp32) for every artifact:
    what each variant buys, and what it costs. The front (no artifact both faster and more accurate) is joined."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [(name, per[primary]["p50_ms"], max(float(verify[name].get("rel_l2_err", 0.0)), 1e-9),
               verify[name].get("passed")) for name, per in results.items()
              if name in verify and primary in per and "rel_l2_err" in verify[name]]
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    for name, latency, error, passed in points:
        ax.scatter([error], [latency], marker="*" if name == preferred else "o" if passed else "x",
                   s=140 if name == preferred else 50, color="tab:green" if passed else "tab:red")
        ax.annotate(name, (error, latency), textcoords="offset points", xytext=(5, 4), fontsize=8)
    front = sorted((e, lat) for _, lat, e, passed in points if passed)
    best, line = float("inf"), []
    for error, latency in front:
        if latency < best:
            best = latency
            line.append((error, latency))
    if len(line) > 1:
        ax.plot([e for e, _ in line], [lat for _, lat in line], color="tab:green", alpha=0.5, linestyle="--")
    eager = results.get("eager", {}).get(primary, {}).get("p50_ms")
    if eager:
        ax.axhline(eager, color="gray", linestyle=":", label=f"eager {eager:.3g} ms")
        ax.legend(fontsize=8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("worst relative L2 error vs eager fp32 (x: outside its budget)")
    ax.set_ylabel(f"p50 latency at {primary}, ms")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, bbox_inches="tight")  # labels near the edge stay inside the image
    plt.close(fig)


def first_calls(recipe: Recipe, callers: dict[str, dict[str, Call]], loading: dict[str, float],
                sync: Callable[[], Any]) -> tuple[dict[str, float], dict[str, dict[str, int]]]:
    """Set-up seconds per backend: loading it plus its first call at each shape (where torch.compile compiles and
    lazy runtimes initialise), shown as it happens and reported, never counted in the timings; and each first call's
    nanoseconds (the bench's first warm-up)."""
    setup: dict[str, float] = {}
    first: dict[str, dict[str, int]] = {}
    for backend, per_label in callers.items():
        t0 = time.perf_counter()
        for label, call in per_label.items():
            started = time.perf_counter_ns()
            call()
            sync()
            first.setdefault(backend, {})[label] = time.perf_counter_ns() - started
        setup[backend] = round(loading.get(backend, 0.0) + time.perf_counter() - t0, 3)
        print(f"[bench] {recipe.name} {backend}: set-up {setup[backend]:.1f}s (load + first call at each shape; "
              "not timed)", flush=True)
    return setup, first


def _markdown(recipe: Recipe, labels: list[str], results: dict[str, Any], preferred: str | None,
              verify: dict[str, Any], meta: dict[str, Any], runs_on: dict[str, str], setup: dict[str, float]) -> str:
    lines = [f"# {recipe.name}: latency on {meta['target']}",
             "",
             f"threads {meta['threads']}; per backend and shape {meta['rounds']} interleaved rounds of up to "
             f"{meta['warmup']} warm-up and {meta['iterations']} timed calls, within {meta['max_seconds']:g} s over "
             f"the rounds (at least {MIN_SAMPLES} timed at {meta['primary_shape']}, {MIN_SAMPLES_OTHER} at the others), "
             "a round ending early once the p50 is known to ±"
             f"{STABLE_WITHIN:.0%}; p50 with its 95 % interval, p90/p99 in ms, throughput in items/s.",
             f"Preferred at `{meta['primary_shape']}`: **{preferred or 'none'}** — {meta['preferred_reason']}. "
             "Error: the worst relative L2 error of any output at any verified shape, against eager fp32 (pareto.png).",
             "",
             "Set-up (load or compile, plus the first call at each shape) is not part of any timing.",
             "",
             "| backend | runs on | verified | error (rel L2) | set-up s | shape | p50 ms | p50 95 % interval | p90 ms "
             "| p99 ms | samples | throughput/s | x eager (p50) |",
             "|---|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for backend, per_shape in results.items():
        status = "baseline" if backend in BASELINES else {True: "yes", False: "FAILED"}.get(verify.get(backend, {}).get("passed"), "-")
        error = verify.get(backend, {}).get("rel_l2_err")
        shown_error = f"{error:.3g}" if isinstance(error, float) else "-"
        for label in labels:
            if label not in per_shape:
                continue
            r = per_shape[label]
            eager = results.get("eager", {}).get(label, {}).get("p50_ms")
            speedup = f"{eager / r['p50_ms']:.2f}" if eager else "-"
            lines.append(f"| {backend} | {runs_on.get(backend, '-')} | {status} | {shown_error} | "
                         f"{setup.get(backend, 0.0):.1f} | {label} | "
                         f"{r['p50_ms']:.4f} | {r['p50_ci_ms'][0]:.4f}–{r['p50_ci_ms'][1]:.4f} | {r['p90_ms']:.4f} | "
                         f"{r['p99_ms']:.4f} | {r['samples']} | {r['throughput']:.1f} | {speedup} |")
    return "\n".join(lines) + "\n"


@dataclass
class _Contenders:
    """What the bench times: a zero-argument call per backend and shape label, in timing order."""

    callers: dict[str, dict[str, Call]] = field(default_factory=dict)
    runs_on: dict[str, str] = field(default_factory=dict)  # where each backend actually ran: execution provider or device
    loading: dict[str, float] = field(default_factory=dict)  # seconds to load or build each backend, never part of its timings


def run(job: Job) -> None:
    recipe, opts = job.recipe, job.recipe.bench
    torch.set_num_threads(opts["threads"])
    verify = _verify_results(job.upstream)
    shape_specs, arrays = _inputs(recipe, job.root)
    contenders = _load_backends(recipe, job.upstream, verify, arrays, job.device)
    # Baselines run where torch can: a GPU target with a CPU build of torch times them on the CPU (recorded).
    torch_device = job.device if job.device != "cuda" or torch.cuda.is_available() else "cpu"
    _baselines(recipe, job.root, arrays, torch_device, contenders)
    sync = torch.cuda.synchronize if torch_device == "cuda" else (lambda: None)
    setup, first = first_calls(recipe, contenders.callers, contenders.loading, sync)
    samples = _time(recipe, contenders.callers, list(shape_specs), sync, first)
    results = _results(recipe, samples, shape_specs)
    preferred, why = preference(verify, {"primary_shape": opts["primary"], "results": results, "setup_s": setup},
                                recipe.artifacts())
    meta = {**_meta(recipe, job.out, job.device, torch_device), "preferred_reason": why}
    _write_reports(recipe, job.out, results, preferred, verify, meta, shape_specs, contenders.runs_on, setup)


def _verify_results(upstream: dict[str, Path]) -> dict[str, Any]:
    """The verify stage's result per backend (whether its artifact passed, or why it was not verified)."""
    verified = VerifyReport.read(upstream["verify"])
    if verified is None:
        raise StageFailed(f"{upstream['verify']}: no readable verify report (rebuild verify)")
    return verified.results


def _inputs(recipe: Recipe, root: Path) -> tuple[dict[str, dict[str, tuple[int, ...]]], dict[str, dict[str, np.ndarray]]]:
    """(input shapes, input arrays) per shape label: the recipe's bench shapes, then the user's own samples."""
    shape_specs = recipe.bench_shapes()
    arrays = {label: sample_inputs(recipe, shapes, seed=1234) for label, shapes in shape_specs.items()}
    for label, given in user_samples(recipe, root).items():  # the user's own inputs are timed too
        arrays[label] = given
        shape_specs[label] = {k: tuple(v.shape) for k, v in given.items()}
    return shape_specs, arrays


def _load_backends(recipe: Recipe, upstream: dict[str, Path], verify: dict[str, Any],
                   arrays: dict[str, dict[str, np.ndarray]], device: str) -> _Contenders:
    """Every built and verified artifact, loaded (timed as set-up) and prepared at every shape; the others skipped."""
    artifact_stage = {name: stage.name for name, stage in artifacts().items()}
    dtypes = {i.name: i.dtype for i in recipe.inputs}
    contenders = _Contenders()
    for backend in recipe.artifacts():
        stage = artifact_stage[backend]
        if stage not in upstream or verify.get(backend, {}).get("passed") is None:
            print(f"[bench] {recipe.name}: skipping {backend} ({verify.get(backend, {}).get('status', 'not built')})")
            continue
        t0 = time.perf_counter()
        runner = load_backend(backend, upstream[stage], recipe.outputs, dtypes, device=device,
                              threads=recipe.bench["threads"], runtime=recipe.runtime)
        contenders.loading[backend] = time.perf_counter() - t0
        contenders.callers[backend] = {label: runner.prepare(a) for label, a in arrays.items()}
        contenders.runs_on[backend] = runner.detail
    return contenders


def _baselines(recipe: Recipe, root: Path, arrays: dict[str, dict[str, np.ndarray]], torch_device: str,
               contenders: _Contenders) -> None:
    """Add the eager and torch.compile baselines the recipe asks for (one model build, timed as their set-up)."""
    opts = recipe.bench
    if "eager" not in opts["baselines"] and "torch_compile" not in opts["baselines"]:
        return
    t0 = time.perf_counter()
    model = build_model(recipe, root, device=torch_device)
    contenders.loading["eager"] = contenders.loading["torch_compile"] = time.perf_counter() - t0
    if "eager" in opts["baselines"]:
        contenders.callers["eager"] = _torch_callers(model, recipe, arrays, torch_device)
        contenders.runs_on["eager"] = torch_device
    if "torch_compile" in opts["baselines"]:
        print(f"[bench] {recipe.name}: torch.compile(mode={opts['torch_compile_mode']!r}) compiles on first call",
              flush=True)
        compiled = torch.compile(model, mode=None if opts["torch_compile_mode"] == "default" else opts["torch_compile_mode"])
        contenders.callers["torch_compile"] = _torch_callers(compiled, recipe, arrays, torch_device)
        contenders.runs_on["torch_compile"] = torch_device


def _time(recipe: Recipe, callers: dict[str, dict[str, Call]], labels: list[str],
          sync: Callable[[], Any], first: dict[str, dict[str, int]]) -> dict[str, dict[str, list[int]]]:
    """Nanoseconds per timed call, by backend and label: rounds over the shapes, the backends in a rotating order."""
    opts = recipe.bench
    samples: dict[str, dict[str, list[int]]] = {b: {label: [] for label in labels} for b in callers}
    order = list(callers)
    total = opts["rounds"] * len(labels) * len(order)
    done = 0
    started = time.perf_counter()
    for round_index in range(opts["rounds"]):
        rotated = order[round_index % len(order):] + order[:round_index % len(order)]
        for label in labels:
            for backend in rotated:
                _time_one(callers[backend][label], samples[backend][label], opts, round_index, sync,
                          first.get(backend, {}).get(label, 0),
                          MIN_SAMPLES if label == opts["primary"] else MIN_SAMPLES_OTHER)
                done += 1
            print(f"[bench] {recipe.name} round {round_index + 1}/{opts['rounds']} {label}: {done}/{total} "
                  f"({time.perf_counter() - started:.1f}s)", flush=True)
    return samples


def _time_one(call: Call, bucket: list[int], opts: BenchOptions, round_index: int, sync: Callable[[], Any],
              first_ns: int = 0, min_samples: int = MIN_SAMPLES) -> None:
    """One round of one backend at one shape: warm up, then append the nanoseconds of each timed call to ``bucket``.

    Time-bounded throughout: ``max_seconds`` is the budget of a backend at a shape over all rounds (a round gets
    its share). Warm-up takes at most a quarter of a round's share (the first round makes at least one call, unless
    the set-up's first call, ``first_ns``, already took more than the whole share: a slow model is warm), timed
    calls stop at ``iterations``, past the share once ``min_samples`` are taken over the rounds (MIN_SAMPLES at the
    primary shape, where the preferred artifact is chosen; fewer elsewhere), or once the median is stable."""
    share_ns = int(opts["max_seconds"] * 1e9 / opts["rounds"])
    per_round_min = max(1, math.ceil(min_samples / opts["rounds"]))
    warm_until = time.perf_counter_ns() + share_ns // 4
    last = bucket[-1] if bucket else first_ns
    for index in range(opts["warmup"]):
        if index == 0 and round_index == 0:
            if first_ns > share_ns:
                break
        elif time.perf_counter_ns() + last > warm_until:
            break
        t0 = time.perf_counter_ns()
        call()
        sync()
        last = time.perf_counter_ns() - t0
    deadline = time.perf_counter_ns() + share_ns
    for taken in range(1, opts["iterations"] + 1):
        t0 = time.perf_counter_ns()
        call()
        sync()
        bucket.append(time.perf_counter_ns() - t0)
        if taken < per_round_min:
            continue
        if bucket[-1] + t0 > deadline or (taken >= STABLE_AFTER and taken % 5 == 0 and _stable(bucket)):
            break


def _results(recipe: Recipe, samples: dict[str, dict[str, list[int]]],
             shape_specs: dict[str, dict[str, tuple[int, ...]]]) -> dict[str, dict[str, dict[str, float]]]:
    """Latency statistics by backend and label."""
    return {b: {label: _stats(per_label[label], _batch(recipe, shape_specs[label])) for label in shape_specs}
            for b, per_label in samples.items()}


def _batch(recipe: Recipe, shapes: dict[str, tuple[int, ...]]) -> int:
    """Items per call, for throughput: the first input's leading size (1 for a scalar)."""
    shape = shapes[recipe.inputs[0].name]
    return shape[0] if shape else 1


def _meta(recipe: Recipe, out: Path, device: str, torch_device: str) -> dict[str, Any]:
    opts = recipe.bench
    return {"target": out.parent.name, "device": device, "baseline_device": torch_device,
            "threads": opts["threads"], "warmup": opts["warmup"], "iterations": opts["iterations"],
            "max_seconds": opts["max_seconds"],
            "rounds": opts["rounds"], "primary_shape": opts["primary"], "torch": torch.__version__}


def _write_reports(recipe: Recipe, out: Path, results: dict[str, dict[str, dict[str, float]]], preferred: str | None,
                   verify: dict[str, Any], meta: dict[str, Any], shape_specs: dict[str, dict[str, tuple[int, ...]]],
                   runs_on: dict[str, str], setup: dict[str, float]) -> None:
    """report.json, report.md (also printed) and latency.png."""
    opts, labels = recipe.bench, list(shape_specs)
    BenchReport(opts["primary"], opts["threads"], results, preferred,
                {**meta, "setup_s": setup, "shapes": {k: {n: list(s) for n, s in v.items()} for k, v in shape_specs.items()},
                 "verified": {b: verify.get(b, {}).get("passed") for b in recipe.artifacts()}, "runs_on": runs_on,
                 **({"runtime": recipe.runtime} if recipe.runtime else {})}).write(out)
    (out / "report.md").write_text(_markdown(recipe, labels, results, preferred, verify, meta, runs_on, setup),
                                   encoding="utf-8")
    ticks = {label: ", ".join("x".join(str(d) for d in s) for s in shapes.values()) for label, shapes in shape_specs.items()}
    title = f"{recipe.name} on {meta['target']} ({opts['threads']} thread(s))"
    _plot(out / "latency.png", labels, results, title, ticks)
    _pareto(out / "pareto.png", opts["primary"], results, verify, preferred, title)
    print((out / "report.md").read_text(encoding="utf-8"), flush=True)

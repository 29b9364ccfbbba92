"""The `infbuild` command: validate, fingerprint, config, status, build. Errors are rendered here, once."""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import settings
from . import stage as registry
from .errors import InfbuildError, Problem, RecipeError
from .project import load_project
from .recipe_load import load_recipes

if TYPE_CHECKING:
    from .engine import BuildContext


def build_context() -> BuildContext:
    """The engine's view of the project in the working directory (with the require and force settings applied)."""
    from .engine import BuildContext, BuildOptions

    return BuildContext.load(options=BuildOptions.from_env())


def cmd_validate(args: argparse.Namespace) -> int:
    project = load_project()
    paths = [Path(p) for p in args.paths] if args.paths else None
    if paths:
        missing = [p for p in paths if not p.is_file()]
        if missing:
            raise InfbuildError(f"no such recipe file: {missing[0]}")
    recipes = load_recipes(project, [p.resolve() for p in paths] if paths else None)
    if not args.no_import and recipes:
        request = {"root": str(project.root), "recipes": [r.to_dict() for r in recipes]}
        done = subprocess.run([sys.executable, "-m", "infbuild.stages.check"], input=json.dumps(request),
                              capture_output=True, text=True, cwd=project.root, check=False)
        if done.returncode != 0:
            raise InfbuildError(f"model check crashed:\n{done.stderr.strip()[-2000:]}")
        by_name = {r.name: r for r in recipes}
        found = json.loads(done.stdout.strip().splitlines()[-1])
        problems: list[Problem] = [by_name[p["recipe"]].locate(p["field"], p["message"]) for p in found]
        if problems:
            raise RecipeError(problems)
    print(f"{len(recipes)} recipe(s) valid: {', '.join(r.name for r in recipes)}")
    for recipe in recipes:
        for spec in recipe.inputs:  # token ids and other integer inputs: say what their samples are drawn from
            if spec.dtype in ("int64", "int32") and not spec.values and f"inputs.{spec.name}.high" not in recipe.lines:
                print(f"note: {recipe.file}:{recipe.line(f'inputs.{spec.name}')}: inputs.{spec.name}: samples are "
                      f"integers in {spec.low:g}..{spec.high - 1:g} (the default); for token ids set high to the "
                      "vocabulary size")
    return 0


def cmd_fingerprint(args: argparse.Namespace) -> int:
    from .fingerprint import host_fingerprint, render

    fp = host_fingerprint()
    print(json.dumps(fp, indent=2, sort_keys=True) if args.json else render(fp))
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    """The effective settings of the project in the working directory and where each came from (a secret only as set
    or unset); a wrong one is an error naming its variable or key."""
    project = load_project()
    found = settings.effective(project.config, project.root)
    if args.json:
        print(json.dumps({"root": str(project.root), "settings": [r.to_dict() for r in found]}, indent=2))
    else:
        print(f"project {project.root}\n{settings.render(found)}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from .status import render, stage_states

    ctx = build_context()
    if not ctx.recipes:
        raise InfbuildError(f"no recipes in {ctx.project.root} (globs: {', '.join(ctx.project.recipe_globs)}): nothing "
                            "to check")
    states = stage_states(ctx)
    if args.json:
        print(json.dumps([s.__dict__ for s in states], indent=2))
    else:
        print(render(states))
    return 1 if any(s.state == "stale" for s in states) else 0


def cmd_report(args: argparse.Namespace) -> int:
    """Per recipe and target: the preferred artifact, its latency at the primary shape and why it was preferred."""
    from .report import as_json, render, rows

    project = load_project()
    found = rows(project.artifacts, {r.name for r in load_recipes(project)})
    print(json.dumps(as_json(found), indent=2) if args.json else render(found))
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    """Per target, the stages a runner of that kind must build (stale, buildable or required), with their keys where
    they are known now (a stage whose upstream is not built yet gets its key once that is built): the input of a CI
    matrix (``strategy.matrix: ${{ fromJSON(...) }}``). Run it with ``INFBUILD_FINGERPRINT=@runner.json`` to plan for
    another kind of runner."""
    from .keys import UpstreamMissing
    from .status import stage_states

    ctx = build_context()
    targets: dict[str, list[dict[str, object]]] = {}
    for state in stage_states(ctx):
        p = ctx.planned[state.task]
        if state.state != "stale":
            continue
        try:
            key: str | None = ctx.key(p)[0]
        except UpstreamMissing:
            key = None
        targets.setdefault(p.target, []).append({"task": state.task, "stage": p.stage.name, "recipe": p.recipe.name,
                                                 "key": key, "reason": state.reason, "device": p.device})
    plan = {"host": {"cpu": ctx.host.cpu_target, "cuda": ctx.host.cuda_target},
            "targets": targets, "matrix": {"include": [{"target": t, "stages": len(s)} for t, s in sorted(targets.items())]}}
    if args.json:
        print(json.dumps(plan, indent=2))
    else:
        for target, stages in sorted(targets.items()):
            print(f"{target}: {len(stages)} stage(s) to build: {', '.join(str(s['task']) for s in stages)}")
        if not targets:
            print("nothing to build")
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    project = load_project()
    env = dict(os.environ)
    settings.pass_on(env, "require", args.require)
    argv = [sys.executable, "-m", "doit", "run"]
    if args.jobs > 1:
        argv += ["-n", str(args.jobs), "-P", "thread"]
    if args.fail_fast:
        argv.append("--no-continue")
    if args.reporter == "jsonl":
        argv += ["--reporter", "infbuild-jsonl"]
    argv += args.tasks or ["build"]
    return subprocess.call(argv, cwd=project.root, env=env)


def cmd_bench(args: argparse.Namespace) -> int:
    """Run the bench stages (all, or the named recipes'); --force reruns them for fresh numbers."""
    project = load_project()
    env = dict(os.environ)
    tasks = [f"bench:{name}" for name in args.recipes] or ["bench"]
    if args.force:  # each bench stage updates the manifest when it commits
        settings.pass_on(env, "force", tasks)
    code = subprocess.call([sys.executable, "-m", "doit", "run", *tasks], cwd=project.root, env=env)
    if code == 0:
        for report in sorted(project.artifacts.glob("*/*/bench/report.md")):
            if not args.recipes or report.parts[-4] in args.recipes:
                print(f"\n{report.relative_to(project.root)}:\n" + report.read_text(encoding="utf-8"))
    return code


def cmd_run(args: argparse.Namespace) -> int:
    import numpy as np

    from .runtime import load

    project = load_project()
    output = _output_path(args.output) if args.output else None
    files = {}
    for item in args.input:
        name, sep, path = item.partition("=")
        if not sep:
            raise InfbuildError(f"--input {item}: expected NAME=FILE.npy")
        files[name] = Path(path)
    model = load(args.artifacts or project.artifacts, args.recipe, target=args.target, backend=args.backend,
                 variant=args.variant, allow_target_mismatch=args.allow_target_mismatch, threads=args.threads)
    inputs = {name: _read_input(model, name, path) for name, path in files.items()}
    outputs = model(**inputs)
    print(f"{model.recipe}: {model.backend} on {model.target}")
    for name, value in outputs.items():
        flat = value.reshape(-1)[:6]
        print(f"  {name}: {value.dtype} {list(value.shape)} [{', '.join(f'{v:.6g}' for v in flat)}{', ...' if value.size > 6 else ''}]")
    if output is not None:
        with open(output, "wb") as f:
            np.savez(f, **outputs)  # type: ignore[arg-type]  # numpy's stub types **kwds as bool
        print(f"wrote {output}")
    return 0


def _output_path(text: str) -> Path:
    """``--output``: a file in an existing folder (never a folder, never a name beside the one given)."""
    path = Path(text)
    if path.is_dir():
        raise InfbuildError(f"--output {text}: is a folder; give a file name (e.g. {path / 'out.npz'})")
    if not path.parent.is_dir():
        raise InfbuildError(f"--output {text}: the folder {path.parent} does not exist")
    return path


def _read_input(model: Any, name: str, path: Path) -> Any:
    """One ``--input`` array, its header checked against the recipe's input before its data is read."""
    import numpy as np

    from .arrays import read_npy
    from .runtime.backends import NUMPY_DTYPES

    spec = model.inputs.get(name)
    if spec is None:
        raise InfbuildError(f"--input {name}: {model.recipe} has no input {name} (its inputs: {', '.join(model.inputs)})")

    def expect(_: str, shape: tuple[int, ...], dtype: Any) -> None:
        bounds = [size if isinstance(size, int) else model.dims[size]["max"] for size in spec["shape"]]
        if dtype != np.dtype(NUMPY_DTYPES[spec["dtype"]]) or len(shape) != len(bounds) or \
                any(s > b for s, b in zip(shape, bounds)):
            raise ValueError(f"holds {dtype} {list(shape)}; {name} is {spec['dtype']} {spec['shape']} with dims up to "
                             f"{bounds}")

    try:
        return read_npy(path, expect, name)
    except ValueError as exc:
        raise InfbuildError(f"--input {name}={path}: {str(exc).removeprefix(str(path) + ': ')}") from None


def _size(text: str) -> int:
    units = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    number, unit = text.upper().rstrip("IB"), ""
    if number and number[-1] in units:
        number, unit = number[:-1], number[-1]
    try:
        return int(float(number) * units[unit])
    except ValueError:
        raise InfbuildError(f"--max-size {text}: expected a size like 500M or 10G") from None


def cmd_cache(args: argparse.Namespace) -> int:
    from .engine.sync import pull, push

    ctx = build_context()
    if not ctx.caches:
        raise InfbuildError("no cache configured: set [tool.infbuild] cache = [\"local\"] or INFBUILD_CACHE")
    if args.action in ("stats", "ls"):
        for cache in ctx.caches:
            entries = cache.entries()
            size = cache.size()
            print(f"{cache.name} ({'writable' if cache.writable else 'read-only'}): {len(entries)} entries"
                  + (f", {size / 1e6:.1f} MB" if size is not None else ""))
            if args.action == "ls":
                for e in entries:
                    print(f"  {e['key'][:16]}  {e['stage'] or '?':<18} {e['recipe'] or '?':<16} {e['target'] or '?':<26} "
                          + (f"{e['size'] / 1e6:.2f} MB" if e["size"] is not None else ""))
        return 0
    if args.action == "gc":
        if args.max_size is None:
            raise InfbuildError("cache gc needs --max-size (e.g. 10G)")
        for cache in ctx.caches:
            evicted = cache.gc(_size(args.max_size))
            if evicted is None:
                print(f"{cache.name}: not garbage-collected by infbuild (use the registry's retention policy)")
                continue
            removed, freed = evicted
            print(f"{cache.name}: evicted {removed} entries, freed {freed / 1e6:.1f} MB")
        return 0
    moved = push(ctx) if args.action == "push" else pull(ctx)
    print(f"{args.action}: {moved} stage(s)")
    return 0


def cmd_verify_artifacts(args: argparse.Namespace) -> int:
    """Re-hash every stamped file and check each stamp names its stage's outputs (and, with trusted keys, its
    signature); report tampered or missing ones (and a manifest that disagrees with the stamps); --fix unstamps them
    and rebuilds."""
    from .folder import STAMP
    from .manifest import manifest_problem
    from .stamp import read_stamp, rehash_problems, stamp_problem
    from .verified import signature_problem

    ctx = build_context()
    trusted = ctx.trust.for_local() if ctx.trust.enforced else None
    bad: list[str] = []
    checked = 0
    for p in ctx.planned.values():
        stamp = read_stamp(p.folder)
        if stamp is None:
            if (p.folder / STAMP).exists():
                print(f"{p.task_name} ({p.target}): stamp.json is damaged")
                bad.append(p.task_name)
            continue
        checked += len(stamp.files)
        wrong = stamp_problem(stamp, p.stage.name, p.recipe.name, p.target, p.stage.outputs)
        problems = ([wrong] if wrong else []) + rehash_problems(p.folder, stamp)
        unsigned = signature_problem(p.folder, stamp, trusted) if not problems else None
        problems += [unsigned] if unsigned else []
        for problem in problems:
            print(f"{p.task_name} ({p.target}): {problem}")
        if problems:
            bad.append(p.task_name)
            if args.fix:
                (p.folder / STAMP).unlink(missing_ok=True)
    manifest = manifest_problem(ctx.project.artifacts, ctx.names)
    if manifest:
        print(f"manifest.json: {manifest}; doit build rewrites it from the stamps")
    if not bad and not manifest:
        print(f"{checked} stamped files verified: all match their stamps")
        return 0
    if not args.fix:
        summary = [f"{len(bad)} stage(s) with tampered or missing files"] if bad else []
        summary += ["the manifest is broken"] if manifest else []
        print(f"{' and '.join(summary)}: run infbuild verify-artifacts --fix")
        return 1
    if bad:
        print(f"rebuilding {', '.join(bad)}")
    return subprocess.call([sys.executable, "-m", "doit", "run", *bad, "manifest"], cwd=ctx.project.root)


def cmd_sign(args: argparse.Namespace) -> int:
    """Sign every up-to-date stage that is unsigned (``--all``: every one, with today's key: after a key rotation),
    after re-hashing its files against its stamp: what is signed is what lies there."""
    from .folder import SIGNATURE
    from .signing import stage_signature
    from .stamp import read_stamp, rehash_problems

    ctx = build_context()
    key = ctx.signer
    if key is None:
        raise InfbuildError("no signing key: set INFBUILD_SIGNING_KEY (or [tool.infbuild] signing_key); this machine's "
                            "own key could not be created")
    signed = refused = 0
    for p in ctx.planned.values():
        stamp = read_stamp(p.folder)
        if stamp is None or p.not_buildable or ctx.staleness(p) is not None:
            continue
        if (p.folder / SIGNATURE).is_file() and not args.all:
            continue
        problems = rehash_problems(p.folder, stamp)
        if problems:
            print(f"{p.task_name} ({p.target}): not signed: {problems[0]}; rebuild it (infbuild verify-artifacts --fix)")
            refused += 1
            continue
        stage_signature.write(p.folder, stage_signature.sign(key, stamp))
        signed += 1
    print(f"signed {signed} stage(s) with key {key.public.short} ({key.source})"
          + (f"; {refused} refused (files differ from their stamps)" if refused else ""))
    return 1 if refused else 0


def cmd_verify_image(args: argparse.Namespace) -> int:
    """Check an image in its registry against a public key: its signature, its SLSA provenance, every stage folder
    it holds (files against stamps, each stage.sig)."""
    from .package.registry import credentials_from_env
    from .signing.dsse import KeyFileError, PublicKey
    from .signing.image import verify_image

    try:
        key = PublicKey.read(Path(args.key))
    except KeyFileError as exc:
        raise InfbuildError(f"--key: {exc}") from None
    credentials = credentials_from_env({"username_env": args.username_env, "password_env": args.password_env})
    found = verify_image(args.reference, key, credentials)
    definition = found.provenance["predicate"]["buildDefinition"]
    revision = next((d["digest"]["gitCommit"] for d in definition.get("resolvedDependencies") or []
                     if "gitCommit" in (d.get("digest") or {})), "unknown")
    print(f"{args.reference}@{found.digest}: signed by key {key.short}; provenance: recipe "
          f"{definition['externalParameters'].get('recipe')} {definition['externalParameters'].get('version')} for "
          f"{definition['externalParameters'].get('target')}, commit {revision}; {len(found.folders)} stage folder(s) "
          f"signed and intact: {', '.join(found.folders)}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve a recipe's Triton repository with a local tritonserver until interrupted."""
    from .fingerprint import host_fingerprint
    from .triton import server

    project = load_project()
    recipe_folder = project.artifacts / args.recipe
    host = host_fingerprint()["targets"]
    targets = [args.target] if args.target else [t for t in (host.get("cuda"), host["cpu"]) if t]
    folder = next((recipe_folder / t / "triton" for t in targets if (recipe_folder / t / "triton").is_dir()), None)
    if folder is None:
        raise InfbuildError(f"{args.recipe}: no Triton repository for {' or '.join(targets)} under {recipe_folder}: add a "
                            "triton section to the recipe and run doit build")
    from .signing.trust import required_keys

    server.check_repository(folder, required_keys(project.artifacts))
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stopped by SIGTERM too: the server goes with it
    with server.start(folder / "repository", project.artifacts / ".infbuild" / "triton", http_port=args.http_port,
                      grpc_port=args.grpc_port) as running:
        for name, why in running.left_out.items():
            print(f"not loaded: {name}: {why}", file=sys.stderr)
        running.wait_ready(running.models)
        print(f"serving {', '.join(running.models)} from {folder / 'repository'}: HTTP {running.http_url}, gRPC "
              f"{running.grpc_url} (log {running.log_path}); Ctrl-C stops", flush=True)
        running.process.wait()
        raise InfbuildError(f"tritonserver exited ({running.process.returncode}); see {running.log_path}")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="infbuild", description="Verified, hardware-keyed inference artifacts from PyTorch recipes.")
    sub = p.add_subparsers(dest="command", required=True)
    v = sub.add_parser("validate", help="check recipe files (schema, meaning, and that each model builds)")
    v.add_argument("paths", nargs="*", help="recipe files (default: the project's recipes)")
    v.add_argument("--no-import", action="store_true", help="skip importing factories (no torch needed)")
    v.set_defaults(func=cmd_validate)
    f = sub.add_parser("fingerprint", help="show this host's hardware fingerprint and targets")
    f.add_argument("--json", action="store_true")
    f.set_defaults(func=cmd_fingerprint)
    cf = sub.add_parser("config", help="show the effective settings and where each came from (default, "
                        "pyproject.toml, environment)")
    cf.add_argument("--json", action="store_true")
    cf.set_defaults(func=cmd_config)
    s = sub.add_parser("status", help="list stale stages with the reason; exit 1 if any (a CI gate)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_status)
    rp = sub.add_parser("report", help="per recipe and target: the preferred artifact, its latency and why")
    rp.add_argument("--json", action="store_true")
    rp.set_defaults(func=cmd_report)
    pl = sub.add_parser("plan", help="per target, the stale stages (with their keys) a runner of that kind must build")
    pl.add_argument("--json", action="store_true", help="JSON for a CI matrix (targets, their stages and keys)")
    pl.set_defaults(func=cmd_plan)
    b = sub.add_parser("build", help="run `doit build` (or the named tasks)")
    b.add_argument("tasks", nargs="*")
    b.add_argument("-j", "--jobs", type=int, default=1, help="build independent stages in parallel")
    b.add_argument("--require", action="append", default=[], metavar="STAGE",
                   help="fail instead of skipping STAGE when this host cannot build it (repeatable)")
    b.add_argument("--fail-fast", action="store_true", help="stop at the first failed task")
    b.add_argument("--reporter", choices=["console", "jsonl"], default="console",
                   help="jsonl: one JSON event per task on stdout (stage output on stderr), for CI")
    b.set_defaults(func=cmd_build)
    be = sub.add_parser("bench", help="benchmark verified artifacts against eager and torch.compile")
    be.add_argument("recipes", nargs="*")
    be.add_argument("--force", action="store_true", help="rerun although up to date (fresh numbers)")
    be.set_defaults(func=cmd_bench)
    r = sub.add_parser("run", help="run one inference with a built artifact")
    r.add_argument("recipe")
    r.add_argument("--input", action="append", default=[], metavar="NAME=FILE.npy")
    r.add_argument("--backend", choices=sorted(registry.artifacts()),
                   help="the artifact to run (default: the target's preferred), e.g. onnxruntime:int8_dynamic")
    r.add_argument("--variant", help="a variant of --backend (e.g. --backend onnxruntime --variant int8_dynamic)")
    r.add_argument("--target", help="target folder (default: this host's)")
    r.add_argument("--output", help="write the outputs to this .npz")
    r.add_argument("--artifacts", help="artifacts folder or manifest.json (default: the project's)")
    r.add_argument("--threads", type=int)
    r.add_argument("--allow-target-mismatch", action="store_true",
                   help="load artifacts built for another target anyway (may crash or compute wrong results)")
    r.set_defaults(func=cmd_run)
    c = sub.add_parser("cache", help="the shared artifact caches: stats, ls, pull, push, gc")
    c.add_argument("action", choices=["stats", "ls", "pull", "push", "gc"])
    c.add_argument("--max-size", help="gc: evict least recently used entries down to this size (e.g. 10G)")
    c.set_defaults(func=cmd_cache)
    vi = sub.add_parser("verify-image", help="check an image's signature, provenance and artifacts against a key")
    vi.add_argument("reference", help="REGISTRY/REPOSITORY:TAG (or @sha256:...)")
    vi.add_argument("--key", required=True, help="the PEM public key the image must be signed by")
    vi.add_argument("--username-env", help="environment variable holding the registry user name")
    vi.add_argument("--password-env", help="environment variable holding the registry password")
    vi.set_defaults(func=cmd_verify_image)
    sg = sub.add_parser("sign", help="sign the up-to-date stages that are unsigned (after re-hashing them)")
    sg.add_argument("--all", action="store_true", help="re-sign every up-to-date stage with today's key (key rotation)")
    sg.set_defaults(func=cmd_sign)
    sv = sub.add_parser("serve", help="serve a recipe's Triton repository with a local tritonserver (loopback)")
    sv.add_argument("recipe")
    sv.add_argument("--target", help="target folder (default: this host's)")
    sv.add_argument("--http-port", type=int, default=8000)
    sv.add_argument("--grpc-port", type=int, default=8001)
    sv.set_defaults(func=cmd_serve)
    va = sub.add_parser("verify-artifacts", help="re-hash every stamped file; report (--fix: rebuild) tampered ones")
    va.add_argument("--fix", action="store_true")
    va.set_defaults(func=cmd_verify_artifacts)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.func(args))
    except InfbuildError as exc:
        print(str(exc), file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

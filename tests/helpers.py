"""Helpers the tests share (fixtures are in conftest.py): throwaway infbuild projects (copies of the examples),
a doit runner that says which tasks ran, were built, restored or up to date (from the JSON-lines reporter's
events), recipe texts, recipe loading, and a simulated CUDA host (stand-in nvidia-smi and trtexec)."""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
STANDINS = Path(__file__).parent / "standins"  # stand-ins for nvidia-smi and trtexec: no GPU on these machines

# doit's own commands: a run (`doit build`, `doit -n 2 build`, `doit run ...`) is anything else.
DOIT_COMMANDS = {"auto", "clean", "dumpdb", "forget", "help", "ignore", "info", "list", "reset-dep", "status",
                 "strace", "tabcompletion"}


# --- doit runs ------------------------------------------------------------------------------------------------

@dataclass
class DoitRun:
    """One doit process. Runs use the JSON-lines reporter unless asked for the console: ``events`` are its events,
    ``output`` is what the build said besides them (messages and stage output, then each failure's error);
    with the console reporter ``output`` is the console text and ``events`` is None."""

    returncode: int
    output: str
    ran: list[str]  # tasks whose actions executed
    uptodate: list[str]  # tasks doit skipped as up to date
    events: list[dict[str, Any]] | None = field(default=None, repr=False)
    printed: str = field(default="", repr=False)  # everything the process wrote, stdout then stderr

    def __post_init__(self) -> None:
        self.printed = self.printed or self.output

    def stages_ran(self) -> set[str]:
        return {t for t in self.ran if ":" in t}

    def _tasks(self, event: str, outcome: str | None = None) -> set[str]:
        assert self.events is not None, "a console run has no events: run doit with the JSON-lines reporter"
        return {e["task"] for e in self.events
                if e["event"] == event and ":" in e.get("task", "") and (outcome is None or e.get("outcome") == outcome)}

    def built(self) -> set[str]:
        """Stage tasks that ran their worker and succeeded."""
        return self._tasks("success", "built")

    def restored(self) -> set[str]:
        """Stage tasks restored from a cache."""
        return self._tasks("success", "restored")

    def summary(self) -> dict[str, Any]:
        """The closing event's counts (built, restored, uptodate, failed, not_buildable ...)."""
        assert self.events is not None, "a console run has no events: run doit with the JSON-lines reporter"
        return next(e for e in reversed(self.events) if e["event"] == "summary")


def jsonl_run(returncode: int, stdout: str, stderr: str) -> DoitRun:
    """A DoitRun from a run with ``--reporter infbuild-jsonl`` (stdout: one event per line)."""
    events: list[dict[str, Any]] = []
    stray: list[str] = []
    for line in stdout.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            event = None
        if isinstance(event, dict) and "event" in event:
            events.append(event)
        elif line.strip():
            stray.append(line)  # not an event (the reporter's own test checks that there are none)
    errors = [e.get("error", "") for e in events if e["event"] in ("failure", "error")]
    output = "\n".join([*stray, stderr, *errors])
    ran = [e["task"] for e in events if e["event"] == "start"]
    uptodate = [e["task"] for e in events if e["event"] == "uptodate"]
    return DoitRun(returncode, output, ran, uptodate, events, printed=stdout + stderr)


def console_run(returncode: int, output: str) -> DoitRun:
    """A DoitRun from doit's console reporter ('.  task' ran, '-- task' up to date)."""
    ran = re.findall(r"^\.  (\S+)$", output, flags=re.M)
    uptodate = re.findall(r"^-- (\S+)$", output, flags=re.M)
    return DoitRun(returncode, output, ran, uptodate)


def doit_argv(args: tuple[str, ...], reporter: str) -> list[str]:
    """doit's command line: runs get ``--reporter infbuild-jsonl`` unless the console is asked for."""
    args = args or ("build",)
    if reporter == "console" or args[0] in DOIT_COMMANDS:
        return list(args)
    if args[0] == "run":
        args = args[1:]
    return ["run", "--reporter", "infbuild-jsonl", *args]


# --- throwaway projects ---------------------------------------------------------------------------------------

class Project:
    """A temporary project laid out like the repo: dodo.py, pyproject.toml, examples/, recipes/."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.artifacts = root / "artifacts"
        (root / "recipes").mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / "dodo.py", root / "dodo.py")
        shutil.copytree(REPO / "examples", root / "examples", ignore=shutil.ignore_patterns("__pycache__"))
        (root / "pyproject.toml").write_text(
            '[tool.infbuild]\nrecipes = ["recipes/*.yaml", "recipes/*.json"]\n', encoding="utf-8")

    @classmethod
    def with_recipes(cls, root: Path, recipes: dict[str, str]) -> Project:
        """A project at ``root`` holding these recipe files (name -> text)."""
        p = cls(root)
        for file, text in recipes.items():
            p.add_recipe(file, text)
        return p

    def add_recipe(self, name: str, text: str) -> Path:
        path = self.root / "recipes" / name
        path.write_text(text, encoding="utf-8")
        return path

    def copy_example_recipes(self) -> None:
        for path in (REPO / "recipes").iterdir():
            shutil.copy(path, self.root / "recipes" / path.name)

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("INFBUILD_")}
        env.update(extra)
        return env

    def run(self, *argv: str, env: dict[str, str] | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
        return subprocess.run(list(argv), cwd=self.root, env=env or self.env(), capture_output=True, text=True,
                              timeout=timeout, check=False)

    def doit(self, *args: str, env: dict[str, str] | None = None, reporter: str = "jsonl") -> DoitRun:
        """Run doit (default: ``doit build``). Runs report through the JSON-lines reporter; ``reporter="console"``
        for tests of the console output itself."""
        done = self.run(sys.executable, "-m", "doit", *doit_argv(args, reporter), env=env)
        if reporter == "console" or (args and args[0] in DOIT_COMMANDS):
            return console_run(done.returncode, done.stdout + done.stderr)
        return jsonl_run(done.returncode, done.stdout, done.stderr)

    def infbuild(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        return self.run(sys.executable, "-m", "infbuild.cli", *args, env=env)

    def stage(self, recipe: str, target: str, stage: str) -> Path:
        return self.artifacts / recipe / target / stage


def build(proj: Project, env: dict[str, str] | None = None, **extra: str) -> DoitRun:
    """`doit build` that must succeed (``env``, or the project's environment with ``extra``)."""
    result = proj.doit("build", env=env if env is not None else proj.env(**extra))
    assert result.returncode == 0, result.output[-3000:]
    return result


def tasks(recipe: str, stages: Iterable[str]) -> set[str]:
    """The task names of these stages of one recipe: {"onnx:mlp", ...}."""
    return {f"{s}:{recipe}" for s in stages}


# --- recipes --------------------------------------------------------------------------------------------------


def _stage_defaults() -> dict[str, Any]:
    """Each stage's ``stages.<name>`` section as a recipe that sets nothing gets it (its package's defaults)."""
    from infbuild.section import sections

    return {s.path[1]: dict(s.defaults) for s in sections() if s.path[0] == "stages"}


STAGE_DEFAULTS = _stage_defaults()

MLP_RECIPE = """\
name: {name}
model:
  factory: examples.models:mlp
  kwargs: {{seed: {seed}}}
{extra_model}inputs:
  x: {{shape: [batch, 10], dtype: float32}}
dims:
  batch: {{min: 1, opt: {opt}, max: {max}}}
outputs: [y]
verify: {{rtol: {rtol}, atol: 1.0e-4}}
{bench}"""


SMALL_BENCH = "bench: {shapes: [opt], warmup: 1, iterations: 5, rounds: 1, baselines: [eager]}\n"


def mlp_recipe(name: str = "mlp", seed: int = 0, opt: int = 8, max: int = 64, rtol: float = 1e-3,
               extra_model: str = "", bench: str = "bench: {enabled: false}\n") -> str:
    """A small MLP recipe; bench is off unless asked for (most tests count stages without it)."""
    return MLP_RECIPE.format(name=name, seed=seed, opt=opt, max=max, rtol=rtol, extra_model=extra_model, bench=bench)


VALID_RECIPE: dict[str, Any] = yaml.safe_load(mlp_recipe())  # the MLP recipe as data (copy it before editing)


def loader_project(root: Path, globs: tuple[str, ...] = ("*.yaml", "*.json"), stub_factory: bool = False) -> Any:
    """An infbuild Project whose recipes are files right under ``root`` (for the loader alone); with
    ``stub_factory``, an examples/models.py that defines mlp without importing anything."""
    from infbuild.project import Project as InfbuildProject

    if stub_factory:
        (root / "examples").mkdir(exist_ok=True)
        (root / "examples" / "models.py").write_text("def mlp(seed=0): ...\n")
    return InfbuildProject(root=root, recipe_globs=globs, artifacts=root / "artifacts")


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Fail (instead of hanging the test run) when the block blocks, e.g. opening a FIFO."""
    def expired(signum: int, frame: object) -> None:
        raise TimeoutError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def problems_of(project: Project) -> list[str]:
    """Loading the project's recipes fails (within 30 s): every problem, rendered, each on one line."""
    from infbuild.errors import RecipeError
    from infbuild.project import load_project
    from infbuild.recipe_load import load_recipes

    with deadline(30), pytest.raises(RecipeError) as info:
        load_recipes(load_project(project.root))
    rendered = [p.render() for p in info.value.problems]
    assert all("\n" not in r for r in rendered)
    return rendered


# --- a simulated CUDA host (stand-in nvidia-smi and trtexec) ---------------------------------------------------

H100 = "cuda-sm90-nvidia-h100-80gb-hbm3"
A10G = "cuda-sm86-nvidia-a10g"


def write_trtexec(folder: Path, version: str) -> Path:
    """The stand-in trtexec as an executable, with the emulated TensorRT version baked in."""
    folder.mkdir(parents=True, exist_ok=True)
    source = (STANDINS / "fake_trtexec.py").read_text().replace('TRT_VERSION = "10.3.0"', f'TRT_VERSION = "{version}"')
    path = folder / "trtexec"
    path.write_text(f"#!{sys.executable}\n{source}")
    path.chmod(0o755)
    return path


class GpuHost:
    """Environment of a simulated CUDA host: stand-in nvidia-smi and trtexec on PATH."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.bin = root / "bin"
        self.log = root / "trtexec.jsonl"
        write_trtexec(self.bin, "10.3.0")

    def env(self, proj: Project, **extra: str) -> dict[str, str]:
        return proj.env(PATH=f"{self.bin}:{STANDINS}:{os.environ['PATH']}", XDG_CACHE_HOME=str(self.root / "cache"),
                        FAKE_TRTEXEC_LOG=str(self.log), **extra)

    def runs(self) -> list[dict]:
        return [json.loads(line) for line in self.log.read_text().splitlines()] if self.log.exists() else []


def trt_recipe(name: str = "mlp", seed: int = 0, tensorrt: str = "") -> str:
    text = mlp_recipe(name=name, seed=seed) + "backends: [onnxruntime, tensorrt]\n"
    return text + (f"stages:\n  tensorrt: {tensorrt}\n" if tensorrt else "")


# --- Hugging Face models from tiny configs (examples/hf.py) ----------------------------------------------------

BERT = """\
name: bert
model: {{factory: "examples.hf:bert", dtype: {dtype}}}
inputs:
  input_ids: {{shape: [batch, seq], dtype: int64, low: 0, high: 128}}
  attention_mask: {{shape: [batch, seq], dtype: int64, values: [1]}}
dims:
  batch: {{min: 1, opt: 2, max: 4}}
  seq: {{min: 4, opt: 16, max: 32}}
outputs: [last_hidden_state, pooler_output]
{bench}"""

GPT2 = """\
name: gpt2
model: {factory: "examples.hf:gpt2"}
inputs:
  input_ids: {shape: [batch, seq], dtype: int64, low: 0, high: 128}
dims:
  batch: {min: 1, opt: 2, max: 4}
  seq: {min: 4, opt: 16, max: 32}
outputs: [logits]
"""


# --- signing keys (made the way the README tells users to: openssl) -------------------------------------------

@dataclass(frozen=True)
class KeyPair:
    private: Path
    public: Path


def make_keypair(folder: Path, name: str) -> KeyPair:
    """An EC P-256 key pair made with openssl, as the README says (``NAME.pem`` and ``NAME.pub``)."""
    folder.mkdir(parents=True, exist_ok=True)
    private, public = folder / f"{name}.pem", folder / f"{name}.pub"
    subprocess.run(["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(private)], check=True,
                   capture_output=True)
    subprocess.run(["openssl", "ec", "-in", str(private), "-pubout", "-out", str(public)], check=True, capture_output=True)
    return KeyPair(private, public)


def model_signing_verify(folder: Path, public: Path) -> subprocess.CompletedProcess:
    """The OpenSSF model-signing CLI (an independent verifier) on a stage folder and its stage.sig."""
    cli = Path(sys.executable).with_name("model_signing")
    return subprocess.run([str(cli), "verify", "key", str(folder), "--signature", str(folder / "stage.sig"),
                           "--public_key", str(public)], capture_output=True, text=True, timeout=120)


def copy_built(source: Project, root: Path) -> Project:
    """A copy of a built project (recipes, examples and artifacts; not doit's DB or infbuild's bookkeeping), free to
    damage: for tests whose subject is not the cold build."""
    copy = Project(root)
    shutil.copytree(source.root / "recipes", copy.root / "recipes", dirs_exist_ok=True)
    shutil.copytree(source.root / "examples", copy.root / "examples", dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(source.root / "pyproject.toml", copy.root / "pyproject.toml")
    shutil.copytree(source.artifacts, copy.artifacts, ignore=shutil.ignore_patterns(".doit.db*", ".infbuild"))
    return copy

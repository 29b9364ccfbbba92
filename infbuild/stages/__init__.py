"""The catalogue of stages, one package each: ``<name>/__init__.py`` declares the stage (what its key reads, what
it needs, where it runs, what it writes) and its recipe section, and registers them; ``<name>/run.py`` is what the
worker runs. Importing this package registers every stage, in build order: the built-in ones below, then those of
installed plugins (the ``infbuild.stages`` entry-point group: a package outside infbuild, declared the same way)."""
# The order of these imports is the build order: import sorting is off for this file (pyproject.toml).
from importlib.metadata import entry_points

from . import export, onnx, reference, aoti, onnx_variants, aoti_variants  # noqa: F401
from . import trt_timing_cache, trt_engine, trt_variants, verify, bench, triton, package  # noqa: F401

for _plugin in sorted(entry_points(group="infbuild.stages"), key=lambda e: e.name):
    _plugin.load()  # its package registers its stage (and section) as a built-in one does

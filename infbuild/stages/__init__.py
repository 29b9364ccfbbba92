"""The catalogue of stages, one package each: ``<name>/__init__.py`` declares the stage (what its key reads, what
it needs, where it runs, what it writes) and its recipe section, and registers them; ``<name>/run.py`` is what the
worker runs. Importing this package registers every stage, in build order: the built-in ones below, then those of
installed plugins (the ``infbuild.stages`` entry-point group: a package outside infbuild, declared the same way)."""
from importlib.metadata import entry_points

from . import (  # noqa: F401, I001  # noqa: F401, I001
    aoti,
    aoti_variants,
    bench,
    export,
    onnx,
    onnx_variants,
    package,
    reference,
    triton,
    trt_engine,
    trt_timing_cache,
    trt_variants,
    verify,
)

for _plugin in sorted(entry_points(group="infbuild.stages"), key=lambda e: e.name):
    _plugin.load()  # its package registers its stage (and section) as a built-in one does

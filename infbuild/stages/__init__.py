"""The stages, one package each: ``<name>/__init__.py`` declares the stage (what its key reads, what it needs,
where it runs, what it writes) and registers it; ``<name>/run.py`` is what the worker runs. Importing this
package registers every stage, in build order."""
from . import export, onnx, reference, aoti, onnx_variants, aoti_variants  # noqa: F401, I001
from . import trt_timing_cache, trt_engine, trt_variants, verify, bench, triton, package  # noqa: F401

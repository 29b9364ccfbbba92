"""The build engine, independent of doit: a build context (``BuildContext``), ``execute(ctx, task) -> Outcome``
(key, restore or run, commit, share, index), the caches' push/pull, and the locks."""
from .context import BuildContext, BuildOptions
from .execute import execute, restore_stage, share
from .outcome import Outcome

__all__ = ["BuildContext", "BuildOptions", "Outcome", "execute", "restore_stage", "share"]

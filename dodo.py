"""doit entry point: every task comes from the recipes under recipes/ (see README.md)."""
from infbuild.tasks import doit_config, generate

DOIT_CONFIG = doit_config()


def task_infbuild():
    yield from generate()

"""`doit status`: the same report as `infbuild status`, as a doit command plugin (entry point doit.COMMAND)."""
from __future__ import annotations

from doit.cmd_base import Command


class Status(Command):
    name = "status"
    doc_purpose = "list stale infbuild stages with the reason (exit 1 if any)"
    doc_usage = ""
    doc_description = None
    cmd_options = ()

    def execute(self, params: dict, args: list) -> int:
        from .cli import main

        return main(["status"])

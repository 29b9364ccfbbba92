"""Deep recipe check for `infbuild validate`: import each factory, call it, load its weights, match
forward()'s parameters. Reads recipes (JSON list) on stdin, writes problems (JSON list) on stdout."""
from __future__ import annotations

import contextlib
import io
import json
import sys
from pathlib import Path

from ..errors import FieldError
from ..recipe import Recipe
from .model import build_model


def main() -> int:
    request = json.loads(sys.stdin.read())
    root = Path(request["root"])
    problems = []
    for data in request["recipes"]:
        recipe = Recipe.from_dict(data)
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                build_model(recipe, root)
        except FieldError as exc:
            problems.append({"recipe": recipe.name, "field": exc.field, "message": exc.message})
    print(json.dumps(problems))
    return 0


if __name__ == "__main__":
    sys.exit(main())

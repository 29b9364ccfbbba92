"""Deep recipe check for `infbuild validate`: import each factory, call it, load its weights, match
forward()'s parameters, run it once at the smallest shape and match its outputs to the recipe's, read its own
samples. Reads recipes (JSON list) on stdin, writes problems (JSON list) on stdout."""
from __future__ import annotations

import contextlib
import io
import json
import sys
from pathlib import Path

import torch

from ..errors import FieldError
from ..recipe import Recipe
from .model import build_model, shape_labels, to_torch, user_samples
from .samples import sample_inputs


def main() -> int:
    request = json.loads(sys.stdin.read())
    root = Path(request["root"])
    problems = []
    for data in request["recipes"]:
        recipe = Recipe.from_dict(data)
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                model = build_model(recipe, root)
                sample = to_torch(recipe, sample_inputs(recipe, shape_labels(recipe)["min"], seed=0))
                with torch.inference_mode():
                    model(**sample)  # the outputs the recipe names must be what the model returns
                user_samples(recipe, root)
        except FieldError as exc:
            problems.append({"recipe": recipe.name, "field": exc.field, "message": exc.message})
        except (Exception, SystemExit) as exc:  # user code: report it, never a traceback
            problems.append({"recipe": recipe.name, "field": "model.factory",
                             "message": f"checking the model raised {type(exc).__name__}: {str(exc)[:300]}"})
    print(json.dumps(problems))
    return 0


if __name__ == "__main__":
    sys.exit(main())

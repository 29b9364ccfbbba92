"""The reference stage's folder: one ``<label>.npz`` per sample (``input.<name>`` and ``output.<name>`` arrays:
the inputs and eager PyTorch's outputs) and ``reference.json`` (the seed, torch's version, each sample's input and
output shapes by label). Its one reader and writer (verify, int8 calibration and Triton read it); torch-free."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping

from ... import jsonio
from ...errors import ArtifactError

META = "reference.json"
OPT = "opt.npz"  # the sample at every dim's opt size (always written)
INPUT, OUTPUT = "input.", "output."

if TYPE_CHECKING:
    import numpy as np

Arrays = dict[str, "np.ndarray"]


@dataclass(frozen=True)
class SampleShapes:
    inputs: dict[str, list[int]]
    outputs: dict[str, list[int]]


@dataclass(frozen=True)
class Reference:
    """A built reference folder, read: ``shapes`` per sample label; ``sample`` reads one sample's arrays."""

    folder: Path
    seed: int
    torch: str
    shapes: dict[str, SampleShapes]

    @classmethod
    def read(cls, folder: Path) -> Reference:
        data = jsonio.read_mapping(folder / META)
        try:
            shapes = {str(label): SampleShapes(dict(s["inputs"]), dict(s["outputs"])) for label, s in data["shapes"].items()}
            return cls(folder, int(data["seed"]), str(data["torch"]), shapes)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ArtifactError(f"{folder / META} is missing or damaged ({type(exc).__name__}: {exc}): "
                                "rebuild the reference stage (doit build)") from None

    def sample(self, label: str) -> tuple[Arrays, Arrays]:
        """One sample's (inputs, eager outputs)."""
        return read_sample(self.folder / f"{label}.npz")

    def output_dtypes(self, outputs: tuple[str, ...]) -> dict[str, str]:
        import numpy as np

        with np.load(self.folder / OPT) as opt:
            return {n: str(opt[f"{OUTPUT}{n}"].dtype) for n in outputs}


def read_sample(path: Path) -> tuple[Arrays, Arrays]:
    import numpy as np

    with np.load(path) as data:
        return ({k[len(INPUT):]: data[k] for k in data.files if k.startswith(INPUT)},
                {k[len(OUTPUT):]: data[k] for k in data.files if k.startswith(OUTPUT)})


def sample_inputs_in(folder: Path) -> Iterator[Arrays]:
    """Every sample's inputs, the opt one first (then by label): what a calibration reads."""
    for path in sorted(folder.glob("*.npz"), key=lambda p: (p.name != OPT, p.name)):
        yield read_sample(path)[0]


class ReferenceWriter:
    """Writes a reference folder sample by sample; ``close`` writes reference.json (listing what was written)."""

    def __init__(self, folder: Path, seed: int, torch: str) -> None:
        self.folder, self.seed, self.torch = folder, seed, torch
        self.shapes: dict[str, dict[str, Any]] = {}

    def add(self, label: str, inputs: Mapping[str, np.ndarray], outputs: Mapping[str, np.ndarray]) -> None:
        import numpy as np

        payload = {f"{INPUT}{k}": v for k, v in inputs.items()} | {f"{OUTPUT}{k}": v for k, v in outputs.items()}
        np.savez(self.folder / f"{label}.npz", **payload)  # type: ignore[arg-type]  # numpy's stub types **kwds as bool
        self.shapes[label] = {"inputs": {k: list(v.shape) for k, v in inputs.items()},
                              "outputs": {k: list(v.shape) for k, v in outputs.items()}}

    def close(self) -> None:
        jsonio.write_atomic(self.folder / META, {"seed": self.seed, "torch": self.torch, "shapes": self.shapes},
                            durable=False)

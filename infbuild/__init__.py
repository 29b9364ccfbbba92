"""infbuild: verified, hardware-keyed inference artifacts from PyTorch recipes, built with doit."""
from . import stages as _catalogue  # noqa: F401 - every stage registers (the catalogue sits above the modules it uses)

"""The variants run with the aoti backend's runner."""
from ..aoti.runner import load

__all__ = ["load"]

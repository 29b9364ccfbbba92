"""infbuild: verified, hardware-keyed inference artifacts from PyTorch recipes, built with doit."""

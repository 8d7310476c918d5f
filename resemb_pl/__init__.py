"""resemb_pl: res-embedding for deep CTR prediction with PyTorch Lightning and PyG."""

__version__ = "0.1.0"  # the one place it is set: pyproject.toml reads it (hatch)

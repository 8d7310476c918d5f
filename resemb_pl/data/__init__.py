"""Everything before the model: readers, the synthetic generator, protocols and the graph."""

from resemb_pl.data.interactions import Interactions, canonicalize

__all__ = ["Interactions", "canonicalize"]

"""Plain torch.nn code: graph convolutions, embeddings, layers and backbones (no Lightning)."""

from resemb_pl.nn.embedding import ItemEmbedding, PlainEmbedding, ResEmbedding

__all__ = ["ItemEmbedding", "PlainEmbedding", "ResEmbedding"]

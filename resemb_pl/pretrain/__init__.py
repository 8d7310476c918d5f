"""Pretrained-embedding baselines of the res-embedding paper (Table 3): +Skip, +n2v, +sms.

Each writes an ``(num_items + 1, embedding_dim)`` ``.npy`` table that initialises
``PlainEmbedding(pretrained=...)``::

    python -m resemb_pl.pretrain skipgram --data configs/data/synthetic_small.yaml --out skip.npy
"""

from resemb_pl.pretrain.node2vec import pretrain_node2vec, random_walks
from resemb_pl.pretrain.sgns import SkipGram, train_pairs, window_pairs
from resemb_pl.pretrain.skipgram import context_pairs, pretrain_skipgram
from resemb_pl.pretrain.sms import SiameseNetwork, pretrain_sms

__all__ = [
    "SiameseNetwork",
    "SkipGram",
    "context_pairs",
    "pretrain_node2vec",
    "pretrain_skipgram",
    "pretrain_sms",
    "random_walks",
    "train_pairs",
    "window_pairs",
]

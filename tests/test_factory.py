import functools

import pytest
import torch
from jsonargparse._instantiation import call_without_instantiate_context, default_class_instantiator

from resemb_pl.errors import ConfigError
from resemb_pl.factory import build, describe
from resemb_pl.nn import ResEmbedding
from resemb_pl.nn.conv import GCNNormConv


def test_round_trip_of_nested_partials():
    spec = describe(functools.partial(ResEmbedding, conv=GCNNormConv, residual_l2=0.1))
    assert spec == {
        "class_path": "resemb_pl.nn.embedding.ResEmbedding",
        "init_args": {"conv": {"class_path": "resemb_pl.nn.conv.gcn_norm_conv.GCNNormConv"},
                      "residual_l2": 0.1},
    }
    emb = build(spec)(5, 4)
    assert isinstance(emb.convs[0], GCNNormConv)
    assert emb.residual_l2 == 0.1


def test_jsonargparse_factories_are_described_as_their_class():
    conv = functools.partial(call_without_instantiate_context, default_class_instantiator,
                             GCNNormConv)
    emb = functools.partial(call_without_instantiate_context, default_class_instantiator,
                            ResEmbedding, conv=conv)
    assert describe(emb) == {
        "class_path": "resemb_pl.nn.embedding.ResEmbedding",
        "init_args": {"conv": {"class_path": "resemb_pl.nn.conv.gcn_norm_conv.GCNNormConv"}},
    }
    assert describe(functools.partial(torch.optim.Adam, lr=0.1)) == {
        "class_path": "torch.optim.adam.Adam", "init_args": {"lr": 0.1}}


def test_errors():
    with pytest.raises(ConfigError, match="positional arguments"):
        describe(functools.partial(ResEmbedding, 5))
    with pytest.raises(ConfigError, match="class_path 'nowhere.Conv' cannot be imported"):
        build({"class_path": "nowhere.Conv"})
    with pytest.raises(ConfigError, match=r"unexpected key\(s\) \['args'\]"):
        build({"class_path": "torch.optim.Adam", "args": {}})

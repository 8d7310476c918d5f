"""Building blocks shared by the layers: Dice, MLP blocks, DIN's local activation unit, pooling,
the FM and PNN's products, and the width check of the width-keeping convolutions."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from resemb_pl.errors import ConfigError, require

Activation = Literal["prelu", "dice", "relu", "sigmoid"]


class Dice(nn.Module):
    r"""Data-adaptive activation of DIN (eq. 9 of the DIN paper).

    .. math::
        f(s) = p(s) \cdot s + (1 - p(s)) \cdot \alpha s, \qquad
        p(s) = \sigma\!\left(\frac{s - E[s]}{\sqrt{Var[s] + \epsilon}}\right)

    The mean and variance are batch statistics in training and running averages in evaluation.
    Inputs of shape ``(N, C)`` or ``(N, L, C)``.
    """

    def __init__(self, num_features: int, eps: float = 1e-8) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(num_features, eps=eps, affine=False)
        self.alpha = nn.Parameter(torch.zeros(num_features))

    def forward(self, x: Tensor) -> Tensor:
        shape = x.shape
        flat = x.reshape(-1, shape[-1])
        p = torch.sigmoid(self.norm(flat)).reshape(shape)
        return p * x + (1 - p) * self.alpha * x


class PReLU(nn.PReLU):
    """Per-channel PReLU on the last dimension, for inputs ``(N, C)`` or ``(N, L, C)``."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.reshape(-1, x.size(-1))).reshape(x.shape)


def check_width(module: nn.Module, in_channels: int, out_channels: int) -> None:
    """Refuse a layer that must keep the width but is asked to change it, naming the layer.

    Raises:
        ConfigError: ``in_channels`` is below 1 or differs from ``out_channels``.
    """
    name = module.__class__.__name__
    require(f"{name}.in_channels", in_channels, 1)
    if in_channels != out_channels:
        raise ConfigError(f"'{name}' keeps the width: {in_channels} != {out_channels}")


def activation(name: Activation, num_features: int) -> nn.Module:
    """Make the activation ``name`` for ``num_features`` channels."""
    if name == "prelu":
        return PReLU(num_features)
    if name == "dice":
        return Dice(num_features)
    if name == "relu":
        return nn.ReLU()
    if name == "sigmoid":
        return nn.Sigmoid()
    raise ConfigError(f"act: unknown activation {name!r}; choose prelu, dice, relu or sigmoid")


class MLP(nn.Sequential):
    """Linear layers with an activation after each hidden layer and a final linear output.

    Args:
        in_features: Input width.
        hidden: Hidden widths (paper: 200, 80).
        out_features: Output width (1 for a logit).
        act: Activation of the hidden layers.
        dropout: Dropout after each hidden activation, in ``[0, 1)``.
        key: The configuration key of ``hidden``, named when a width is below 1.
    """

    def __init__(
        self,
        in_features: int,
        hidden: Sequence[int],
        out_features: int = 1,
        act: Activation = "prelu",
        dropout: float = 0.0,
        *,
        key: str = "model.backbone.hidden",
    ) -> None:
        require("MLP.in_features", in_features, 1)
        require("MLP.out_features", out_features, 1)
        for width in hidden:
            if not width >= 1:
                raise ConfigError(f"{key}: every width must be >= 1, got {list(hidden)}")
        if not 0 <= dropout < 1:
            raise ConfigError(f"{key.rpartition('.')[0] or 'model'}.dropout: must lie in [0, 1), "
                              f"got {dropout}")
        layers: list[nn.Module] = []
        for width in hidden:
            layers += [nn.Linear(in_features, width), activation(act, width)]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            in_features = width
        layers.append(nn.Linear(in_features, out_features))
        super().__init__(*layers)


#: Valid fraction of a batch's ``(B, L)`` positions below which :class:`LocalActivationUnit`
#: (``jagged=None``) scores only the valid positions. Measured with ``scripts/bench_attention.py``
#: on a quiet 2-core machine (DIN step, batch 1024, width 36, 2 threads,
#: ``reports/throughput/attention.txt``): dense / jagged step time is 3.5 at Sports' lengths
#: (valid fraction 0.13), 1.54 at 0.5, 1.13 at 0.8 and 0.92 with every position valid.
JAGGED_BELOW = 0.85


def _uses_batch_statistics(module: nn.Module) -> bool:
    """Whether ``module`` normalises with the statistics of the batch it is given."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) and (m.training or not
               m.track_running_stats) for m in module.modules())


class LocalActivationUnit(nn.Module):
    r"""DIN's attention: a weight for each history item w.r.t. the target, without softmax.

    .. math::
        w_l = \mathrm{MLP}([\mathbf{e}_l, \mathbf{v}, \mathbf{e}_l - \mathbf{v},
        \mathbf{e}_l \odot \mathbf{v}]), \qquad
        \mathbf{u} = \sum_l w_l \mathbf{e}_l

    Padding positions get weight 0. The weights are not normalised, so the pooled vector keeps
    the intensity of the user's interest (DIN §4.3).

    Two forms give the same numbers (to float rounding), forward and backward. The *dense* form
    scores all ``B * L`` positions and zeroes the padded ones; the *jagged* form gathers the
    valid ``(sample, position)`` pairs, scores only them and sums them per sample with
    ``index_add_``. With short histories padded to the batch's longest (Amazon Sports: mean 6.3,
    longest 50) most of the dense form's work is padding.

    Args:
        dim: Width ``D`` of a history vector.
        hidden: Hidden widths of the attention MLP (DIN: 80, 40).
        act: Activation of the hidden layers.
        jagged: ``True`` scores only the valid positions, ``False`` all of them; ``None``
            (default) picks per batch: jagged when fewer than :data:`JAGGED_BELOW` of the
            positions are valid. The dense form is used whatever ``jagged`` says when the MLP
            normalises with batch statistics (``act="dice"`` in training: its statistics
            include the padded positions, as they always have) and while ``torch.export`` or
            ``torch.compile`` traces the unit (``None`` only: no branch on the data).

    Shapes:
        - **input:** ``hist`` :math:`(B, L, D)`, ``target`` :math:`(B, D)`, ``mask`` :math:`(B, L)`
        - **output:** :math:`(B, D)`

    Example::

        unit = LocalActivationUnit(4)
        mask = torch.tensor([[True, False, False], [True, True, True]])
        pooled = unit(torch.randn(2, 3, 4), torch.randn(2, 4), mask)  # (2, 4), jagged
    """

    def __init__(self, dim: int, hidden: Sequence[int] = (80, 40), act: Activation = "prelu",
                 jagged: bool | None = None):
        super().__init__()
        self.mlp = MLP(4 * dim, hidden, 1, act, key="model.backbone.attention_hidden")
        self.jagged = jagged

    def forward(self, hist: Tensor, target: Tensor, mask: Tensor) -> Tensor:
        if self.use_jagged(mask):
            return self.forward_jagged(hist, target, mask)
        return self.forward_dense(hist, target, mask)

    def use_jagged(self, mask: Tensor) -> bool:
        """Whether :meth:`forward` takes the jagged form for a batch with this ``mask``."""
        if self.jagged is False or _uses_batch_statistics(self.mlp):
            return False
        if self.jagged:
            return True
        if torch.compiler.is_compiling() or mask.numel() == 0:
            return False
        return int(mask.sum()) < JAGGED_BELOW * mask.numel()

    def forward_dense(self, hist: Tensor, target: Tensor, mask: Tensor) -> Tensor:
        """The pooled history, scoring every position and zeroing the padded ones."""
        t = target.unsqueeze(1).expand_as(hist)
        w = self.mlp(torch.cat([hist, t, hist - t, hist * t], -1)).squeeze(-1)
        w = w * mask.to(w.dtype)
        return torch.einsum("bl,bld->bd", w, hist)

    def forward_jagged(self, hist: Tensor, target: Tensor, mask: Tensor) -> Tensor:
        """The pooled history, scoring only the valid positions."""
        length = hist.size(1)
        flat = mask.reshape(-1).nonzero().squeeze(1)  # valid positions, sample by sample
        sample = torch.div(flat, length, rounding_mode="floor")
        return self.pool(hist.reshape(-1, hist.size(-1)).index_select(0, flat), target, sample)

    def pool(self, h: Tensor, target: Tensor, sample: Tensor) -> Tensor:
        """The pooled history from the valid positions' vectors ``h`` :math:`(N, D)` and the
        sample of each :math:`(N,)` (the jagged form's core)."""
        t = target.index_select(0, sample)
        w = self.mlp(torch.cat([h, t, h - t, h * t], -1))
        return h.new_zeros(target.shape).index_add(0, sample, w * h)


def sum_pool(hist: Tensor, mask: Tensor) -> Tensor:
    """Sum the history vectors ``(B, L, D)`` over the positions where ``mask`` ``(B, L)`` is true.

    Example::

        sum_pool(torch.ones(1, 3, 2), torch.tensor([[True, True, False]]))  # [[2., 2.]]
    """
    return (hist * mask.unsqueeze(-1).to(hist.dtype)).sum(1)


class FactorizationMachine(nn.Module):
    r"""The second-order term of a factorization machine over ``F`` fields of width ``d``.

    .. math::
        \sum_{k < k'} \langle \mathbf{f}_k, \mathbf{f}_{k'} \rangle
        = \tfrac{1}{2} \textstyle\sum_{c} \big[(\sum_k f_{kc})^2 - \sum_k f_{kc}^2\big]

    Parameter-free (the fields are embeddings).

    Shapes:
        - **input:** ``fields`` :math:`(B, F, d)`
        - **output:** :math:`(B,)`

    Example::

        FactorizationMachine()(torch.tensor([[[1.0, 2.0], [3.0, 4.0]]]))  # [11.]
    """

    def forward(self, fields: Tensor) -> Tensor:
        return 0.5 * (fields.sum(1).pow(2) - fields.pow(2).sum(1)).sum(-1)


class InnerProduct(nn.Module):
    r"""PNN's inner product of two vectors, kept as a feature: :math:`\mathbf{u}^\top\mathbf{v}`.

    Shapes:
        - **input:** ``u`` :math:`(B, d)`, ``v`` :math:`(B, d)`
        - **output:** :math:`(B, 1)`

    Example::

        InnerProduct()(torch.tensor([[1.0, 2.0]]), torch.tensor([[3.0, 4.0]]))  # [[11.]]
    """

    def forward(self, u: Tensor, v: Tensor) -> Tensor:
        return (u * v).sum(-1, keepdim=True)


class OuterProduct(nn.Module):
    r"""PNN's outer product of two vectors, flattened: :math:`\operatorname{vec}(\mathbf{u}
    \mathbf{v}^\top)`, row-major (entry ``i * d + j`` is :math:`u_i v_j`).

    Shapes:
        - **input:** ``u`` :math:`(B, d)`, ``v`` :math:`(B, d)`
        - **output:** :math:`(B, d^2)`

    Example::

        OuterProduct()(torch.tensor([[1.0, 2.0]]), torch.tensor([[3.0, 4.0]]))  # [[3, 4, 6, 8]]
    """

    def forward(self, u: Tensor, v: Tensor) -> Tensor:
        return torch.einsum("bi,bj->bij", u, v).flatten(1)

"""README's "Add a backbone" recipe, followed from outside the package.

A backbone is a :class:`~resemb_pl.nn.models.CTRBackbone` subclass (its ``score``), one backbone
file naming it, and nothing else: it composes with every file of ``configs/embedding/`` through
the real command.
"""

import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from resemb_pl.checkpoint import load_checkpoint
from resemb_pl.cli import main
from resemb_pl.nn.models import CTRBackbone

ROOT = Path(__file__).resolve().parents[1]


class ToyBackbone(CTRBackbone):
    """Logit = a linear map of the summed history and the target (zero at the start)."""

    def __init__(self, embedding, num_categories: int, scale: float = 1.0) -> None:
        super().__init__(embedding, num_categories)
        self.scale = scale
        self.out = nn.Linear(2 * self.dim, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def score(self, hist, target, mask):
        pooled = (hist * mask.unsqueeze(-1)).sum(1)
        return self.scale * self.out(torch.cat([pooled, target], -1)).squeeze(-1)


def _backbone_file(tmp_path: Path) -> Path:
    """``configs/model/toy.yaml`` of the recipe, naming the class by its module."""
    path = tmp_path / "toy.yaml"
    path.write_text("embedding_dim: 8\n"
                    f"backbone:\n  class_path: {ToyBackbone.__module__}.ToyBackbone\n"
                    "  init_args: {scale: 2.0}\n"
                    "optimizer:\n  class_path: torch.optim.Adam\n  init_args: {lr: 0.01}\n")
    return path


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("embedding", ["plain_mba", "att"])
def test_a_toy_backbone_trains_a_step_with_a_composed_embedding(embedding, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["resemb-pl"])
    main(["fit", "--config", str(ROOT / "configs" / "default.yaml"),
          "--data", str(ROOT / "configs" / "data" / "synthetic_tiny.yaml"),
          "--model", str(_backbone_file(tmp_path)),
          "--model.embedding", str(ROOT / "configs" / "embedding" / f"{embedding}.yaml"),
          "--data.cache_dir", str(tmp_path / "cache"), "--trainer.max_steps=1",
          "--trainer.limit_val_batches=1", "--trainer.enable_progress_bar=false"])

    (path,) = (tmp_path / "runs").rglob("last.ckpt")
    checkpoint = load_checkpoint(path, required=("hyper_parameters",))
    assert checkpoint["global_step"] == 1
    hparams = checkpoint["hyper_parameters"]
    assert hparams["backbone"]["class_path"] == f"{ToyBackbone.__module__}.ToyBackbone"
    assert hparams["backbone"]["init_args"]["scale"] == 2.0
    expected = {"plain_mba": "resemb_pl.nn.PlainEmbedding", "att": "resemb_pl.nn.ResEmbedding"}
    assert hparams["embedding"]["class_path"] == expected[embedding]
    # The toy's own layer was built (8-dim items and categories) and moved off zero by the step.
    weight = checkpoint["state_dict"]["model.out.weight"]
    assert weight.shape == (1, 2 * 2 * 8)
    assert weight.abs().sum() > 0

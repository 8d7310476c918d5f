"""Take a trained model out of Lightning: item embeddings, nearest items, a portable model.

From a ``CTRTask`` checkpoint alone:

- ``embeddings``: the final item table ``E = W·Cb + R`` and, separately, the central part
  ``W·Cb`` and the residual ``R``, with the original item ids and categories, as
  ``items.parquet`` and ``embedding.npy`` / ``central.npy`` / ``residual.npy`` (row ``r`` is
  dense item ``r + 1``), plus a TensorBoard projector folder ``projector/``. A plain embedding
  has no central part: ``central`` is zero and ``residual`` is its table.
- ``nearest``: the items closest to an item by cosine similarity of ``E``.
- ``model``: the backbone with the item embedding frozen into a table, saved with
  ``torch.export`` (``model.pt2``) and, where ``onnxscript`` is installed, as ``model.onnx``.
  It maps dense ids ``hist (B, L)`` (0 = padding) and ``target (B,)`` to probabilities ``(B,)``.

Command line (``resemb-pl-export`` is ``python -m resemb_pl.export``)::

    resemb-pl-export embeddings --ckpt_path model.ckpt --out export/
    resemb-pl-export nearest --source export/ --item_id 123 456 --k 10
    resemb-pl-export model --ckpt_path model.ckpt --out export/
"""

from __future__ import annotations

import copy
import importlib.util
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from resemb_pl.atomic import atomic_folder
from resemb_pl.boundary import ArgumentParser, command_boundary
from resemb_pl.checkpoint import load_checkpoint
from resemb_pl.errors import CheckpointError, DataError, require
from resemb_pl.nn.embedding import ItemEmbedding
from resemb_pl.task import CTRTask

EMBEDDING_FILES = ("embedding", "central", "residual")
#: What ``embeddings`` writes in its folder; an export replaces exactly these and keeps the rest.
EMBEDDING_EXPORT = ("items.parquet", *(f"{name}.npy" for name in EMBEDDING_FILES), "projector")

#: ``resemb-pl-export --help``: what the command is for, then each subcommand's description.
DESCRIPTION = (
    "Take a trained res-embedding CTR model out of Lightning, from its checkpoint alone: its item "
    "embeddings, the items nearest an item, a portable model. `resemb-pl-export COMMAND --help` "
    "lists a command's options."
)
COMMANDS = {
    "embeddings": "Write the item table E = W·Cb + R, its central part W·Cb and its residual R, "
                  "with the original item ids and categories: items.parquet, embedding.npy, "
                  "central.npy, residual.npy (row r is dense item r + 1) and a TensorBoard "
                  "projector folder. A plain embedding has a zero central part.",
    "nearest": "Print the items closest to items, by cosine similarity of their final "
               "embeddings E, from a checkpoint or a folder written by `embeddings`.",
    "model": "Write the backbone with the item embedding frozen into a table, for inference "
             "without Lightning or PyG: model.pt2 (torch.export) and, with onnxscript "
             "installed, model.onnx. It maps dense ids hist (B, L) (0 = padding) and target (B,) "
             "to probabilities (B,).",
}


def load_task(ckpt_path: str | Path) -> CTRTask:
    """Load a ``CTRTask`` on the CPU, in eval mode, from its checkpoint alone."""
    path = Path(ckpt_path)
    ckpt = load_checkpoint(path, required=("hyper_parameters",))
    # Build from the plain hyperparameters (the CLI's jsonargparse instantiator is not needed).
    hparams = {k: v for k, v in ckpt["hyper_parameters"].items() if k != "_instantiator"}
    try:
        task = CTRTask(**hparams)
    except (RuntimeError, KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: cannot rebuild the model ({err})") from None
    task.on_load_checkpoint(ckpt)  # takes the catalogue (converting a version-1 checkpoint)
    try:
        task.load_state_dict(ckpt["state_dict"])
    except (RuntimeError, KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: cannot rebuild the model ({err})") from None
    if task.catalogue is None:
        raise CheckpointError(
            f"{path}: the checkpoint has no id vocabulary; retrain it with this version"
        )
    return task.eval()


@dataclass
class ItemTable:
    """Item embeddings with their original ids; row ``r`` is dense item ``r + 1``.

    Attributes:
        item_id: Original item ids ``(H,)``.
        category: Category name of each item (``""`` when unknown) ``(H,)``.
        embedding: The final embedding ``E = W·Cb + R`` ``(H, D)``.
        central: The central part ``W·Cb`` (zero for a plain embedding) ``(H, D)``.
        residual: The residual ``R`` (the whole table for a plain embedding) ``(H, D)``.
    """

    item_id: np.ndarray
    category: np.ndarray
    embedding: np.ndarray
    central: np.ndarray
    residual: np.ndarray

    def __len__(self) -> int:
        return len(self.item_id)

    def frame(self) -> pd.DataFrame:
        """One row per item: ``item_id``, ``category``, ``embedding``, ``central``, ``residual``."""
        return pd.DataFrame(
            {"item_id": self.item_id, "category": self.category}
            | {name: list(getattr(self, name)) for name in EMBEDDING_FILES}
        )

    def save(self, out: str | Path, projector_items: int = 10000) -> Path:
        """Write ``items.parquet``, the ``.npy`` tables and the projector folder under ``out``.

        The export is replaced as a whole or not at all: it is written in a folder beside
        ``out`` and swapped in (:func:`~resemb_pl.atomic.atomic_folder`), so a failure (a full
        disk) leaves the earlier export as it was. Other files in ``out``, such as the ``model``
        export's, are kept.

        Args:
            out: The folder to write.
            projector_items: The first items (by dense id) shown in the projector; 0 for none.
        """
        out = Path(out)
        with atomic_folder(out, keep=lambda name: name not in EMBEDDING_EXPORT) as tmp:
            self._write(tmp, projector_items)
        return out

    def _write(self, out: Path, projector_items: int) -> None:
        self.frame().to_parquet(out / "items.parquet", index=False)
        for name in EMBEDDING_FILES:
            np.save(out / f"{name}.npy", getattr(self, name))
        if projector_items:
            from torch.utils.tensorboard import SummaryWriter

            n = min(projector_items, len(self))
            with SummaryWriter(out / "projector") as writer:
                writer.add_embedding(
                    torch.from_numpy(self.embedding[:n]),
                    metadata=[[i, c] for i, c in zip(self.item_id[:n], self.category[:n],
                                                      strict=True)],
                    metadata_header=["item_id", "category"],
                    tag="item_embedding",
                )

    @classmethod
    def load(cls, out: str | Path) -> ItemTable:
        """Read a folder written by :meth:`save`."""
        out = Path(out)
        file = out / "items.parquet"
        if not file.is_file():
            raise DataError(f"{file}: no such file; write it with `export embeddings`")
        frame = pd.read_parquet(file, columns=["item_id", "category"])
        tables = {name: np.load(out / f"{name}.npy") for name in EMBEDDING_FILES}
        return cls(frame["item_id"].to_numpy(str), frame["category"].to_numpy(str), **tables)


@torch.no_grad()
def item_table(task: CTRTask) -> ItemTable:
    """The item table of a trained task: ``E``, its central and residual parts, ids, categories."""
    emb = task.embedding
    ids = torch.arange(1, emb.num_items + 1, device=task.device)
    if hasattr(emb, "central_table") and hasattr(emb, "residual"):
        central = emb.central_table()[1:]
        residual = emb.residual(ids)
    else:
        residual = emb(ids)
        central = torch.zeros_like(residual)
    catalogue = task.catalogue
    names = np.asarray([""] + list(catalogue.category_vocab), dtype=str)
    category = np.asarray(catalogue.item_category[1:])
    return ItemTable(
        item_id=np.asarray(catalogue.item_vocab, dtype=str),
        category=names[np.where(category < len(names), category, 0)],
        embedding=(central + residual).float().cpu().numpy(),
        central=central.float().cpu().numpy(),
        residual=residual.float().cpu().numpy(),
    )


def nearest(source: ItemTable | str | Path, item_id: str | int, k: int = 10) -> pd.DataFrame:
    """The ``k`` items closest to ``item_id`` by cosine similarity of the final embedding.

    Args:
        source: An :class:`ItemTable`, a checkpoint file or a folder written by ``embeddings``.
        item_id: An original item id.
        k: How many neighbours (the item itself excluded), at least 1.

    Returns:
        ``item_id``, ``category`` and ``cosine`` of the neighbours, closest first.
    """
    require("k", k, 1)
    if not isinstance(source, ItemTable):
        path = Path(source)
        source = ItemTable.load(path) if path.is_dir() else item_table(load_task(path))
    rows = np.flatnonzero(source.item_id == str(item_id))
    if not len(rows):
        raise DataError(f"item_id {item_id!r}: not in the model's vocabulary")
    e = torch.from_numpy(source.embedding)
    cosine = torch.nn.functional.cosine_similarity(e, e[rows[0]].unsqueeze(0), dim=1)
    cosine[rows[0]] = -torch.inf
    top = torch.topk(cosine, min(k, len(source) - 1)).indices.numpy()
    return pd.DataFrame(
        {"item_id": source.item_id[top], "category": source.category[top],
         "cosine": cosine[top].numpy()}
    )


class FrozenItemEmbedding(ItemEmbedding):
    """A fixed item table: the final embedding of a trained model, as a buffer.

    Args:
        table: ``(num_items + 1, embedding_dim)``, row 0 the padding.
    """

    def __init__(self, table: Tensor) -> None:
        super().__init__()
        self.num_items, self.embedding_dim = table.size(0) - 1, table.size(1)
        self.register_buffer("table", table)

    def forward(self, ids: Tensor) -> Tensor:
        return nn.functional.embedding(ids, self.table)


class PortableCTR(nn.Module):
    """Table lookup plus backbone: CTR probabilities from dense item ids, without the graph.

    Args:
        task: A trained task; its item embedding is computed once and frozen.

    Shapes:
        - **input:** ``hist`` :math:`(B, L)` (0 = padding), ``target`` :math:`(B,)`
        - **output:** probabilities :math:`(B,)`
    """

    def __init__(self, task: CTRTask) -> None:
        super().__init__()
        with torch.no_grad():
            table = task.embedding.item_table().detach().clone()
        embedding = task.model.embedding
        task.model.embedding = None  # copy the backbone without the graph
        try:
            self.backbone = copy.deepcopy(task.model)
        finally:
            task.model.embedding = embedding
        self.backbone.embedding = FrozenItemEmbedding(table)
        category = torch.tensor(np.asarray(task.catalogue.item_category), dtype=torch.long)
        self.register_buffer("item_category", category)
        self.eval()

    def forward(self, hist: Tensor, target: Tensor) -> Tensor:
        cat = self.item_category
        return torch.sigmoid(self.backbone(hist, cat[hist], target, cat[target]))


def export_model(task: CTRTask, out: str | Path, onnx: bool = True) -> list[Path]:
    """Save the portable model with ``torch.export`` (``model.pt2``) and, if possible, ONNX.

    The batch size and the history length are dynamic. The files are written beside ``out``
    and swapped in together (:func:`~resemb_pl.atomic.atomic_folder`): a failure leaves the
    earlier ones as they were, and other files in ``out`` are kept.

    Returns:
        The files written.
    """
    out = Path(out)
    model = PortableCTR(task.cpu())
    args = (torch.tensor([[1, 2, 0], [3, 0, 0]]).clamp(max=task.embedding.num_items),
            torch.tensor([1, 2]).clamp(max=task.embedding.num_items))
    batch, length = torch.export.Dim("batch", min=1), torch.export.Dim("length", min=1)
    shapes = {"hist": {0: batch, 1: length}, "target": {0: batch}}
    program = torch.export.export(model, args, dynamic_shapes=shapes)
    names = ["model.pt2"]
    mine = lambda name: name == "model.pt2" or name.startswith("model.onnx")  # noqa: E731
    with atomic_folder(out, keep=lambda name: not mine(name)) as tmp:
        # Serialised in memory first: torch's archive writer, failing on a full disk, aborts
        # the process from its destructor (std::terminate) instead of raising.
        buffer = io.BytesIO()
        torch.export.save(program, buffer)
        with open(tmp / "model.pt2", "wb") as fh:
            fh.write(buffer.getbuffer())
        if onnx and importlib.util.find_spec("onnxscript") is not None:
            names.append("model.onnx")
            torch.onnx.export(model, args, tmp / "model.onnx", dynamo=True,
                              dynamic_shapes=shapes, input_names=["hist", "target"],
                              output_names=["probability"])
    return [out / name for name in names]


@command_boundary("resemb-pl-export")
def main(argv: list[str] | None = None) -> None:
    """Entry point of ``resemb-pl-export embeddings|nearest|model``.

    A bad argument, checkpoint or path ends in one line on stderr and exit code 2.
    """
    parser = ArgumentParser(prog="resemb-pl-export", description=DESCRIPTION)
    commands = parser.add_subparsers(dest="command", required=True)
    emb = commands.add_parser("embeddings", help="write the item tables and the projector",
                              description=COMMANDS["embeddings"])
    emb.add_argument("--ckpt_path", required=True, help="the checkpoint of a trained model")
    emb.add_argument("--out", required=True, help="the folder to write")
    emb.add_argument("--projector_items", type=int, default=10000,
                     help="the first items shown in the projector; 0 for none (default: 10000)")
    near = commands.add_parser("nearest", help="the items closest to some items (cosine)",
                               description=COMMANDS["nearest"])
    near.add_argument("--source", required=True, help="a checkpoint or an `embeddings` folder")
    near.add_argument("--item_id", required=True, nargs="+", help="original item ids")
    near.add_argument("--k", type=int, default=10,
                      help="neighbours per item, the item excluded (default: 10)")
    mod = commands.add_parser("model", help="write model.pt2 (torch.export) and model.onnx",
                              description=COMMANDS["model"])
    mod.add_argument("--ckpt_path", required=True, help="the checkpoint of a trained model")
    mod.add_argument("--out", required=True, help="the folder to write")
    mod.add_argument("--no_onnx", action="store_true", help="write model.pt2 only")
    args = parser.parse_args(argv)
    if args.command == "embeddings":
        require("--projector_items", args.projector_items, 0)
    elif args.command == "nearest":
        require("--k", args.k, 1)
    if args.command == "embeddings":
        table = item_table(load_task(args.ckpt_path))
        out = table.save(args.out, args.projector_items)
        print(f"wrote {len(table)} items to {out}")
    elif args.command == "nearest":
        source = Path(args.source)
        table = ItemTable.load(source) if source.is_dir() else item_table(load_task(source))
        for item in args.item_id:
            print(f"# nearest to {item}")
            print(nearest(table, item, args.k).to_string(index=False))
    else:
        for file in export_model(load_task(args.ckpt_path), args.out, not args.no_onnx):
            print(f"wrote {file}")


if __name__ == "__main__":
    main()

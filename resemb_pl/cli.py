"""The ``resemb-pl`` command: LightningCLI with the model and data linked."""

from __future__ import annotations

import sys

from lightning.pytorch.cli import LightningCLI

from resemb_pl.data.datamodule import CTRDataModule
from resemb_pl.errors import ResembError
from resemb_pl.task import CTRTask


class ResembCLI(LightningCLI):
    """LightningCLI whose model learns ``num_items`` and ``num_categories`` from the data."""

    def add_arguments_to_parser(self, parser) -> None:
        parser.link_arguments("data.num_items", "model.num_items", apply_on="instantiate")
        parser.link_arguments("data.num_categories", "model.num_categories", apply_on="instantiate")


def main(args: list[str] | None = None) -> None:
    """Entry point of ``resemb-pl fit|validate|test|predict``."""
    try:
        ResembCLI(
            CTRTask,
            CTRDataModule,
            auto_configure_optimizers=False,
            save_config_kwargs={"overwrite": True},
            args=args,
        )
    except ResembError as err:
        print(f"resemb-pl: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()

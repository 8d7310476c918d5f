"""The ``resemb-pl`` command: LightningCLI with the model and data linked."""

from __future__ import annotations

import logging
import re
import sys
from pathlib import Path
from typing import Any

from jsonargparse import ArgumentError
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities.exceptions import MisconfigurationException, SIGTERMException

from resemb_pl import __version__
from resemb_pl.boundary import command_boundary, raised_in_package, raising_class
from resemb_pl.callbacks import ProvenanceSaveConfig
from resemb_pl.checkpoint import (
    PreemptionCheckpoint,
    SafeCheckpointIO,
    check_checkpoint,
    find_last_checkpoint,
    load_checkpoint,
)
from resemb_pl.cli_help import CLASS_HELP, CompactHelpFormatter
from resemb_pl.data.catalogue import Catalogue
from resemb_pl.data.datamodule import CTRDataModule
from resemb_pl.errors import CheckpointError, ConfigError, ResembError
from resemb_pl.predict import ParquetPredictionWriter
from resemb_pl.task import CTRTask

DESCRIPTION = (
    "Res-embedding for deep CTR prediction: train and evaluate a CTR model (a backbone with a "
    "plain or res-embedding item table) on click data, and score requests with it. Options come "
    "from YAML files (--config, --model, --data, --trainer) and the command line; "
    "`resemb-pl SUBCOMMAND --help` lists them. `resemb-pl compare --help`: train several model "
    "configs on one data config over seeds and tabulate their test AUC and GAUC."
)

#: The description (first) and the one-line help of each subcommand.
SUBCOMMANDS = {
    "fit": ("Train a CTR model on the training split, validating on the validation split; "
            "writes TensorBoard logs and checkpoints. --ckpt_path last resumes the run.",
            "Train a model (and validate it each epoch)."),
    "validate": ("AUC, GAUC and logloss of a model on the validation split (with --ckpt_path: "
                 "of a trained checkpoint).",
                 "Score the validation split: AUC, GAUC, logloss."),
    "test": ("AUC, GAUC and logloss of a model on the test split (with --ckpt_path: of a trained "
             "checkpoint).",
             "Score the test split: AUC, GAUC, logloss."),
    "predict": ("CTR probabilities of a trained checkpoint (--ckpt_path) for a requests file "
                "(--data.path; original item ids), or for the test split of a training config, "
                "written to --data.output (parquet).",
                "Write the CTR probabilities of requests to parquet."),
}

#: The title of the group of ``--ckpt_path`` in each subcommand.
CKPT_GROUP = {
    "fit": "Resume a run",
    "validate": "The weights to score",
    "test": "The weights to score",
    "predict": "The weights to score with",
}


class CLIHelpFormatter(CompactHelpFormatter):
    """The project's options (``--model.*``, ``--data.*``) in full; Lightning's, briefly."""

    full_help_keys = ("model.", "data.")


class ResembCLI(LightningCLI):
    """LightningCLI whose model learns ``num_items`` and ``num_categories`` from the data."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Every run's config.yaml names the code that wrote it (version, git commit).
        kwargs.setdefault("save_config_callback", ProvenanceSaveConfig)
        super().__init__(*args, **kwargs)

    def init_parser(self, **kwargs: Any):
        kwargs.setdefault("formatter_class", CLIHelpFormatter)
        return super().init_parser(**kwargs)

    def _setup_parser_kwargs(
        self, parser_kwargs: dict[str, Any]
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        main_kwargs, subparser_kwargs = super()._setup_parser_kwargs(parser_kwargs)
        main_kwargs.setdefault("description", DESCRIPTION)
        for name, (description, _) in SUBCOMMANDS.items():
            subparser_kwargs[name] = {"description": f"{description} {CLASS_HELP}",
                                      **subparser_kwargs.get(name, {})}
        return main_kwargs, subparser_kwargs

    def _prepare_subcommand_parser(self, klass: type, subcommand: str, **kwargs: Any):
        parser = super()._prepare_subcommand_parser(klass, subcommand, **kwargs)
        for group in parser._action_groups:  # titled by the Trainer method's docstring
            if subcommand in CKPT_GROUP and any(a.dest == "ckpt_path"
                                                for a in group._group_actions):
                group.title = CKPT_GROUP[subcommand]
        return parser

    def add_arguments_to_parser(self, parser) -> None:
        # The data module is instantiated first; its counts become the model's. Requests are
        # first handed the catalogue of --ckpt_path (see before_instantiate_classes).
        parser.link_arguments("data", "model.num_items", apply_on="instantiate",
                              compute_fn=lambda dm: self._with_catalogue(dm).num_items)
        parser.link_arguments("data", "model.num_categories", apply_on="instantiate",
                              compute_fn=lambda dm: self._with_catalogue(dm).num_categories)

    def _with_catalogue(self, datamodule: CTRDataModule) -> CTRDataModule:
        """Hand ``datamodule`` the catalogue of the checkpoint that scores requests, once."""
        catalogue, self._requests_catalogue = getattr(self, "_requests_catalogue", None), None
        if catalogue is not None:
            datamodule.use_catalogue(catalogue)
        return datamodule

    def setup_parser(
        self, add_subcommands: bool, main_kwargs: dict[str, Any], subparser_kwargs: dict[str, Any]
    ) -> None:
        super().setup_parser(add_subcommands, main_kwargs, subparser_kwargs)
        self.parser.add_argument("--version", action="version", version=f"resemb-pl {__version__}",
                                 help="Print the version and exit.")
        if add_subcommands:
            for choice in self.parser._subcommands_action._choices_actions:
                if choice.dest in SUBCOMMANDS:  # Lightning uses the Trainer methods' docstrings
                    choice.help = SUBCOMMANDS[choice.dest][1]
            # `predict` scores a requests file unless a config names another source.
            self._subcommand_parsers["predict"].set_defaults({"data.source": "requests"})

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        if config.data.source != "requests":
            return
        if self.subcommand != "predict":
            raise ConfigError(
                f"data.source: 'requests' has no labels to {self.subcommand} on; use predict"
            )
        if not config.ckpt_path:
            raise ConfigError("predict: --ckpt_path is required to score a requests file")
        # The model's catalogue reads the requests: the CLI hands it to the data module.
        path = config.ckpt_path
        self._requests_catalogue = Catalogue.from_checkpoint(load_checkpoint(path), str(path))

    def parse_arguments(self, parser, args) -> None:
        try:
            super().parse_arguments(parser, args)
        except (ValueError, TypeError) as err:
            # jsonargparse reports some invalid values as plain errors, not ArgumentError.
            raise ConfigError(_one_line(err)) from None

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except ResembError:
            raise
        except (ValueError, TypeError) as err:
            if str(err).startswith(_LINK_ERROR) and err.__cause__ is not None:
                raise err.__cause__ from None  # the data module's own error, as it was raised
            # A constructor of a library or a user's class refusing its arguments (or a config
            # that cannot be saved) is a configuration error; one raised by our own code is a bug
            # and keeps its traceback (our checks raise ConfigError).
            if raised_in_package(err):
                raise
            where = raising_class(err)
            raise ConfigError(f"{where}: {_one_line(err)}" if where else _one_line(err)) from None

    def _parse_ckpt_path(self) -> None:
        # Lightning reads the model's hyperparameters from --ckpt_path here; check the file
        # first (safely, weights only), and name a checkpoint of another model in one line.
        subcommand = self.config.get("subcommand")
        path = self.config[subcommand].get("ckpt_path") if subcommand else None
        special = path in ("last", "best", "hpc") or str(path).startswith("registry")
        checkpoint = None
        if path and (not special or Path(path).is_file()):
            checkpoint = load_checkpoint(path)
        try:
            super()._parse_ckpt_path()
        except ArgumentError as err:
            message = " ".join(str(err).split())
            raise CheckpointError(f"{path}: written by another model: {message}") from None
        if checkpoint is not None:
            # What the Trainer reads besides the weights (to resume, the training state).
            resume = ("optimizer_states", "lr_schedulers") if subcommand == "fit" else ()
            check_checkpoint(checkpoint, path, ("pytorch-lightning_version", *resume))

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        try:
            trainer = super().instantiate_trainer(**kwargs)
        except (MisconfigurationException, ValueError, TypeError) as err:
            if isinstance(err, ResembError) or raised_in_package(err):
                raise
            settings = self._get(self.config_init, "trainer", default={})
            raise ConfigError(_trainer_error(err, {**settings, **kwargs})) from None
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
            trainer.strategy.checkpoint_io = SafeCheckpointIO()
        return trainer

    def before_fit(self) -> None:
        config = self.config_init[self.subcommand]
        if config.get("ckpt_path") == "last":
            # Lightning would only look in this run's new logger version.
            config["ckpt_path"] = find_last_checkpoint(self.trainer) or "last"

    def before_predict(self) -> None:
        if not any(isinstance(c, BasePredictionWriter) for c in self.trainer.callbacks):
            self.trainer.callbacks.append(ParquetPredictionWriter(self.datamodule.hparams.output))


#: How jsonargparse wraps an error raised while the data's counts are linked to the model.
_LINK_ERROR = "Call to compute_fn of link"


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a message is emitted."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def _show_package_logs() -> None:
    """Print the package's info messages (cache reuse, dropped users, ...) on stderr."""
    logger = logging.getLogger("resemb_pl")
    if not logger.handlers:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("resemb_pl: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


def _one_line(err: Exception) -> str:
    """The first line of an error, with the first cause jsonargparse lists under ``Errors:``."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    if not lines:
        return type(err).__name__
    causes = [line.lstrip("- ") for line in lines[1:] if line.startswith("- ")]
    return lines[0] + (f" ({causes[0]})" if causes else "")


def _trainer_error(err: Exception, settings: dict[str, Any]) -> str:
    """``trainer.<key>: <why>`` for a Trainer refusing its settings.

    Lightning's messages name the argument (``max_epochs``) except those about the hardware
    (``No supported gpu backend found!``): these name the accelerator and devices set.
    """
    message = _one_line(err)
    named = [k for k in settings if re.search(rf"\b{re.escape(k)}\b", message)]
    if named:
        return f"trainer.{named[0]}: {message}"
    hardware = ", ".join(f"trainer.{k}={settings.get(k)!r}" for k in ("accelerator", "devices"))
    return f"{hardware}: {message}"


@command_boundary("resemb-pl")
def main(args: list[str] | None = None) -> None:
    """Entry point of ``resemb-pl fit|validate|test|predict`` and ``resemb-pl compare``.

    Bad data, configuration keys, arguments and checkpoints, paths the system refuses and
    Trainer settings that cannot work end with one line on stderr and exit code 2
    (:class:`~resemb_pl.boundary.command_boundary`). SIGTERM or SIGINT (Ctrl-C) during ``fit``
    saves a resumable ``last.ckpt`` at the next safe point, says so in one line and exits with
    143 or 130 (:class:`~resemb_pl.checkpoint.PreemptionCheckpoint`);
    ``resemb-pl fit ... --ckpt_path last`` resumes it.
    """
    argv = sys.argv[1:] if args is None else args
    if argv and argv[0] == "compare":  # not a Trainer method: its own command, same boundary
        from resemb_pl.compare import main as compare_main

        return compare_main(argv[1:])
    # Parsing errors raise instead of printing the usage; each parser gets its own dict, which
    # LightningCLI fills in.
    _show_package_logs()
    no_exit = {sub: {"exit_on_error": False} for sub in ResembCLI.subcommands()}
    preemption = PreemptionCheckpoint()
    preemption.catch_signals()  # SIGTERM and SIGINT, until release_signals()
    try:
        ResembCLI(
            CTRTask,
            CTRDataModule,
            auto_configure_optimizers=False,
            save_config_kwargs={"overwrite": True},
            trainer_defaults={"callbacks": [preemption]},
            parser_kwargs={"exit_on_error": False, **no_exit},
            args=args,
        )
        preemption.raise_if_signalled()  # a signal that came as fit was ending
    except SIGTERMException:
        if preemption.is_global_zero:  # one line for the whole run
            print(f"resemb-pl: {preemption.summary()}", file=sys.stderr, flush=True)
        raise SystemExit(preemption.exit_code) from None
    finally:
        preemption.release_signals()


if __name__ == "__main__":
    main()

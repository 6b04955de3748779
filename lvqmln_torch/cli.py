"""The ``lvqmln`` command line: LightningCLI over [`LVQMLN`][lvqmln_torch.lightning.model.LVQMLN] with any
``LightningDataModule`` (the built-in and CSV ones by their short names).

Examples::

    lvqmln fit --config configs/iris_mlp.yaml
    lvqmln fit --config configs/iris_mlp.yaml --config configs/trainer/bf16.yaml
    lvqmln fit --config configs/iris_mlp.yaml --data CsvDataModule --data.path my.csv \\
        --data.target label
    lvqmln fit --config configs/custom_datamodule.yaml   # your DataModule and backbone
    lvqmln test --config configs/iris_mlp.yaml --ckpt_path path/to/last.ckpt
    lvqmln predict --config configs/iris_mlp.yaml --ckpt_path path/to/last.ckpt \\
        --predict_output predictions.csv --predict_latent true
    lvqmln explain path/to/last.ckpt data.csv --output explained
    lvqmln certify path/to/last.ckpt data.csv --output certified --eps 0.5 1.0
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lightning.pytorch import LightningDataModule
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities import rank_zero_only

from .data.builtin import BuiltinDataModule
from .data.csv_datamodule import CsvDataModule, CsvPredictionWriter
from .data.datamodule import ArrayDataModule
from .io.checkpoint import CheckpointError, read_checkpoint
from .lightning import callbacks as _callbacks  # noqa: F401  (short class names for --trainer.callbacks)
from .lightning.model import LVQMLN

__all__ = ["DATAMODULES", "LVQMLNCLI", "main", "run_cli"]

DATAMODULES = (BuiltinDataModule, CsvDataModule)
"""The datamodules selectable by their short names with ``--data``; any other
``LightningDataModule`` subclass is selected by its import path (``class_path``)."""

# Errors a user causes with a bad argument value (unknown data set, missing file or column,
# unknown optimizer, ...): reported as a one-line CLI error instead of a traceback.
_USER_ERRORS = (ValueError, FileNotFoundError)


@rank_zero_only
def _say(message: str) -> None:
    print(message, flush=True)


class LVQMLNCLI(LightningCLI):
    """LightningCLI for LVQMLN.

    Differences from a plain ``LightningCLI(LVQMLN, ...)``:

    - ``--data`` takes any ``LightningDataModule`` subclass by its import path
      (``class_path`` in a config file), and [`BuiltinDataModule`][lvqmln_torch.data.builtin.BuiltinDataModule]
      and [`CsvDataModule`][lvqmln_torch.data.csv_datamodule.CsvDataModule] by their short names. The model's
      ``backbone`` takes ``"mlp"``, ``"cnn"`` or any ``nn.Module`` by ``class_path``.
    - The optimizer and scheduler are the model's own arguments (``--model.optimizer``,
      ``--model.lr``, ``--model.lr_scheduler`` …), not LightningCLI's generic ones.
    - ``predict`` writes a CSV file (``--predict_output``, default
      ``<trainer.default_root_dir>/predictions.csv``) with the predicted labels, the class
      probabilities and, with ``--predict_latent true``, the latent codes.
    - Bad argument values (an unknown data set, a missing CSV file or column) end with a
      one-line error and exit status 2.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("model_class", LVQMLN)
        kwargs.setdefault("datamodule_class", ArrayDataModule)
        kwargs.setdefault("subclass_mode_data", True)
        kwargs.setdefault("auto_configure_optimizers", False)
        # The model logs per epoch only; silence the per-step logging-interval warning.
        kwargs.setdefault("trainer_defaults", {"log_every_n_steps": 1})
        kwargs.setdefault(
            "parser_kwargs",
            {"prog": "lvqmln", "description": "Train, test and apply LVQMLN from YAML configs."},
        )
        super().__init__(*args, **kwargs)

    def add_core_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """Trainer and model as usual; ``data`` any ``LightningDataModule`` (required)."""
        parser.add_lightning_class_args(self.trainer_class, "trainer")
        parser.set_defaults(
            {f"trainer.{k}": v for k, v in self.trainer_defaults.items() if k != "callbacks"}
        )
        parser.add_lightning_class_args(self._model_class, "model")
        # The built-in ones first: bare ``--data.name iris`` / ``--data.path x.csv`` pick them.
        parser.add_subclass_arguments(
            (*DATAMODULES, LightningDataModule), "data", fail_untyped=False, required=True
        )

    def _prepare_subcommand_parser(
        self, klass: type, subcommand: str, **kwargs: Any
    ) -> LightningArgumentParser:
        parser = super()._prepare_subcommand_parser(klass, subcommand, **kwargs)
        if subcommand == "predict":
            parser.add_argument(
                "--predict_output",
                type=str | None,
                default=None,
                help="CSV file for the predictions (default: <trainer.default_root_dir>/"
                "predictions.csv). Columns: prediction, proba_<class>…, latent_<i>….",
            )
            parser.add_argument(
                "--predict_latent",
                type=bool,
                default=False,
                help="Also write the latent codes (latent_0, latent_1, …).",
            )
        return parser

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except _USER_ERRORS as err:
            self.parser.error(self._explain(err))

    def _explain(self, err: Exception) -> str:
        """A one-line message for a failed instantiation. jsonargparse reports a failed
        ``data`` as a mismatch against every datamodule class; re-create the chosen one
        directly to report its own error instead."""
        data = self._get(self.config, "data")
        if data is not None and "class_path" in data and "Union" in str(err):
            module, _, name = str(data.class_path).rpartition(".")
            try:
                data_class = getattr(importlib.import_module(module), name)
                init_args = data.get("init_args")
                data_class(**(init_args.as_dict() if init_args is not None else {}))
            except _USER_ERRORS as inner:
                err = inner
            except ImportError:  # the class cannot be re-created: keep jsonargparse's message
                return f"{type(err).__name__}: {err}"
        return f"{type(err).__name__}: {err}"

    def _parse_ckpt_path(self) -> None:
        # LightningCLI reads the hyperparameters of --ckpt_path while parsing: a damaged or
        # foreign file is a bad argument, reported as such before torch's unpickling error.
        if self.config.get("subcommand"):
            ckpt_path = self.config[self.config.subcommand].get("ckpt_path")
            if ckpt_path and Path(ckpt_path).is_file():
                try:
                    read_checkpoint(ckpt_path)
                except CheckpointError as err:
                    self.parser.error(f"{type(err).__name__}: {err}")
        model = (
            self.config[self.config.subcommand].get("model")
            if self.config.get("subcommand")
            else None
        )
        backbone = model.get("backbone") if model is not None else None
        super()._parse_ckpt_path()
        # A checkpoint of a custom backbone records backbone='custom' (its weights are in the
        # state dict): keep the config's class_path, which builds the module to load them into.
        if backbone is not None and not isinstance(backbone, str):
            self.config[self.config.subcommand].model.backbone = backbone

    def _run_subcommand(self, subcommand: str) -> None:
        # Errors that the data or the configuration raise once running (a class too small
        # for its prototypes, a CNN on flat data, an unfitted model) are one-line errors too.
        try:
            super()._run_subcommand(subcommand)
        except _USER_ERRORS as err:
            self.parser.error(f"{type(err).__name__}: {err}")

    def before_predict(self) -> None:
        output = self._get(self.config_init, "predict_output")
        if output is None:
            output = Path(self.trainer.default_root_dir) / "predictions.csv"
        self._prediction_writer = CsvPredictionWriter(
            output, latent=bool(self._get(self.config_init, "predict_latent"))
        )
        self.trainer.callbacks.append(self._prediction_writer)

    def after_predict(self) -> None:
        if self._prediction_writer.written is not None:
            _say(f"Predictions written to {self._prediction_writer.written}")

    def after_fit(self) -> None:
        callback = self.trainer.checkpoint_callback
        path = getattr(callback, "last_model_path", "") or getattr(callback, "best_model_path", "")
        if path:
            _say(f"Checkpoint written to {path}")


def run_cli(args: Sequence[str] | None = None) -> LVQMLNCLI:
    """Run the ``lvqmln`` command line in-process.

    Args:
        args: command line arguments (default: ``sys.argv[1:]``).

    Returns:
        The CLI object (with ``.trainer``, ``.model``, ``.datamodule``) after the subcommand ran.
    """
    return LVQMLNCLI(args=None if args is None else list(args))


def main(args: Sequence[str] | None = None) -> None:
    """Entry point of the ``lvqmln`` console script (exit status 0 on success, 2 on a bad
    argument). ``lvqmln explain …`` runs [`lvqmln_torch.explain_cli`][lvqmln_torch.explain_cli],
    ``lvqmln certify …`` [`lvqmln_torch.certify_cli`][lvqmln_torch.certify_cli]. The current folder
    is on the import path, as with ``python -m``, so a config's ``class_path`` finds the
    user's own modules there."""
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    argv = sys.argv[1:] if args is None else list(args)
    if argv[:1] == ["explain"]:
        from .explain_cli import main as explain_main

        explain_main(argv[1:])
        return
    if argv[:1] == ["certify"]:
        from .certify_cli import main as certify_main

        certify_main(argv[1:])
        return
    run_cli(argv)


if __name__ == "__main__":
    main()

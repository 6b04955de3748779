"""Export the prediction path of a fitted LVQMLN (backbone → squared distances to the
prototypes → labels and class probabilities) to a ``torch.export`` program (``.pt2``), ONNX
or TorchScript (deprecated by PyTorch since 2.10, kept for older runtimes).

The exported graph takes a batch of inputs ``x`` (``(n, d)`` for an MLP, ``(n, C, H, W)``
for a CNN; any ``n``) and returns ``(labels, probabilities, latent)``:

- ``labels``: ``(n,)`` int64 class indices of the nearest prototypes (first on ties);
  the original labels are ``classes[labels]``, with ``classes`` stored in the file
  (read them with [`load_program`][lvqmln_torch.io.export.load_program], [`read_onnx_classes`][lvqmln_torch.io.export.read_onnx_classes] or
  [`load_torchscript`][lvqmln_torch.io.export.load_torchscript]).
- ``probabilities``: ``(n, k)`` softmax over classes of −(per-class minimum squared distance)
  / T, with the model's calibrated temperature ``T`` (1 unless calibrated) built in.
- ``latent``: ``(n, latent_dim)`` latent codes.

Inputs are expected already preprocessed (standardised) as for the model itself.
"""

from __future__ import annotations

import copy
import json
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from ..core.files import atomic_write
from ..core.head import PrototypeHead

__all__ = [
    "LVQMLNPredictor",
    "export_onnx",
    "export_program",
    "export_torchscript",
    "load_program",
    "load_torchscript",
    "read_onnx_classes",
]

_CLASSES_FILE = "classes.json"
_OUTPUT_NAMES = ["labels", "probabilities", "latent"]
ONNX_MIN_TORCH = "2.6"
"""The oldest torch whose torch.export-based ONNX exporter (``dynamo=True``) export_onnx uses."""


class LVQMLNPredictor(nn.Module):
    """The inference path of a fitted LVQMLN as a self-contained module (a frozen copy of the
    backbone, with any weight parametrisation baked into plain weights, and the prototypes
    and their labels as buffers).

    Args:
        backbone: maps ``x`` to ``(n, latent_dim)``.
        prototypes: ``(P, latent_dim)`` prototypes.
        prototype_labels: ``(P,)`` class indices of the prototypes.
        n_classes: number of classes ``k``.
        temperature: the temperature of the probabilities (a fitted model's
            ``head.temperature``).
    """

    def __init__(
        self,
        backbone: nn.Module,
        prototypes: Tensor,
        prototype_labels: Tensor,
        n_classes: int,
        temperature: float | Tensor = 1.0,
    ) -> None:
        super().__init__()
        self.backbone = _baked(copy.deepcopy(backbone).eval().requires_grad_(False))
        self.register_buffer("prototypes", prototypes.detach().clone())
        self.register_buffer("prototype_labels", prototype_labels.detach().clone().long())
        self.head = PrototypeHead(n_classes).to(self.prototypes.device)
        self.head.temperature.fill_(float(temperature))
        self.n_classes = self.head.n_classes

    @classmethod
    def from_model(cls, model: Any) -> LVQMLNPredictor:
        """Build from a fitted [`LVQMLN`][lvqmln_torch.lightning.model.LVQMLN].

        Raises:
            NotFittedError: if the model is not fitted.
        """
        model.check_fitted()
        return cls(
            model.backbone,
            model.prototypes,
            model.prototype_labels,
            model.head.n_classes,
            model.head.temperature,
        )

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``x`` → ``(labels (n,), probabilities (n, k), latent (n, latent_dim))``."""
        z = self.backbone(x)
        labels, probabilities = self.head(z, self.prototypes, self.prototype_labels)
        return labels, probabilities, z


def _baked(module: nn.Module) -> nn.Module:
    """``module`` (a copy) with every weight parametrisation (the Lipschitz controls:
    spectral normalisation, orthogonal weights) replaced by its current value, in place: the
    exported graph holds plain weights, and exporters need not trace the parametrisation (its
    power iteration, Householder products or FFT). Not ``remove_parametrizations``: a deep
    copy shares its parametrised class with the original, whose property that would delete."""
    for sub in module.modules():
        if parametrize.is_parametrized(sub):
            with torch.no_grad():
                values = {name: getattr(sub, name).clone() for name in sub.parametrizations}
            sub.__class__ = parametrize.type_before_parametrizations(sub)
            del sub.parametrizations
            for name, value in values.items():
                sub.register_parameter(name, nn.Parameter(value, requires_grad=False))
    return module


def _example_input(model: Any, example_input: Any, batch: int = 2) -> Tensor:
    """An input batch for tracing: the one given, else zeros of the model's input shape."""
    dtype = model.prototypes.dtype
    if example_input is not None:
        return torch.as_tensor(example_input).to(device=model.prototypes.device, dtype=dtype)
    hp = model.hparams
    if hp.backbone in ("mlp", "identity"):
        shape = (batch, int(hp.in_features))
    elif hp.backbone == "cnn":
        shape = (batch, *map(int, hp.input_shape))
    else:
        raise ValueError(
            "a custom backbone needs an example_input (a batch of valid inputs) for the export"
        )
    return torch.zeros(shape, dtype=dtype, device=model.prototypes.device)


def _classes_json(model: Any) -> str:
    return json.dumps([c.item() if isinstance(c, np.generic) else c for c in model.classes_])


def export_program(
    model: Any, path: str | os.PathLike | None = None, example_input: Any = None
) -> torch.export.ExportedProgram:
    """Export the prediction path of a fitted LVQMLN with ``torch.export`` (dynamic batch size).

    Args:
        model: a fitted [`LVQMLN`][lvqmln_torch.lightning.model.LVQMLN].
        path: if given, save the program there (atomically, ``torch.export.save``; use the
            ``.pt2`` suffix) with the class labels as the extra file ``classes.json``.
        example_input: a batch of inputs (required for a custom backbone).

    Returns:
        The ``ExportedProgram``; ``program.module()(x) -> (labels, probabilities, latent)``.
    """
    predictor = LVQMLNPredictor.from_model(model)
    x = _example_input(model, example_input)
    program = torch.export.export(
        predictor, (x,), dynamic_shapes={"x": {0: torch.export.Dim("batch")}}
    )
    if path is not None:
        extra = {_CLASSES_FILE: _classes_json(model)}
        atomic_write(path, lambda tmp: torch.export.save(program, tmp, extra_files=extra))
    return program


def load_program(path: str | os.PathLike) -> tuple[nn.Module, list[Any]]:
    """Load a program written by [`export_program`][lvqmln_torch.io.export.export_program].

    Returns:
        ``(module, classes)``: a callable module ``module(x) -> (labels, probabilities,
        latent)`` and the original class labels in index order.
    """
    extra = {_CLASSES_FILE: ""}
    program = torch.export.load(str(path), extra_files=extra)
    return program.module(), json.loads(extra[_CLASSES_FILE])


def export_torchscript(
    model: Any, path: str | os.PathLike | None = None, example_input: Any = None
) -> torch.jit.ScriptModule:
    """Trace the prediction path of a fitted LVQMLN to TorchScript (deprecated by PyTorch
    since 2.10: prefer [`export_program`][lvqmln_torch.io.export.export_program] or [`export_onnx`][lvqmln_torch.io.export.export_onnx] where the runtime allows).

    Args:
        model: a fitted [`LVQMLN`][lvqmln_torch.lightning.model.LVQMLN].
        path: if given, save the module there (atomically) with the class labels
            stored as the extra file ``classes.json``.
        example_input: a batch of inputs to trace with (required for a custom backbone;
            default: zeros of the model's input shape). The batch size stays dynamic.

    Returns:
        The traced module: ``module(x) -> (labels, probabilities, latent)``.
    """
    predictor = LVQMLNPredictor.from_model(model)
    x = _example_input(model, example_input)
    with warnings.catch_warnings():
        # Shape checks inside the backbone become constants of the trace: that is intended.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(predictor, (x,), check_trace=False)
    if path is not None:
        extra = {_CLASSES_FILE: _classes_json(model)}
        atomic_write(path, lambda tmp: torch.jit.save(traced, tmp, _extra_files=extra))
    return traced


def load_torchscript(
    path: str | os.PathLike, map_location: str | torch.device | None = None
) -> tuple[torch.jit.ScriptModule, list[Any]]:
    """Load a module written by [`export_torchscript`][lvqmln_torch.io.export.export_torchscript].

    Returns:
        ``(module, classes)``: the module and the original class labels in index order.
    """
    extra = {_CLASSES_FILE: ""}
    module = torch.jit.load(str(path), map_location=map_location, _extra_files=extra)
    return module, json.loads(extra[_CLASSES_FILE])


def export_onnx(
    model: Any,
    path: str | os.PathLike,
    example_input: Any = None,
    opset_version: int | None = None,
) -> Path:
    """Export the prediction path of a fitted LVQMLN to ONNX with a dynamic batch size.

    Needs torch >= 2.6 (its torch.export-based ONNX exporter) and the ``onnx`` and
    ``onnxscript`` packages (``pip install "lvqmln[export]"``). The class labels are stored
    as the model metadata entry ``classes`` (JSON).

    Args:
        model: a fitted [`LVQMLN`][lvqmln_torch.lightning.model.LVQMLN].
        path: the ``.onnx`` file to write (atomically).
        example_input: a batch of inputs (required for a custom backbone).
        opset_version: ONNX opset (default: the exporter's).

    Returns:
        The path written. Inputs: ``x``; outputs: ``labels``, ``probabilities``, ``latent``.

    Raises:
        RuntimeError: on a torch older than 2.6.
        ImportError: without onnx or onnxscript.
    """
    if torch.__version__ < ONNX_MIN_TORCH:  # TorchVersion compares with version strings
        raise RuntimeError(
            f"ONNX export needs torch >= {ONNX_MIN_TORCH} (its torch.export-based exporter, "
            f"torch.onnx.export(dynamo=True)); this is torch {torch.__version__}. Upgrade "
            "torch, or export with export_program (torch.export) or TorchScript instead"
        )
    try:
        import onnx
        import onnxscript  # noqa: F401  (the exporter needs it)
    except ImportError as err:
        raise ImportError(
            'ONNX export needs the onnx and onnxscript packages: pip install "lvqmln[export]"'
        ) from err
    predictor = LVQMLNPredictor.from_model(model).cpu()
    x = _example_input(model, example_input).cpu()
    batch = torch.export.Dim("batch")

    def write(tmp: str) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                predictor,
                (x,),
                input_names=["x"],
                output_names=_OUTPUT_NAMES,
                dynamic_shapes={"x": {0: batch}},
                opset_version=opset_version,
                dynamo=True,
                external_data=False,
                verbose=False,
            )
        proto = program.model_proto
        entry = proto.metadata_props.add()
        entry.key, entry.value = "classes", _classes_json(model)
        onnx.checker.check_model(proto)
        onnx.save(proto, tmp)

    return atomic_write(path, write)


def read_onnx_classes(path: str | os.PathLike) -> list[Any]:
    """The class labels stored by [`export_onnx`][lvqmln_torch.io.export.export_onnx] in the model's metadata."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    for entry in proto.metadata_props:
        if entry.key == "classes":
            return json.loads(entry.value)
    raise ValueError(f"{str(path)!r} has no 'classes' metadata (not written by export_onnx?)")

"""Backbone layers whose Lipschitz constant is controlled during training.

``lipschitz="spectral"`` divides each weight by its spectral norm on every forward pass, so
each layer has norm 1: a linear layer by ``σ_max(W)`` estimated by
``torch.nn.utils.parametrizations.spectral_norm`` (ten power iterations per training step: an
exact SVD per step costs seconds for a 1024 × 784 layer on a small CPU; the estimate converges
as the weights settle, and the certificate computes the exact norms anyway), a convolution by
the norm of its Fourier symbol on the padded image torus (see
[`conv_symbol_norm`][lvqmln_torch.core.lipschitz.conv_symbol_norm]), an upper bound of its
operator norm. ``lipschitz="orthogonal"`` makes each linear layer's
weight (semi-)orthogonal (``torch.nn.utils.parametrizations.orthogonal`` with the Cayley map:
the default Householder map's backward pass costs about ten times as much on a CPU for a
784 → 512 layer): every singular value is exactly 1, not only the largest, so with a
gradient-norm-preserving activation such as ``maxmin`` the backbone keeps distances along the
data instead of shrinking them, and no margin is lost through the layers (on MNIST the
certified accuracy at ε = 1.58 of a 784 → 512 → 64 MaxMin MLP rises from about 0.29 with
``"spectral"`` to 0.44–0.47, above the shallow GLVQ's; see ``docs/robustness.md``).
With a 1-Lipschitz activation (tanh, relu, leaky_relu, maxmin) the backbone is then
1-Lipschitz, and a latent margin is an input margin.

An orthogonal layer's ``state_dict`` holds the map's *argument* (``original``, with the
trivialisation ``base``), which means another matrix under another map; so each such layer
also saves the name of its map (the buffer ``orthogonal_map``), and loading a state dict that
names another map, or none (written before the map was recorded: PyTorch's default,
``"householder"`` for a non-square weight and ``"matrix_exp"`` for a square one), converts its
entries to the same weight under the Cayley map first (see
[`constrain`][lvqmln_torch.core.lipschitz_control.constrain]).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from .lipschitz import conv_symbol_norm

__all__ = [
    "CNN_LIPSCHITZ_MODES",
    "LIPSCHITZ_MODES",
    "ORTHOGONAL_MAP",
    "ConvSpectralNormalized",
    "check_lipschitz_mode",
    "constrain",
    "set_weight",
]

#: Lipschitz controls of the MLP backbone (``None``: free weights).
LIPSCHITZ_MODES = ("spectral", "orthogonal")
#: Lipschitz controls of the CNN backbone.
CNN_LIPSCHITZ_MODES = ("spectral",)
#: The map of ``lipschitz="orthogonal"`` (Cayley: exact, and its backward pass costs about a
#: tenth of the Householder map's on a CPU for a 784 → 512 layer).
ORTHOGONAL_MAP = "cayley"
# PyTorch's orthogonal maps: the ones a saved ``orthogonal_map`` may name.
_TORCH_MAPS = ("matrix_exp", "cayley", "householder")
_MAP_BUFFER = "orthogonal_map"


def check_lipschitz_mode(mode: str | None, valid: Sequence[str], where: str = "") -> str | None:
    """``mode`` if it is ``None`` or one of ``valid`` (``where`` names the backbone in errors).

    Raises:
        ValueError: naming the valid modes.
    """
    if mode is None or (isinstance(mode, str) and mode in valid):
        return mode
    raise ValueError(
        f"Unknown lipschitz {mode!r}{where}. Valid values: None, "
        f"{', '.join(repr(m) for m in valid)}"
    )


class ConvSpectralNormalized(nn.Module):
    """Parametrisation ``K ↦ K / ‖K‖`` of a ``(c_out, c_in, k_h, k_w)`` kernel, ``‖K‖`` the
    norm of its circular convolution on a torus of ``size = (H + k_h − 1, W + k_w − 1)``
    pixels, which bounds the zero-padded convolution's norm on ``H × W`` images.

    Args:
        size: the torus ``(N, M)``.
    """

    def __init__(self, size: Sequence[int]) -> None:
        super().__init__()
        self.size = tuple(int(s) for s in size)

    def forward(self, weight: Tensor) -> Tensor:
        norm = conv_symbol_norm(weight, self.size)
        return weight / norm.clamp_min(torch.finfo(weight.dtype).tiny)

    def right_inverse(self, weight: Tensor) -> Tensor:
        return weight


def constrain(layer: nn.Module, mode: str | None, input_hw: Sequence[int] | None = None) -> None:
    """Register the parametrisation of ``mode`` on ``layer.weight`` (in place; ``None``:
    nothing). A ``Conv2d`` needs the ``input_hw`` of its input images.

    ``"orthogonal"`` uses the map ``ORTHOGONAL_MAP`` (``"cayley"``) and records it in the
    layer's ``state_dict`` (a ``uint8`` buffer ``orthogonal_map`` holding the name). Files
    saved before the map was recorded (``lipschitz="orthogonal"`` used PyTorch's default map
    then) load as the model they were: loading a state dict without the
    name, or with another of PyTorch's maps, rebuilds the saved weight under its own map and
    stores that weight in the Cayley parametrisation (the same matrix, to rounding) before the
    usual load. This covers every loader that goes through ``load_state_dict``
    (``LVQMLN.load_from_checkpoint``, ``LVQMLNClassifier.load``,
    ``PrototypeNetwork.load_state_dict``). Parametrised modules cannot be pickled, so no pickle
    carries an old map.

    Raises:
        ValueError: for ``"orthogonal"`` on a convolution, or an unknown mode; when loading, for
            a saved ``orthogonal_map`` that names no map of PyTorch's.
    """
    if mode is None:
        return
    if isinstance(layer, nn.Conv2d):
        if mode != "spectral":
            raise ValueError(
                f"lipschitz={mode!r} is for linear layers; the CNN's convolutions support "
                f"{', '.join(repr(m) for m in CNN_LIPSCHITZ_MODES)}"
            )
        kh, kw = layer.kernel_size
        size = (int(input_hw[0]) + kh - 1, int(input_hw[1]) + kw - 1)
        parametrize.register_parametrization(layer, "weight", ConvSpectralNormalized(size))
    elif mode == "spectral":
        # Several power iterations per step: matrix-vector products, cheap next to a batch.
        torch.nn.utils.parametrizations.spectral_norm(layer, n_power_iterations=10)
    elif mode == "orthogonal":
        torch.nn.utils.parametrizations.orthogonal(layer, orthogonal_map=ORTHOGONAL_MAP)
        layer.register_buffer(_MAP_BUFFER, _map_code(ORTHOGONAL_MAP))
        layer.register_load_state_dict_pre_hook(_load_orthogonal)
    else:
        check_lipschitz_mode(mode, LIPSCHITZ_MODES)


@torch.no_grad()
def set_weight(layer: nn.Module, weight: Tensor) -> None:
    """Set ``layer.weight`` to ``weight``: through the parametrisation's inverse when it has
    one (the parametrised weight is then ``weight`` normalised), else in place."""
    if parametrize.is_parametrized(layer, "weight"):
        layer.weight = weight
    else:
        layer.weight.copy_(weight)


def _map_code(name: str) -> Tensor:
    """The ``uint8`` tensor of ``name``'s ASCII bytes (a buffer: state dicts hold tensors)."""
    return torch.tensor(list(name.encode("ascii")), dtype=torch.uint8)


def _map_name(code: Tensor, key: str) -> str:
    """The map named by a saved ``orthogonal_map`` buffer.

    Raises:
        ValueError: when it names none of PyTorch's maps.
    """
    try:
        name = bytes(torch.as_tensor(code).flatten().tolist()).decode("ascii")
    except (TypeError, ValueError, UnicodeDecodeError, OverflowError):
        name = repr(code)
    if name not in _TORCH_MAPS:
        raise ValueError(
            f"state_dict entry {key!r} names the orthogonal map {name!r}; valid maps: "
            f"{', '.join(repr(m) for m in _TORCH_MAPS)}"
        )
    return name


@torch.no_grad()
def _orthogonal_weight(original: Tensor, base: Tensor, orthogonal_map: str | None) -> Tensor:
    """The ``(out, in)`` weight that ``original`` and ``base`` stand for under
    ``orthogonal_map`` (``None``: PyTorch's default for the shape), computed by PyTorch's own
    parametrisation on a temporary module. On the CPU, and with the CPU generator restored:
    registering draws a random completion, which the loaded ``base`` then replaces."""
    with torch.random.fork_rng(devices=[]):
        holder = nn.Module()
        holder.weight = nn.Parameter(torch.zeros_like(original, device="cpu"))
        torch.nn.utils.parametrizations.orthogonal(holder, orthogonal_map=orthogonal_map)
    holder.load_state_dict(
        {"parametrizations.weight.original": original, "parametrizations.weight.0.base": base}
    )
    return holder.weight


@torch.no_grad()
def _cayley_entries(weight: Tensor) -> tuple[Tensor, Tensor]:
    """``(original, base)`` for which the Cayley parametrisation gives ``weight`` exactly.

    The map sends ``original = −I`` (the ``(out, in)`` matrix with −1 on its diagonal) to the
    identity, so the weight is the first ``k`` columns of ``base`` (``n × n``, for the tall
    ``n × k`` form of ``weight``): those are ``weight`` itself, the rest an orthonormal basis
    of its complement (a complete QR, no random draws), so ``base`` is orthogonal as far as
    ``weight`` is, and training goes on from it."""
    tall = weight.mT if weight.shape[0] < weight.shape[1] else weight
    complement = torch.linalg.qr(tall, mode="complete").Q[:, tall.shape[1] :]
    original = torch.zeros_like(weight)
    original.diagonal().fill_(-1.0)
    return original, torch.cat([tall, complement], dim=1)


def _load_orthogonal(layer: nn.Module, state_dict: dict, prefix: str, *args) -> None:
    """Load-state-dict pre-hook of an orthogonal layer: entries saved under another map (or
    none recorded) are replaced, in ``load_state_dict``'s own copy of the dict, by the same
    weight under ``ORTHOGONAL_MAP``."""
    key = prefix + _MAP_BUFFER
    original = prefix + "parametrizations.weight.original"
    base = prefix + "parametrizations.weight.0.base"
    saved = _map_name(state_dict[key], key) if key in state_dict else None
    if saved == ORTHOGONAL_MAP or original not in state_dict or base not in state_dict:
        return  # nothing to convert (a partial dict: the loader reports the missing keys)
    stored = state_dict[original]
    weight = _orthogonal_weight(stored.cpu(), state_dict[base].cpu(), saved)
    new_original, new_base = _cayley_entries(weight)
    state_dict[original] = new_original.to(stored.device)
    state_dict[base] = new_base.to(stored.device)
    state_dict[key] = _map_code(ORTHOGONAL_MAP)

"""Helpers shared by the benchmark workers (ours and prosemble's).

Only the standard library and numpy: this module is imported by both worker scripts, each in its
own virtual environment.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

RESULT_PREFIX = "RESULT "

# The large synthetic problem of figure 3 (issue 7).
LARGE = {
    "n_samples": 200_000,
    "n_features": 784,
    "hidden_sizes": [512, 256],
    "latent_dim": 64,
    "n_classes": 10,
    "prototypes_per_class": 2,
    "batch_size": 1024,
    "epochs": 2,
}


def emit(result: dict[str, Any]) -> None:
    """Hand a result to the harness: one line on stdout, flushed at once (the harness stops the
    cold-start clock when this line arrives)."""
    sys.stdout.write(RESULT_PREFIX + json.dumps(result) + "\n")
    sys.stdout.flush()


def load_split(path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(X_train, y_train, X_test, y_test)`` written by the harness (float32 features,
    int64 labels)."""
    with np.load(path) as data:
        return data["X_train"], data["y_train"], data["X_test"], data["y_test"]


def make_large(
    n_samples: int, n_features: int, n_classes: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """A learnable synthetic problem: ``X`` uniform in [-1, 1) (float32), ``y`` the argmax of a
    fixed random linear map of ``X``. Identical in every process for the same arguments."""
    rng = np.random.default_rng(seed)
    X = rng.random((n_samples, n_features), dtype=np.float32)
    X *= 2.0
    X -= 1.0
    W = rng.standard_normal((n_features, n_classes)).astype(np.float32)
    y = np.argmax(X @ W, axis=1).astype(np.int64)
    return X, y


def mlp_matmuls(
    batch: int, n_features: int, hidden_sizes: Sequence[int], latent_dim: int, n_prototypes: int
) -> list[dict[str, Any]]:
    """The matrix products of one training step of the MLP model, as ``nn.Linear`` and the
    distance's ``addmm`` run them: ``{"name", "m", "k", "n", "a_t", "b_t"}`` for an
    ``(m, k) @ (k, n)`` product whose left (``a_t``) or right (``b_t``) factor is a transposed
    view of a contiguous matrix (a weight ``W`` is stored ``(out, in)``).

    Forward: ``x @ Wᵀ`` per layer and ``z @ Pᵀ`` for the prototypes ``P``. Backward: the weight
    gradient ``dYᵀ @ x`` of every layer and of the prototypes, and the input gradient
    ``dY @ W`` of every layer but the first (backpropagation never computes the gradient of the
    data).
    """
    sizes = [n_features, *hidden_sizes, latent_dim, n_prototypes]
    out = []
    for layer, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        out.append(
            {"name": f"forward {a}->{b}", "m": batch, "k": a, "n": b, "a_t": False, "b_t": True}
        )
        out.append(
            {"name": f"weight grad {a}->{b}", "m": b, "k": batch, "n": a, "a_t": True, "b_t": False}
        )
        if layer > 0:
            out.append(
                {
                    "name": f"input grad {a}->{b}",
                    "m": batch,
                    "k": b,
                    "n": a,
                    "a_t": False,
                    "b_t": False,
                }
            )
    return out


def mlp_flops_per_sample(
    n_features: int, hidden_sizes: Sequence[int], latent_dim: int, n_prototypes: int
) -> dict[str, int]:
    """Matmul FLOPs of one sample: the MLP layers plus the latent-prototype product.

    A ``(1, a) @ (a, b)`` product costs ``2ab`` FLOPs. The backward pass costs twice the
    forward (gradients with respect to the weights and to the inputs) except for the first
    layer, whose input gradient (the data's) backpropagation never computes: training costs
    ``3 x forward - 2 * n_features * hidden_sizes[0]`` (the products of
    :func:`mlp_matmuls`). Elementwise work (activations, the loss, the optimizer) is left out:
    it is small next to the matmuls, which makes the bound optimistic, never pessimistic.
    """
    sizes = [n_features, *hidden_sizes, latent_dim]
    forward = sum(2 * a * b for a, b in zip(sizes[:-1], sizes[1:]))
    forward += 2 * latent_dim * n_prototypes
    return {"forward": forward, "train": 3 * forward - 2 * sizes[0] * sizes[1]}


def timed(fn: Any, *args: Any, **kwargs: Any) -> tuple[float, Any]:
    """``(seconds, result)`` of one call."""
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - start, out


def cpu_trainer(max_epochs: int, callbacks: list, quiet: bool = True, **kwargs: Any) -> Any:
    """A one-CPU Lightning Trainer without checkpoints, for timing: progress bar, logger and
    model summary off with ``quiet`` (on without), other ``Trainer`` arguments in ``kwargs``.
    Lightning is imported here, not when this module is."""
    import lightning.pytorch as pl

    return pl.Trainer(
        max_epochs=max_epochs,
        accelerator="cpu",
        devices=1,
        logger=not quiet,
        enable_checkpointing=False,
        enable_progress_bar=not quiet,
        enable_model_summary=not quiet,
        callbacks=callbacks,
        **kwargs,
    )


def replace_section(text: str, name: str, section: str) -> str:
    """``text`` with the block between ``<!-- name:start -->`` and ``<!-- name:end -->``
    replaced by ``section`` (appended when there is none), so scripts that write one section of
    a report leave the others alone."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{section.rstrip()}\n{end}\n"
    if start in text and end in text:
        before, rest = text.split(start, 1)
        return before + block + rest.split(end, 1)[1].lstrip("\n")
    return text.rstrip("\n") + ("\n\n" if text.strip() else "") + block


def write_section(path: Path, name: str, section: str) -> None:
    """Replace (or append) the ``name`` block of the report at ``path`` (see
    :func:`replace_section`), leaving the other sections as they are."""
    text = path.read_text() if path.exists() else ""
    path.write_text(replace_section(text, name, section))


def publish(report: str, name: str, output: Path, write: bool) -> None:
    """Print a script's ``report`` and, with ``write``, put it into its ``name`` section of the
    report at ``output`` (see :func:`write_section`)."""
    print(report)
    if write:
        write_section(output, name, report)
        print(f"written to {output}")


def keep_section(old: str, new: str, name: str) -> str:
    """``new`` with the ``name`` block of ``old`` carried over (see :func:`replace_section`)."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    if start not in old or end not in old:
        return new
    block = old.split(start, 1)[1].split(end, 1)[0]
    return replace_section(new, name, block)

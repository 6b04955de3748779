"""Test-only JAX reference for LVQMLN (not part of the product; never imports torch).

It mirrors the names of the upstream prosemble seed (``mlp_init``, ``mlp_forward``,
``cnn_init``, ``cnn_forward``, ``squared_euclidean_distance_matrix``,
``glvq_loss_with_transfer``, ``wtac``, ``stratified_min_pooling``, ``_build_schedule`` as
``build_schedule``) plus a plain optax training loop (``train``), so that tests can prove
numerical parity of ``lvqmln_torch`` with it.
"""

from __future__ import annotations

from .backbones import ACTIVATIONS, cnn_forward, cnn_init, get_activation, mlp_forward, mlp_init
from .losses import (
    TRANSFERS,
    _get_dp_dm,
    glvq_loss_with_transfer,
    glvq_mu,
    identity,
    sigmoid_beta,
    squared_euclidean_distance_matrix,
    stratified_min_pooling,
    swish_beta,
    wtac,
)
from .schedules import SCHEDULES, build_schedule
from .train import OPTIMIZERS, build_optimizer, train

__all__ = [
    "ACTIVATIONS",
    "OPTIMIZERS",
    "SCHEDULES",
    "TRANSFERS",
    "_get_dp_dm",
    "build_optimizer",
    "build_schedule",
    "cnn_forward",
    "cnn_init",
    "get_activation",
    "glvq_loss_with_transfer",
    "glvq_mu",
    "identity",
    "mlp_forward",
    "mlp_init",
    "sigmoid_beta",
    "squared_euclidean_distance_matrix",
    "stratified_min_pooling",
    "swish_beta",
    "train",
    "wtac",
]

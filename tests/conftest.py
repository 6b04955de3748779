"""Test configuration shared by the whole suite.

``jax_enable_x64`` is process-global, so it is set exactly once, here, before any test
imports the JAX reference. Noise filters for Lightning's warnings live in pyproject.toml.
"""

import os

import jax
import torch

jax.config.update("jax_enable_x64", True)

# The bad-input harness's fixtures (ctx and the fitted models, estimators and checkpoints it
# hands out) serve the catalogue's modules in several test folders.
pytest_plugins = ["_bad_inputs"]

# The test models are tiny: one intra-op thread is fastest and does not oversubscribe the two
# cores of the test machine (the DDP and crash tests run extra processes beside pytest).
torch.set_num_threads(1)

# Lightning's tips and the litlogger banner are noise in test logs.
os.environ.setdefault("LIGHTNING_DISABLE_TIPS", "1")

"""Test configuration shared by the whole suite.

``jax_enable_x64`` is process-global, so it is set exactly once, here, before any test
imports the JAX reference. Noise filters for Lightning's warnings live in pyproject.toml.
"""

import os

import jax

jax.config.update("jax_enable_x64", True)

# Lightning's tips and the litlogger banner are noise in test logs.
os.environ.setdefault("LIGHTNING_DISABLE_TIPS", "1")

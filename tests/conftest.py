"""Test configuration shared by the whole suite.

``jax_enable_x64`` is process-global, so it is set exactly once, here, before any test
imports the JAX reference.
"""

import os
import warnings

import jax

jax.config.update("jax_enable_x64", True)

# Lightning's tips and the litlogger banner are noise in test logs.
os.environ.setdefault("LIGHTNING_DISABLE_TIPS", "1")
warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\).*")
warnings.filterwarnings("ignore", message=".*does not have many workers.*")
warnings.filterwarnings("ignore", message=".*Total length of .* across ranks is zero.*")

"""Layer 1, the foundation (torch only, no Lightning): the functional math (distances, μ,
the GLVQ loss, transfers), the prototype head, the backbones, the initializers, the
torch-only network, the explanation math, argument validation and atomic file writes.
Imports nothing else from the package."""

"""Layer 2, plots (built on ``core`` alone; needs the ``plot`` extra): latent spaces,
exemplars and accuracy-rejection curves, written atomically."""

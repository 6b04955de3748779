"""Layer 2, training settings (built on ``core`` alone): optimizers, learning-rate schedules,
the stopping and weight-averaging rules shared by the Lightning callbacks and the numpy
engine, and the module's validated configuration."""

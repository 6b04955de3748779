"""Layer 3, Lightning (built on ``core``, ``data``, ``training`` and ``viz``): the
``LVQMLN`` LightningModule, its epoch metrics, what it reads from a user's data, its
calibration and checkpoint hooks (functions of the module), and the callbacks of the training
features."""

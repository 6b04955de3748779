"""Examples of a user's own code for the ``lvqmln`` command line (see
``configs/custom_datamodule.yaml``)."""

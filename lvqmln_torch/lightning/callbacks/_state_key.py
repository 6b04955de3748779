"""Checkpoint keys for the stateful callbacks, built from the settings that distinguish two
instances (as Lightning's own ``EarlyStopping`` and ``ModelCheckpoint`` do), so that two
instances with different settings (one on ``val_loss``, one on ``val_acc``) keep their own
state in a checkpoint."""

from __future__ import annotations

from lightning.pytorch.callbacks import Callback

__all__ = ["KeyedState"]


class KeyedState(Callback):
    """Mixin: ``state_key`` is the class name and the values of the attributes named in
    ``state_settings``, e.g. ``"RestoreBest{'monitor': 'val_loss'}"``. Checkpoints written
    before the keys carried settings (keyed by the bare class name) still restore."""

    state_settings: tuple[str, ...] = ()

    @property
    def state_key(self) -> str:
        return self._generate_state_key(
            **{name: getattr(self, name) for name in self.state_settings}
        )

    @property
    def _legacy_state_key(self) -> str:
        # Lightning falls back to this key when ``state_key`` is not in the checkpoint.
        return type(self).__qualname__

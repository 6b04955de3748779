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


def not_attached(callbacks: list[Callback], attached: list[Callback]) -> list[Callback]:
    """The ``callbacks`` a module's ``configure_callbacks`` still has to add: not those the
    Trainer already holds with the same ``state_key`` (left by an earlier ``fit``,
    ``validate``, ``test`` or ``predict`` of the same Trainer, or passed with the same
    settings), so that Lightning replaces nothing and reports no override. A callback the user
    passed with other settings is still replaced by the module's (Lightning says so)."""
    keys = {callback.state_key for callback in attached}
    return [callback for callback in callbacks if callback.state_key not in keys]

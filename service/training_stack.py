"""Whether this installation can train at all (torch is an extra), asked before a run starts."""

from __future__ import annotations

from importlib.util import find_spec

from service.errors import InvalidState
from service.settings import Settings

MISSING = (
    "Retraining needs PyTorch, which is not installed: install herpscore[train] "
    "where the training worker runs"
)


def training_available(settings: Settings) -> bool:
    """The setting when given (a training worker on another machine); else torch importable here."""
    if settings.training_available is not None:
        return settings.training_available
    return find_spec("torch") is not None and find_spec("torchvision") is not None


def require_training(settings: Settings) -> None:
    """Refuse up front, with a message that says what to install, when nothing can train."""
    if not training_available(settings):
        raise InvalidState(
            f"{MISSING} (or set HERPSCORE_TRAINING_AVAILABLE=true if it runs elsewhere)."
        )

"""Progress of the multi-model ensemble jobs: :class:`ailand.progress.Progress` (one implementation)."""

from ..progress import Progress, as_progress

__all__ = ["Progress", "as_progress"]

"""Progress of long calibration jobs: :class:`ailand.progress.Progress` (one implementation)."""

from ailand.progress import Progress, as_progress

__all__ = ["Progress", "as_progress"]

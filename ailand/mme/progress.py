"""Progress on stderr for the multi-model ensemble jobs: stage lines and tqdm bars.

The same interface as ``calibration.progress.Progress`` (``say``, ``stage``, ``bar``), kept
in ``ailand`` because ``ailand`` never imports the inference packages; any object with
those methods (a ``calibration.progress.Progress`` included) can be passed instead.
Library functions take ``progress=False`` (quiet); nothing is printed on stdout.
"""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager

__all__ = ["Progress", "as_progress"]


class Progress:
    """Stage lines ``[elapsed] message`` and tqdm bars on ``stream`` (default stderr);
    silent when not ``enabled``."""

    def __init__(self, enabled: bool = True, stream=None):
        self.enabled = bool(enabled)
        self._stream = stream
        self.t0 = time.perf_counter()

    def __bool__(self) -> bool:
        return self.enabled

    @property
    def stream(self):
        return self._stream if self._stream is not None else sys.stderr

    def say(self, message: str) -> None:
        if self.enabled:
            print(f"[{time.perf_counter() - self.t0:7.1f} s] {message}", file=self.stream, flush=True)

    @contextmanager
    def stage(self, what: str):
        t = time.perf_counter()
        self.say(f"{what} ...")
        yield self
        self.say(f"{what}: done in {time.perf_counter() - t:.1f} s")

    def bar(self, total: int, desc: str, unit: str = "it"):
        from tqdm.auto import tqdm

        return tqdm(total=int(total), desc=desc, unit=unit, disable=not self.enabled, file=self.stream,
                    mininterval=0.5, leave=False, dynamic_ncols=True)


def as_progress(progress) -> Progress:
    """``bool`` or a progress object -> an object with ``say``, ``stage``, ``bar``."""
    if hasattr(progress, "bar") and hasattr(progress, "say"):
        return progress
    return Progress(enabled=bool(progress))

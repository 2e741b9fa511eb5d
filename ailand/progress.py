"""Progress of long jobs on stderr: stage lines with the elapsed time, tqdm bars.

One implementation for every package (``calibration.progress`` and ``ailand.mme`` re-export it).

Library functions take ``progress=False`` (quiet by default) and accept ``True`` or a
:class:`Progress`; command lines make one ``Progress(enabled=not args.no_progress)`` and
hand it down, so every stage of one job shares its clock::

    p = Progress(True)
    with p.stage("variational: 4 starts"):
        ...                                   # [   0.0 s] variational: 4 starts ...
                                              # [  12.3 s] variational: 4 starts: done in 12.3 s
    with p.bar(total=500, desc="MCMC steps", unit="step") as bar:
        bar.update(1)

Nothing goes to stdout, so a report printed there is the same with progress on or off.
"""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager

__all__ = ["Progress", "as_progress"]


class Progress:
    """Stage lines and bars on ``stream`` (default ``sys.stderr``); all silent when not ``enabled``."""

    def __init__(self, enabled: bool = True, stream=None):
        self.enabled = bool(enabled)
        self._stream = stream
        self.t0 = time.perf_counter()

    def __bool__(self) -> bool:
        return self.enabled

    def __repr__(self):
        return f"Progress(enabled={self.enabled})"

    @property
    def stream(self):
        return self._stream if self._stream is not None else sys.stderr  # resolved late: pytest swaps sys.stderr

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def say(self, message: str) -> None:
        """One line ``[elapsed] message``."""
        if self.enabled:
            print(f"[{self.elapsed:7.1f} s] {message}", file=self.stream, flush=True)

    @contextmanager
    def stage(self, what: str):
        """``what ...`` on entry, ``what: done in t s`` on exit."""
        t = time.perf_counter()
        self.say(f"{what} ...")
        yield self
        self.say(f"{what}: done in {time.perf_counter() - t:.1f} s")

    def bar(self, total: int, desc: str, unit: str = "run"):
        """A tqdm bar on the same stream (disabled when not enabled); use as a context manager."""
        from tqdm.auto import tqdm

        return tqdm(total=int(total), desc=desc, unit=unit, disable=not self.enabled, file=self.stream,
                    mininterval=0.5, leave=False, dynamic_ncols=True)

    def tqdm_kwargs(self, desc: str, unit: str) -> dict:
        """The bar options, for libraries that make their own tqdm bar (emcee's ``progress_kwargs``)."""
        return {"desc": desc, "unit": unit, "file": self.stream, "mininterval": 0.5, "leave": False, "dynamic_ncols": True}


def as_progress(progress) -> Progress:
    """``bool`` or a progress object (``say``, ``stage``, ``bar``) -> that object, or a new
    :class:`Progress` (silent for ``False``/``None``)."""
    if isinstance(progress, Progress) or (hasattr(progress, "bar") and hasattr(progress, "say")):
        return progress
    return Progress(enabled=bool(progress))

"""A time budget for a command: start no pruning round that would end past it.

A round of an experiment is expected to take as long as that experiment's previous
round did; before each round :meth:`Budget.allows` says whether it still fits.  A
run stopped this way resumes from its checkpoints when the same command runs again.
"""
from __future__ import annotations

import time
from typing import Callable, Optional


class Budget:
    """``seconds`` from now (None: unlimited); ``log`` is told once when it runs out."""

    def __init__(self, seconds: Optional[float] = None, log: Callable[[str], None] = print):
        self.seconds, self.log = seconds, log
        self.start = time.perf_counter()
        self.last: dict[str, float] = {}
        self.stopped = False

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def spent(self, unit: str, seconds: float) -> None:
        """A round of ``unit`` (an experiment) took ``seconds``."""
        self.last[unit] = seconds

    def allows(self, unit: str) -> bool:
        """Whether a round of ``unit`` still fits; once it does not, no round does."""
        if self.stopped or self.seconds is None:
            return not self.stopped
        elapsed = self.elapsed()
        if elapsed + self.last.get(unit, 0.0) > self.seconds:
            self.stopped = True
            self.log(f"time budget {self.seconds:.0f} s reached after {elapsed:.0f} s: stopping before the next "
                     f"{unit} round (run the same command again to resume from the stored rows and checkpoints)")
        return not self.stopped

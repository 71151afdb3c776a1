"""Back-off between retries: doubling, capped, and jittered.

Every loop that waits out an outage (the broker, S3, the Kubernetes API) asks a
:class:`Backoff` how long to wait. The delays double from ``first_s`` up to ``cap_s``, and
each is drawn from its upper half ("equal jitter"), so replicas that lost a dependency at
the same moment do not all come back at the same moment too.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable


class Backoff:
    """The delays of one retry loop; :meth:`reset` after a success."""

    def __init__(
        self, first_s: float, cap_s: float, *, draw: Callable[[], float] = random.random
    ) -> None:
        if first_s < 0 or cap_s < first_s:
            raise ValueError(f"back-off needs 0 <= first_s <= cap_s, not {first_s}, {cap_s}")
        self._first_s = first_s
        self._cap_s = cap_s
        self._draw = draw
        self._current_s = first_s

    @property
    def ceiling_s(self) -> float:
        """The most the next delay can be."""
        return self._current_s

    def next_s(self) -> float:
        """The next delay: between half and all of the current step, which then doubles."""
        step = self._current_s
        self._current_s = min(step * 2, self._cap_s)
        return step / 2 + self._draw() * step / 2

    def reset(self) -> None:
        """Start again from ``first_s`` (the dependency answered)."""
        self._current_s = self._first_s

    def sleep(self, stop: threading.Event | None = None) -> bool:
        """Wait the next delay; True if ``stop`` was set before it ended."""
        delay = self.next_s()
        if stop is None:
            time.sleep(delay)
            return False
        return stop.wait(delay)

"""The two workers every launcher-driven service runs: follow the workloads, re-check them.

Train and evaluate both start workloads through a launcher and react to how they end. The
watcher first settles what a previous process left open, then hands every status the
launcher's watch reports to the service; the reconciler asks about every open workload now
and then, so that a report that could not be handled (S3 briefly down) is not lost for good.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from tunewire.core.launchers import launching
from tunewire.core.process import runner

log = logging.getLogger(__name__)


def watcher(
    *,
    recover: Callable[[], None],
    on_status: launching.StatusCallback,
    launcher: launching.Launcher,
    what: str,
) -> runner.Worker:
    """Run ``recover`` until it succeeds, then follow the launcher's watch until stop."""

    def run(stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                recover()
                break
            except Exception as exc:
                log.warning(f"recovering open {what} failed; retrying", extra={"error": repr(exc)})
                stop.wait(2.0)
        launcher.watch(_guarded(on_status, what), stop)

    return run


def reconciler(*, poll: Callable[[], object], every_s: float, what: str) -> runner.Worker:
    """Call ``poll`` every ``every_s`` seconds until stop; failures are logged, not fatal."""

    def run(stop: threading.Event) -> None:
        while not stop.wait(every_s):
            try:
                poll()
            except Exception as exc:
                log.warning(f"re-checking open {what} failed", extra={"error": repr(exc)})

    return run


def _guarded(on_status: launching.StatusCallback, what: str) -> launching.StatusCallback:
    def on_change(status: launching.JobStatus) -> None:
        try:
            on_status(status)
        except Exception as exc:
            log.error(
                f"handling a status of {what} failed; the reconciler retries it",
                extra={"workload": status.name, "error": repr(exc)},
            )

    return on_change

"""The records consumer and the snapshot trigger: the label service's background work."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

from tunewire.core.bus import consuming, pooling, producing, topics
from tunewire.core.launchers import following
from tunewire.core.process import runner
from tunewire.label import config, parallel, pipeline

log = logging.getLogger(__name__)

#: Records per worker task. The loop polls a batch ahead, so the worker always has the
#: next one; a chunk need not be small for admitting to overlap preparing, and a large one
#: crosses the pipes in fewer round trips (figure in bench/README.md).
PARALLEL_CHUNK = 256


class RecordHandler:
    """A :class:`consuming.SealingHandler` over the label pipeline, preparing in parallel."""

    def __init__(
        self, flow: pipeline.LabelPipeline, pool: parallel.LabelPool | None = None
    ) -> None:
        self._flow = flow
        self._prefetch: pooling.Prefetch[parallel.Result] = pooling.Prefetch(
            pool,
            chunk=PARALLEL_CHUNK,
            what="labelling",
            here=parallel.LocalPreparer(flow.preparer),
            on_chunk=flow.expect,
        )

    def prefetch(self, messages: Sequence[producing.Message]) -> None:
        """Send the batch to the worker processes in chunks (without them, prepare it here)."""
        self._prefetch.start(messages, self._flow.objectives)

    def handle(self, message: producing.Message) -> None:
        self._flow.handle(message, self._prefetch.take(message))

    def flush(self) -> None:
        self._flow.flush()

    def seal(self) -> Callable[[], None]:
        return self._flow.seal()


def loop(
    settings: config.LabelSettings,
    flow: pipeline.LabelPipeline,
    producer: producing.Publisher,
    pool: parallel.LabelPool | None = None,
) -> consuming.ConsumerLoop:
    """The consumer loop of ``tunewire.records``."""
    return consuming.ConsumerLoop(
        config=settings.kafka,
        group_id=settings.consumer_group,
        topic_names=[topics.RECORDS],
        handler=RecordHandler(flow, pool),
        producer=producer,
        flush_interval_s=settings.label.flush_interval_s,
        flush_max_messages=settings.label.flush_max_records,
        on_assigned=lambda: flow.seen.refresh(),
        max_poll_records=settings.label.poll_records if pool is not None else None,
        poll_ahead=pool is not None,
    )


def snapshotter(flow: pipeline.LabelPipeline, limits: config.LabelLimits) -> runner.Worker:
    """A worker that builds snapshots when triggers fire and keeps the queue fresh."""

    def run(stop: threading.Event) -> None:
        last_refresh = time.monotonic()
        while not stop.wait(limits.snapshot_check_s):
            for objective in list(flow.objectives().values()):
                if objective.status != "active":
                    continue
                try:
                    built = flow.maybe_snapshot(objective)
                    if built is not None:
                        log.info(
                            "snapshot %s (%s)",
                            built.dataset_id,
                            "built" if built.created else "existing",
                            extra={"objective": objective.name},
                        )
                except Exception as exc:
                    log.warning(
                        "snapshot check failed; retrying later",
                        extra={"objective": objective.name, "error": repr(exc)},
                    )
            if time.monotonic() - last_refresh >= limits.queue_refresh_s:
                try:
                    for name in list(flow.objectives()):
                        flow.queue.refresh(name)
                    flow.update_queue_depth()
                    last_refresh = time.monotonic()
                except Exception as exc:
                    log.warning("queue refresh failed", extra={"error": repr(exc)})

    return run


def repeater(flow: pipeline.LabelPipeline, limits: config.LabelLimits) -> runner.Worker:
    """A worker that announces each active objective's newest snapshot again now and then."""

    def announce_again() -> None:
        for objective in list(flow.objectives().values()):
            if objective.status == "active":
                flow.builder.announce_latest_again(objective.name)

    return following.reconciler(
        poll=announce_again,
        every_s=limits.repeat_announcement_every_s,
        what="snapshots to announce again",
    )

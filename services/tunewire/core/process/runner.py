"""Runs one service process: a few named root tasks, stopped together.

The shape follows kopf's task runner: ``run`` starts the HTTP server and the service's
workers (blocking loops in threads, such as the consumer loop); when any of them exits, the
others are told to stop, given a grace period, and a failure is re-raised. SIGTERM and SIGINT
set the stop flag, so the in-flight message finishes and its offset is committed before exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from collections.abc import Callable, Coroutine, Iterator, Mapping
from typing import Any

import fastapi
import uvicorn

from tunewire.core.base import heap

log = logging.getLogger(__name__)

Worker = Callable[[threading.Event], None]
"""A blocking loop that returns soon after the stop event is set."""
AsyncWorker = Callable[[threading.Event], Coroutine[Any, Any, None]]
"""A coroutine run on the HTTP server's event loop (for clients bound to that loop); it
returns soon after the stop event is set."""


class Service:
    """The root tasks of one service process."""

    def __init__(
        self,
        *,
        app: fastapi.FastAPI,
        host: str,
        port: int,
        workers: Mapping[str, Worker],
        async_workers: Mapping[str, AsyncWorker] | None = None,
        grace_s: float = 30.0,
        on_exit: Callable[[], None] | None = None,
    ) -> None:
        self.stop = threading.Event()
        self._on_exit = on_exit
        self._workers = dict(workers)
        self._async_workers = dict(async_workers or {})
        self._grace_s = grace_s
        self._server = _QuietServer(
            uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False)
        )
        self._threads: dict[str, threading.Thread] = {}
        self._failures: dict[str, BaseException] = {}

    def alive(self) -> bool:
        """True while every worker thread is running (for ``/healthz``)."""
        return not self.stop.is_set() and all(t.is_alive() for t in self._threads.values())

    def run(self) -> None:
        """Run until a signal or a root task exits; re-raise the first failure.

        Everything built before this call lives as long as the process, so the garbage
        collector stops walking it from here on (:func:`heap.settle`).
        """
        heap.settle()
        try:
            asyncio.run(self._main())
        finally:
            if self._on_exit is not None:
                self._on_exit()

    async def _main(self) -> None:
        loop = asyncio.get_running_loop()
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, self.stop.set)
        tasks: dict[asyncio.Task[None], str] = {}
        for name, worker in self._workers.items():
            tasks[asyncio.create_task(self._in_thread(name, worker))] = name
        for name, coroutine in self._async_workers.items():
            tasks[asyncio.create_task(coroutine(self.stop), name=name)] = name
        tasks[asyncio.create_task(self._serve())] = "http"
        tasks[asyncio.create_task(asyncio.to_thread(self.stop.wait))] = "stop"  # type: ignore[arg-type]
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        first = tasks[next(iter(done))]
        log.info("root task %s ended; stopping the others", first)
        self.stop.set()
        self._server.should_exit = True
        done_later, still = await asyncio.wait(pending, timeout=self._grace_s)
        for task in still:
            log.error("root task %s did not stop within the grace period", tasks[task])
            task.cancel()
        for task in (*done, *done_later):
            if not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]

    async def _in_thread(self, name: str, worker: Worker) -> None:
        thread = threading.Thread(target=self._guarded, args=(name, worker), name=name, daemon=True)
        self._threads[name] = thread
        thread.start()
        while thread.is_alive():
            await asyncio.sleep(0.1)
        if name in self._failures:
            raise self._failures[name]

    def _guarded(self, name: str, worker: Worker) -> None:
        try:
            worker(self.stop)
        except BaseException as exc:
            log.exception("root task %s failed", name)
            self._failures[name] = exc

    async def _serve(self) -> None:
        await self._server.serve()


class _QuietServer(uvicorn.Server):
    """uvicorn without its own signal handling: the runner owns SIGTERM and SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

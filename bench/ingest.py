"""Ingest throughput: the ingest service against a bare Kafka copy loop, on the same broker.

Run ``.venv/bin/python bench/ingest.py [--events N] [--json-only]`` (``make bench``). It prints
progress and figures, and its last line is one JSON object::

    {"bench": "ingest", "events": N, "events_per_s": ..., "baseline_events_per_s": ...,
     "ratio": ..., "rss_mb": ..., ...}

Targets (reported, not asserted): ``ratio`` >= 0.5 with PII redaction on (the sample
objective redacts every kind), ``rss_mb`` < 300. The run fails (exit 1, the JSON then carries
``"error"``) if a record is lost or duplicated, an event is dead-lettered, or a planted PII
value survives into a record.

Method: drain a pre-filled backlog, and time it from the output's Kafka timestamps.

1. The sample objective is registered through ingest's API (``POST /v1/objectives``) on a
   first, short-lived stack, which is then brought down with an S3 snapshot. The broker of
   the next ``up`` is brand new, but S3 (and so the objective) is restored from the snapshot.
2. The second stack comes up with ingest as a service factory: once the broker and S3 are up
   and before the ingest process starts, the factory produces all N events to
   ``tunewire.events.raw`` (CloudEvents binary mode, one key, so one partition). Ingest then
   starts, joins its group and drains the backlog, publishing one record per event to
   ``tunewire.records`` and archiving to S3 as it would in production (flushes, commits).
3. The baseline is a separate process, like ingest: a bare kafka-python consume -> produce
   loop (a fresh consumer group with a 2 s session timeout and 300 ms heartbeats; per poll
   batch it sends every message on, flushes the producer with ``acks=all`` and commits the
   offsets — the least an at-least-once copier must do). It drains the same N payloads and
   headers, produced to a fresh input topic the same way, on the same broker, after ingest
   is done (ingest stays up, idle; the bench prints how much CPU it used meanwhile).
   The baseline runs twice. The figure behind ``ratio`` uses ``fetch_max_wait_ms=100``:
   tansu sometimes holds a fetch for the whole ``fetch_max_wait_ms`` although records are
   available, and kafka-python fetches a partition again only once its buffered records are
   used up, so with the default 500 ms a loop as fast as the baseline stalls ~0.45 s every few
   thousand records (it then measures the broker quirk, 6-12k/s from run to run, instead of
   the loop, a steady ~22k/s). Ingest, with the default, hides that wait behind its own
   processing of the buffered records. The run with ingest's exact client setting (500 ms) is
   reported as ``baseline_fetch_wait_500ms_events_per_s``.
4. Throughput of each is ``(N - 1) / (t_last - t_first)`` over the CreateTime timestamps of
   its output records, which the producing client sets when it sends each one. This leaves
   out process start-up, imports and the consumer-group join (about a second on the
   embedded broker, unrelated to per-event cost) and the bench's own reading, which runs only
   after the output is complete so it does not compete for the CPU. Wall times that include
   start-up and join are printed too. Completion is detected from the consumer group's
   committed offsets (all N), not from the output's end offsets: tansu's ListOffsets(latest)
   answers less than the real log end.

The ingest process's peak RSS is the sum of ``VmHWM`` (from ``/proc/<pid>/status``, pid from
``<state_dir>/stack.json``) over it and its worker processes, read after the drain; its CPU
time also counts the workers. The baseline also reports its own.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import itertools
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import kafka
from kafka.structs import TopicPartition

from tunewire import samples
from tunewire.contracts.v1 import records_pb2
from tunewire.core.bus import topics
from tunewire.stack import embedded, processes

DEFAULT_EVENTS = 20_000
SEED = 11
KEY = b"support-intent"
SESSION_TIMEOUT_MS = 2000
HEARTBEAT_INTERVAL_MS = 300
MAX_POLL_RECORDS = 500
"""The same as ingest's default ``TUNEWIRE_KAFKA__MAX_POLL_RECORDS``."""
INGEST_GROUP = "tunewire-ingest"
"""Ingest's default ``TUNEWIRE_CONSUMER_GROUP``."""
BASELINE_FETCH_WAIT_MS = 100
"""See the module docstring: tansu can hold a fetch for the whole wait with data available."""
INGEST_FETCH_WAIT_MS = 500
"""kafka-python's default, which ingest uses."""
TARGET_RATIO = 0.5
TARGET_RSS_MB = 300.0

Event = samples.KafkaMessage
"""One raw event as it goes on the wire."""


@dataclasses.dataclass(frozen=True)
class Drain:
    """What one side (ingest or baseline) wrote, and how fast."""

    count: int
    first_ms: int
    last_ms: int
    gaps_ms: list[int]
    """The longest pauses between consecutive output timestamps, longest first."""
    wall_s: float
    """From the consumer process's start to the last record seen by the bench (coarse)."""
    values: list[bytes]

    @property
    def events_per_s(self) -> float:
        span = max(self.last_ms - self.first_ms, 1) / 1000
        return (self.count - 1) / span

    def describe(self) -> str:
        span_s = (self.last_ms - self.first_ms) / 1000
        return (
            f"{self.events_per_s:,.0f} events/s over {span_s:.2f} s, "
            f"longest pauses {self.gaps_ms} ms; {self.wall_s:.1f} s wall incl. start-up and join"
        )


class BenchFailure(Exception):
    """Something the benchmark checks was wrong: lost records, surviving PII, a dead service."""


class Reporter:
    """Progress goes to stdout unless ``--json-only``."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet

    def __call__(self, message: str) -> None:
        if not self.quiet:
            print(message, flush=True)


# -- the events -------------------------------------------------------------------------------


def make_events(count: int) -> list[Event]:
    """The sample tickets in CloudEvents binary mode: JSON data as value, attributes as headers."""
    return [samples.as_kafka_message(t) for t in samples.tickets(count, seed=SEED)]


def produce(bootstrap_servers: str, topic: str, events: Sequence[Event]) -> float:
    """Send every event to ``topic`` and wait for all acknowledgements; return the seconds."""
    producer = kafka.KafkaProducer(
        bootstrap_servers=bootstrap_servers.split(","),
        acks="all",
        linger_ms=5,
        batch_size=256 * 1024,
    )
    try:
        started = time.monotonic()
        futures = [
            producer.send(topic, key=KEY, value=event.value, headers=event.headers)
            for event in events
        ]
        producer.flush(timeout=120)
        elapsed = time.monotonic() - started
        failed = sum(1 for future in futures if not future.succeeded())
        if failed:
            raise BenchFailure(f"{failed} of {len(events)} events were not acknowledged")
        return elapsed
    finally:
        producer.close(timeout=5)


# -- reading the output -----------------------------------------------------------------------


def _reader(bootstrap_servers: str) -> kafka.KafkaConsumer:
    return kafka.KafkaConsumer(
        bootstrap_servers=bootstrap_servers.split(","),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )


def _partitions(
    reader: kafka.KafkaConsumer, topic: str, *, timeout_s: float = 10
) -> list[TopicPartition]:
    deadline = time.monotonic() + timeout_s
    while True:
        found = reader.partitions_for_topic(topic)
        if found:
            return [TopicPartition(topic, p) for p in sorted(found)]
        if time.monotonic() >= deadline:
            return []
        time.sleep(0.1)


class GroupProgress:
    """How many offsets of a topic a consumer group has committed, summed over partitions."""

    def __init__(self, bootstrap_servers: str, group: str, topic: str) -> None:
        self._watcher = kafka.KafkaConsumer(
            bootstrap_servers=bootstrap_servers.split(","),
            group_id=group,
            enable_auto_commit=False,
        )
        self._partitions = _partitions(self._watcher, topic)

    def committed(self) -> int:
        return sum(self._watcher.committed(tp) or 0 for tp in self._partitions)

    def close(self) -> None:
        self._watcher.close()


def count_records(bootstrap_servers: str, topic: str, *, idle_s: float = 1.0) -> int:
    """How many records ``topic`` holds, by reading it all (0 if it does not exist).

    Reading is the only reliable count here: tansu's ListOffsets(latest) answers less than
    the real log end (it seems to point into the last batch), so ``end_offsets`` undercounts.
    """
    reader = _reader(bootstrap_servers)
    try:
        partitions = _partitions(reader, topic, timeout_s=2)
        if not partitions:
            return 0
        reader.assign(partitions)
        reader.seek_to_beginning(*partitions)
        count = 0
        while polled := reader.poll(timeout_ms=int(idle_s * 1000), max_records=5000):
            count += sum(len(records) for records in polled.values())
        return count
    finally:
        reader.close()


def wait_and_read(
    bootstrap_servers: str,
    *,
    group: str,
    in_topic: str,
    out_topic: str,
    expected: int,
    started: float,
    timeout_s: float,
    check_alive: Callable[[], None],
) -> Drain:
    """Wait (cheaply) until ``group`` has committed every input offset, then read the output.

    The wait polls the group's committed offsets twice a second, which costs the measured
    process nothing; the output is read only once complete (plus a second to catch
    duplicates). Raises :class:`BenchFailure` if the consumer dies or stalls.
    """
    progress = GroupProgress(bootstrap_servers, group, in_topic)
    try:
        deadline = time.monotonic() + timeout_s
        while (done := progress.committed()) < expected:
            check_alive()
            if time.monotonic() >= deadline:
                raise BenchFailure(
                    f"group {group} committed only {done} of {expected} offsets of {in_topic} "
                    f"in {timeout_s:.0f} s"
                )
            time.sleep(0.5)
        wall_s = time.monotonic() - started
    finally:
        progress.close()
    reader = _reader(bootstrap_servers)
    try:
        partitions = _partitions(reader, out_topic)
        if not partitions:
            raise BenchFailure(f"topic {out_topic} has no partitions")
        reader.assign(partitions)
        reader.seek_to_beginning(*partitions)
        values: list[bytes] = []
        timestamps: list[int] = []
        while polled := reader.poll(timeout_ms=1000, max_records=5000):
            for records in polled.values():
                for record in records:
                    values.append(record.value)
                    timestamps.append(record.timestamp)
        if not values:
            raise BenchFailure(f"{out_topic} is empty")
        return Drain(
            count=len(values),
            first_ms=min(timestamps),
            last_ms=max(timestamps),
            gaps_ms=_longest_gaps(timestamps),
            wall_s=wall_s,
            values=values,
        )
    finally:
        reader.close()


def _longest_gaps(timestamps: list[int], count: int = 3) -> list[int]:
    ordered = sorted(timestamps)
    return sorted((b - a for a, b in itertools.pairwise(ordered)), reverse=True)[:count]


# -- checks -----------------------------------------------------------------------------------


def check_records(drain: Drain, expected_ids: set[str]) -> int:
    """Every event became exactly one record and no planted PII survived; return the checked."""
    seen: set[str] = set()
    duplicates = 0
    leaks: list[str] = []
    pii = [value.encode() for value in samples.PLANTED_PII]
    for value in drain.values:
        record = records_pb2.Record.FromString(value)
        if record.event_id in seen:
            duplicates += 1
        seen.add(record.event_id)
        leaked = [p.decode() for p in pii if p in value]
        if leaked and len(leaks) < 5:
            leaks.append(f"{record.event_id}: {', '.join(leaked)}")
    missing = len(expected_ids - seen)
    if missing or duplicates or len(drain.values) != len(expected_ids):
        raise BenchFailure(
            f"{len(drain.values)} records for {len(expected_ids)} events: "
            f"{missing} events missing, {duplicates} duplicates"
        )
    if leaks:
        raise BenchFailure("planted PII survived redaction: " + "; ".join(leaks))
    return len(drain.values)


def family(pid: int) -> list[int]:
    """A process and its descendants (ingest's worker processes), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat[stat.rindex(")") + 2 :].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def peak_rss_mb(pid: int) -> float:
    """Sum of ``VmHWM`` over a live process and its workers, in MiB (an upper bound)."""
    total = 0.0
    for member in family(pid):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{member}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1]) / 1024
    if not total:
        raise BenchFailure(f"no VmHWM for pid {pid}")
    return total


def cpu_seconds(pid: int) -> float:
    """User + system CPU time so far of a live process and its workers."""
    ticks = 0
    for member in family(pid):
        with contextlib.suppress(OSError):
            stat = Path(f"/proc/{member}/stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def service_pid(state_dir: Path, name: str) -> int:
    """The pid the embedded stack recorded for a service."""
    state = json.loads((state_dir / embedded.STATE_FILE).read_text())
    for item in state["processes"]:
        if item["name"] == name:
            return int(item["pid"])
    raise BenchFailure(f"{name} is not in {state_dir / embedded.STATE_FILE}")


def process_alive(pid: int, name: str, log: Path) -> Callable[[], None]:
    def check() -> None:
        try:
            state = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            state = ") Z"
        if state[state.rindex(")") + 2 :].startswith(("Z", "X")):
            raise BenchFailure(f"{name} (pid {pid}) exited; see {log}")

    return check


# -- the two sides ----------------------------------------------------------------------------


def register_objective(state_dir: Path, token: str, say: Reporter) -> None:
    """Register the sample objective through ingest's API; S3 keeps it for the next ``up``."""
    started = time.monotonic()
    stack = embedded.EmbeddedStack(state_dir, api_tokens=[token])
    try:
        stack.up([processes.ServiceSpec(name="ingest", module="tunewire.ingest")])
        response = httpx.post(
            stack.service_urls["ingest"] + "/v1/objectives",
            json=samples.support_intent_spec(),
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
        if response.status_code != 201:
            raise BenchFailure(
                f"registering the objective answered {response.status_code}: {response.text}"
            )
    finally:
        stack.down(snapshot=True)
    say(f"objective registered (stack up and down: {time.monotonic() - started:.1f} s)")


def run_baseline(
    bootstrap_servers: str, events: Sequence[Event], say: Reporter, *, fetch_max_wait_ms: int
) -> Drain:
    """Drain the same events with the bare copy loop in a subprocess; measure it like ingest."""
    suffix = uuid.uuid4().hex[:8]
    in_topic, out_topic = f"bench.baseline.in.{suffix}", f"bench.baseline.out.{suffix}"
    group = f"bench-baseline-{suffix}"
    produce_s = produce(bootstrap_servers, in_topic, events)
    label = f"baseline (fetch_max_wait_ms={fetch_max_wait_ms})"
    say(f"{label}: produced {len(events)} events in {produce_s:.2f} s")
    started = time.monotonic()
    worker = subprocess.Popen(
        [
            sys.executable,
            __file__,
            "--baseline-worker",
            bootstrap_servers,
            group,
            in_topic,
            out_topic,
            str(len(events)),
            str(fetch_max_wait_ms),
        ],
        stdout=subprocess.PIPE,
    )

    def check_alive() -> None:
        if worker.poll() is not None and worker.returncode != 0:
            raise BenchFailure(f"the baseline worker exited with {worker.returncode}")

    try:
        drain = wait_and_read(
            bootstrap_servers,
            group=group,
            in_topic=in_topic,
            out_topic=out_topic,
            expected=len(events),
            started=started,
            timeout_s=_drain_timeout(len(events)),
            check_alive=check_alive,
        )
        stdout, _ = worker.communicate(timeout=30)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    report = json.loads(stdout.decode().strip().splitlines()[-1])
    if drain.count != len(events):
        raise BenchFailure(f"the baseline wrote {drain.count} records for {len(events)} events")
    say(
        f"{label}: {drain.describe()}; "
        f"worker cpu {report['cpu_s']:.1f} s, peak RSS {report['rss_mb']:.0f} MB"
    )
    return dataclasses.replace(drain, values=[])


def baseline_worker(
    bootstrap_servers: str,
    group: str,
    in_topic: str,
    out_topic: str,
    count: int,
    fetch_max_wait_ms: int,
) -> None:
    """The bare consume -> produce loop; prints its CPU time and peak RSS as JSON."""
    consumer = kafka.KafkaConsumer(
        in_topic,
        bootstrap_servers=bootstrap_servers.split(","),
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=SESSION_TIMEOUT_MS,
        heartbeat_interval_ms=HEARTBEAT_INTERVAL_MS,
        max_poll_records=MAX_POLL_RECORDS,
        fetch_max_wait_ms=fetch_max_wait_ms,
    )
    producer = kafka.KafkaProducer(
        bootstrap_servers=bootstrap_servers.split(","),
        acks="all",
        linger_ms=5,
        batch_size=256 * 1024,
    )
    copied = 0
    deadline = time.monotonic() + _drain_timeout(count)
    try:
        while copied < count:
            if time.monotonic() >= deadline:
                raise SystemExit(f"baseline worker: copied only {copied} of {count}")
            polled = consumer.poll(timeout_ms=200)
            if not polled:
                continue
            for records in polled.values():
                for record in records:
                    producer.send(
                        out_topic, key=record.key, value=record.value, headers=record.headers
                    )
                    copied += 1
            producer.flush(timeout=60)
            consumer.commit()
    finally:
        producer.close(timeout=5)
        consumer.close(autocommit=False)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(
        json.dumps(
            {
                "copied": copied,
                "cpu_s": usage.ru_utime + usage.ru_stime,
                "rss_mb": usage.ru_maxrss / 1024,
            }
        )
    )


def _drain_timeout(count: int) -> float:
    return max(60.0, count / 200)


# -- main -------------------------------------------------------------------------------------


def run(count: int, say: Reporter, keep_dir: Path | None = None) -> dict[str, Any]:
    """The whole benchmark; returns the figures for the JSON line."""
    say(f"generating {count} events")
    events = make_events(count)
    expected_ids = {dict(event.headers)["ce_id"].decode() for event in events}
    token = "bench-" + uuid.uuid4().hex
    with contextlib.ExitStack() as cleanup:
        if keep_dir is None:
            tmp = cleanup.enter_context(tempfile.TemporaryDirectory(prefix="tunewire-bench-"))
            state_dir = Path(tmp) / "stack"
        else:
            state_dir = keep_dir
        register_objective(state_dir, token, say)

        marks: dict[str, float] = {}

        def ingest(stack: embedded.EmbeddedStack) -> processes.ServiceSpec:
            # Runs once the broker and S3 are up, before the ingest process starts.
            marks["produce_s"] = produce(stack.bootstrap_servers, topics.EVENTS_RAW, events)
            marks["started"] = time.monotonic()
            return processes.ServiceSpec(name="ingest", module="tunewire.ingest")

        stack = embedded.EmbeddedStack(state_dir, api_tokens=[token])
        try:
            stack.up([ingest])
            say(
                f"ingest: produced {count} raw events in {marks['produce_s']:.2f} s "
                f"({count / marks['produce_s']:,.0f}/s) before it started"
            )
            pid = service_pid(state_dir, "ingest")
            healthy_cpu = cpu_seconds(pid)
            log = stack.log_dir / "ingest.log"
            try:
                drain = wait_and_read(
                    stack.bootstrap_servers,
                    group=INGEST_GROUP,
                    in_topic=topics.EVENTS_RAW,
                    out_topic=topics.RECORDS,
                    expected=count,
                    started=marks["started"],
                    timeout_s=_drain_timeout(count),
                    check_alive=process_alive(pid, "ingest", log),
                )
            except BenchFailure as exc:
                tail = processes.log_tail(log, lines=20)
                raise BenchFailure(f"{exc}; ingest log tail:\n{tail}") from exc
            dead = count_records(stack.bootstrap_servers, topics.dlq(topics.EVENTS_RAW))
            if dead:
                raise BenchFailure(f"ingest dead-lettered {dead} events; see {log}")
            checked = check_records(drain, expected_ids)
            rss_mb = peak_rss_mb(pid)
            ingest_cpu = cpu_seconds(pid) - healthy_cpu
            say(
                f"ingest: {drain.describe()}; "
                f"cpu {ingest_cpu:.1f} s since healthy, peak RSS {rss_mb:.0f} MB; "
                f"{checked} records checked: none lost or duplicated, no planted PII"
            )
            idle_from = cpu_seconds(pid), time.monotonic()
            baseline = run_baseline(
                stack.bootstrap_servers, events, say, fetch_max_wait_ms=BASELINE_FETCH_WAIT_MS
            )
            same_fetch = run_baseline(
                stack.bootstrap_servers, events, say, fetch_max_wait_ms=INGEST_FETCH_WAIT_MS
            )
            idle_cpu = (cpu_seconds(pid) - idle_from[0]) / (time.monotonic() - idle_from[1])
            say(f"ingest, idle during the baseline, used {idle_cpu:.0%} of a core")
        finally:
            stack.down(snapshot=False)

    ratio = drain.events_per_s / baseline.events_per_s
    say(
        f"ratio {ratio:.2f} (target >= {TARGET_RATIO}: "
        f"{'met' if ratio >= TARGET_RATIO else 'MISSED'}); "
        f"ingest peak RSS {rss_mb:.0f} MB (target < {TARGET_RSS_MB:.0f}: "
        f"{'met' if rss_mb < TARGET_RSS_MB else 'MISSED'})"
    )
    return {
        "events_per_s": round(drain.events_per_s, 1),
        "baseline_events_per_s": round(baseline.events_per_s, 1),
        "baseline_fetch_wait_500ms_events_per_s": round(same_fetch.events_per_s, 1),
        "ratio": round(ratio, 3),
        "rss_mb": round(rss_mb, 1),
        "ingest_cpu_us_per_event": round(ingest_cpu / count * 1e6, 1),
        "produce_events_per_s": round(count / marks["produce_s"], 1),
        "ingest_wall_s": round(drain.wall_s, 2),
        "baseline_wall_s": round(baseline.wall_s, 2),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--events", type=int, default=DEFAULT_EVENTS, help="events to ingest")
    parser.add_argument("--json-only", action="store_true", help="print only the JSON line")
    parser.add_argument(
        "--state-dir",
        type=Path,
        help="keep the stack's state (logs, S3 snapshot) here instead of a temporary dir",
    )
    parser.add_argument("--baseline-worker", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.baseline_worker:
        bootstrap, group, in_topic, out_topic, count, fetch_wait = args.baseline_worker
        baseline_worker(bootstrap, group, in_topic, out_topic, int(count), int(fetch_wait))
        return 0
    if args.events < 2:
        parser.error("--events must be at least 2")
    say = Reporter(args.json_only)
    result: dict[str, Any] = {"bench": "ingest", "events": args.events}
    try:
        result.update(run(args.events, say, args.state_dir))
    except (BenchFailure, processes.StackError) as exc:
        with contextlib.suppress(Exception):
            print(f"FAILED: {exc}", file=sys.stderr, flush=True)
        result["error"] = str(exc)
        print(json.dumps(result), flush=True)
        return 1
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

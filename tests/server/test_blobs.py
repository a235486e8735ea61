"""Blob stores: the local directory and an S3-compatible store (moto's server mode, started
here on a free port), write-once and content-addressed; then the whole server on S3.
"""

from __future__ import annotations

import hashlib
import os
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from protocol.verify import verify_path
from server.blobs import BlobStore, read_all
from server.blobs.local import LocalBlobStore
from server.errors import BlobMissingError
from server.run import embedded
from server.schemas import ExportRequest
from server.settings import Settings
from tests.server.devicekit import SimDevice

ACCESS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    """An S3 endpoint: moto in server mode, in a thread of this process."""
    server_mod = pytest.importorskip("moto.moto_server.threaded_moto_server")
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def s3_client(endpoint: str) -> Any:
    import boto3

    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **ACCESS)


@pytest.fixture
def bucket(moto_endpoint: str) -> str:
    """A bucket with object lock enabled."""
    name = f"evidence-{uuid.uuid4().hex[:12]}"
    s3_client(moto_endpoint).create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
    return name


def s3_settings(tmp_path: Path, endpoint: str, bucket: str, **more: Any) -> Settings:
    return Settings(
        data=tmp_path / "data",
        blob_backend="s3",
        s3_endpoint_url=endpoint,
        s3_bucket=bucket,
        s3_access_key_id=ACCESS["aws_access_key_id"],
        s3_secret_access_key=ACCESS["aws_secret_access_key"],
        s3_retention_days=30,
        admin_token="admin-token-for-s3-tests",
        log_batch_window=0.005,
        **more,
    )


async def check_store(store: BlobStore, tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    key = hashlib.sha256(data).hexdigest()
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    assert await store.size(key) is None
    assert await store.put_file(key, src) is True
    assert await store.put_file(key, src) is False  # write-once: a no-op, not an overwrite
    assert await store.size(key) == len(data)
    assert await read_all(store, key) == data
    assert [k async for k in store.stored_keys()] == [key]
    with pytest.raises(BlobMissingError):
        await read_all(store, "0" * 64)
    with pytest.raises(ValueError, match="not a blob key"):
        await store.size("../../etc/passwd")


async def test_local_store(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    await check_store(store, tmp_path)
    key = next(iter([k async for k in store.stored_keys()]))
    path = store.path(key)
    assert path.parent.parent.parent == tmp_path / "blobs"
    assert not path.stat().st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)


async def test_s3_store(tmp_path: Path, moto_endpoint: str, bucket: str) -> None:
    from server.blobs.s3 import S3BlobStore

    store = S3BlobStore.from_settings(s3_settings(tmp_path, moto_endpoint, bucket))
    try:
        await check_store(store, tmp_path)
        key = next(iter([k async for k in store.stored_keys()]))
        retention = await store.retention(key)
        assert retention.get("Mode") == "COMPLIANCE"
        # the object lock holds: the store refuses to delete a locked version
        client = s3_client(moto_endpoint)
        versions = client.list_object_versions(Bucket=bucket)["Versions"]
        with pytest.raises(client.exceptions.ClientError):
            client.delete_object(
                Bucket=bucket, Key=f"blobs/{key}", VersionId=versions[0]["VersionId"]
            )
    finally:
        await store.close()


async def test_server_on_s3_exports_and_verifies(
    tmp_path: Path, moto_endpoint: str, bucket: str
) -> None:
    settings = s3_settings(tmp_path, moto_endpoint, bucket)
    async with embedded(settings) as srv, srv.client() as anon:
        device = SimDevice("cam-s3")
        await device.enrol(anon, await srv.enrolment_token("cam-s3"))
        async with device.client(anon) as client:
            device.shift(3)
            await device.sync(client)
        done = await srv.export(ExportRequest(device="cam-s3", openings=True), tmp_path / "b")
        assert done.media == 3
        assert srv.services.blobs.name == "s3"
    report = verify_path(tmp_path / "b", srv.fingerprint)
    assert report.verdict == "authentic", [f.to_json() for f in report.findings]
    listed = s3_client(moto_endpoint).list_objects_v2(Bucket=bucket)
    assert len(listed["Contents"]) == 3

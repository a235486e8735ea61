"""Blobs in an S3-compatible object store (boto3, called in worker threads).

Objects are named ``{prefix}{hex sha256}``. A put first asks whether the object exists
(write-once: an existing key is never replaced), then uploads with the SHA-256 checksum,
so the store itself refuses a body that differs from the key. When the bucket has object
lock enabled and a retention is configured, each object gets COMPLIANCE retention: not
even the account owner can delete or overwrite it before the date.

Only this module imports boto3; its errors become :class:`server.errors.StorageError`.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from server.blobs import READ_CHUNK, check_key
from server.errors import BlobMissingError, ConfigError, StorageError
from server.settings import Settings

_NOT_FOUND = ("404", "NoSuchKey", "NotFound")


class S3BlobStore:
    """Write-once blobs in a bucket."""

    name = "s3"

    def __init__(self, client: Any, bucket: str, prefix: str, retention_days: int) -> None:
        self._client = client
        self.bucket = bucket
        self.prefix = prefix
        self.retention_days = retention_days
        self._lock_enabled: bool | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> S3BlobStore:
        """A client for the endpoint and bucket the settings name."""
        secret = settings.s3_secret_access_key
        try:
            client = boto3.client(
                "s3",
                endpoint_url=settings.s3_endpoint_url,
                region_name=settings.s3_region,
                aws_access_key_id=settings.s3_access_key_id,
                aws_secret_access_key=secret.get_secret_value() if secret else None,
                config=Config(
                    retries={"max_attempts": 5, "mode": "standard"},
                    connect_timeout=10,
                    read_timeout=60,
                ),
            )
        except (BotoCoreError, ValueError) as exc:
            raise ConfigError(f"cannot make an S3 client: {exc}") from exc
        return cls(client, settings.s3_bucket, settings.s3_prefix, settings.s3_retention_days)

    def _name(self, key: str) -> str:
        return self.prefix + check_key(key)

    async def _call(self, what: str, method: str, **kwargs: Any) -> Any:
        try:
            return await asyncio.to_thread(getattr(self._client, method), **kwargs)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in _NOT_FOUND:
                raise BlobMissingError(f"{what}: not in bucket {self.bucket}") from exc
            raise StorageError(f"{what}: S3 said {code or exc}") from exc
        except BotoCoreError as exc:
            raise StorageError(f"{what}: {exc}") from exc

    async def object_lock(self) -> bool:
        """Whether the bucket has object lock enabled (asked once)."""
        if self._lock_enabled is None:
            try:
                answer = await self._call(
                    "object lock", "get_object_lock_configuration", Bucket=self.bucket
                )
                config = answer.get("ObjectLockConfiguration", {})
                self._lock_enabled = config.get("ObjectLockEnabled") == "Enabled"
            except (BlobMissingError, StorageError):
                self._lock_enabled = False
        return self._lock_enabled

    async def put_file(self, key: str, path: Path) -> bool:
        name = self._name(key)
        if await self.size(key) is not None:
            return False
        data = await asyncio.to_thread(path.read_bytes)
        extra: dict[str, Any] = {
            "ChecksumSHA256": base64.b64encode(bytes.fromhex(key)).decode("ascii"),
            # S3 asks for Content-MD5 on writes to a bucket with object lock.
            "ContentMD5": base64.b64encode(
                hashlib.md5(data, usedforsecurity=False).digest()
            ).decode("ascii"),
        }
        if self.retention_days > 0 and await self.object_lock():
            until = dt.datetime.now(dt.UTC) + dt.timedelta(days=self.retention_days)
            extra["ObjectLockMode"] = "COMPLIANCE"
            extra["ObjectLockRetainUntilDate"] = until
        await self._call(
            f"put blob {key[:16]}", "put_object", Bucket=self.bucket, Key=name, Body=data, **extra
        )
        return True

    async def size(self, key: str) -> int | None:
        try:
            head = await self._call(
                f"head blob {key[:16]}", "head_object", Bucket=self.bucket, Key=self._name(key)
            )
        except BlobMissingError:
            return None
        return int(head["ContentLength"])

    async def read(self, key: str, chunk: int = READ_CHUNK) -> AsyncIterator[bytes]:
        answer = await self._call(
            f"get blob {key[:16]}", "get_object", Bucket=self.bucket, Key=self._name(key)
        )
        body = answer["Body"]
        try:
            while True:
                try:
                    block = await asyncio.to_thread(body.read, chunk)
                except (BotoCoreError, OSError) as exc:
                    raise StorageError(f"read blob {key[:16]}: {exc}") from exc
                if not block:
                    return
                yield bytes(block)
        finally:
            body.close()

    async def stored_keys(self) -> AsyncIterator[str]:
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self.prefix}
            if token:
                kwargs["ContinuationToken"] = token
            page = await self._call("list blobs", "list_objects_v2", **kwargs)
            for item in page.get("Contents", []):
                name = str(item["Key"])[len(self.prefix) :]
                try:
                    yield check_key(name)
                except ValueError:
                    continue  # not ours: the prefix may be shared
            if not page.get("IsTruncated"):
                return
            token = page.get("NextContinuationToken")

    async def retention(self, key: str) -> dict[str, Any]:
        """The object's lock (for operators and tests): ``Mode`` and ``RetainUntilDate``."""
        head = await self._call(
            f"head blob {key[:16]}", "head_object", Bucket=self.bucket, Key=self._name(key)
        )
        if "ObjectLockMode" not in head:
            return {}
        return {
            "Mode": head["ObjectLockMode"],
            "RetainUntilDate": head["ObjectLockRetainUntilDate"],
        }

    async def close(self) -> None:
        await asyncio.to_thread(self._client.close)

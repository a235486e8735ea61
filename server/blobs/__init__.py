"""Evidence blobs behind one interface: a local directory (default) or an S3-compatible store.

Blobs are the encrypted media files exactly as devices made them, content-addressed by the
hex SHA-256 of their bytes and written once: storing a key that exists is a no-op, never an
overwrite. ``put_file`` returns only once the blob is durable. The back end is chosen by
name (:func:`open_blob_store`); only :mod:`server.blobs.s3` imports boto3.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Protocol

from server.errors import ConfigError
from server.settings import Settings

_KEY = re.compile(r"^[0-9a-f]{64}$")
READ_CHUNK = 1 << 20


def check_key(key: str) -> str:
    """Blob keys are 64 lowercase hex digits (a SHA-256)."""
    if not _KEY.match(key):
        raise ValueError(f"not a blob key: {key!r}")
    return key


class BlobStore(Protocol):
    """Write-once, content-addressed storage of evidence blobs."""

    name: str

    async def put_file(self, key: str, path: Path) -> bool:
        """Store the bytes of ``path`` under ``key`` durably; False if the key existed.

        The caller has checked that ``key`` is the SHA-256 of the file and may delete the
        file afterwards.
        """
        ...

    async def size(self, key: str) -> int | None:
        """The size of blob ``key``, or None if it is not stored."""
        ...

    def read(self, key: str, chunk: int = READ_CHUNK) -> AsyncIterator[bytes]:
        """Stream the bytes of blob ``key`` (BlobMissingError if absent)."""
        ...

    def stored_keys(self) -> AsyncIterator[str]:
        """Every stored key (for reconciliation after a crash)."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


async def read_all(store: BlobStore, key: str) -> bytes:
    """A whole blob in memory (one media segment: small)."""
    parts = [part async for part in store.read(key)]
    return b"".join(parts)


def open_blob_store(settings: Settings) -> BlobStore:
    """The back end the settings name."""
    if settings.blob_backend == "local":
        from server.blobs.local import LocalBlobStore  # noqa: PLC0415 - chosen by name

        return LocalBlobStore(settings.blob_dir)
    if settings.blob_backend == "s3":
        from server.blobs.s3 import S3BlobStore  # noqa: PLC0415 - boto3 only when chosen

        return S3BlobStore.from_settings(settings)
    raise ConfigError(f"unknown blob back end {settings.blob_backend!r}")

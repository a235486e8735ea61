"""Blobs in a local directory: ``{root}/ab/cd/abcd...`` (hex SHA-256), read-only files.

A blob is linked into place from a file that is already fsynced, so it appears whole or
not at all; then its directory is fsynced. An existing blob is never replaced. File system
calls run in worker threads so that the event loop never waits on a disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

from server.blobs import READ_CHUNK, check_key
from server.errors import BlobMissingError, StorageError


def fsync_dir(path: Path) -> None:
    """fsync a directory so that names created in it survive a crash."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dirs(path: Path, top: Path) -> None:
    """Create ``path`` under ``top`` and fsync each parent whose entries changed."""
    missing: list[Path] = []
    cur = path
    while not cur.exists() and cur != top:
        missing.append(cur)
        cur = cur.parent
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):
            directory.mkdir(mode=0o750)
        fsync_dir(directory.parent)


class LocalBlobStore:
    """Write-once blobs in a directory."""

    name = "local"

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, key: str) -> Path:
        """Where blob ``key`` lives."""
        check_key(key)
        return self.root / key[:2] / key[2:4] / key

    async def put_file(self, key: str, path: Path) -> bool:
        try:
            return await asyncio.to_thread(self._put, key, path)
        except OSError as exc:
            raise StorageError(f"cannot store blob {key[:16]}: {exc}") from exc

    def _put(self, key: str, src: Path) -> bool:
        dst = self.path(key)
        self.root.mkdir(parents=True, exist_ok=True)
        make_dirs(dst.parent, self.root.parent)
        if dst.exists():
            return False
        try:
            os.link(src, dst)
        except FileExistsError:
            return False
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            self._copy(src, dst)
        with contextlib.suppress(OSError):
            os.chmod(dst, 0o440)
        fsync_dir(dst.parent)
        return True

    @staticmethod
    def _copy(src: Path, dst: Path) -> None:
        """Across file systems: copy to a temporary name, fsync, then link into place."""
        tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
        with src.open("rb") as fin, tmp.open("wb") as fout:
            shutil.copyfileobj(fin, fout, READ_CHUNK)
            fout.flush()
            os.fsync(fout.fileno())
        try:
            os.link(tmp, dst)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()

    async def size(self, key: str) -> int | None:
        try:
            return (await asyncio.to_thread(self.path(key).stat)).st_size
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StorageError(f"cannot stat blob {key[:16]}: {exc}") from exc

    async def read(self, key: str, chunk: int = READ_CHUNK) -> AsyncIterator[bytes]:
        path = self.path(key)
        try:
            f = await asyncio.to_thread(path.open, "rb")
        except FileNotFoundError as exc:
            raise BlobMissingError(f"blob {key} is not in {self.root}") from exc
        except OSError as exc:
            raise StorageError(f"cannot open blob {key[:16]}: {exc}") from exc
        try:
            while block := await asyncio.to_thread(f.read, chunk):
                yield block
        except OSError as exc:
            raise StorageError(f"cannot read blob {key[:16]}: {exc}") from exc
        finally:
            f.close()

    async def stored_keys(self) -> AsyncIterator[str]:
        names = await asyncio.to_thread(self._walk)
        for name in names:
            yield name

    def _walk(self) -> list[str]:
        found: list[str] = []
        if not self.root.exists():
            return found
        for first in sorted(self.root.iterdir()):
            if not first.is_dir():
                continue
            for second in sorted(first.iterdir()):
                if not second.is_dir():
                    continue
                found.extend(p.name for p in sorted(second.iterdir()) if not p.name.startswith("."))
        return found

    async def close(self) -> None:
        return None

"""``DirectoryStorage``: the evidence medium as a real directory with real fsync.

Used on the Pi (the SD card or an SSD mounted at the store path) and, wrapped with fault
injection, by the simulator. Errors from the OS become :class:`StorageError` with errno.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path, PurePosixPath

from hardware.base import Storage, StorageError, StorageState


def _rel(path: str) -> str:
    parts = PurePosixPath(path).parts
    if not parts or path.startswith("/") or ".." in parts:
        raise StorageError(errno.EINVAL, f"unsafe path {path!r}")
    return path


class DirectoryStorage(Storage):
    """Files under ``root`` on the host file system."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def _path(self, path: str) -> Path:
        return self.root / _rel(path)

    def state(self) -> StorageState:
        usage = shutil.disk_usage(self.root)
        read_only = not os.access(self.root, os.W_OK)
        return StorageState(total=usage.total, free=usage.free, read_only=read_only)

    def write_new(self, path: str, data: bytes) -> None:
        self._write_file(path, data, os.O_WRONLY | os.O_CREAT | os.O_EXCL, "write")

    def append(self, path: str, data: bytes) -> None:
        self._write_file(path, data, os.O_WRONLY | os.O_CREAT | os.O_APPEND, "append")

    def _write_file(self, path: str, data: bytes, flags: int, what: str) -> None:
        full = self._path(path)
        try:
            fd = os.open(full, flags, 0o600)
        except OSError as exc:
            raise StorageError(exc.errno or errno.EIO, f"open {path}: {exc.strerror}") from exc
        try:
            self._write_all(fd, path, data)
            self._fsync_file(fd, path)
        except OSError as exc:
            raise StorageError(exc.errno or errno.EIO, f"{what} {path}: {exc.strerror}") from exc
        finally:
            os.close(fd)

    # The two steps of a durable write, apart so that a fault-injecting medium can step in
    # between them (a power cut after write, EIO from fsync).
    def _write_all(self, fd: int, path: str, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]

    def _fsync_file(self, fd: int, path: str) -> None:
        os.fsync(fd)

    def rename(self, source: str, target: str) -> None:
        src, dst = self._path(source), self._path(target)
        if dst.exists():
            raise StorageError(errno.EEXIST, f"rename {source}: {target} exists")
        try:
            os.rename(src, dst)
        except OSError as exc:
            raise StorageError(exc.errno or errno.EIO, f"rename {source}: {exc.strerror}") from exc

    def sync_dir(self, path: str) -> None:
        try:
            fd = os.open(self._path(path) if path else self.root, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise StorageError(exc.errno or errno.EIO, f"sync {path}: {exc.strerror}") from exc

    def read(self, path: str) -> bytes:
        try:
            return self._path(path).read_bytes()
        except OSError as exc:
            raise StorageError(exc.errno or errno.EIO, f"read {path}: {exc.strerror}") from exc

    def read_range(self, path: str, offset: int, length: int) -> bytes:
        try:
            with self._path(path).open("rb") as f:
                f.seek(offset)
                return f.read(length)
        except OSError as exc:
            raise StorageError(exc.errno or errno.EIO, f"read {path}: {exc.strerror}") from exc

    def size(self, path: str) -> int | None:
        try:
            return self._path(path).stat().st_size
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StorageError(exc.errno or errno.EIO, f"stat {path}: {exc.strerror}") from exc

    def listdir(self, path: str) -> list[str]:
        try:
            folder = self._path(path) if path else self.root
            return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise StorageError(exc.errno or errno.EIO, f"list {path}: {exc.strerror}") from exc

    def makedirs(self, path: str) -> None:
        full = self._path(path)
        if full.is_dir():
            return
        try:
            full.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(exc.errno or errno.EIO, f"mkdir {path}: {exc.strerror}") from exc
        self.sync_dir(str(PurePosixPath(path).parent) if "/" in path else "")

    def release(self, path: str) -> None:
        try:
            self._path(path).unlink()
        except OSError as exc:
            raise StorageError(exc.errno or errno.EIO, f"remove {path}: {exc.strerror}") from exc
        parent = str(PurePosixPath(path).parent)
        self.sync_dir("" if parent == "." else parent)

    def local_path(self) -> str | None:
        return str(self.root)

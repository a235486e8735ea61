"""Read-only access to a bundle or store, whether a directory or a .zip, safely.

A :class:`Container` lists files by relative ``/`` path and opens them for reading. The
directory form never follows a symbolic link out of its root. The zip form never extracts:
it refuses absolute or ``..`` member names, duplicate names, encrypted members and archives
whose declared sizes betray a zip bomb, and it never reads a member past its declared size.
"""

from __future__ import annotations

import io
import lzma
import os
import stat
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import IO, Protocol

from protocol.errors import DecodeError

#: Largest file the verifier reads (one media segment is far smaller).
MAX_FILE_BYTES = 1 << 30
#: Largest ratio of uncompressed to compressed size a zip may declare overall.
MAX_ZIP_RATIO = 200
MAX_ZIP_MEMBERS = 5_000_000
#: What zipfile and its decompressors raise on a damaged archive or member.
_ZIP_ERRORS = (
    zipfile.BadZipFile,
    OSError,
    EOFError,
    ValueError,
    NotImplementedError,
    zlib.error,
    lzma.LZMAError,
)


class Container(Protocol):
    """Files of a bundle or store, by relative path."""

    name: str

    def files(self) -> Iterator[str]:
        """Every regular file, sorted."""
        ...

    def exists(self, path: str) -> bool:
        """Whether ``path`` is a regular file."""
        ...

    def open(self, path: str) -> IO[bytes]:
        """Open ``path`` for reading (raises FileNotFoundError if absent)."""
        ...

    def read(self, path: str, limit: int) -> bytes:
        """Read a whole small file, refusing one over ``limit`` bytes."""
        ...

    def listdir(self, path: str) -> list[str]:
        """Names directly in directory ``path`` (files and folders), sorted; [] if absent."""
        ...

    def close(self) -> None:
        """Release the underlying file."""
        ...


def _check_rel(path: str) -> str:
    # Split by hand: PurePosixPath would fold "a/./b" and "a//b" into "a/b".
    parts = path.split("/")
    if any(p in ("..", ".", "") for p in parts) or "\\" in path:
        raise DecodeError(f"unsafe path {path!r}")
    return path


class DirectoryContainer:
    """A bundle or store directory on disk."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.name = str(root)

    def _path(self, path: str) -> Path:
        full = self.root / _check_rel(path)
        # Refuse links anywhere on the way: evidence is made of regular files only.
        cur = self.root
        for part in PurePosixPath(path).parts:
            cur = cur / part
            if cur.is_symlink():
                raise DecodeError(f"{path}: symbolic links are not followed")
        return full

    def files(self) -> Iterator[str]:
        # Depth first, in the sorted order of the full paths (as the zip form lists them).
        stack = [self._entries("")]
        while stack:
            entry = next(stack[-1], None)
            if entry is None:
                stack.pop()
            elif entry[1]:
                stack.append(self._entries(entry[0]))
            else:
                yield entry[0]

    def _entries(self, rel: str) -> Iterator[tuple[str, bool]]:
        """``(path, is_folder)`` of the entries of folder ``rel``, in full-path order."""
        base = self.root / rel if rel else self.root
        try:
            with os.scandir(base) as it:
                found = list(it)
        except OSError:
            return iter(())
        items = []
        for entry in found:
            name = f"{rel}/{entry.name}" if rel else entry.name
            if entry.is_symlink():
                items.append((name, False))  # reported by the caller; open() refuses it
            elif entry.is_dir():
                items.append((name, True))
            elif entry.is_file():
                items.append((name, False))
        # A folder's files sort as "name/...", so the folder sorts as "name/".
        items.sort(key=lambda item: item[0] + "/" if item[1] else item[0])
        return iter(items)

    def exists(self, path: str) -> bool:
        try:
            full = self._path(path)
            return stat.S_ISREG(full.stat().st_mode)
        except (OSError, DecodeError):
            return False

    def open(self, path: str) -> IO[bytes]:
        return self._path(path).open("rb")

    def read(self, path: str, limit: int) -> bytes:
        with self.open(path) as f:
            data = f.read(limit + 1)
        if len(data) > limit:
            raise DecodeError(f"{path}: larger than {limit} bytes")
        return data

    def listdir(self, path: str) -> list[str]:
        try:
            target = self._path(path) if path else self.root
            return sorted(os.listdir(target))
        except (OSError, DecodeError):
            return []

    def close(self) -> None:
        return None


class _Bounded(io.RawIOBase):
    """Reads at most ``limit`` bytes from a zip member; more is a zip bomb or a lie."""

    def __init__(self, inner: IO[bytes], limit: int, name: str) -> None:
        self._inner = inner
        self._left = limit
        self._name = name

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        want = min(len(buffer), self._left)
        try:
            data = self._inner.read(want if want > 0 else 1)
        except _ZIP_ERRORS as exc:
            raise DecodeError(f"{self._name}: cannot read zip member ({exc})") from exc
        if self._left <= 0:
            if data:
                raise DecodeError(f"{self._name}: member is longer than it declares")
            return 0
        if not data:
            raise DecodeError(f"{self._name}: member is shorter than it declares")
        buffer[: len(data)] = data
        self._left -= len(data)
        return len(data)

    def close(self) -> None:
        self._inner.close()
        super().close()


class ZipContainer:
    """A bundle packed as a .zip; members are streamed, never extracted."""

    def __init__(self, path: Path) -> None:
        self.name = str(path)
        try:
            self._zip = zipfile.ZipFile(path)
        except _ZIP_ERRORS as exc:
            raise DecodeError(f"{path}: not a readable zip archive ({exc})") from exc
        try:
            self._index(path)
        except Exception:
            self._zip.close()
            raise

    def _index(self, path: Path) -> None:
        infos = self._zip.infolist()
        if len(infos) > MAX_ZIP_MEMBERS:
            raise DecodeError(f"{path}: more than {MAX_ZIP_MEMBERS} members")
        names: dict[str, zipfile.ZipInfo] = {}
        declared = 0
        for info in infos:
            name = info.filename
            if name.endswith("/"):
                continue  # a folder entry (ZipInfo.is_dir() fails on an empty name)
            _check_rel(name)
            if info.flag_bits & 0x1:
                raise DecodeError(f"{name}: encrypted zip members are not allowed")
            if name in names:
                raise DecodeError(f"{name}: appears twice in the archive")
            if info.file_size > MAX_FILE_BYTES:
                raise DecodeError(f"{name}: declares {info.file_size} bytes, over the limit")
            declared += info.file_size
            names[name] = info
        size = max(path.stat().st_size, 1)
        if declared > MAX_ZIP_RATIO * size and declared > (64 << 20):
            raise DecodeError(
                f"{path}: declares {declared} bytes from a {size}-byte archive (zip bomb?)"
            )
        # A zip of a bundle directory usually holds it under one top-level folder.
        prefix = ""
        tops = {n.split("/", 1)[0] for n in names}
        if len(tops) == 1 and all("/" in n for n in names):
            prefix = tops.pop() + "/"
        self._members = {n[len(prefix) :]: info for n, info in names.items()}
        self._dirs: set[str] = set()
        for n in self._members:
            parts = n.split("/")
            for i in range(1, len(parts)):
                self._dirs.add("/".join(parts[:i]))

    def files(self) -> Iterator[str]:
        yield from sorted(self._members)

    def exists(self, path: str) -> bool:
        return path in self._members

    def open(self, path: str) -> IO[bytes]:
        info = self._members.get(path)
        if info is None:
            raise FileNotFoundError(path)
        try:
            inner = self._zip.open(info)
        except _ZIP_ERRORS as exc:
            raise DecodeError(f"{path}: cannot open zip member ({exc})") from exc
        return io.BufferedReader(_Bounded(inner, info.file_size, path))

    def read(self, path: str, limit: int) -> bytes:
        info = self._members.get(path)
        if info is None:
            raise FileNotFoundError(path)
        if info.file_size > limit:
            raise DecodeError(f"{path}: larger than {limit} bytes")
        with self.open(path) as f:
            return f.read()

    def listdir(self, path: str) -> list[str]:
        prefix = f"{path}/" if path else ""
        found = set()
        for name in list(self._members) + list(self._dirs):
            if name.startswith(prefix) and name != path:
                found.add(name[len(prefix) :].split("/", 1)[0])
        return sorted(found)

    def close(self) -> None:
        self._zip.close()


def open_container(path: Path) -> Container:
    """A directory or a .zip file as a container; DecodeError if it is neither."""
    try:
        if path.is_dir():
            return DirectoryContainer(path)
        if path.is_file():
            if not zipfile.is_zipfile(path):
                raise DecodeError(f"{path}: not a directory or a .zip archive")
            return ZipContainer(path)
    except OSError as exc:
        raise DecodeError(f"{path}: cannot read ({exc.strerror})") from exc
    raise DecodeError(f"{path}: no such file or directory")

"""A bundle directory as a stream of zip bytes, without holding the archive anywhere.

``zipfile`` writes to an unseekable sink by putting each member's sizes and CRC in a data
descriptor after its data; the sink hands out what was written so far, so the caller sees
the archive one chunk at a time while the files are read one block at a time. Memory is
one block plus the central directory (one small entry per file). Media files (``.ubm``,
``.bin``) are stored, the rest deflated, as :func:`protocol.bundle.zip_bundle` does, and the
result reads back with :mod:`protocol.container` like any other bundle zip.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from pathlib import Path

BLOCK = 1 << 20


class _Sink(io.RawIOBase):
    """An unseekable file that keeps what is written until :meth:`take`."""

    def __init__(self) -> None:
        super().__init__()
        self._parts: list[bytes] = []
        self._size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        chunk = bytes(data)
        self._parts.append(chunk)
        self._size += len(chunk)
        return len(chunk)

    def take(self) -> bytes:
        """Everything written since the last take."""
        out = b"".join(self._parts)
        self._parts.clear()
        return out

    def tell(self) -> int:
        # zipfile asks where members start; an unseekable stream still knows its length.
        return self._size


def bundle_files(directory: Path) -> list[tuple[Path, str]]:
    """The regular files of a bundle directory with their archive names, sorted."""
    found = []
    for path in sorted(directory.rglob("*")):
        if path.is_file() and not path.is_symlink():
            rel = path.relative_to(directory).as_posix()
            if not rel.split("/")[-1].startswith("."):  # BundleWriter's temporary names
                found.append((path, rel))
    return found


def zip_chunks(directory: Path, block: int = BLOCK) -> Iterator[bytes]:
    """Yield the bytes of a zip of ``directory`` (blocking I/O: iterate in a worker thread)."""
    sink = _Sink()
    with zipfile.ZipFile(sink, "w", allowZip64=True) as archive:
        for path, name in bundle_files(directory):
            stored = name.endswith((".ubm", ".bin"))
            info = zipfile.ZipInfo.from_file(path, name)
            info.compress_type = zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED
            with path.open("rb") as source, archive.open(info, "w", force_zip64=True) as member:
                while data := source.read(block):
                    member.write(data)
                    if out := sink.take():
                        yield out
            if out := sink.take():
                yield out
    if out := sink.take():
        yield out

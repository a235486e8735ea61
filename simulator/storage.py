"""A faulty evidence medium on a host directory: :class:`SimulatedMedium`.

It is :class:`hardware.disk.DirectoryStorage` (real files, real fsync, so that
``unbroken verify DIR`` reads the store afterwards) plus a model of what a card does wrong:

* capacity: ``capacity`` bytes; a write past it writes what fits, then fails with ENOSPC;
* fsync fails with EIO on demand (:meth:`inject_fsync_failure`); the data of that write
  stays undurable and the medium reports itself unhealthy;
* read-only (EROFS) on demand;
* a card that accepts writes but keeps nothing: reads give zeros, or files come back empty;
* power cuts (FAULTS 2): at :meth:`power_cut`, file data written since its last successful
  fsync, and directory changes (creations, renames, removals) not followed by an fsync of
  their directory, are each kept, dropped or garbled, as ``cut_policy`` says; ``"mixed"``
  picks per item with the seeded RNG. Renames are undone unless the policy is ``"keep"``.
  After the cut every operation fails with :class:`PowerLost` until :meth:`power_on`.
* a cut in the middle of an operation (:meth:`inject_cut`): at a seeded or chosen point
  (after a write and before its fsync, after a rename, before a directory fsync, after an
  unlink) the medium asks the power supply to cut the device and raises PowerLost.

Every fault and every cut decision is in :attr:`history`, the harness's own log.
"""

from __future__ import annotations

import errno
import os
import random
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path, PurePosixPath
from typing import Literal

from hardware.base import StorageError, StorageState
from hardware.disk import DirectoryStorage
from simulator.history import History

CutPolicy = Literal["keep", "drop", "garble", "mixed"]
Forgetful = Literal["zeros", "empty"]


class PowerLost(StorageError):  # noqa: N818 (a state, as the hardware reports it)
    """The medium has no power: the device is dead until power returns."""

    def __init__(self, message: str = "no power") -> None:
        super().__init__(errno.EIO, message)


class CutPoint(StrEnum):
    """Where inside an operation a cut can land."""

    WRITE = "write"  # data written, not yet fsynced
    RENAME = "rename"  # renamed, directory not yet fsynced
    SYNC_DIR = "sync_dir"  # just before a directory fsync
    RELEASE = "release"  # unlinked, directory not yet fsynced


@dataclass(frozen=True, slots=True)
class _Pending:
    """A directory change not yet made durable by an fsync of its directory."""

    op: str  # create | rename | unlink
    path: str
    target: str = ""
    data: bytes = b""  # content of an unlinked file, to bring it back


def _parent(path: str) -> str:
    parent = str(PurePosixPath(path).parent)
    return "" if parent == "." else parent


class SimulatedMedium(DirectoryStorage):
    """An SD card with capacity, faults and power-cut semantics, on a host directory."""

    def __init__(
        self,
        root: Path,
        history: History,
        *,
        capacity: int | None = None,
        seed: int = 0,
        cut_policy: CutPolicy = "mixed",
    ) -> None:
        super().__init__(root)
        self.history = history
        self.capacity = capacity
        self.cut_policy: CutPolicy = cut_policy
        self.rng = random.Random(seed)  # noqa: S311 (seeded faults, not secrets)
        self.powered = True
        self.healthy = True
        self.read_only = False
        self.forgetful: Forgetful | None = None
        self.on_cut: Callable[[], None] | None = None  # the power supply's cut, if wired
        self._fsync_failures = 0
        self._fsync_under: str | None = None
        self._cut_at: tuple[CutPoint | None, int] | None = None
        self._pending: list[_Pending] = []
        self._unsynced: dict[str, int] = {}  # path -> size known durable
        self._eio_paths: set[str] = set()
        self.used = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())

    # ------------------------------------------------------------------ inject
    def inject_fsync_failure(self, count: int = 1, under: str | None = None) -> None:
        """The next ``count`` fsyncs (of files or directories) fail with EIO; with
        ``under``, only fsyncs of paths under that folder (e.g. ``"journal/"``)."""
        self._fsync_failures += count
        self._fsync_under = under
        self.history.add("inject_fsync_failure", count=count, under=under)

    def inject_fsync_error(self, count: int = 1, under: str | None = None) -> None:
        """EIO on the next fsync (the name FAULTS 4 uses): :meth:`inject_fsync_failure`."""
        self.inject_fsync_failure(count, under)

    def _fsync_fails(self, path: str) -> bool:
        if not self._fsync_failures:
            return False
        if self._fsync_under is not None and not path.startswith(self._fsync_under):
            return False
        self._fsync_failures -= 1
        return True

    def inject_read_only(self, on: bool = True) -> None:
        """The card turns read-only (writes fail with EROFS), or writable again."""
        self.read_only = on
        self.history.add("read_only", on=on)

    def inject_forgetful(self, mode: Forgetful | None = "zeros") -> None:
        """Writes succeed but nothing is kept: files read back as zeros, or empty."""
        self.forgetful = mode
        self.history.add("forgetful", mode=mode)

    def inject_capacity(self, capacity: int | None) -> None:
        """Change the capacity (None: the host's), e.g. to make the card full now."""
        self.capacity = capacity
        self.history.add("capacity", capacity=capacity)

    def fill(self, leave_free: int = 0) -> None:
        """Make the card full but for ``leave_free`` bytes (other data, not evidence)."""
        self.inject_capacity(self.used + leave_free)

    def inject_cut(self, point: CutPoint | str | None = None, nth: int = 1) -> None:
        """Cut the power inside the ``nth`` next operation reaching ``point`` (any cut point
        if None): the device dies there and the call raises :class:`PowerLost`."""
        self._cut_at = (CutPoint(point) if point else None, nth)
        self.history.add("inject_cut", point=str(point), nth=nth)

    def inject_random_cut(self, seed: int, within: int = 50) -> None:
        """A seeded cut at one of the next ``within`` cut points (FAULTS 1 and 2 fuzzing)."""
        self.inject_cut(None, random.Random(seed).randint(1, within))  # noqa: S311

    # ------------------------------------------------------------------ power
    def power_cut(self, mode: CutPolicy | None = None, seed: int | None = None) -> None:
        """Power gone: settle what was not durable, per ``cut_policy``; refuse all until
        :meth:`power_on`.

        ``mode`` overrides ``cut_policy`` for this cut, and ``seed`` re-seeds the draws
        from here on, so that a test can replay one cut's fates exactly.
        """
        if not self.powered:
            return
        self.powered = False
        policy = self.cut_policy
        if mode is not None:
            self.cut_policy = mode
        if seed is not None:
            self.rng = random.Random(seed)  # noqa: S311 (seeded faults, not secrets)
        try:
            for item in reversed(self._pending):
                self._settle_pending(item)
            for path, durable in sorted(self._unsynced.items()):
                self._settle_content(path, durable)
        finally:
            self.cut_policy = policy
        self._pending.clear()
        self._unsynced.clear()
        self._eio_paths.clear()
        self._cut_at = None
        self.used = sum(p.stat().st_size for p in self.root.rglob("*") if p.is_file())
        self.history.add("power_cut", mode=mode or policy, seed=seed)

    def power_on(self) -> None:
        """Power is back (a new boot); injected card faults stay as they were."""
        self.powered = True
        self.history.add("power_on")

    def _fate(self, choices: tuple[str, ...]) -> str:
        if self.cut_policy == "mixed":
            return self.rng.choice(choices)
        return self.cut_policy if self.cut_policy in choices else choices[-1]

    def _settle_pending(self, item: _Pending) -> None:
        full = self._path(item.path)
        if item.op == "rename":
            fate = "keep" if self.cut_policy == "keep" else "drop"
            target = self._path(item.target)
            if fate == "drop" and target.exists() and not full.exists():
                os.replace(target, full)
            self.history.add("cut_rename", path=item.path, target=item.target, fate=fate)
        elif item.op == "create":
            fate = self._fate(("keep", "drop", "garble"))
            if full.exists() and fate == "drop":
                full.unlink()
            elif full.exists() and fate == "garble":
                full.write_bytes(b"")  # the entry survived, its blocks did not
            self.history.add("cut_create", path=item.path, fate=fate)
        elif item.op == "unlink":
            fate = "keep" if self.cut_policy == "keep" else self._fate(("keep", "drop"))
            if fate == "drop" and not full.exists():
                full.write_bytes(item.data)  # the removal was never durable
            self.history.add("cut_unlink", path=item.path, fate=fate)

    def _settle_content(self, path: str, durable: int) -> None:
        full = self._path(path)
        if not full.exists():
            return
        size = full.stat().st_size
        fate = self._fate(("keep", "drop", "garble"))
        if fate == "drop":
            os.truncate(full, min(durable, size))
        elif fate == "garble" and size > durable:
            keep = self.rng.randint(durable, size)
            with full.open("r+b") as f:
                f.seek(durable)
                f.write(self.rng.randbytes(keep - durable))
                f.truncate(keep)
        self.history.add("cut_content", path=path, durable=durable, size=size, fate=fate)

    def _maybe_cut(self, point: CutPoint, path: str) -> None:
        if self._cut_at is None:
            return
        wanted, nth = self._cut_at
        if wanted is not None and wanted is not point:
            return
        if nth > 1:
            self._cut_at = (wanted, nth - 1)
            return
        self.history.add("cut_inside", point=point.value, path=path)
        if self.on_cut is not None:
            self.on_cut()  # the whole device dies, this medium with it
        self.power_cut()
        raise PowerLost(f"power cut during {point.value} of {path}")

    # ------------------------------------------------------------------ checks
    def _check_powered(self) -> None:
        if not self.powered:
            raise PowerLost()

    def _check_writable(self, path: str) -> None:
        self._check_powered()
        if self.read_only:
            raise StorageError(errno.EROFS, f"{path}: read-only medium")

    # ------------------------------------------------------------------ Storage
    def state(self) -> StorageState:
        """Capacity, free space and health as the device can see them."""
        self._check_powered()
        if self.capacity is None:
            host = super().state()
            total, free = host.total, host.free
        else:
            total, free = self.capacity, max(0, self.capacity - self.used)
        return StorageState(total, free, self.healthy, self.read_only)

    def write_new(self, path: str, data: bytes) -> None:
        """Create, write and fsync ``path``, with the medium's faults."""
        self._tracked_write(path, data, super().write_new)

    def append(self, path: str, data: bytes) -> None:
        """Append and fsync, with the medium's faults."""
        self._tracked_write(path, data, super().append)

    def _tracked_write(self, path: str, data: bytes, write: Callable[[str, bytes], None]) -> None:
        self._check_writable(path)
        created = _Pending("create", path) if not self._path(path).exists() else None
        if created is not None:
            # Registered before writing, so that a cut inside the write knows the entry is new.
            self._pending.append(created)
        try:
            write(path, data)
        except PowerLost:
            raise
        except StorageError:
            if created is not None and not self._path(path).exists():
                self._pending.remove(created)
            raise

    def _write_all(self, fd: int, path: str, data: bytes) -> None:
        self._unsynced.setdefault(path, os.fstat(fd).st_size)
        room = None if self.capacity is None else max(0, self.capacity - self.used)
        part = data if room is None else data[:room]
        if self.forgetful == "zeros":
            part = bytes(len(part))
        elif self.forgetful == "empty":
            part = b""
        super()._write_all(fd, path, part)
        self.used += len(part)
        if len(part) < len(data) and self.forgetful is None:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def _fsync_file(self, fd: int, path: str) -> None:
        self._maybe_cut(CutPoint.WRITE, path)
        if self._fsync_fails(path):
            self.healthy = False
            # As on Linux, the failed pages are dropped and marked clean: what the file held
            # from here on is never trusted durable again (never retry an fsync).
            self._eio_paths.add(path)
            self.history.add("fsync_eio", path=path)
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        super()._fsync_file(fd, path)
        if path not in self._eio_paths:
            self._unsynced.pop(path, None)

    def rename(self, source: str, target: str) -> None:
        """Rename; durable only after :meth:`sync_dir` of the target's directory."""
        self._check_writable(source)
        super().rename(source, target)
        self._pending.append(_Pending("rename", source, target))
        if source in self._unsynced:
            self._unsynced[target] = self._unsynced.pop(source)
        self._maybe_cut(CutPoint.RENAME, target)

    def sync_dir(self, path: str) -> None:
        """fsync a directory: its pending creations, renames and removals become durable."""
        self._check_powered()
        self._maybe_cut(CutPoint.SYNC_DIR, path)
        if self._fsync_fails(path):
            self.healthy = False
            self.history.add("fsync_eio", path=path)
            raise StorageError(errno.EIO, f"sync {path}: injected I/O error")
        super().sync_dir(path)
        durable = [
            p for p in self._pending if _parent(p.target if p.op == "rename" else p.path) == path
        ]
        moved = {p.path for p in durable if p.op == "rename"}
        self._pending = [
            p
            for p in self._pending
            if p not in durable and not (p.op == "create" and p.path in moved)
        ]

    def read(self, path: str) -> bytes:
        """The whole file."""
        self._check_powered()
        return super().read(path)

    def read_range(self, path: str, offset: int, length: int) -> bytes:
        """Part of a file."""
        self._check_powered()
        return super().read_range(path, offset, length)

    def size(self, path: str) -> int | None:
        """Size of ``path``, or None if absent."""
        self._check_powered()
        return super().size(path)

    def listdir(self, path: str) -> list[str]:
        """Names in ``path``, sorted."""
        self._check_powered()
        return super().listdir(path)

    def makedirs(self, path: str) -> None:
        """Create a directory and parents, durably."""
        self._check_writable(path)
        super().makedirs(path)

    def release(self, path: str) -> None:
        """Remove a file (a cut between unlink and directory fsync can bring it back)."""
        self._check_writable(path)
        full = self._path(path)
        data = full.read_bytes() if full.exists() else b""
        try:
            full.unlink()
        except OSError as exc:
            raise StorageError(exc.errno or errno.EIO, f"remove {path}: {exc.strerror}") from exc
        self.used -= len(data)
        self._unsynced.pop(path, None)
        self._pending.append(_Pending("unlink", path, data=data))
        self._maybe_cut(CutPoint.RELEASE, path)
        self.sync_dir(_parent(path))

"""Hardware interfaces of the body-worn camera, as the agent sees them.

Every device part is an abstract class here. The Raspberry Pi adapters live in
:mod:`hardware.pi` (the only modules importing picamera2, gpiozero pins or smbus2); the
fakes live in :mod:`simulator`. A backend is chosen by name (:class:`Board`) by the
composition root, never imported by the agent.

Times are integers: ``wall`` in microseconds since the Unix epoch, ``mono`` in
microseconds of a monotonic clock that starts anywhere and never goes back within a boot.

Exceptions::

    HardwareError                a part failed
    ├── CameraError              no frames, encoder failure
    └── StorageError             the medium refused an operation (see errno)
"""

from __future__ import annotations

import abc
import errno
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum


class HardwareError(Exception):
    """A device part failed."""


class CameraError(HardwareError):
    """The camera or its encoder failed."""


class StorageError(HardwareError):
    """The storage medium refused an operation; ``errno`` says why (EIO, ENOSPC, EROFS)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{errno.errorcode.get(code, code)}: {message}")
        self.errno = code


# --------------------------------------------------------------------------- camera


class PacketKind(StrEnum):
    """What an encoded packet carries."""

    VIDEO = "video"
    AUDIO = "audio"


@dataclass(frozen=True, slots=True)
class MediaPacket:
    """One encoded access unit: H.264 (Annex B) video or AAC (ADTS) audio.

    ``mono`` is the capture time on the monotonic clock and ``wall`` the wall time at
    capture; ``keyframe`` marks an IDR picture carrying its parameter sets.
    """

    kind: PacketKind
    data: bytes
    mono: int
    wall: int
    keyframe: bool = False
    duration: int = 0


@dataclass(frozen=True, slots=True)
class CameraConfig:
    """Capture settings."""

    width: int = 640
    height: int = 360
    fps: int = 25
    bitrate: int = 1_000_000
    keyframe_interval: int = 25
    audio: bool = True


PacketSink = Callable[[MediaPacket], None]
"""Receives packets on the event loop thread (adapters hop threads with call_soon_threadsafe)."""


class Camera(abc.ABC):
    """A camera with a hardware H.264 encoder and, where the board has one, a microphone."""

    config: CameraConfig

    @abc.abstractmethod
    async def start(self, sink: PacketSink) -> None:
        """Start capture; ``sink`` is called for every packet until :meth:`stop`."""

    @abc.abstractmethod
    async def stop(self) -> None:
        """Stop capture and release the encoder."""

    @abc.abstractmethod
    async def still(self) -> bytes:
        """A JPEG photo taken now (while video capture goes on)."""


# --------------------------------------------------------------------------- controls


class ButtonName(StrEnum):
    """The device's buttons."""

    RECORD = "record"  # duty: hold to start, hold to stop
    INCIDENT = "incident"  # press: open or close an incident
    BOOKMARK = "bookmark"  # press: bookmark; hold: photo


class Buttons(abc.ABC):
    """Physical buttons; callbacks run on the event loop thread."""

    @abc.abstractmethod
    def on_press(self, name: ButtonName, callback: Callable[[], None]) -> None:
        """Call ``callback`` on each short press of ``name``."""

    @abc.abstractmethod
    def on_hold(self, name: ButtonName, callback: Callable[[], None]) -> None:
        """Call ``callback`` when ``name`` is held for its hold time."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the pins."""


class LedPattern(StrEnum):
    """What the indicator shows."""

    OFF = "off"
    IDLE = "idle"  # green, slow blink
    RECORDING = "recording"  # red, steady
    NOTICE = "notice"  # red, fast blink: telling people present that recording starts
    INCIDENT = "incident"  # red steady with amber
    FAULT = "fault"  # amber, fast blink


class Indicator(abc.ABC):
    """LEDs."""

    @abc.abstractmethod
    def show(self, pattern: LedPattern) -> None:
        """Switch to ``pattern``."""

    @property
    @abc.abstractmethod
    def pattern(self) -> LedPattern:
        """What is shown now."""


class Prompt(StrEnum):
    """Audible prompts."""

    RECORDING_STARTED = "recording_started"  # "This encounter is being recorded."
    INCIDENT_OPENED = "incident_opened"
    INCIDENT_CLOSED = "incident_closed"
    RECORDING_STOPPED = "recording_stopped"
    FAULT = "fault"
    STORAGE_FULL = "storage_full"


class Speaker(abc.ABC):
    """A buzzer or speaker."""

    @abc.abstractmethod
    async def play(self, prompt: Prompt) -> None:
        """Play ``prompt`` (returns when it has been played)."""


# --------------------------------------------------------------------------- power, clock


@dataclass(frozen=True, slots=True)
class BatteryState:
    """A fuel gauge reading."""

    percent: float
    voltage_mv: int
    charging: bool
    temperature_c: float | None = None


class Battery(abc.ABC):
    """The battery's fuel gauge."""

    @abc.abstractmethod
    def read(self) -> BatteryState:
        """The current reading."""


class ClockSource(StrEnum):
    """Where the wall clock is disciplined from."""

    NTP = "ntp"
    SERVER = "server"
    RTC = "rtc"
    NONE = "none"


@dataclass(frozen=True, slots=True)
class ClockStatus:
    """Sync state of the wall clock; ``offset`` is local minus reference, in µs."""

    source: ClockSource
    offset: int
    synced: bool


class Clock(abc.ABC):
    """Wall and monotonic time, and waiting: all agent timing goes through this.

    The simulator's clock is virtual, so that a shift runs in minutes.
    """

    @abc.abstractmethod
    def wall(self) -> int:
        """Wall time, µs since the epoch (may jump, may go back)."""

    @abc.abstractmethod
    def mono(self) -> int:
        """Monotonic time in µs."""

    @abc.abstractmethod
    def status(self) -> ClockStatus:
        """Sync state as the OS (chrony, timedatectl) reports it."""

    @abc.abstractmethod
    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of this clock's time."""


# --------------------------------------------------------------------------- storage


@dataclass(frozen=True, slots=True)
class StorageState:
    """Capacity and health of the evidence medium."""

    total: int
    free: int
    healthy: bool = True
    read_only: bool = False


class Storage(abc.ABC):
    """The evidence medium, as primitive durable-file operations on paths under one root.

    All paths are relative ``/``-separated. Only these operations touch evidence, so that
    the simulator can model a medium that loses unsynced writes, fails fsync with EIO,
    fills up, turns read-only or accepts writes and keeps nothing. Errors raise
    :class:`StorageError` with the errno.
    """

    @abc.abstractmethod
    def state(self) -> StorageState:
        """Capacity and health."""

    @abc.abstractmethod
    def write_new(self, path: str, data: bytes) -> None:
        """Create ``path`` (must not exist), write ``data`` and fsync it (not its directory)."""

    @abc.abstractmethod
    def append(self, path: str, data: bytes) -> None:
        """Append ``data`` to ``path`` (created if absent) and fsync it."""

    @abc.abstractmethod
    def rename(self, source: str, target: str) -> None:
        """Rename within the medium (target must not exist)."""

    @abc.abstractmethod
    def sync_dir(self, path: str) -> None:
        """fsync directory ``path`` so that renames and creations in it are durable."""

    @abc.abstractmethod
    def read(self, path: str) -> bytes:
        """The whole file."""

    def read_range(self, path: str, offset: int, length: int) -> bytes:
        """``length`` bytes of ``path`` from ``offset`` (fewer at its end). Back ends that
        can seek override this; the default reads the whole file."""
        return self.read(path)[offset : offset + length]

    @abc.abstractmethod
    def size(self, path: str) -> int | None:
        """Size of ``path``, or None if absent."""

    @abc.abstractmethod
    def listdir(self, path: str) -> list[str]:
        """Names in directory ``path``, sorted; [] if absent."""

    @abc.abstractmethod
    def makedirs(self, path: str) -> None:
        """Create directory ``path`` and parents, durably."""

    @abc.abstractmethod
    def release(self, path: str) -> None:
        """Remove a file. The agent calls it only for media with a server receipt."""

    @abc.abstractmethod
    def local_path(self) -> str | None:
        """The medium's directory on the host, if it has one (for verify and diagnostics)."""


# --------------------------------------------------------------------------- network


@dataclass(frozen=True, slots=True)
class LinkState:
    """Whether the uplink (Wi-Fi, LTE) is up."""

    up: bool
    kind: str = "wifi"


class Network(abc.ABC):
    """The uplink as the board reports it (the route itself is the OS's)."""

    @abc.abstractmethod
    def state(self) -> LinkState:
        """Link state now."""


# --------------------------------------------------------------------------- the board


@dataclass(slots=True)
class Board:
    """All parts of one device, as chosen by the composition root."""

    name: str
    camera: Camera
    buttons: Buttons
    indicator: Indicator
    speaker: Speaker
    battery: Battery
    clock: Clock
    storage: Storage
    network: Network

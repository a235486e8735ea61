"""Scenarios as data: a TOML file becomes a typed, time-ordered list of steps.

A scenario file (``simulator/scenarios/*.toml``)::

    name = "inspection"                 # identifier
    title = "On-site inspection"
    rule = "A12"                        # the rule it rehearses
    description = "..."
    duration = "45m"                    # seconds, or "1h30m", "90s", "8h"
    speed = 60                          # optional: scaled real time; absent = as fast as possible

    [device]                            # simulated_board() options and agent settings
    camera_mode = "replay"
    storage_capacity = "64MiB"

    [[step]]
    at = "5m"                           # from the start of the run
    do = "press"                        # the step type: see STEP_TYPES
    button = "incident"
    note = "open the incident"          # optional, any step

    [expect]                            # checked by the runner at the end: see Expectations
    gap_causes = []

:func:`load` parses and validates (unknown keys, unknown step types, bad times and steps
outside ``duration`` raise :class:`ScenarioError`). :meth:`Scenario.actions` flattens steps
with an ``until`` into a start and an end action. :func:`apply_to_board` performs the steps
that touch only the simulated hardware and returns False for those the runner performs
itself: ``api`` (the agent's local API), ``server`` (an operator's action on the server),
``lose`` (the device leaves the network for good), ``note`` and ``check``.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar

from hardware.base import ButtonName

_DURATION = re.compile(
    r"^\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s)?\s*$"
)
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KiB|MiB|GiB|kB|MB|GB)?\s*$")
_UNITS = {"B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3, "kB": 1e3, "MB": 1e6, "GB": 1e9}


class ScenarioError(ValueError):
    """A scenario file is malformed; the message names the file and the step."""


def seconds(value: object) -> float:
    """``90``, ``"90s"``, ``"1h30m"`` -> seconds."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match and any(match.groups()):
            h, m, s = (float(g) if g else 0.0 for g in match.groups())
            return h * 3600 + m * 60 + s
    raise ScenarioError(f"not a duration: {value!r} (use seconds or e.g. '1h30m', '90s')")


def size(value: object) -> int:
    """``1048576``, ``"64MiB"``, ``"2GB"`` -> bytes."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        match = _SIZE.match(value)
        if match:
            return int(float(match.group(1)) * _UNITS[match.group(2) or "B"])
    raise ScenarioError(f"not a size: {value!r} (use bytes or e.g. '64MiB')")


# --------------------------------------------------------------------------- steps


@dataclass(frozen=True, slots=True)
class Step:
    """Something that happens ``at`` seconds into the run."""

    do: ClassVar[str] = ""
    at: float
    note: str = ""


@dataclass(frozen=True, slots=True)
class Note(Step):
    """Narration only (what the officer does, in words)."""

    do: ClassVar[str] = "note"


@dataclass(frozen=True, slots=True)
class Press(Step):
    """A short press of ``button``."""

    do: ClassVar[str] = "press"
    button: ButtonName = ButtonName.BOOKMARK


@dataclass(frozen=True, slots=True)
class Hold(Step):
    """A hold of ``button``."""

    do: ClassVar[str] = "hold"
    button: ButtonName = ButtonName.RECORD


@dataclass(frozen=True, slots=True)
class Api(Step):
    """A call of the agent's local API: ``action`` with ``args`` (the runner maps it)."""

    do: ClassVar[str] = "api"
    action: str = ""
    args: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Server(Step):
    """An operator's action on the server (``legal_hold``, ``revoke``...), with ``args``."""

    do: ClassVar[str] = "server"
    action: str = ""
    args: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PowerCut(Step):
    """Power lost; back after ``until`` (absolute seconds) if given."""

    do: ClassVar[str] = "power_cut"
    until: float | None = None


@dataclass(frozen=True, slots=True)
class PowerRestore(Step):
    """Power returns (a new boot)."""

    do: ClassVar[str] = "power_restore"


@dataclass(frozen=True, slots=True)
class Battery(Step):
    """Set the charge (``percent``) and/or plug or unplug the charger (``charging``)."""

    do: ClassVar[str] = "battery"
    percent: float | None = None
    charging: bool | None = None


@dataclass(frozen=True, slots=True)
class Network(Step):
    """Link faults from ``at`` to ``until`` (then all cleared): ``down``, ``latency``
    (seconds), ``bandwidth`` (bytes/s), ``resets`` (probability per connection),
    ``black_hole``."""

    do: ClassVar[str] = "network"
    until: float | None = None
    down: bool = False
    latency: float = 0.0
    bandwidth: float | None = None
    resets: float = 0.0
    black_hole: bool = False


@dataclass(frozen=True, slots=True)
class NetworkClear(Step):
    """All link faults off, link up (the end of a :class:`Network` window)."""

    do: ClassVar[str] = "network_clear"


@dataclass(frozen=True, slots=True)
class Lose(Step):
    """The device is lost: out of the officer's hands and off the network from now on."""

    do: ClassVar[str] = "lose"


@dataclass(frozen=True, slots=True)
class ClockStep(Step):
    """Clock faults: ``ntp`` on/off, ``drift_ppm``, a ``jump`` (seconds, negative = back)."""

    do: ClassVar[str] = "clock"
    ntp: bool | None = None
    drift_ppm: float | None = None
    jump: float | None = None


@dataclass(frozen=True, slots=True)
class StorageStep(Step):
    """Medium faults: ``fill`` (leave that many bytes free), ``capacity`` (bytes, e.g. to
    give room back), ``read_only``, ``fsync_failures`` (count), ``forgetful``
    ("zeros" | "empty" | "off")."""

    do: ClassVar[str] = "storage"
    fill: int | None = None
    capacity: int | None = None
    read_only: bool | None = None
    fsync_failures: int = 0
    forgetful: str | None = None


@dataclass(frozen=True, slots=True)
class CameraStep(Step):
    """Camera faults: ``fail`` (a reason), ``recover``, ``stall`` (seconds)."""

    do: ClassVar[str] = "camera"
    fail: str | None = None
    recover: bool = False
    stall: float | None = None


@dataclass(frozen=True, slots=True)
class Check(Step):
    """An assertion at this time about the device (``recording``, ``pattern``, ``on_duty``,
    ``incident_open``...), checked by the runner: ``what`` must equal ``value``."""

    do: ClassVar[str] = "check"
    what: str = ""
    value: Any = None


STEP_TYPES: dict[str, type[Step]] = {
    cls.do: cls
    for cls in (
        Note, Press, Hold, Api, Server, PowerCut, PowerRestore, Battery, Network,
        NetworkClear, Lose, ClockStep, StorageStep, CameraStep, Check,
    )
}  # fmt: skip
_TIMES = {"at", "until"}
_SIZES = {"fill", "capacity"}


# --------------------------------------------------------------------------- scenario


@dataclass(frozen=True, slots=True)
class Expectations:
    """What must hold at the end (None: not checked).

    ``authentic``: ``unbroken verify`` verdict; ``gap_causes``: the causes of the gaps, in
    order; ``records``: record kinds that must appear; ``incidents``: incidents opened;
    ``all_receipted``: every segment has a server receipt; ``legal_hold``: the reason
    category on hold; ``revoked``: the device ends revoked; ``min_covered``: covered
    fraction of the run.
    """

    authentic: bool | None = None
    gap_causes: tuple[str, ...] | None = None
    records: tuple[str, ...] = ()
    incidents: int | None = None
    all_receipted: bool | None = None
    legal_hold: str | None = None
    revoked: bool | None = None
    min_covered: float | None = None


@dataclass(frozen=True, slots=True)
class Scenario:
    """A parsed scenario: steps sorted by time (stable for equal times)."""

    name: str
    title: str
    rule: str
    description: str
    duration: float
    speed: float | None
    device: dict[str, Any]
    steps: tuple[Step, ...]
    expect: Expectations

    def actions(self) -> list[Step]:
        """Steps with the end of every ``until`` window added, in time order."""
        out: list[Step] = list(self.steps)
        for step in self.steps:
            if isinstance(step, Network) and step.until is not None:
                out.append(NetworkClear(step.until, f"end of: {step.note}".strip(": ")))
            if isinstance(step, PowerCut) and step.until is not None:
                out.append(PowerRestore(step.until, f"end of: {step.note}".strip(": ")))
        # At equal times a window's end comes before the next window's start.
        return sorted(out, key=lambda s: (s.at, not isinstance(s, NetworkClear | PowerRestore)))


def _step(raw: dict[str, Any], where: str, duration: float) -> Step:
    kind = raw.get("do")
    cls = STEP_TYPES.get(str(kind))
    if cls is None:
        raise ScenarioError(f"{where}: unknown step type {kind!r} (one of {sorted(STEP_TYPES)})")
    names = {f.name for f in fields(cls)}
    values: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for key, value in raw.items():
        if key == "do":
            continue
        if key in _TIMES:
            values[key] = seconds(value)
        elif key in _SIZES:
            values[key] = size(value)
        elif key == "button":
            try:
                values[key] = ButtonName(value)
            except ValueError:
                raise ScenarioError(f"{where}: unknown button {value!r}") from None
        elif key in names:
            values[key] = value
        elif "args" in names:
            extra[key] = value  # api and server steps take free arguments
        else:
            raise ScenarioError(f"{where}: {cls.do} takes no {key!r} (takes {sorted(names)})")
    if "at" not in values:
        raise ScenarioError(f"{where}: missing 'at'")
    if extra:
        values["args"] = {**values.get("args", {}), **extra}
    step = cls(**values)
    until = getattr(step, "until", None)
    if not 0 <= step.at <= duration or (until is not None and not step.at < until <= duration):
        raise ScenarioError(f"{where}: time outside the run of {duration:g} s")
    return step


def parse(text: str, source: str = "<scenario>") -> Scenario:
    """Parse scenario TOML ``text``."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{source}: {exc}") from exc
    known = {"name", "title", "rule", "description", "duration", "speed", "device", "step"}
    unknown = set(data) - known - {"expect"}
    if unknown:
        raise ScenarioError(f"{source}: unknown keys {sorted(unknown)}")
    if "name" not in data or "duration" not in data:
        raise ScenarioError(f"{source}: 'name' and 'duration' are required")
    duration = seconds(data["duration"])
    steps = tuple(
        _step(raw, f"{source} step {i + 1}", duration) for i, raw in enumerate(data.get("step", []))
    )
    device = dict(data.get("device", {}))
    if "storage_capacity" in device:
        device["storage_capacity"] = size(device["storage_capacity"])
    expect_raw = dict(data.get("expect", {}))
    expect_names = {f.name for f in fields(Expectations)}
    if set(expect_raw) - expect_names:
        bad = sorted(set(expect_raw) - expect_names)
        raise ScenarioError(f"{source}: unknown expectations {bad} (known: {sorted(expect_names)})")
    for key in ("gap_causes", "records"):
        if key in expect_raw:
            expect_raw[key] = tuple(expect_raw[key])
    return Scenario(
        name=str(data["name"]),
        title=str(data.get("title", data["name"])),
        rule=str(data.get("rule", "")),
        description=str(data.get("description", "")),
        duration=duration,
        speed=float(data["speed"]) if "speed" in data else None,
        device=device,
        steps=tuple(sorted(steps, key=lambda s: s.at)),
        expect=Expectations(**expect_raw),
    )


def load(path: Path) -> Scenario:
    """Parse the scenario file at ``path``."""
    return parse(path.read_text(encoding="utf-8"), str(path))


def builtin() -> dict[str, Scenario]:
    """The scenarios shipped in ``simulator/scenarios``, by name."""
    folder = resources.files("simulator") / "scenarios"
    found = {}
    for entry in folder.iterdir():
        if entry.name.endswith(".toml"):
            scenario = parse(entry.read_text(encoding="utf-8"), f"scenarios/{entry.name}")
            found[scenario.name] = scenario
    return found

"""A bounded, timestamped record of what happened to a fake, like gpiozero's ``MockPin.states``.

Every fake keeps one :class:`History`. Entries carry the simulation's true time (seconds on
the shared :class:`~simulator.clock.Timeline`), so that the histories of all parts of a
device, or of a whole fleet, can be merged and compared.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

DEFAULT_LIMIT = 10_000


@dataclass(frozen=True, slots=True)
class Happening:
    """One entry: ``at`` true seconds on the timeline, ``kind`` and details."""

    at: float
    kind: str
    detail: dict[str, Any] = field(default_factory=dict)


class History:
    """Timestamped entries, oldest dropped first when over ``limit``.

    The bound keeps a long fleet run from growing without end; tests look at recent entries.
    """

    def __init__(self, now: Callable[[], float], limit: int = DEFAULT_LIMIT) -> None:
        self._now = now
        # Bounded: on overflow the oldest entry is dropped (a history, not evidence).
        self._entries: deque[Happening] = deque(maxlen=limit)
        self.dropped = 0

    def add(self, kind: str, **detail: Any) -> Happening:
        """Record ``kind`` now."""
        if len(self._entries) == self._entries.maxlen:
            self.dropped += 1
        entry = Happening(self._now(), kind, detail)
        self._entries.append(entry)
        return entry

    def kinds(self) -> list[str]:
        """The kinds, in order."""
        return [e.kind for e in self._entries]

    def of(self, kind: str) -> list[Happening]:
        """Entries of one kind."""
        return [e for e in self._entries if e.kind == kind]

    def __iter__(self) -> Iterator[Happening]:
        return iter(list(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

"""What every benchmark hands back: a figure, the baseline measured in the same run, their
ratio, and the details that explain them; plus the progress display on stderr.

``unbroken bench NAME --json`` prints :meth:`Measurement.to_json` as one JSON object.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

#: Called with (what, done, in all) as a benchmark proceeds.
Stepped = Callable[[str, int, int], None]


@dataclass(frozen=True, slots=True)
class Measurement:
    """A figure against its same-run baseline.

    ``target`` is the least ``figure / baseline`` may be (a speed against a straight-line
    baseline); ``limit`` is what the figure itself must stay under (memory).
    """

    name: str
    unit: str
    figure: float
    baseline: float
    target: float | None = None
    limit: float | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        """``figure / baseline`` (0 when the baseline is 0)."""
        return self.figure / self.baseline if self.baseline else 0.0

    @property
    def met(self) -> bool | None:
        """Whether the target and the limit are met (None if there is neither)."""
        checks = []
        if self.target is not None:
            checks.append(self.ratio >= self.target)
        if self.limit is not None:
            checks.append(self.figure < self.limit)
        return all(checks) if checks else None

    def to_json(self) -> dict[str, Any]:
        """The JSON form: figure, baseline, ratio and target first, then the details."""
        return {
            "name": self.name,
            "unit": self.unit,
            "figure": round(self.figure, 3),
            "baseline": round(self.baseline, 3),
            "ratio": round(self.ratio, 4),
            "target": self.target,
            "limit": self.limit,
            "met": self.met,
            **self.details,
        }


def median(values: Sequence[float]) -> float:
    """The median (0 for no values)."""
    return float(statistics.median(values)) if values else 0.0


def progress(console: Console) -> Progress:
    """A progress display on ``console`` (stderr), silent when it is not a terminal."""
    return Progress(
        TextColumn("[bold]{task.description}[/]"),
        BarColumn(bar_width=None),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    )

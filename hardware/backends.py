"""Choosing a hardware backend by name, importing it only then (gpiozero's model).

``load_board("pi", store=..., loop=...)`` imports :mod:`hardware.pi.board` (and with it
picamera2, lgpio and smbus2) on that call only. The simulated board is not here: the
command line builds it from :func:`simulator.board.simulated_board`, so that nothing but
the composition root imports both the simulator and the real adapters.
"""

from __future__ import annotations

import asyncio
import importlib
from pathlib import Path

from hardware.base import Board, HardwareError

BACKENDS = {"pi": "hardware.pi.board:pi_board"}


class UnknownBackendError(HardwareError):
    """No backend of that name."""


def load_board(
    name: str, *, store: Path, loop: asyncio.AbstractEventLoop | None = None, **options: object
) -> Board:
    """Build the board of backend ``name`` (``"pi"``); ``options`` go to its builder."""
    try:
        target = BACKENDS[name]
    except KeyError:
        known = ", ".join(sorted(BACKENDS))
        raise UnknownBackendError(f"unknown hardware backend {name!r} (known: {known})") from None
    module_name, _, function = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise HardwareError(f"backend {name!r} cannot load: {exc}") from exc
    builder = getattr(module, function)
    board: Board = builder(store, loop or asyncio.get_running_loop(), **options)
    return board

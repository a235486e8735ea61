"""The device's buttons, LEDs and buzzer on gpiozero's ``MockFactory``.

:mod:`hardware.gpio` runs unchanged on mock pins: :meth:`SimControls.press` and
:meth:`SimControls.hold` drive the button pins as a finger would, and the LED pattern is
read back from the LED pins, so a test sees what an officer would see.

Holds: gpiozero's ``HoldThread`` times a hold in real seconds. The simulator uses a short
real hold time (``hold_time``, 20 ms) and :meth:`hold` blocks the caller until gpiozero has
reported the hold and its callbacks are queued on the loop, so that the outcome does not
depend on how fast virtual time runs. On the virtual loop the wait costs no device time
(:meth:`simulator.clock.VirtualLoop.paused`): a hold is as instantaneous as a press.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from gpiozero.pins.mock import MockFactory, MockPin

from hardware.base import ButtonName, LedPattern, Prompt
from hardware.gpio import (
    PATTERNS,
    BlinkTiming,
    ButtonPins,
    GpioButtons,
    GpioIndicator,
    GpioSpeaker,
    Lamp,
    LedPins,
    Sleep,
)
from simulator.clock import SimClock, VirtualLoop
from simulator.history import History

BUZZER_PIN = 12
PIN_HISTORY = 256
# Blinks fast enough to be told apart quickly in tests; the Pi uses BlinkTiming's defaults.
SIM_BLINK = BlinkTiming(slow=(0.02, 0.06), fast=(0.01, 0.01))


class BoundedMockPin(MockPin):  # type: ignore[misc]  # gpiozero is untyped
    """A ``MockPin`` whose recorded ``states`` keep only the last ``PIN_HISTORY`` changes.

    A blinking LED toggles all shift long; an unbounded list would grow without end.
    """

    def _change_state(self, value: bool) -> bool:
        changed: bool = super()._change_state(value)
        if len(self.states) > PIN_HISTORY:
            del self.states[: len(self.states) - PIN_HISTORY]
        return changed


@dataclass(frozen=True, slots=True)
class LampReading:
    """One LED as seen from its pin: lit now, and whether it toggled while watched."""

    lit: bool
    blinking: bool


class SimControls:
    """Buttons, indicator and speaker of one simulated device, with drive and read-back."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        clock: SimClock,
        *,
        hold_time: float = 0.02,
        blink: BlinkTiming = SIM_BLINK,
        sleep: Sleep | None = None,
    ) -> None:
        self.factory = MockFactory(pin_class=BoundedMockPin)
        self.history = History(clock.timeline.now)
        self.button_pins = ButtonPins()
        self.led_pins = LedPins()
        self.buttons = GpioButtons(loop, self.factory, self.button_pins, hold_time=hold_time)
        self.indicator = GpioIndicator(self.factory, self.led_pins, blink)
        self.speaker = SimSpeaker(BUZZER_PIN, self.factory, sleep or clock.sleep, self.history)
        self._loop = loop
        self._hold_time = hold_time
        self._blink = blink

    def pin(self, number: int) -> MockPin:
        """The mock pin with BCM number ``number``."""
        return self.factory.pin(number)

    # ------------------------------------------------------------------ drive
    def press(self, name: ButtonName | str) -> None:
        """A short press: the pin goes low and high again (the callback runs on the loop)."""
        name = ButtonName(name)
        pin = self.pin(self.button_pins.of(name))
        pin.drive_low()
        pin.drive_high()
        self.history.add("press", button=name.value)

    def hold(self, name: ButtonName | str, timeout: float = 2.0) -> None:
        """Hold ``name`` until gpiozero reports the hold, then release it.

        Blocks the calling thread for about the real hold time (20 ms in the simulator):
        gpiozero times holds on its own thread in real seconds. Returns once the hold's
        callbacks are queued on the loop; on the virtual loop, no device time passes.
        """
        name = ButtonName(name)
        pin = self.pin(self.button_pins.of(name))
        before = self.buttons.holds[name]
        with self._paused():
            pin.drive_low()
            deadline = time.monotonic() + timeout
            try:
                # Counted by the handler after it has queued the callbacks (gpiozero sets
                # is_held before it calls the handler, so is_held alone would race).
                while self.buttons.holds[name] == before:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"gpiozero did not report a hold of {name}")
                    time.sleep(self._hold_time / 4)  # real: gpiozero's HoldThread is real time
            finally:
                pin.drive_high()
        self.history.add("hold", button=name.value)

    @contextlib.contextmanager
    def _paused(self) -> Iterator[None]:
        if isinstance(self._loop, VirtualLoop):
            with self._loop.paused():
                yield
        else:
            yield

    # ------------------------------------------------------------------ read back
    def lamp(self, colour: str, watch: float = 0.0) -> LampReading:
        """Read LED ``colour`` from its pin, watching it for ``watch`` real seconds (no
        device time on the virtual loop)."""
        pin = self.pin(getattr(self.led_pins, colour))
        marker = pin.states[-1]
        if watch:
            with self._paused():
                time.sleep(watch)  # real: gpiozero's blink thread toggles in real time
        return LampReading(bool(pin.state), bool(_changes_since(pin, marker)))

    def observed_pattern(self) -> LedPattern | None:
        """Decode the pattern from the three LED pins (blocks about one slow blink period).

        Returns None if the pins show no known pattern.
        """
        colours = ("red", "green", "amber")
        pins = [self.pin(getattr(self.led_pins, c)) for c in colours]
        markers = [pin.states[-1] for pin in pins]
        with self._paused():
            time.sleep(sum(self._blink.slow) * 1.5)  # real: the blink thread runs in real time
        lamps = tuple(
            _classify(bool(pin.state), _changes_since(pin, marker), self._blink)
            for pin, marker in zip(pins, markers, strict=True)
        )
        for pattern, wanted in PATTERNS.items():
            if lamps == wanted:
                return pattern
        return None

    def buzzer_states(self) -> list[tuple[float, bool]]:
        """The buzzer pin's recorded (seconds since previous change, level) pairs."""
        return [(s.timestamp, bool(s.state)) for s in self.pin(BUZZER_PIN).states]

    def close(self) -> None:
        """Release all pins."""
        self.buttons.close()
        self.indicator.close()
        self.speaker.close()
        self.factory.reset()


def _changes_since(pin: MockPin, marker: Any) -> list[Any]:
    """The pin's recorded changes after entry ``marker`` (found by identity, as the list is
    trimmed from the front)."""
    states = list(pin.states)
    for i in range(len(states) - 1, -1, -1):
        if states[i] is marker:
            return states[i + 1 :]
    return states


def _classify(lit: bool, changes: list[Any], blink: BlinkTiming) -> str:
    if not changes:
        return Lamp.ON if lit else Lamp.OFF
    # A change to "on" carries how long the LED was off: the slow blink's off time is much
    # longer than the fast one's.
    offs = [c.timestamp for c in changes if c.state]
    threshold = (blink.slow[1] + blink.fast[1]) / 2
    return Lamp.SLOW if offs and max(offs) > threshold else Lamp.FAST


class SimSpeaker(GpioSpeaker):
    """The gpiozero speaker, recording each prompt in the controls' history."""

    def __init__(self, pin: int, pin_factory: Any, sleep: Sleep, history: History) -> None:
        super().__init__(pin, pin_factory, sleep)
        self.history = history

    async def play(self, prompt: Prompt) -> None:
        """Beep ``prompt`` and record it."""
        self.history.add("prompt", prompt=prompt.value)
        await super().play(prompt)

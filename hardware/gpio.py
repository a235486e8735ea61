"""Buttons, LEDs and buzzer through gpiozero, on any gpiozero pin factory.

The one module for both the Pi (lgpio pins) and the simulator (``MockFactory`` pins): the
simulator drives the very same gpiozero devices, so the same code path runs.

gpiozero fires ``when_*`` callbacks on its own threads (a pin's edge-detection thread, and
a button's ``HoldThread`` for holds); every callback here hops to the event loop with
``loop.call_soon_threadsafe`` before touching anything of the agent's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from gpiozero import LED, Button, Buzzer

from hardware.base import ButtonName, Buttons, Indicator, LedPattern, Prompt, Speaker

Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class ButtonPins:
    """GPIO numbers (BCM) of the buttons, wired to ground with the internal pull-up."""

    record: int = 17
    incident: int = 27
    bookmark: int = 22

    def of(self, name: ButtonName) -> int:
        """The pin of button ``name``."""
        pin: int = getattr(self, name.value)
        return pin


@dataclass(frozen=True, slots=True)
class LedPins:
    """GPIO numbers (BCM) of the three LEDs."""

    red: int = 5
    green: int = 6
    amber: int = 13


@dataclass(frozen=True, slots=True)
class BlinkTiming:
    """On and off times (real seconds, run by gpiozero's blink thread) of the two blinks."""

    slow: tuple[float, float] = (0.2, 1.8)
    fast: tuple[float, float] = (0.1, 0.1)


class Lamp:
    """How one LED is driven in a pattern."""

    OFF = "off"
    ON = "on"
    SLOW = "slow"
    FAST = "fast"


# Pattern -> (red, green, amber); see LedPattern for what each means to the officer.
PATTERNS: Mapping[LedPattern, tuple[str, str, str]] = {
    LedPattern.OFF: (Lamp.OFF, Lamp.OFF, Lamp.OFF),
    LedPattern.IDLE: (Lamp.OFF, Lamp.SLOW, Lamp.OFF),
    LedPattern.RECORDING: (Lamp.ON, Lamp.OFF, Lamp.OFF),
    LedPattern.NOTICE: (Lamp.FAST, Lamp.OFF, Lamp.OFF),
    LedPattern.INCIDENT: (Lamp.ON, Lamp.OFF, Lamp.ON),
    LedPattern.FAULT: (Lamp.OFF, Lamp.OFF, Lamp.FAST),
}

# Prompt -> beeps as (on, off) seconds: distinct rhythms for an active buzzer.
BEEPS: Mapping[Prompt, tuple[tuple[float, float], ...]] = {
    Prompt.RECORDING_STARTED: ((0.1, 0.1), (0.1, 0.1), (0.4, 0.0)),
    Prompt.RECORDING_STOPPED: ((0.4, 0.1), (0.1, 0.0)),
    Prompt.INCIDENT_OPENED: ((0.1, 0.1), (0.1, 0.1), (0.1, 0.0)),
    Prompt.INCIDENT_CLOSED: ((0.3, 0.0),),
    Prompt.FAULT: ((0.6, 0.2), (0.6, 0.0)),
    Prompt.STORAGE_FULL: ((0.2, 0.2), (0.2, 0.2), (0.2, 0.2), (0.2, 0.0)),
}


class GpioButtons(Buttons):
    """Three push buttons; a press is reported on release unless it became a hold."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        pin_factory: Any,
        pins: ButtonPins = ButtonPins(),
        hold_time: float = 1.0,
    ) -> None:
        self._loop = loop
        self._press: dict[ButtonName, list[Callable[[], None]]] = {n: [] for n in ButtonName}
        self._hold: dict[ButtonName, list[Callable[[], None]]] = {n: [] for n in ButtonName}
        self._held: dict[ButtonName, bool] = dict.fromkeys(ButtonName, False)
        # Holds reported per button, counted once their callbacks are queued on the loop
        # (the simulator waits on it; written by the HoldThread only).
        self.holds: dict[ButtonName, int] = dict.fromkeys(ButtonName, 0)
        self.devices: dict[ButtonName, Button] = {}
        for name in ButtonName:
            button = Button(
                pins.of(name), pull_up=True, hold_time=hold_time, pin_factory=pin_factory
            )
            button.when_pressed = self._pressed_handler(name)
            button.when_held = self._held_handler(name)
            button.when_released = self._released_handler(name)
            self.devices[name] = button

    # The three handlers run on gpiozero threads: the pin's edge-detection thread (pressed,
    # released; on MockPins the thread that drove the pin) and the button's HoldThread (held).
    def _pressed_handler(self, name: ButtonName) -> Callable[[], None]:
        def pressed() -> None:
            self._held[name] = False

        return pressed

    def _held_handler(self, name: ButtonName) -> Callable[[], None]:
        def held() -> None:
            self._held[name] = True
            for callback in self._hold[name]:
                self._loop.call_soon_threadsafe(callback)
            self.holds[name] += 1

        return held

    def _released_handler(self, name: ButtonName) -> Callable[[], None]:
        def released() -> None:
            if self._held[name]:
                return
            for callback in self._press[name]:
                self._loop.call_soon_threadsafe(callback)

        return released

    def on_press(self, name: ButtonName, callback: Callable[[], None]) -> None:
        """Call ``callback`` on the loop after each short press of ``name``."""
        self._press[name].append(callback)

    def on_hold(self, name: ButtonName, callback: Callable[[], None]) -> None:
        """Call ``callback`` on the loop when ``name`` has been held for the hold time."""
        self._hold[name].append(callback)

    def close(self) -> None:
        """Release the pins and stop gpiozero's hold threads."""
        for button in self.devices.values():
            button.close()


class GpioIndicator(Indicator):
    """Red, green and amber LEDs; blinking is run by gpiozero's blink thread."""

    def __init__(
        self,
        pin_factory: Any,
        pins: LedPins = LedPins(),
        timing: BlinkTiming = BlinkTiming(),
    ) -> None:
        self._timing = timing
        self.leds = {
            "red": LED(pins.red, pin_factory=pin_factory),
            "green": LED(pins.green, pin_factory=pin_factory),
            "amber": LED(pins.amber, pin_factory=pin_factory),
        }
        self._pattern = LedPattern.OFF
        self.show(LedPattern.OFF)

    def show(self, pattern: LedPattern) -> None:
        """Drive the LEDs for ``pattern``."""
        for led, lamp in zip(self.leds.values(), PATTERNS[pattern], strict=True):
            if lamp == Lamp.ON:
                led.on()
            elif lamp == Lamp.OFF:
                led.off()
            else:
                on, off = self._timing.slow if lamp == Lamp.SLOW else self._timing.fast
                led.blink(on_time=on, off_time=off, background=True)
        self._pattern = pattern

    @property
    def pattern(self) -> LedPattern:
        """What is shown now."""
        return self._pattern

    def close(self) -> None:
        """Release the pins."""
        for led in self.leds.values():
            led.close()


class GpioSpeaker(Speaker):
    """An active buzzer beeping a rhythm per prompt, timed by the device clock's sleep."""

    def __init__(self, pin: int, pin_factory: Any, sleep: Sleep) -> None:
        self.buzzer = Buzzer(pin, pin_factory=pin_factory)
        self._sleep = sleep
        self._lock = asyncio.Lock()  # one prompt at a time; later ones wait their turn

    async def play(self, prompt: Prompt) -> None:
        """Beep ``prompt``'s rhythm; returns when it has been played."""
        async with self._lock:
            try:
                for on, off in BEEPS[prompt]:
                    self.buzzer.on()
                    await self._sleep(on)
                    self.buzzer.off()
                    if off:
                        await self._sleep(off)
            finally:
                self.buzzer.off()

    def close(self) -> None:
        """Release the pin."""
        self.buzzer.close()

"""The simulated uplink: one :class:`Link` model, seen three ways.

* :class:`SimNetwork` is the board's :class:`hardware.base.Network` (what the OS reports).
* :class:`LinkTransport` wraps an httpx transport (typically ``httpx.ASGITransport`` to an
  in-process server): no sockets, so it works on the as-fast-as-possible virtual loop.
* :class:`simulator.proxy.FaultProxy` is a real TCP proxy on 127.0.0.1 applying the same
  faults to any protocol (HTTP, MQTT); real I/O, so scaled real time only.

Faults: down (connections refused, open ones reset), latency, a bandwidth limit, resets at
seeded random byte offsets, and a black hole (connections open, nothing comes back).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

import httpx

from hardware.base import LinkState, Network
from simulator.history import History

FOREVER = 10 * 365 * 24 * 3600.0


class Link:
    """The state of the uplink and its faults, with a seeded RNG for reset offsets."""

    def __init__(self, history: History, *, seed: int = 0, kind: str = "wifi") -> None:
        self.history = history
        self.kind = kind
        self.up = True
        self.latency = 0.0  # seconds, each way
        self.bandwidth: float | None = None  # bytes per second, each way
        self.reset_probability = 0.0  # per connection
        self.reset_within = 64 * 1024  # bytes: the reset offset is drawn in [1, this]
        self.black_hole = False
        self.rng = random.Random(seed)  # noqa: S311 (seeded faults, not secrets)
        self.listeners: list[Callable[[bool], None]] = []  # told when the link goes up/down
        self.active = 0  # transfers in flight
        self.on_activity: list[Callable[[bool], None]] = []  # told when transfers start/stop

    # ------------------------------------------------------------------ inject
    def inject_down(self) -> None:
        """The link drops: new connections fail, open ones are reset."""
        self._set_up(False)

    def inject_up(self) -> None:
        """The link returns."""
        self._set_up(True)

    def _set_up(self, up: bool) -> None:
        if up == self.up:
            return
        self.up = up
        self.history.add("up" if up else "down")
        for listener in list(self.listeners):
            listener(up)

    def inject_latency(self, seconds: float) -> None:
        """Delay each way (per request, or per chunk through the proxy)."""
        self.latency = seconds
        self.history.add("latency", seconds=seconds)

    def inject_bandwidth(self, bytes_per_second: float | None) -> None:
        """Limit the throughput each way (None: unlimited)."""
        self.bandwidth = bytes_per_second
        self.history.add("bandwidth", bytes_per_second=bytes_per_second)

    def inject_resets(self, probability: float, within: int = 64 * 1024) -> None:
        """Each new connection is reset with ``probability`` after a seeded random number
        of bytes in [1, ``within``]."""
        self.reset_probability = probability
        self.reset_within = within
        self.history.add("resets", probability=probability, within=within)

    def inject_black_hole(self, on: bool = True) -> None:
        """Connections open but nothing ever comes back."""
        self.black_hole = on
        self.history.add("black_hole", on=on)

    def clear(self) -> None:
        """All faults off, link up."""
        self.inject_up()
        self.latency, self.bandwidth, self.reset_probability = 0.0, None, 0.0
        self.black_hole = False
        self.history.add("clear")

    # ------------------------------------------------------------------ model
    def draw_reset(self) -> int | None:
        """For a new connection: the byte offset at which it will be reset, or None."""
        if self.reset_probability and self.rng.random() < self.reset_probability:
            return self.rng.randint(1, max(1, self.reset_within))
        return None

    def transfer_time(self, size: int) -> float:
        """Seconds to move ``size`` bytes one way, latency included."""
        return self.latency + (size / self.bandwidth if self.bandwidth else 0.0)

    def busy(self, delta: int) -> None:
        """Count transfers in flight, telling listeners (the battery) when the radio wakes
        or sleeps."""
        before = self.active > 0
        self.active += delta
        after = self.active > 0
        if before != after:
            for listener in list(self.on_activity):
                listener(after)


class SimNetwork(Network):
    """The uplink as the board reports it: a black hole still looks up to the OS."""

    def __init__(self, link: Link) -> None:
        self.link = link

    def state(self) -> LinkState:
        """Link state now."""
        return LinkState(self.link.up, self.link.kind)


class LinkTransport(httpx.AsyncBaseTransport):
    """An httpx transport that sends through :class:`Link`'s faults to ``inner``.

    Waits use the running loop's time (virtual on the simulator's loop). A request's
    timeouts (``request.extensions["timeout"]``) are honoured for the black hole.
    """

    def __init__(self, link: Link, inner: httpx.AsyncBaseTransport) -> None:
        self.link = link
        self.inner = inner
        self.requests = 0
        self.resets = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` through the link."""
        link = self.link
        self.requests += 1
        if not link.up:
            raise httpx.ConnectError("network is unreachable", request=request)
        if link.black_hole:
            timeouts = request.extensions.get("timeout", {})
            wait = timeouts.get("read") or timeouts.get("pool") or FOREVER
            await asyncio.sleep(wait)
            raise httpx.ReadTimeout("no answer (black hole)", request=request)
        reset_at = link.draw_reset()
        body = await request.aread()
        link.busy(+1)
        try:
            if reset_at is not None and reset_at <= len(body):
                await asyncio.sleep(link.transfer_time(reset_at))
                self.resets += 1
                link.history.add("reset", url=str(request.url), offset=reset_at, phase="request")
                raise httpx.WriteError("connection reset by peer", request=request)
            await asyncio.sleep(link.transfer_time(len(body)))
            self._check_up(request)
            response = await self.inner.handle_async_request(request)
            content = await response.aread()
            await response.aclose()
            sent = len(body)
            if reset_at is not None and reset_at <= sent + len(content):
                await asyncio.sleep(link.transfer_time(reset_at - sent))
                self.resets += 1
                link.history.add("reset", url=str(request.url), offset=reset_at, phase="response")
                raise httpx.ReadError("connection reset by peer", request=request)
            await asyncio.sleep(link.transfer_time(len(content)))
            self._check_up(request)
        finally:
            link.busy(-1)
        # The body is decoded already: drop the headers that described its encoding.
        headers = [
            (k, v)
            for k, v in response.headers.multi_items()
            if k.lower() not in ("content-encoding", "content-length", "transfer-encoding")
        ]
        return httpx.Response(
            response.status_code,
            headers=headers,
            content=content,
            request=request,
            extensions={"http_version": b"HTTP/1.1"},
        )

    def _check_up(self, request: httpx.Request) -> None:
        if not self.link.up:
            raise httpx.ReadError("connection reset: link down", request=request)

    async def aclose(self) -> None:
        """Close the inner transport."""
        await self.inner.aclose()

"""A TCP fault proxy of our own: 127.0.0.1:port -> upstream, through a :class:`Link`.

Applies the link's faults to real connections of any protocol (HTTP uploads, MQTT):

* link down: new connections are closed at once; open ones are aborted (a reset);
* black hole: connections are accepted and read, nothing is forwarded or answered;
* latency and bandwidth: each direction is a delay line; a chunk leaves after those before
  it have been sent at ``bandwidth`` and arrives ``latency`` later (latency delays a
  transfer once, as on a real link, not once per chunk);
* black hole begun on an open connection: what is in flight and after is swallowed;
* resets: a connection drawn to reset (seeded) is aborted once that many bytes, counted
  in both directions, have passed.

Each direction holds at most ``IN_FLIGHT`` chunks, then stops reading: back-pressure on the
sender, nothing dropped. Real sockets: use it in scaled real time or on a normal loop, not
on the as-fast-as-possible loop.
"""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType

from simulator.network import Link

CHUNK = 16 * 1024
IN_FLIGHT = 64  # chunks per direction on the wire at once (1 MiB): the proxy's TCP window


class _Connection:
    """One proxied connection: both ends and the reset budget."""

    def __init__(self, client: asyncio.StreamWriter, reset_at: int | None) -> None:
        self.client = client
        self.upstream: asyncio.StreamWriter | None = None
        self.reset_at = reset_at
        self.passed = 0

    def abort(self) -> None:
        """Drop both ends without a clean close (the peers see a reset)."""
        for writer in (self.client, self.upstream):
            if writer is not None:
                writer.transport.abort()


class FaultProxy:
    """``async with FaultProxy(link, "127.0.0.1", 8000) as proxy:`` then connect to
    ``proxy.port``. Connection handlers are named tasks in the proxy's TaskGroup, cancelled
    and awaited on exit."""

    def __init__(
        self,
        link: Link,
        upstream_host: str,
        upstream_port: int,
        *,
        listen_host: str = "127.0.0.1",
        listen_port: int = 0,
    ) -> None:
        self.link = link
        self.upstream = (upstream_host, upstream_port)
        self.listen = (listen_host, listen_port)
        self.port = 0
        self.accepted = 0
        self.refused = 0
        self.resets = 0
        self._server: asyncio.Server | None = None
        self._group: asyncio.TaskGroup | None = None
        self._open: set[_Connection] = set()
        link.listeners.append(self._link_changed)

    async def __aenter__(self) -> FaultProxy:
        self._group = asyncio.TaskGroup()
        await self._group.__aenter__()
        self._server = await asyncio.start_server(self._accept, *self.listen)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.link.listeners.remove(self._link_changed)
        if self._server is not None:
            self._server.close()
        for conn in list(self._open):
            conn.abort()
        if self._group is not None:
            await self._group.__aexit__(exc_type, exc, tb)
        if self._server is not None:
            await self._server.wait_closed()

    def _link_changed(self, up: bool) -> None:
        if not up:
            for conn in list(self._open):
                conn.abort()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # asyncio runs this callback in a task of its own; the real work goes in our group,
        # so that __aexit__ can cancel and await it.
        if self._group is None or not self.link.up:
            self.refused += 1
            writer.transport.abort()
            return
        self.accepted += 1
        conn = _Connection(writer, self.link.draw_reset())
        self._group.create_task(self._serve(conn, reader), name=f"proxy-conn-{self.accepted}")

    async def _serve(self, conn: _Connection, reader: asyncio.StreamReader) -> None:
        self._open.add(conn)
        try:
            if self.link.black_hole:
                while await reader.read(CHUNK):
                    pass  # swallowed: the black hole never answers
                return
            try:
                up_reader, up_writer = await asyncio.open_connection(*self.upstream)
            except OSError:
                self.refused += 1
                return
            conn.upstream = up_writer
            n = self.accepted
            async with asyncio.TaskGroup() as pipes:
                for name, source, sink in (
                    ("up", reader, up_writer),
                    ("down", up_reader, conn.client),
                ):
                    pipe = _Pipe(self, conn, source, sink)
                    pipes.create_task(pipe.carry(), name=f"proxy-conn-{n}-{name}-carry")
                    pipes.create_task(pipe.deliver(), name=f"proxy-conn-{n}-{name}-deliver")
        except (ConnectionError, OSError, ExceptionGroup):
            pass  # a reset, ours or a peer's: the connection is over either way
        finally:
            self._open.discard(conn)
            conn.abort()


class _Reset:
    """Marks the point in a pipe's flight where the injected reset falls."""


class _Pipe:
    """One direction of a connection, as a delay line: chunks read from ``source`` leave
    after the link's serialisation time (``size / bandwidth``, one after another) and
    arrive ``latency`` later, so latency delays a transfer once, not once per chunk.

    :meth:`carry` reads and stamps arrival times; :meth:`deliver` writes each chunk at its
    arrival time (the link down: abort; a black hole begun meanwhile: swallow).
    """

    def __init__(
        self,
        proxy: FaultProxy,
        conn: _Connection,
        source: asyncio.StreamReader,
        sink: asyncio.StreamWriter,
    ) -> None:
        self.proxy = proxy
        self.conn = conn
        self.source = source
        self.sink = sink
        # Bounded: when the chunks in flight fill it, carry() stops reading and the sender's
        # TCP window closes: back-pressure, as over a real link; nothing is dropped.
        self.flight: asyncio.Queue[tuple[float, bytes | _Reset | None]] = asyncio.Queue(IN_FLIGHT)
        self._free_at = 0.0  # when the link finishes sending what is queued (loop time)

    def _stamp(self, size: int) -> float:
        """The arrival time (loop time) of ``size`` bytes sent now."""
        link = self.proxy.link
        now = asyncio.get_running_loop().time()
        self._free_at = max(now, self._free_at) + (size / link.bandwidth if link.bandwidth else 0)
        return self._free_at + link.latency

    async def carry(self) -> None:
        """Read from the sender, stamp, queue; the injected reset goes in at its offset."""
        conn = self.conn
        while True:
            chunk = await self.source.read(CHUNK)
            if not chunk:
                await self._send(None, 0)
                return
            if conn.reset_at is not None and conn.passed + len(chunk) >= conn.reset_at:
                head = chunk[: conn.reset_at - conn.passed]
                conn.passed = conn.reset_at
                await self._send(head, len(head))
                await self._send(_Reset(), 0)
                return
            conn.passed += len(chunk)
            await self._send(chunk, len(chunk))

    async def _send(self, item: bytes | _Reset | None, size: int) -> None:
        await self.flight.put((self._stamp(size), item))
        if isinstance(item, bytes):
            # The radio is busy while data is in flight; deliver() or _release() balances it.
            # (put() on a queue with room returns without yielding, so this comes first.)
            self.proxy.link.busy(+1)

    async def deliver(self) -> None:
        """Write each chunk at its arrival time."""
        proxy, link, loop = self.proxy, self.proxy.link, asyncio.get_running_loop()
        try:
            while True:
                arrival, item = await self.flight.get()
                try:
                    await asyncio.sleep(max(0.0, arrival - loop.time()))
                finally:
                    if isinstance(item, bytes):
                        link.busy(-1)
                if isinstance(item, _Reset):
                    proxy.resets += 1
                    link.history.add("reset", offset=self.conn.reset_at)
                    self.conn.abort()
                    raise ConnectionResetError("injected reset")
                if item is None:
                    with contextlib.suppress(OSError):
                        self.sink.write_eof()
                    return
                if not link.up:
                    self.conn.abort()
                    raise ConnectionResetError("link down")
                if link.black_hole:
                    continue  # the link swallows what it carries from now on
                self.sink.write(item)
                await self.sink.drain()
        finally:
            self._release()

    def _release(self) -> None:
        """Give back the radio activity of chunks that never left."""
        while not self.flight.empty():
            _, item = self.flight.get_nowait()
            if isinstance(item, bytes):
                self.proxy.link.busy(-1)

"""A TCP fault proxy of our own: 127.0.0.1:port -> upstream, through a :class:`Link`.

Applies the link's faults to real connections of any protocol (HTTP uploads, MQTT):

* link down: new connections are closed at once; open ones are aborted (a reset);
* black hole: connections are accepted and read, nothing is forwarded or answered;
* latency: each chunk waits ``latency`` before it is forwarded;
* bandwidth: each chunk waits ``size / bandwidth``;
* resets: a connection drawn to reset (seeded) is aborted once that many bytes, counted
  in both directions, have passed.

Chunks are forwarded one at a time with ``drain()``: back-pressure, no queue. Real sockets:
use it in scaled real time or on a normal loop, not on the as-fast-as-possible loop.
"""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType

from simulator.network import Link

CHUNK = 16 * 1024


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
            async with asyncio.TaskGroup() as pumps:
                pumps.create_task(self._pump(conn, reader, up_writer), name="proxy-up")
                pumps.create_task(self._pump(conn, up_reader, conn.client), name="proxy-down")
        except (ConnectionError, OSError, ExceptionGroup):
            pass  # a reset, ours or a peer's: the connection is over either way
        finally:
            self._open.discard(conn)
            conn.abort()

    async def _pump(
        self, conn: _Connection, source: asyncio.StreamReader, sink: asyncio.StreamWriter
    ) -> None:
        link = self.link
        while True:
            chunk = await source.read(CHUNK)
            if not chunk:
                with contextlib.suppress(OSError):
                    sink.write_eof()
                return
            if conn.reset_at is not None and conn.passed + len(chunk) >= conn.reset_at:
                head = chunk[: conn.reset_at - conn.passed]
                await asyncio.sleep(link.transfer_time(len(head)))
                sink.write(head)
                self.resets += 1
                link.history.add("reset", offset=conn.reset_at)
                conn.abort()
                raise ConnectionResetError("injected reset")
            conn.passed += len(chunk)
            link.busy(+1)
            try:
                await asyncio.sleep(link.transfer_time(len(chunk)))
            finally:
                link.busy(-1)
            if not link.up:
                conn.abort()
                raise ConnectionResetError("link down")
            sink.write(chunk)
            await sink.drain()

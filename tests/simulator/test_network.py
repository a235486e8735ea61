"""The link model, the httpx link transport and the TCP fault proxy."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from simulator.clock import run
from simulator.history import History
from simulator.network import Link, LinkTransport, SimNetwork
from simulator.proxy import FaultProxy


def _echo_app(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, content=request.content or b"pong" * 100)


def _client(link: Link) -> tuple[httpx.AsyncClient, LinkTransport]:
    transport = LinkTransport(link, httpx.MockTransport(_echo_app))
    return httpx.AsyncClient(transport=transport, base_url="http://server"), transport


def test_down_link_refuses_and_the_board_sees_it() -> None:
    async def main() -> None:
        link = Link(History(lambda: 0.0))
        client, _ = _client(link)
        assert SimNetwork(link).state().up
        link.inject_down()
        assert not SimNetwork(link).state().up
        with pytest.raises(httpx.ConnectError):
            await client.get("/")
        link.inject_up()
        assert (await client.post("/", content=b"hello")).content == b"hello"
        await client.aclose()

    run(main())


def test_latency_and_bandwidth_take_virtual_time() -> None:
    async def main() -> float:
        link = Link(History(lambda: 0.0))
        link.inject_latency(0.5)
        link.inject_bandwidth(1000)
        client, _ = _client(link)
        loop = asyncio.get_running_loop()
        start = loop.time()
        await client.post("/", content=b"x" * 2000)  # 0.5 + 2 s up, 0.5 + 2 s down
        await client.aclose()
        return loop.time() - start

    started = time.perf_counter()
    assert run(main()) == pytest.approx(5.0)
    assert time.perf_counter() - started < 1


def test_resets_fall_at_seeded_offsets_reproducibly() -> None:
    async def outcomes(seed: int) -> list[str]:
        link = Link(History(lambda: 0.0), seed=seed)
        link.inject_resets(0.5, within=3000)
        client, transport = _client(link)
        seen = []
        for _ in range(30):
            try:
                await client.post("/", content=b"x" * 1000)
                seen.append("ok")
            except httpx.WriteError:
                seen.append("reset-up")
            except httpx.ReadError:
                seen.append("reset-down")
        await client.aclose()
        assert transport.resets == 30 - seen.count("ok")
        return seen

    first = run(outcomes(7))
    assert first == run(outcomes(7))
    assert {"ok", "reset-up", "reset-down"} <= set(first)
    assert first != run(outcomes(8))


def test_black_hole_times_out() -> None:
    async def main() -> None:
        link = Link(History(lambda: 0.0))
        link.inject_black_hole()
        client, _ = _client(link)
        assert SimNetwork(link).state().up  # the OS still sees a link
        loop = asyncio.get_running_loop()
        start = loop.time()
        with pytest.raises(httpx.ReadTimeout):
            await client.get("/", timeout=30)
        assert loop.time() - start == pytest.approx(30)
        await client.aclose()

    run(main())


def test_radio_activity_is_reported() -> None:
    async def main() -> list[bool]:
        link = Link(History(lambda: 0.0))
        seen: list[bool] = []
        link.on_activity.append(seen.append)
        client, _ = _client(link)
        await client.get("/")
        await client.aclose()
        return seen

    assert run(main()) == [True, False]


# --------------------------------------------------------------------------- TCP proxy


async def _echo_server() -> asyncio.Server:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


async def _roundtrip(port: int, payload: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(payload)
        await writer.drain()
        writer.write_eof()
        return await asyncio.wait_for(reader.read(-1), 5)
    finally:
        writer.close()


async def test_proxy_passes_data_through() -> None:
    server = await _echo_server()
    link = Link(History(lambda: 0.0))
    async with server, FaultProxy(link, "127.0.0.1", server.sockets[0].getsockname()[1]) as proxy:
        assert await _roundtrip(proxy.port, b"evidence" * 10_000) == b"evidence" * 10_000
    assert proxy.accepted == 1


async def test_proxy_resets_at_the_drawn_offset() -> None:
    server = await _echo_server()
    link = Link(History(lambda: 0.0), seed=1)
    link.inject_resets(1.0, within=50_000)
    async with server, FaultProxy(link, "127.0.0.1", server.sockets[0].getsockname()[1]) as proxy:
        try:
            got = await _roundtrip(proxy.port, b"x" * 200_000)
        except ConnectionError:
            got = b""
        assert len(got) < 200_000
    assert proxy.resets == 1
    assert link.history.of("reset")[0].detail["offset"] <= 50_000


async def test_proxy_refuses_while_down_and_aborts_open_connections() -> None:
    server = await _echo_server()
    link = Link(History(lambda: 0.0))
    async with server, FaultProxy(link, "127.0.0.1", server.sockets[0].getsockname()[1]) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(b"ping")
        assert await asyncio.wait_for(reader.read(4), 5) == b"ping"
        link.inject_down()
        assert await asyncio.wait_for(reader.read(10), 5) == b""  # aborted
        writer.close()
        try:
            got = await _roundtrip(proxy.port, b"again")
        except ConnectionError:
            got = b""
        assert got == b""
    assert proxy.refused == 1


async def test_proxy_black_hole_never_answers() -> None:
    server = await _echo_server()
    link = Link(History(lambda: 0.0))
    link.inject_black_hole()
    async with server, FaultProxy(link, "127.0.0.1", server.sockets[0].getsockname()[1]) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(b"hello?")
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(reader.read(1), 0.3)
        writer.close()


async def test_proxy_bandwidth_and_latency_slow_the_transfer() -> None:
    server = await _echo_server()
    link = Link(History(lambda: 0.0))
    link.inject_bandwidth(400_000)
    link.inject_latency(0.05)
    async with server, FaultProxy(link, "127.0.0.1", server.sockets[0].getsockname()[1]) as proxy:
        started = time.perf_counter()
        assert await _roundtrip(proxy.port, b"y" * 100_000) == b"y" * 100_000
        elapsed = time.perf_counter() - started
    # 100 kB each way at 400 kB/s (0.25 s; the echo overlaps), plus 50 ms latency each way.
    assert 0.35 < elapsed < 1.5


async def test_proxy_latency_delays_a_transfer_once_not_per_chunk() -> None:
    server = await _echo_server()
    link = Link(History(lambda: 0.0))
    link.inject_latency(0.1)
    payload = b"z" * (1 << 20)  # 64 chunks: 6.4 s each way if latency were paid per chunk
    async with server, FaultProxy(link, "127.0.0.1", server.sockets[0].getsockname()[1]) as proxy:
        started = time.perf_counter()
        assert await _roundtrip(proxy.port, payload) == payload
        elapsed = time.perf_counter() - started
    assert 0.2 <= elapsed < 2.0


async def test_proxy_black_hole_on_an_open_connection_swallows_what_follows() -> None:
    server = await _echo_server()
    link = Link(History(lambda: 0.0))
    async with server, FaultProxy(link, "127.0.0.1", server.sockets[0].getsockname()[1]) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(b"ping")
        assert await asyncio.wait_for(reader.read(4), 5) == b"ping"
        link.inject_black_hole()
        writer.write(b"lost")
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(reader.read(1), 0.3)
        writer.close()
    assert link.active == 0  # the radio is idle again: nothing counted twice or left over


def test_proxy_on_the_scaled_virtual_loop_delays_in_device_time() -> None:
    """Real sockets work on scaled time; latency is virtual seconds (1 s at 20x: 50 ms)."""

    async def main() -> tuple[float, bytes]:
        server = await _echo_server()
        link = Link(History(lambda: 0.0))
        link.inject_latency(1.0)
        port = server.sockets[0].getsockname()[1]
        async with server, FaultProxy(link, "127.0.0.1", port) as proxy:
            loop = asyncio.get_running_loop()
            started = loop.time()
            got = await _roundtrip(proxy.port, b"scaled")
            return loop.time() - started, got

    real = time.perf_counter()
    virtual, got = run(main(), speed=20)
    assert got == b"scaled"
    assert virtual >= 2.0  # there and back
    assert time.perf_counter() - real < 2.0

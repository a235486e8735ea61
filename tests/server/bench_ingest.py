"""Measure the embedded server: record ingest, media upload, proofs, export and verify.

Not a test (pytest does not collect it). Run from the repository root::

    .venv/bin/python -m tests.server.bench_ingest DATA_DIR [--devices 8] [--segments 500]
        [--media-kb 16] [--database-url postgres://...] [--skip-media]

Devices are simulated with real keys (tests/server/devicekit.py) and talk to the server
through its ASGI transport, so the figures are the server's work (parsing, signatures,
log, fsyncs, database), not the network's.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import time
from pathlib import Path

import httpx

from protocol.api import API_PREFIX
from protocol.verify import verify_path
from server import models
from server.run import EmbeddedServer, embedded
from server.schemas import ExportRequest
from server.settings import Settings
from tests.server.devicekit import SimDevice


async def _records(devs: list[SimDevice], clients: list[httpx.AsyncClient]) -> float:
    async def one(d: SimDevice, c: httpx.AsyncClient) -> None:
        for start in range(0, len(d.made), 256):
            await d.send(c, d.made[start : start + 256])

    t = time.perf_counter()
    await asyncio.gather(*(one(d, c) for d, c in zip(devs, clients, strict=True)))
    return time.perf_counter() - t


async def _media(devs: list[SimDevice], clients: list[httpx.AsyncClient]) -> float:
    async def one(d: SimDevice, c: httpx.AsyncClient) -> None:
        for made in d.made:
            if made.media is not None:
                await d.upload_media(c, made, chunk=256 * 1024)

    t = time.perf_counter()
    await asyncio.gather(*(one(d, c) for d, c in zip(devs, clients, strict=True)))
    return time.perf_counter() - t


async def _proofs(admin: httpx.AsyncClient, size: int) -> None:
    t = time.perf_counter()
    for i in range(200):
        r = await admin.get(
            f"{API_PREFIX}/log/inclusion", params={"index": (i * 7919) % size, "size": size}
        )
        assert r.status_code == 200, r.text
    each = (time.perf_counter() - t) / 200 * 1000
    print(f"inclusion proof at size {size}: {each:.2f} ms, {len(r.json()['path'])} hashes")
    t = time.perf_counter()
    for i in range(100):
        first = 1 + (i * 7919) % (size - 1)
        r = await admin.get(
            f"{API_PREFIX}/log/consistency", params={"first": first, "second": size}
        )
        assert r.status_code == 200, r.text
    print(f"consistency proof at size {size}: {(time.perf_counter() - t) / 100 * 1000:.2f} ms")


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


async def _export(srv: EmbeddedServer, device: str, out: Path, segments: int) -> None:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    await srv.export(ExportRequest(device=device, openings=True), out)
    took = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    size = await asyncio.to_thread(_size, out) / 1e6
    print(
        f"export of {device} ({segments} segments, openings): {size:.1f} MB in {took:.2f} s; "
        f"max RSS {before / 1024:.0f} -> {after / 1024:.0f} MB"
    )
    t = time.perf_counter()
    report = verify_path(out, srv.fingerprint)
    print(
        f"verify: {report.verdict}, {report.segments} segments in {time.perf_counter() - t:.2f} s"
    )


async def main(args: argparse.Namespace) -> None:
    """Run the measurements and print them."""
    settings = Settings(data=args.data, database_url=args.database_url)
    async with embedded(settings) as srv, srv.admin_client() as admin:
        devs = []
        for i in range(args.devices):
            d = SimDevice(f"cam-bench-{i}")
            await d.enrol(admin, await srv.enrolment_token(d.device))
            d.open_session()
            for _ in range(args.segments):
                d.segment(payload=os.urandom(args.media_kb * 1024))
            d.close()
            devs.append(d)
        clients = [d.client(admin) for d in devs]
        try:
            n = sum(len(d.made) for d in devs)
            took = await _records(devs, clients)
            print(f"records: {n} from {args.devices} devices in {took:.2f} s = {n / took:.0f}/s")
            await _proofs(admin, n)  # while coverage follows the new records
            t = time.perf_counter()
            while sum(await models.CoverageCursor.all().values_list("seq", flat=True)) < n:
                await asyncio.sleep(0.1)
            print(f"coverage caught up {time.perf_counter() - t:.2f} s after the last receipt")
            await _proofs(admin, n)  # idle
            if args.skip_media:
                return
            took = await _media(devs, clients)
            files = sum(1 for d in devs for m in d.made if m.media is not None)
            rate = files / took
            print(f"media: {files} files of {args.media_kb} KiB in {took:.2f} s = {rate:.0f}/s")
            await _export(srv, devs[0].device, args.data / "bench-export", args.segments)
        finally:
            for c in clients:
                await c.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("--devices", type=int, default=8)
    parser.add_argument("--segments", type=int, default=500)
    parser.add_argument("--media-kb", type=int, default=16)
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--skip-media", action="store_true", help="records and proofs only")
    asyncio.run(main(parser.parse_args()))

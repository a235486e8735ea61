"""FAULTS 8 and 9 end to end: the real server in a process of its own (``server.run.serve``,
uvicorn on a socket), the agent's own ``Syncer`` reaching it through the project's TCP fault
proxy (connections reset at seeded offsets), and the server killed with SIGKILL while
uploads are in flight, then started again on the same data directory.

Pass criterion: every segment arrives once and verifies; the device holds a receipt for
every record and every media file; no receipt was ever given for something the restarted
server does not hold; blobs are never deleted; the device store and a server export verify
offline with the root pinned.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from agent.sync import Syncer
from protocol.api import API_PREFIX, ChainHead
from protocol.checkpoint import ReceiptKind
from protocol.verify import verify_path
from server.run import export_bundle, get_admin_token
from server.schemas import ExportRequest
from server.settings import Settings
from simulator.history import History
from simulator.network import Link
from simulator.proxy import FaultProxy
from tests.broker import free_port
from tests.server.test_agent_sync import Camera
from tests.servers import ServerProcess

pytestmark = pytest.mark.slow


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path / "server", free_port())
    proc.data.mkdir()
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


@contextlib.asynccontextmanager
async def camera_on(server: ServerProcess, root: Path, proxy_port: int) -> AsyncIterator[Camera]:
    admin = get_admin_token(Settings(data=server.data))
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        issued = await client.post(
            f"{API_PREFIX}/admin/enrolment-tokens",
            json={"device": "cam-crash"},
            headers={"authorization": f"Bearer {admin}"},
        )
        assert issued.status_code == 200, issued.text
    cam = Camera(root, "cam-crash", None, base_url=f"http://127.0.0.1:{proxy_port}")
    await cam.enrol(issued.json()["token"])
    try:
        yield cam
    finally:
        await cam.aclose()


async def sync_until_done(cam: Camera, syncer: Syncer, deadline: float) -> int:
    """Sync passes until one succeeds with nothing left; return the failed passes."""
    failures = 0
    while True:
        assert cam.writer is not None
        try:
            await syncer.sync_once()
        except Exception:  # SyncError, or the store refusing a receipt: count and retry
            failures += 1
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)
            continue
        if syncer.state.last_receipt_seq == cam.writer.next_seq - 1 and not (
            cam.store.unreceipted_media()
        ):
            return failures


async def test_kill_9_and_resets_mid_upload_lose_and_duplicate_nothing(
    server: ServerProcess, tmp_path: Path
) -> None:
    link = Link(History(time.monotonic), seed=7)
    link.inject_resets(0.4, within=400_000)
    async with (
        FaultProxy(link, "127.0.0.1", server.port) as proxy,
        camera_on(server, tmp_path / "device", proxy.port) as cam,
    ):
        syncer = cam.syncer()
        deadline = time.monotonic() + 90
        failures = 0
        cam.open_session()
        for round_ in range(3):
            for _ in range(6):
                cam.segment(size=300_000)
            # Kill the server while this round's uploads are in flight.
            uploading = asyncio.create_task(sync_until_done(cam, syncer, deadline))
            await asyncio.sleep(0.15 + 0.1 * round_)
            await asyncio.to_thread(server.kill)
            await asyncio.sleep(0.2)
            await asyncio.to_thread(server.start)
            failures += await uploading
        cam.close()
        failures += await sync_until_done(cam, syncer, deadline)
        print(f"kills={server.kills} failed passes={failures} resets={proxy.resets}")
        assert server.kills == 3
        assert failures > 0  # the faults did bite
        assert proxy.resets > 0
        assert cam.writer is not None
        next_seq = cam.writer.next_seq
        for seq in range(next_seq):
            assert cam.store.has_receipt(seq, ReceiptKind.RECORD), seq
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            answer = await client.get(
                f"{API_PREFIX}/devices/cam-crash/head",
                headers=cam.client.headers if cam.client else {},
            )
            head = ChainHead.model_validate_json(answer.content)
            pin = (await client.get(f"{API_PREFIX}/trust")).json()["fingerprint"]
        assert head.next_seq == next_seq
        root = cam.root
    server.stop()
    settings = Settings(data=server.data)
    report = verify_path(root, pin)
    assert report.verdict == "authentic", [f.to_json() for f in report.findings]
    assert report.segments == 18
    assert "NOT_YET_LOGGED" not in {f.code.value for f in report.findings}
    out = tmp_path / "bundle"
    await export_bundle(settings, ExportRequest(device="cam-crash", openings=True), out)
    bundle = verify_path(out, pin)
    assert bundle.verdict == "authentic", [f.to_json() for f in bundle.findings]
    assert bundle.segments == 18
    # Write-once and never deleted: one blob per segment, nothing else lost or doubled.
    blobs = [p for p in (server.data / "blobs").rglob("*") if p.is_file()]
    assert len(blobs) >= 18

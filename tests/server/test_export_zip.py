"""Export over HTTP as a streamed zip: what arrives verifies offline, a changed byte fails,
and streaming holds one block in memory, not the archive."""

from __future__ import annotations

import os
import tracemalloc
import zipfile
from pathlib import Path

import httpx
import pytest

from protocol import layout
from protocol.api import API_PREFIX
from protocol.bundle import BundleWriter
from protocol.verify import verify_path
from server.app import create_app
from server.routers import bundle
from server.settings import Settings
from server.zipstream import zip_chunks
from tests.server.test_agent_sync import Camera, services

ADMIN = "zip-admin-token-0123456789abcdef"


async def test_streamed_zip_verifies_and_tampering_fails(tmp_path: Path) -> None:
    app = create_app(Settings(data=tmp_path / "server", admin_token=ADMIN))
    app.include_router(bundle.router())
    async with app.router.lifespan_context(app):
        cam = Camera(tmp_path / "device", "cam-zip", app)
        await cam.enrol()
        try:
            cam.open_session()
            for _ in range(4):
                cam.segment(size=200_000)
            cam.close()
            await cam.syncer().sync_once()
        finally:
            await cam.aclose()
        pin = services(app).keys.fingerprint
        target = tmp_path / "bundle.zip"
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://server",
            headers={"authorization": f"Bearer {ADMIN}"},
        ) as admin:
            async with admin.stream(
                "POST",
                f"{API_PREFIX}/admin/exports/zip",
                json={"device": "cam-zip", "openings": True, "name": "cam-zip-case"},
            ) as response:
                assert response.status_code == 200
                assert response.headers["content-type"] == "application/zip"
                assert "cam-zip-case.zip" in response.headers["content-disposition"]
                with target.open("wb") as f:
                    async for chunk in response.aiter_bytes():
                        f.write(chunk)
            staging = list((tmp_path / "server" / "exports").glob(".zip-*"))
            assert staging == []  # removed once streamed
            report = verify_path(target, pin)
            assert report.verdict == "authentic", [f.to_json() for f in report.findings]
            assert report.segments == 4
            # A stored export, streamed by name; and unknown names and strangers refused.
            done = await admin.post(
                f"{API_PREFIX}/admin/exports", json={"device": "cam-zip", "name": "kept"}
            )
            assert done.status_code == 200, done.text
            kept = await admin.get(f"{API_PREFIX}/admin/exports/kept.zip")
            assert kept.status_code == 200
            (tmp_path / "kept.zip").write_bytes(kept.content)
            assert verify_path(tmp_path / "kept.zip", pin).verdict == "authentic"
            missing = await admin.get(f"{API_PREFIX}/admin/exports/nothing.zip")
            assert missing.status_code == 404
            assert missing.json()["code"] == "not_found"
            anonymous = await admin.get(
                f"{API_PREFIX}/admin/exports/kept.zip", headers={"authorization": ""}
            )
            assert anonymous.status_code == 401
    with zipfile.ZipFile(target) as archive:
        names = archive.namelist()
        assert layout.MANIFEST_FILE in names
        member = layout.bundle_media("cam-zip", 2)
        data = bytearray(archive.read(member))
        others = {n: archive.read(n) for n in names if n != member}
    data[50] ^= 1
    tampered = tmp_path / "tampered.zip"
    with zipfile.ZipFile(tampered, "w") as archive:
        for name, content in others.items():
            archive.writestr(name, content)
        archive.writestr(member, bytes(data))
    assert verify_path(tampered, pin).verdict == "not_authentic"


@pytest.mark.slow
def test_zip_stream_memory_stays_flat(tmp_path: Path) -> None:
    folder = tmp_path / "bundle"
    writer = BundleWriter(folder)
    for seq in range(40):
        writer.media("cam-big", seq, os.urandom(1 << 20))  # 40 MiB of media
    writer.finish(b"not a real manifest: only the streaming is measured here")
    tracemalloc.start()
    try:
        total = 0
        for chunk in zip_chunks(folder):
            total += len(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total > 40 << 20
    print(f"zip stream peak {peak / 2**20:.1f} MiB for {total / 2**20:.0f} MiB")
    assert peak < 8 << 20, f"peak {peak / 2**20:.1f} MiB while streaming {total / 2**20:.0f} MiB"

"""The server over a real socket (``server.run.serve``): devices sync over TCP, then a
schemathesis run over the OpenAPI document finds no 5xx (FAULTS 16); graceful stop.
"""

from __future__ import annotations

import asyncio
import re
import socket
import sys
from pathlib import Path

import httpx
import pytest

from server.run import serve
from server.settings import Settings
from tests.server.devicekit import SimDevice

ADMIN = "fuzz-admin-token-0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_serve_sync_fuzz_and_stop(tmp_path: Path) -> None:
    settings = Settings(data=tmp_path / "data", admin_token=ADMIN, log_batch_window=0.005)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    stop = asyncio.Event()
    server = asyncio.create_task(serve(settings, "127.0.0.1", port, stop=stop, log_level="warning"))
    try:
        async with httpx.AsyncClient(base_url=base, timeout=10) as anon:
            for _ in range(200):
                try:
                    if (await anon.get("/healthz")).json()["status"] == "ok":
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.05)
            async with httpx.AsyncClient(
                base_url=base, headers={"authorization": f"Bearer {ADMIN}"}
            ) as admin:
                token = (await admin.post("/api/v1/admin/enrolment-tokens", json={})).json()
            device = SimDevice("cam-fuzz")
            await device.enrol(anon, token["token"])
            async with device.client(anon) as client:
                device.shift(3)
                await device.sync(client)

            tool = Path(sys.executable).parent / "schemathesis"
            if not tool.exists():
                pytest.skip("schemathesis is not installed")
            run = await asyncio.create_subprocess_exec(
                str(tool),
                "run",
                f"{base}/openapi.json",
                "--checks",
                "not_a_server_error",
                "--phases",
                "examples,coverage,fuzzing",
                "--max-examples",
                "25",
                "--workers",
                "1",  # several workers parse lambdas in threads: a CPython 3.11 ast crash
                "--header",
                f"Authorization: Bearer {ADMIN}",
                "--request-timeout",
                "20",
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
            async with asyncio.timeout(150):
                output, _ = await run.communicate()
            text = output.decode(errors="replace")
            assert run.returncode == 0, text[-6000:]
            cases = re.search(r"(\d+) generated, (\d+) passed", text)
            assert cases is not None, text[-3000:]
            assert int(cases.group(1)) == int(cases.group(2)) > 500
            tested = re.search(r"Tested: (\d+)", text)
            assert tested is not None
            assert int(tested.group(1)) >= 25

            # what the fuzzer did left the evidence whole
            async with device.client(anon) as client:
                head = await device.head(client)
            assert head.next_seq == len(device.made)
    finally:
        stop.set()
        async with asyncio.timeout(30):
            await server
    assert server.done()
    assert server.exception() is None

"""`unbroken demo` as the README's first command runs it: server, embedded broker and a
simulated fleet playing the scenarios; `--duration` stops it cleanly, `--summary` writes
what each device recorded and what the server verified."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.broker import free_port

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_demo_records_syncs_and_summarises(tmp_path: Path) -> None:
    summary = tmp_path / "summary.json"
    port = free_port()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "cli",
            "demo",
            "--devices",
            "2",
            "--duration",
            "8",
            "--port",
            str(port),
            "--data",
            str(tmp_path / "demo"),
            "--summary",
            str(summary),
        ],
        capture_output=True,
        cwd=ROOT,
        timeout=240,
        check=False,
    )
    out = done.stdout.decode()
    assert done.returncode == 0, (out[-2000:], done.stderr.decode()[-3000:])
    assert f"console: http://127.0.0.1:{port}/console" in out
    assert "Traceback" not in done.stderr.decode()
    devices = json.loads(summary.read_text())["devices"]
    assert len(devices) == 2
    for row in devices:
        assert set(row) >= {
            "id",
            "segments_recorded",
            "segments_verified",
            "battery_pct",
            "storage_free_bytes",
            "clock_offset_ms",
            "gaps",
        }
        assert row["segments_recorded"] > 20  # 8 s at 10x
        assert row["segments_verified"] == row["segments_recorded"], row
        assert row["battery_pct"] is not None  # telemetry came over the embedded broker
        assert row["storage_free_bytes"] is not None


def test_demo_refuses_a_port_in_use(tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "cli",
                "demo",
                "--port",
                str(port),
                "--data",
                str(tmp_path / "demo"),
            ],
            capture_output=True,
            cwd=ROOT,
            timeout=60,
            check=False,
        )
    assert done.returncode == 2
    assert f"port {port} is in use" in done.stderr.decode()
    assert "Traceback" not in done.stderr.decode()

"""``unbroken server`` as a child process for tests that start, kill and restart it."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

SERVE = (
    "import asyncio, sys\n"
    "from pathlib import Path\n"
    "from server.run import serve\n"
    "from server.settings import Settings\n"
    "asyncio.run(serve(Settings(data=Path(sys.argv[1])), '127.0.0.1', int(sys.argv[2]),"
    " log_level='warning'))\n"
)
ROOT = Path(__file__).resolve().parents[1]


class ServerProcess:
    """A server on ``port`` with its data in ``data``; by default ``server.run.serve`` on
    embedded settings, or the command line ``python -m cli ARGS`` with ``env``."""

    def __init__(
        self,
        data: Path,
        port: int,
        *,
        args: list[str] | None = None,
        env: dict[str, str] | None = None,
        log: Path | None = None,
    ) -> None:
        self.data = data
        self.port = port
        self.args = args
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.kills = 0
        self.log = log or data.parent / "server.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        if self.args is None:
            command = [sys.executable, "-c", SERVE, str(self.data), str(self.port)]
        else:
            command = [sys.executable, "-m", "cli", *self.args]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, env=self.env, cwd=ROOT
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"server did not start: {self.log.read_text()[-2000:]}")

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
            self.proc = None
            self.kills += 1

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
            self.proc = None

    def metric(self, name: str) -> float:
        """Sum of a Prometheus metric's samples on this server."""
        text = httpx.get(f"{self.url}/metrics", timeout=10).text
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith((name + "{", name + " "))
        )

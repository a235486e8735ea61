"""A private Mosquitto broker for tests that stop and restart it (port of its own)."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
import warnings
from collections.abc import AsyncIterator
from pathlib import Path


def free_port() -> int:
    """An unused TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Broker:
    """Runs ``mosquitto`` with persistence in ``work``; start, stop and restart at will."""

    def __init__(self, work: Path, port: int | None = None) -> None:
        self.work = work
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        work.mkdir(parents=True, exist_ok=True)
        self.conf = work / "mosquitto.conf"
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
            f"persistence_location {work}/\nautosave_interval 1\n"
        )

    @staticmethod
    def available() -> bool:
        """Whether the mosquitto binary is installed."""
        return shutil.which("mosquitto") is not None

    def start(self) -> None:
        """Start and wait until it accepts connections."""
        self.proc = subprocess.Popen(
            ["mosquitto", "-c", str(self.conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not start")

    def stop(self) -> None:
        """Stop (SIGTERM, so that it saves its persistence file)."""
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None

    @property
    def url(self) -> str:
        """mqtt://127.0.0.1:port"""
        return f"mqtt://127.0.0.1:{self.port}"


@contextlib.asynccontextmanager
async def embedded_broker() -> AsyncIterator[int]:
    """The embedded broker of ``unbroken demo`` (amqtt, MQTT 3.1.1 only), started the same
    way; yields its port."""
    from amqtt.broker import Broker as Amqtt

    port = free_port()
    with warnings.catch_warnings():  # amqtt 0.12 warns about its own psutil dependency
        warnings.simplefilter("ignore", DeprecationWarning)
        broker = Amqtt({"listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}}})
    await broker.start()
    try:
        yield port
    finally:
        await broker.shutdown()

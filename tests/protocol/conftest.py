"""Fixtures for protocol tests: a recorded fleet and helpers to tamper with bundles."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from protocol import layout
from protocol.cbor import bstr_item, iter_bstr_sequence
from protocol.verify import Report, verify_path
from tests.factory import Fleet


def chain_entries(bundle: Path, device: str) -> list[bytes]:
    """The raw entries of a device's chain file."""
    return list(iter_bstr_sequence((bundle / layout.chain_file(device)).read_bytes()))


def write_chain(bundle: Path, device: str, entries: list[bytes]) -> None:
    """Replace a device's chain file."""
    (bundle / layout.chain_file(device)).write_bytes(b"".join(bstr_item(e) for e in entries))


def flip_byte(path: Path, offset: int = -40) -> None:
    """Change one byte of a file."""
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.fixture
def fleet() -> Fleet:
    """A fleet with one device that recorded a shift, lost power once and closed."""
    f = Fleet()
    dev = f.device("cam-001")
    dev.open_session()
    for _ in range(4):
        dev.segment()
    dev.log_all()  # a sync: later records anchor to this checkpoint
    for _ in range(3):
        dev.segment()
    dev.crash_and_reboot()
    for _ in range(3):
        dev.segment()
    dev.close()
    return f


@pytest.fixture
def bundle(fleet: Fleet, tmp_path: Path) -> Path:
    """The fleet's export."""
    return fleet.export(tmp_path / "bundle")


@pytest.fixture
def check(fleet: Fleet) -> Callable[[Path], Report]:
    """Verify a path pinned to the fleet's root."""

    def run(path: Path) -> Report:
        return verify_path(path, fleet.fingerprint)

    return run


def codes(report: Report) -> set[str]:
    """The error and warning codes found."""
    return {f.code.value for f in report.findings}

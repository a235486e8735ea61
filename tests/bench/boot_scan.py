"""Time the agent store's boot scan: a journal of N records, parsed at the first boot and
read from its summary at the next ones. Not a test (pytest does not collect it)::

    .venv/bin/python -m tests.bench.boot_scan 28800

Writes through the test device of ``tests/agent/test_store.py`` into a folder on /dev/shm
(tmpfs, so that the figure is parsing, not the disk).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from agent.capture.store import EvidenceStore
from hardware.disk import DirectoryStorage
from protocol.record import RecordKind
from tests.agent.test_store import Device


def main(count: int) -> None:
    base = "/dev/shm" if Path("/dev/shm").is_dir() else None
    root = Path(tempfile.mkdtemp(prefix="boot-scan-", dir=base))
    device = Device(root)
    started = time.perf_counter()
    for _ in range(count):
        device.append(RecordKind.BOOKMARK, {"label": "x" * 40})
    device.close()
    print(f"wrote {count} records in {time.perf_counter() - started:.1f} s")
    size = sum(p.stat().st_size for p in (root / "journal").iterdir())
    for boot in range(3):
        started = time.perf_counter()
        scan = EvidenceStore(DirectoryStorage(root), reserve=0).open_boot()
        took = time.perf_counter() - started
        how = "parsed" if boot == 0 else "from its summary"
        print(f"boot {boot + 1}: {scan.next_seq} records ({size / 1e6:.1f} MB) {how}: {took:.3f} s")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 28_800)

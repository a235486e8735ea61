"""Write a large export bundle for the verifier's memory and speed figures (not a test).

    python -m tests.bench.big_bundle SEGMENTS OUT    # prints the root fingerprint

Each segment carries 100 kB of media; a checkpoint is signed every 500 segments.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from tests.factory import Fleet


def main() -> None:
    """Build the bundle."""
    n, out = int(sys.argv[1]), Path(sys.argv[2])
    fleet = Fleet()
    device = fleet.device("cam-001")
    device.open_session()
    payload = os.urandom(100_000)
    for i in range(n):
        device.segment(payload=payload)
        if i % 500 == 0:
            device.log_all()
    device.close()
    fleet.export(out, openings=False)
    sys.stdout.write(fleet.fingerprint + "\n")


if __name__ == "__main__":
    main()

"""Write a large export bundle for the verifier's memory and speed figures (not a test).

    python -m tests.bench.big_bundle SEGMENTS OUT    # prints the root fingerprint

Each segment carries 100 kB of media; a checkpoint is signed every 500 segments. The
bundle is made by :func:`bench.bundle.make_bundle`, which ``unbroken bench verify`` uses.
"""

from __future__ import annotations

import sys
from pathlib import Path

from bench.bundle import make_bundle


def main() -> None:
    """Build the bundle."""
    n, out = int(sys.argv[1]), Path(sys.argv[2])
    sys.stdout.write(make_bundle(out, n) + "\n")


if __name__ == "__main__":
    main()

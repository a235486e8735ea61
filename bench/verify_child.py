"""Verify one bundle in a process of its own, for ``unbroken bench verify``'s memory figure.

    python -m bench.verify_child BUNDLE FINGERPRINT

Prints one JSON object: the verdict, segments, seconds, resident memory after imports and
the peak (VmHWM: ``ru_maxrss`` would carry the parent's peak over exec). Only the
verifier is imported.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from protocol.verify import verify_path


def _status(field: str) -> float:
    """A ``VmRSS``/``VmHWM`` line of /proc/self/status in MB (Linux; 0 elsewhere)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 2**10
    except (OSError, IndexError, ValueError):
        pass
    return 0.0


def main() -> None:
    """Verify and report."""
    bundle, pin = Path(sys.argv[1]), sys.argv[2]
    imported = _status("VmRSS")
    began = time.perf_counter()
    report = verify_path(bundle, pin)
    took = time.perf_counter() - began
    result = {
        "verdict": str(report.verdict),
        "segments": report.segments,
        "seconds": round(took, 3),
        "imported_mb": round(imported, 2),
        "peak_rss_mb": round(_status("VmHWM"), 2),
    }
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()

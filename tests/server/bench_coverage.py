"""Time the coverage report of one device with N segments, 1 in 1000 without its media.

Not a test (pytest does not collect it). Run from the repository root::

    .venv/bin/python -m tests.server.bench_coverage 500000 [DATABASE_URL]

DATABASE_URL names a scratch database (the server's tables are made in it); without it, a
SQLite file in a temporary folder.

Rows are inserted directly (as ingest and uploads leave them), then the ``missing`` media
are found two ways in the same run: the join over every segment record of the device
(how coverage used to find them) and the pending-media rows (how it finds them now).
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

from server import models
from server.run import embedded
from server.settings import Settings

US = 1_000_000
BATCH = 20_000


async def _fill(count: int) -> None:
    for start in range(0, count, BATCH):
        seqs = range(start, min(count, start + BATCH))
        await models.Record.bulk_create(
            [
                models.Record(
                    device="cam-year",
                    seq=s,
                    digest=b"d" * 32,
                    encoded=b"e",
                    kind="segment",
                    session=b"s" * 16,
                    boot=b"b" * 16,
                    t0=s * US,
                    t1=s * US + US - 1,
                    m0=0,
                    m1=0,
                    log_index=s,
                    received=0,
                    receipt=b"r",
                )
                for s in seqs
            ],
            batch_size=5000,
        )
        await models.Media.bulk_create(
            [
                models.Media(
                    device="cam-year",
                    seq=s,
                    record=b"d" * 32,
                    hash=b"h" * 32,
                    length=1,
                    blob="x",
                    stored=0,
                    receipt=b"r",
                )
                for s in seqs
                if s % 1000
            ],
            batch_size=5000,
        )
        await models.PendingMedia.bulk_create(
            [
                models.PendingMedia(
                    device="cam-year", seq=s, t0=s * US, t1=s * US + US - 1, session=b"s" * 16
                )
                for s in seqs
                if s % 1000 == 0
            ]
        )


async def main(count: int, url: str | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        async with embedded(Settings(data=Path(tmp), database_url=url)) as server:
            coverage = server.services.coverage
            db = coverage.db
            started = time.perf_counter()
            await _fill(count)
            print(f"inserted {count} segment records in {time.perf_counter() - started:.0f} s")
            marks = ["?"] * 3 if db.dialect == "sqlite" else ["$1", "$2", "$3"]
            joined = (
                "SELECT r.seq FROM record r LEFT JOIN media m "
                "ON m.device = r.device AND m.seq = r.seq WHERE r.kind = 'segment' "
                f"AND m.id IS NULL AND r.device = {marks[0]} AND r.t1 >= {marks[1]} "
                f"AND r.t0 <= {marks[2]} ORDER BY r.t0"
            )
            for _ in range(2):
                started = time.perf_counter()
                old = await db.connection().execute_query_dict(joined, ["cam-year", 0, count * US])
                before = time.perf_counter() - started
                started = time.perf_counter()
                report = await coverage.report(
                    device="cam-year", start=0, end=count * US, scope="device"
                )
                now = time.perf_counter() - started
                gaps = sum(1 for g in report.gaps if g.cause == "missing")
                print(
                    f"{db.dialect}: join over all segments {before:.3f} s ({len(old)} missing); "
                    f"whole coverage report {now:.4f} s ({gaps} missing gaps); "
                    f"{before / now:.0f}x"
                )


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else None))

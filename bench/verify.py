"""``unbroken bench verify``: the offline verifier's speed on an export bundle, and its
memory on a bundle ten times larger.

Throughput. One bundle (:func:`bench.bundle.make_bundle`: one device, ``segments``
segments of ``media_kb`` kB) is checked, round after round, by two readers in alternating
order (who goes first alternates), after one warm-up pass each so that both read from the
page cache:

* the *verifier*: :func:`protocol.verify.verify_path`, what ``unbroken verify`` runs;
* the *baseline*: a straight-line loop doing the work no verifier can skip, with the same
  primitives (``cbor2``, ``hashlib`` SHA-256, Ed25519 from ``cryptography``): read every
  file; check the root's self-signature and the pinned fingerprint, each certificate's
  signature by the root, the manifest's and every checkpoint's signature by the server
  key, the listed files' hashes and the consistency proofs between checkpoints; then per
  record: decode the chain entry and its COSE_Sign1, verify the session certificate on
  the session-open record and every record's Ed25519 signature, check the hash link to the
  previous record, recompute the record's Merkle inclusion path up to the final
  checkpoint's root, and SHA-256 the media file against the hash and length the record
  names.

What the baseline leaves out is what the verifier does beyond that: strict decoding
(canonical CBOR, field checks), the per-session rules, time and coverage, the findings and
the report. Each side's figure is the median over the rounds of segments per second; the
ratio is verifier over baseline (1.0 would be no overhead at all).

Memory: each of two bundles (``memory_segments`` and ten times that) is verified in a child
process of its own (``python -m bench.verify_child``), whose peak resident memory (VmHWM)
is the figure; the ratio large over small shows whether memory grows with the bundle (1.0
is flat).
"""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cbor2
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from bench import BenchError
from bench.agent_memory import ROOT
from bench.bundle import bundle_size, make_bundle
from bench.report import Measurement, Stepped, median
from protocol import layout
from protocol.hashing import sha256
from protocol.log import verify_consistency
from protocol.verify import verify_path

# --------------------------------------------------------------------------- baseline


def _items(data: bytes) -> list[bytes]:
    """The byte-string items of a CBOR sequence file."""
    stream = io.BytesIO(data)
    out = []
    while stream.tell() < len(data):
        out.append(cbor2.load(stream))
    return out


def _cose(data: bytes) -> tuple[bytes, bytes, bytes, bytes]:
    """(kid, payload, protected, signature) of a COSE_Sign1."""
    protected, _, payload, signature = cbor2.loads(data).value
    return cbor2.loads(protected)[4], payload, protected, signature


def _check(key: bytes, protected: bytes, payload: bytes, signature: bytes) -> None:
    """Ed25519 over the COSE Sig_structure (raises InvalidSignature)."""
    message = cbor2.dumps(["Signature1", protected, b"", payload], canonical=True)
    Ed25519PublicKey.from_public_bytes(key).verify(signature, message)


def _signed_body(data: bytes, keys: dict[bytes, bytes]) -> dict[str, Any]:
    kid, payload, protected, signature = _cose(data)
    _check(keys[kid], protected, payload, signature)
    body: dict[str, Any] = cbor2.loads(payload)
    return body


def _included(index: int, size: int, entry: bytes, path: list[bytes], root: bytes) -> bool:
    """RFC 9162 section 2.1.3.2: recompute the root from an inclusion path."""
    fn, sn = index, size - 1
    r = sha256(b"\x00", entry)
    for p in path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = sha256(b"\x01", p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = sha256(b"\x01", r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def baseline_verify(bundle: Path, pin: str) -> tuple[int, int, int]:
    """The irreducible work of verifying ``bundle``, straight-line; returns (records,
    segments, media bytes). Raises BenchError at the first thing that does not check."""

    def read(rel: str) -> bytes:
        return (bundle / rel).read_bytes()

    root_data = read(layout.ROOT_FILE)
    _, payload, protected, signature = _cose(root_data)
    root_key = cbor2.loads(payload)["key"]
    _check(root_key, protected, payload, signature)
    if "sha256:" + sha256(root_key).hex() != pin:
        raise BenchError("baseline: the root is not the pinned one")
    root_kid = sha256(root_key)
    keys: dict[bytes, bytes] = {}
    for cert in _items(read(layout.CERTS_FILE)):
        body = _signed_body(cert, {root_kid: root_key})
        keys[sha256(body["key"])] = body["key"]
    manifest = _signed_body(read(layout.MANIFEST_FILE), keys)
    for rel, digest in manifest["files"].items():
        if sha256(read(rel)) != digest:
            raise BenchError(f"baseline: {rel} differs from the manifest")
    cps = [_signed_body(c, keys) for c in _items(read(layout.CHECKPOINTS_FILE))]
    pairs = itertools.pairwise(cps)
    for (cp_a, cp_b), raw in zip(pairs, _items(read(layout.CONSISTENCY_FILE)), strict=True):
        proof = cbor2.loads(raw)
        verify_consistency(cp_a["size"], cp_b["size"], cp_a["root"], cp_b["root"], proof["path"])
    final = cps[-1]
    records = segments = media_bytes = 0
    for chain in manifest["chains"]:
        device = chain["device"]
        prev: bytes | None = None
        session_key = b""
        for item in _items(read(layout.chain_file(device))):
            entry = cbor2.loads(item)
            raw = entry["record"]
            _, payload, protected, signature = _cose(raw)
            record = cbor2.loads(payload)
            if record["kind"] == "session_open":
                session_key = _signed_body(record["body"]["cert"], keys)["key"]
            _check(session_key, protected, payload, signature)
            if prev is not None and record["prev"] != prev:
                raise BenchError(f"baseline: seq {record['seq']} does not link")
            prev = sha256(raw)
            log = entry["log"]
            if log["size"] != final["size"] or not _included(
                log["index"], log["size"], prev, log["path"], final["root"]
            ):
                raise BenchError(f"baseline: seq {record['seq']} is not in the log")
            media = record.get("media")
            if media is not None:
                data = read(layout.bundle_media(device, record["seq"]))
                if len(data) != media["len"] or sha256(data) != media["hash"]:
                    raise BenchError(f"baseline: media of seq {record['seq']} differs")
                media_bytes += len(data)
                segments += record["kind"] == "segment"
            records += 1
    return records, segments, media_bytes


# --------------------------------------------------------------------------- throughput


def _verifier(bundle: Path, pin: str) -> tuple[int, int, int]:
    report = verify_path(bundle, pin)
    if report.verdict != "authentic":
        raise BenchError(f"the verifier found the bench bundle {report.verdict}")
    return report.records, report.segments, report.media_bytes


def measure_throughput(
    bundle: Path, pin: str, *, rounds: int = 7, stepped: Stepped | None = None
) -> Measurement:
    """Segments per second verifying ``bundle``: the verifier against the baseline."""
    sides = (_verifier, baseline_verify)
    walls: tuple[list[float], list[float]] = ([], [])
    cpus: tuple[list[float], list[float]] = ([], [])
    counts: list[tuple[int, int, int]] = []
    for side in sides:  # warm-up: page cache, first use of the keys
        counts.append(side(bundle, pin))
    if counts[0] != counts[1]:
        raise BenchError(f"the two sides counted differently: {counts[0]} vs {counts[1]}")
    records, segments, media_bytes = counts[0]
    for r in range(rounds):
        for index in (0, 1) if r % 2 == 0 else (1, 0):
            wall, cpu = time.perf_counter(), time.process_time()
            sides[index](bundle, pin)
            walls[index].append(time.perf_counter() - wall)
            cpus[index].append(time.process_time() - cpu)
        if stepped is not None:
            stepped("throughput", r + 1, rounds)
    figure = median([segments / w for w in walls[0]])
    base = median([segments / w for w in walls[1]])
    mb = media_bytes / 1e6
    details: dict[str, Any] = {
        "segments": segments,
        "records": records,
        "media_mb": round(mb, 2),
        "bundle_mb": round(bundle_size(bundle) / 1e6, 2),
        "rounds": rounds,
        "verifier_mb_per_s": round(median([mb / w for w in walls[0]]), 1),
        "baseline_mb_per_s": round(median([mb / w for w in walls[1]]), 1),
        "verifier_rounds": [round(segments / w, 1) for w in walls[0]],
        "baseline_rounds": [round(segments / w, 1) for w in walls[1]],
        "verifier_ms_per_segment": round(1000 / figure, 4),
        "baseline_ms_per_segment": round(1000 / base, 4),
        "cpu_ratio": round(sum(cpus[1]) / sum(cpus[0]), 4),
    }
    return Measurement("throughput", "segments/s", figure, base, details=details)


# --------------------------------------------------------------------------- memory


async def _child(bundle: Path, pin: str) -> dict[str, Any]:
    args = [sys.executable, "-m", "bench.verify_child", str(bundle), pin]
    paths = [ROOT, *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env
    )
    out, err = await proc.communicate()
    if proc.returncode != 0:
        tail = err.decode(errors="replace")[-2000:]
        raise BenchError(f"the verify child failed (exit {proc.returncode}):\n{tail}")
    result: dict[str, Any] = json.loads(out)
    if result["verdict"] != "authentic":
        raise BenchError(f"the verify child found {bundle} {result['verdict']}")
    return result


def measure_memory(
    small: tuple[Path, str], large: tuple[Path, str], *, parallel: bool = False
) -> Measurement:
    """Peak resident memory verifying the small and the large bundle, each in a child."""

    async def both() -> list[dict[str, Any]]:
        if parallel:
            return list(await asyncio.gather(_child(*small), _child(*large)))
        return [await _child(*small), await _child(*large)]

    low, high = asyncio.run(both())
    details: dict[str, Any] = {
        "small_segments": low["segments"],
        "large_segments": high["segments"],
        "small_bundle_mb": round(bundle_size(small[0]) / 1e6, 1),
        "large_bundle_mb": round(bundle_size(large[0]) / 1e6, 1),
        "small_seconds": low["seconds"],
        "large_seconds": high["seconds"],
        "imported_mb": high["imported_mb"],
        "large_growth_over_imports_mb": round(high["peak_rss_mb"] - high["imported_mb"], 2),
        "small_growth_over_imports_mb": round(low["peak_rss_mb"] - low["imported_mb"], 2),
    }
    return Measurement(
        "memory", "MB", float(high["peak_rss_mb"]), float(low["peak_rss_mb"]), details=details
    )


# --------------------------------------------------------------------------- both


def run_verify_bench(
    work: Path,
    *,
    segments: int = 1000,
    rounds: int = 7,
    media_kb: int = 100,
    memory_segments: int = 1000,
    stepped: Stepped | None = None,
) -> dict[str, Any]:
    """Both measurements of ``unbroken bench verify`` as one JSON object."""
    began = time.perf_counter()
    media = media_kb * 1000

    def making(name: str) -> Callable[[int, int], None]:
        return lambda done, total: stepped(name, done, total) if stepped else None

    bundle = work / "bundle"
    pin = make_bundle(bundle, segments, media_bytes=media, made=making("making bundle"))
    throughput = measure_throughput(bundle, pin, rounds=rounds, stepped=stepped)
    shutil.rmtree(bundle)
    small_dir, large_dir = work / "small", work / "large"
    small = (small_dir, make_bundle(small_dir, memory_segments, media_bytes=media))
    large_n = 10 * memory_segments
    large = (
        large_dir,
        make_bundle(large_dir, large_n, media_bytes=media, made=making("making 10x bundle")),
    )
    if stepped is not None:
        stepped("memory children", 0, 1)
    memory = measure_memory(small, large)
    if stepped is not None:
        stepped("memory children", 1, 1)
    return {
        "bench": "verify",
        "unit": throughput.unit,
        "figure": round(throughput.figure, 3),
        "baseline": round(throughput.baseline, 3),
        "ratio": round(throughput.ratio, 4),
        "mb_per_s": throughput.details["verifier_mb_per_s"],
        "baseline_mb_per_s": throughput.details["baseline_mb_per_s"],
        "parameters": {
            "segments": segments,
            "rounds": rounds,
            "media_kb": media_kb,
            "memory_segments": memory_segments,
            "memory_large_segments": large_n,
        },
        "throughput": throughput.to_json(),
        "memory": memory.to_json(),
        "cpus": os.cpu_count(),
        "seconds": round(time.perf_counter() - began, 1),
    }

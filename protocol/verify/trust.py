"""Loading trust material and log checkpoints from a container, reporting what fails."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from protocol.certs import RootKey, TrustStore
from protocol.checkpoint import Checkpoint
from protocol.container import Container
from protocol.errors import DecodeError, ProofError, ProtocolError
from protocol.hashing import parse_fingerprint, sha256
from protocol.layout import CERTS_FILE, REVOCATIONS_FILE, ROOT_FILE, ConsistencyProof
from protocol.log import verify_consistency
from protocol.verify.findings import Code
from protocol.verify.report import Report
from protocol.verify.stream import read_items

MAX_SMALL = 1 << 20


def load_trust(container: Container, report: Report, pin: str | None) -> TrustStore | None:
    """Root, certificates and revocations; None if the root itself cannot be trusted at all."""
    try:
        root = RootKey.load(container.read(ROOT_FILE, MAX_SMALL))
    except FileNotFoundError:
        report.add(Code.ROOT_INVALID, f"{ROOT_FILE} is missing")
        return None
    except (ProtocolError, OSError) as exc:
        report.add(Code.ROOT_INVALID, f"{ROOT_FILE}: {exc}")
        return None
    report.fingerprint = root.fingerprint
    report.root_name = root.name
    if pin is None:
        report.add(
            Code.ROOT_NOT_PINNED,
            f"root {root.fingerprint} ({root.name}) is not pinned; "
            "pass --trust with the fingerprint you obtained independently",
        )
    else:
        report.pinned = True
        if sha256(root.key) != parse_fingerprint(pin):
            report.add(
                Code.UNTRUSTED_ROOT,
                f"the bundle's root is {root.fingerprint}, not the pinned {pin}",
            )
    trust = TrustStore(root)
    if container.exists(CERTS_FILE):
        for index, item in read_items(container, CERTS_FILE, report, Code.CERT_INVALID):
            try:
                trust.add(item)
            except ProtocolError as exc:
                report.add(Code.CERT_INVALID, f"certificate {index} in {CERTS_FILE}: {exc}")
    else:
        report.add(Code.CERT_INVALID, f"{CERTS_FILE} is missing")
    if container.exists(REVOCATIONS_FILE):
        try:
            trust.add_revocations(container.read(REVOCATIONS_FILE, MAX_SMALL))
        except (ProtocolError, OSError) as exc:
            report.add(Code.REVOCATIONS_INVALID, f"{REVOCATIONS_FILE}: {exc}")
    return trust


def checkpoints(
    container: Container, path: str, trust: TrustStore, report: Report
) -> Iterator[Checkpoint]:
    """The valid checkpoints of a checkpoints file, in file order (invalid ones reported)."""
    for index, item in read_items(container, path, report, Code.CHECKPOINT_INVALID):
        try:
            yield Checkpoint.load(item, trust)
        except ProtocolError as exc:
            report.add(Code.CHECKPOINT_INVALID, f"checkpoint {index} in {path}: {exc}")


def check_checkpoints(
    container: Container, path: str, proofs_path: str | None, trust: TrustStore, report: Report
) -> Checkpoint | None:
    """Check that the checkpoints ascend and are pairwise consistent; return the largest.

    Consecutive checkpoints of sizes ``a < b`` need a consistency proof ``a -> b`` in
    ``proofs_path``; equal sizes need equal roots. Both files are streamed together.
    """
    proofs = _proof_stream(container, proofs_path, report) if proofs_path else iter(())
    pending: ConsistencyProof | None = next(proofs, None)
    last: Checkpoint | None = None
    for cp in checkpoints(container, path, trust, report):
        if last is not None:
            if cp.size < last.size:
                report.add(
                    Code.CHECKPOINT_INCONSISTENT,
                    f"{path}: checkpoints out of order (size {cp.size} after {last.size})",
                )
                continue
            if cp.size == last.size:
                if cp.root != last.root:
                    report.add(
                        Code.CHECKPOINT_INCONSISTENT,
                        f"two signed checkpoints of size "
                        f"{cp.size} with different roots (a split view)",
                    )
                continue
            if proofs_path is not None:
                while pending is not None and (pending.first, pending.second) < (
                    last.size,
                    cp.size,
                ):
                    pending = next(proofs, None)
                try:
                    if pending is None or (pending.first, pending.second) != (last.size, cp.size):
                        raise ProofError(f"no consistency proof from size {last.size} to {cp.size}")
                    verify_consistency(last.size, cp.size, last.root, cp.root, pending.path)
                except ProofError as exc:
                    report.add(Code.CHECKPOINT_INCONSISTENT, str(exc))
        last = cp
    return last


def _proof_stream(container: Container, path: str, report: Report) -> Iterator[ConsistencyProof]:
    if not container.exists(path):
        return
    for index, item in read_items(container, path, report, Code.CHECKPOINT_INCONSISTENT):
        try:
            yield ConsistencyProof.decode(item)
        except DecodeError as exc:
            report.add(Code.CHECKPOINT_INCONSISTENT, f"consistency proof {index}: {exc}")


class CheckpointCursor:
    """Finds checkpoints by size in an ascending checkpoints file, reading forward only."""

    def __init__(self, opener: Callable[[], Iterator[Checkpoint]]) -> None:
        self._opener = opener
        self._iter = opener()
        self._current: Checkpoint | None = None
        self._last_asked = -1

    def lookup(self, size: int) -> Checkpoint | None:
        """The checkpoint of ``size``; restarts from the top if asked for a smaller size."""
        if size < self._last_asked:
            self._iter = self._opener()
            self._current = None
        self._last_asked = size
        while self._current is None or self._current.size < size:
            nxt = next(self._iter, None)
            if nxt is None:
                return None
            self._current = nxt
        return self._current if self._current.size == size else None

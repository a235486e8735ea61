"""File layouts of an export bundle and of a device store, and their chain entries.

Both are directories (a bundle may also be a .zip of one). Paths use ``/``. The verifier
reads either through :mod:`protocol.container`; the agent writes the store and the server
writes bundles, both through the names defined here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from protocol import cbor
from protocol.errors import DecodeError
from protocol.hashing import HASH_LEN
from protocol.wire import check_map, get_bytes, get_int

# Shared by bundle and store.
ROOT_FILE = "trust/root.cose"
CERTS_FILE = "trust/certs.cborseq"
REVOCATIONS_FILE = "trust/revocations.cose"

# Bundle only.
MANIFEST_FILE = "manifest.cose"
CHECKPOINTS_FILE = "log/checkpoints.cborseq"
CONSISTENCY_FILE = "log/consistency.cborseq"
CHAINS_DIR = "chains"
BUNDLE_MEDIA_DIR = "media"
OPENINGS_DIR = "openings"

#: Bundle files whose SHA-256 the manifest lists (``files``): all must match, none may be
#: added or dropped.
LISTED_FILES = (ROOT_FILE, CERTS_FILE, REVOCATIONS_FILE, CHECKPOINTS_FILE, CONSISTENCY_FILE)

# Store only.
JOURNAL_DIR = "journal"
STORE_MEDIA_DIR = "media"
RECEIPTS_DIR = "receipts"
TORN_DIR = "torn"
#: Store folders that hold no evidence: the verifier does not read them.
STORE_PRIVATE_DIRS = ("keys", "state", "outbox", "tmp")

#: Files anyone may edit without changing evidence: human documentation.
DOC_PATTERN = re.compile(r"(^|/)(README[^/]*|[^/]*\.(md|txt|html))$", re.IGNORECASE)

_SEQ_NAME = re.compile(r"^(\d{12})\.(ubm|bin)$")
_JOURNAL_NAME = re.compile(r"^(\d{8})\.log$")


def is_documentation(path: str) -> bool:
    """True for README*, *.md, *.txt and *.html files."""
    return bool(DOC_PATTERN.search(path))


def chain_file(device: str) -> str:
    """Bundle path of a device's chain."""
    return f"{CHAINS_DIR}/{device}.cborseq"


def bundle_media(device: str, seq: int) -> str:
    """Bundle path of a record's encrypted media."""
    return f"{BUNDLE_MEDIA_DIR}/{device}/{seq:012d}.ubm"


def bundle_opening(device: str, seq: int) -> str:
    """Bundle path of a record's opening: salt (32 bytes) then the plaintext media."""
    return f"{OPENINGS_DIR}/{device}/{seq:012d}.bin"


def journal_file(boot_index: int) -> str:
    """Store path of the journal written during boot number ``boot_index``."""
    return f"{JOURNAL_DIR}/{boot_index:08d}.log"


def store_media(seq: int) -> str:
    """Store path of a record's encrypted media."""
    return f"{STORE_MEDIA_DIR}/{seq:012d}.ubm"


def receipt_file(seq: int, kind: str) -> str:
    """Store path of the server's receipt for a record (``record``) or its media (``media``)."""
    return f"{RECEIPTS_DIR}/{seq:012d}.{kind}.cose"


def parse_seq_name(name: str) -> int | None:
    """The seq of a ``<12 digits>.ubm|.bin`` file name, else None."""
    m = _SEQ_NAME.fullmatch(name)
    return int(m.group(1)) if m else None


def parse_journal_name(name: str) -> int | None:
    """The boot index of a ``<8 digits>.log`` journal name, else None."""
    m = _JOURNAL_NAME.fullmatch(name)
    return int(m.group(1)) if m else None


@dataclass(frozen=True, slots=True)
class LogProof:
    """Where a record sits in the log: index, and the path to the checkpoint of ``size``."""

    index: int
    size: int
    path: tuple[bytes, ...]

    def to_cbor(self) -> dict[str, Any]:
        """The ``log`` map of a chain entry."""
        return {"index": self.index, "size": self.size, "path": list(self.path)}

    @classmethod
    def from_cbor(cls, value: object) -> LogProof:
        """Parse the ``log`` map."""
        what = "log proof"
        body = check_map(value, what, {"index", "size", "path"})
        path = body["path"]
        if not isinstance(path, list | tuple) or len(path) > 64:
            raise DecodeError(f"{what}: path must be a list of at most 64 hashes")
        for p in path:
            if not isinstance(p, bytes) or len(p) != HASH_LEN:
                raise DecodeError(f"{what}: path items must be 32-byte hashes")
        return cls(get_int(body, "index", what), get_int(body, "size", what), tuple(path))


@dataclass(frozen=True, slots=True)
class ChainEntry:
    """One item of a bundle chain file: a signed record and, once logged, its log proof."""

    record: bytes
    log: LogProof | None

    def encode(self) -> bytes:
        """The CBOR map (to be wrapped as a byte-string sequence item)."""
        body: dict[str, Any] = {"record": self.record}
        if self.log is not None:
            body["log"] = self.log.to_cbor()
        return cbor.encode(body)

    @classmethod
    def decode(cls, data: bytes) -> ChainEntry:
        """Parse a chain entry."""
        what = "chain entry"
        body = check_map(cbor.decode(data, what=what), what, {"record"}, {"log"})
        return cls(
            get_bytes(body, "record", what, limit=cbor.MAX_OBJECT_BYTES),
            LogProof.from_cbor(body["log"]) if "log" in body else None,
        )


@dataclass(frozen=True, slots=True)
class ConsistencyProof:
    """A proof that the log of size ``first`` is a prefix of the log of size ``second``."""

    first: int
    second: int
    path: tuple[bytes, ...]

    def encode(self) -> bytes:
        """The CBOR map (a byte-string sequence item of ``log/consistency.cborseq``)."""
        return cbor.encode({"from": self.first, "to": self.second, "path": list(self.path)})

    @classmethod
    def decode(cls, data: bytes) -> ConsistencyProof:
        """Parse one consistency proof."""
        what = "consistency proof"
        body = check_map(cbor.decode(data, what=what), what, {"from", "to", "path"})
        proof = LogProof.from_cbor({"index": 0, "size": 0, "path": body["path"]})
        return cls(get_int(body, "from", what), get_int(body, "to", what), proof.path)

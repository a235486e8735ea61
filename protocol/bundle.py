"""Writing an export bundle (the reading side is the verifier).

A bundle directory holds::

    README.txt                      for people; not evidence, free to edit
    manifest.cose                   signed table of contents (server key)
    trust/root.cose                 the self-signed fleet root
    trust/certs.cborseq             device, server and encryption certificates
    trust/revocations.cose          optional root-signed revocation list
    log/checkpoints.cborseq         signed checkpoints, ascending size; the last is the one
                                    every inclusion proof in the bundle proves into
    log/consistency.cborseq         a consistency proof between each consecutive pair
    chains/{device}.cborseq         per device: {"record", "log"} entries in seq order
    media/{device}/{seq:012d}.ubm   encrypted media, as the device made it
    openings/{device}/{seq:012d}.bin   optional: salt || decrypted media

Files are written through a temporary name and renamed, so a crash leaves no file that
looks whole and is not.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import IO

from protocol import layout
from protocol.cbor import bstr_item
from protocol.errors import ProtocolError
from protocol.hashing import sha256

README = """This is an evidence export bundle of the unbroken body-worn camera system.

Check it offline with:  unbroken verify <this folder or .zip> --trust <root fingerprint>
Obtain the root fingerprint independently (from the fleet operator), not from this bundle.
The format is specified in protocol/SPEC.md of the unbroken source.
Files named README*, *.md, *.txt or *.html are documentation and are not checked.
"""


class BundleExistsError(ProtocolError):
    """The output directory already holds files."""


class BundleWriter:
    """Writes one bundle directory, file by file, streaming the chains."""

    def __init__(self, root: Path) -> None:
        if root.exists() and any(root.iterdir()):
            raise BundleExistsError(f"{root} exists and is not empty")
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self._chain: IO[bytes] | None = None
        #: SHA-256 of each trust and log file written, for the manifest's ``files``.
        self.files: dict[str, bytes] = {}
        self._chain_path: Path | None = None

    def _write(self, rel: str, data: bytes) -> None:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        with tmp.open("wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)

    def trust(self, root: bytes, certificates: Iterable[bytes], revocations: bytes | None) -> None:
        """The root, the certificates, and the revocation list if there is one."""
        self._write_listed(layout.ROOT_FILE, root)
        self._write_listed(layout.CERTS_FILE, b"".join(bstr_item(c) for c in certificates))
        if revocations is not None:
            self._write_listed(layout.REVOCATIONS_FILE, revocations)

    def log(self, checkpoints: Iterable[bytes], consistency: Iterable[bytes]) -> None:
        """Signed checkpoints (ascending) and encoded consistency proofs between them."""
        self._write_listed(layout.CHECKPOINTS_FILE, b"".join(bstr_item(c) for c in checkpoints))
        self._write_listed(layout.CONSISTENCY_FILE, b"".join(bstr_item(p) for p in consistency))

    def _write_listed(self, rel: str, data: bytes) -> None:
        self._write(rel, data)
        self.files[rel] = sha256(data)

    def begin_chain(self, device: str) -> None:
        """Start writing the chain file of ``device``."""
        self.end_chain()
        path = self.root / layout.chain_file(device)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._chain_path = path
        self._chain = path.with_name(f".{path.name}.tmp").open("wb")

    def entry(self, entry: layout.ChainEntry) -> None:
        """Append one record entry to the current chain."""
        if self._chain is None:
            raise ProtocolError("begin_chain() first")
        self._chain.write(bstr_item(entry.encode()))

    def media(self, device: str, seq: int, data: bytes, opening: bytes | None = None) -> None:
        """The encrypted media of a record, and its opening if the export includes openings."""
        self._write(layout.bundle_media(device, seq), data)
        if opening is not None:
            self._write(layout.bundle_opening(device, seq), opening)

    def end_chain(self) -> None:
        """Finish the current chain file."""
        if self._chain is not None and self._chain_path is not None:
            self._chain.flush()
            os.fsync(self._chain.fileno())
            self._chain.close()
            Path(self._chain.name).replace(self._chain_path)
        self._chain = None
        self._chain_path = None

    def finish(self, manifest: bytes) -> None:
        """Write the signed manifest (last, so its presence means the bundle is whole)."""
        self.end_chain()
        self._write("README.txt", README.encode())
        self._write(layout.MANIFEST_FILE, manifest)


def zip_bundle(directory: Path, target: Path) -> None:
    """Pack a bundle directory as a .zip (media stored, not recompressed)."""
    tmp = target.with_name(f".{target.name}.tmp")
    with zipfile.ZipFile(tmp, "w") as zf:
        for path in sorted(directory.rglob("*")):
            if path.is_file():
                rel = path.relative_to(directory).as_posix()
                compress = (
                    zipfile.ZIP_STORED if rel.endswith((".ubm", ".bin")) else zipfile.ZIP_DEFLATED
                )
                zf.write(path, rel, compress_type=compress)
    tmp.replace(target)

"""Streaming reads of CBOR-sequence files inside a container, with errors reported."""

from __future__ import annotations

from collections.abc import Iterator

from protocol.cbor import TruncatedItemError, read_bstr_sequence
from protocol.container import Container
from protocol.errors import DecodeError
from protocol.verify.findings import Code
from protocol.verify.report import Report


def read_items(
    container: Container, path: str, report: Report, code: Code
) -> Iterator[tuple[int, bytes]]:
    """Yield ``(index, item)`` of a byte-string sequence file; report a bad tail as ``code``."""
    index = 0
    try:
        with container.open(path) as stream:
            for item in read_bstr_sequence(stream):
                yield index, item
                index += 1
    except TruncatedItemError as exc:
        report.add(code, f"{path}: ends inside item {index} ({exc})")
    except DecodeError as exc:
        report.add(code, f"{path}: item {index}: {exc}")
    except FileNotFoundError:
        report.add(code, f"{path} is missing")
    except OSError as exc:
        report.add(code, f"{path}: cannot read ({exc})")

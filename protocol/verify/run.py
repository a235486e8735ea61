"""``verify``: open a bundle or store, check everything, return the report."""

from __future__ import annotations

from pathlib import Path

from protocol.container import Container, open_container
from protocol.errors import DecodeError
from protocol.layout import JOURNAL_DIR, MANIFEST_FILE
from protocol.verify.report import Report
from protocol.verify.sources import Progress, verify_bundle, verify_store
from protocol.verify.trust import load_trust


class UnreadableInputError(Exception):
    """The input is not a bundle or a store at all (exit status 2)."""


def detect(container: Container) -> str:
    """``bundle`` or ``store``."""
    if container.exists(MANIFEST_FILE):
        return "bundle"
    if container.listdir(JOURNAL_DIR):
        return "store"
    raise UnreadableInputError(
        f"{container.name}: neither an export bundle (no {MANIFEST_FILE}) nor "
        f"a device store (no {JOURNAL_DIR}/)"
    )


def verify_path(path: Path, pin: str | None = None, progress: Progress | None = None) -> Report:
    """Verify the bundle or store at ``path``; raise UnreadableInputError if it is neither."""
    try:
        container = open_container(path)
    except DecodeError as exc:
        raise UnreadableInputError(str(exc)) from exc
    try:
        kind = detect(container)
        report = Report(str(path), kind)
        trust = load_trust(container, report, pin)
        if trust is None:
            return report
        if kind == "bundle":
            verify_bundle(container, trust, report, progress)
        else:
            verify_store(container, trust, report, progress)
        return report
    finally:
        container.close()

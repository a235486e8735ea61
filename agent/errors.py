"""Errors of the agent::

AgentError
├── EnrolmentError       no or bad enrolment material in the store
├── StoreError           the evidence store refused or failed an operation
│   └── MediaFailingError   read-back after seal did not match: the card keeps nothing
├── DeletionRefusedError a request to delete evidence (always refused; recorded)
└── SyncError            the server refused or could not be reached
"""

from __future__ import annotations


class AgentError(Exception):
    """Base of every error raised by :mod:`agent`."""


class EnrolmentError(AgentError):
    """The store holds no usable enrolment (root, device certificate, server keys)."""


class StoreError(AgentError):
    """The evidence store failed an operation."""


class StorageFullError(StoreError):
    """No room for more media beyond the reserve kept for closing records."""


class MediaFailingError(StoreError):
    """What was sealed does not read back: the medium is failing."""


class JournalAppendError(MediaFailingError):
    """Appending a record to the journal failed (EIO, a failed fsync): the record may or
    may not be on the medium. Its seq is spent; the store has moved to a new journal."""

    def __init__(self, seq: int, journal: str, cause: Exception) -> None:
        super().__init__(f"append of seq {seq} to {journal} failed: {cause}")
        self.seq = seq
        self.journal = journal


class DeletionRefusedError(AgentError):
    """Deleting or rewriting evidence is refused on every interface."""


class SyncError(AgentError):
    """An exchange with the server failed."""

"""The offline verifier: ``verify_path`` checks an export bundle or a device store.

It is pure: it reads only the files it is given, and never the network or a database.
"""

from protocol.verify.findings import Code, Severity
from protocol.verify.report import Finding, Gap, Report, SessionSummary
from protocol.verify.run import UnreadableInputError, verify_path

__all__ = [
    "Code",
    "Finding",
    "Gap",
    "Report",
    "SessionSummary",
    "Severity",
    "UnreadableInputError",
    "verify_path",
]

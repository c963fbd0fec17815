"""Coffre's errors.

    CoffreError
    ├── FhirError          carries a FHIR OperationOutcome and the HTTP status to answer with
    ├── SealError          a sealed record failed to open (says nothing about why)
    ├── CustodyError       the key custody refused or failed
    └── StorageError       the storage backend failed or holds something unexpected
        ├── CommitUnknownError  the connection was lost at COMMIT: committed or not, unknown
        ├── IndexDamagedError  the index searches read does not find what it must
        ├── LogDamagedError  the log has a gap, or is missing under records it covered
        └── VaultStateError  the vault folder is missing, or exists when it should not
            └── RolledBackError  the storage's log ends before the last checkpoint signed

The API turns a FhirError into its OperationOutcome as is (its message quotes a client's
long value only in part: ``bounded``); every other error becomes a
generic 500 outcome whose message never quotes health data or keys.
"""

from __future__ import annotations

import re
from typing import Any

# A message repeats at most this many characters of a value a client sent (a quoted value,
# or a long run without spaces), then an ellipsis and the value's length; and is itself cut
# at MESSAGE_MAX characters: a 100 KB ``_sort`` is not sent back to its sender.
QUOTED_MAX = 100
MESSAGE_MAX = 1000
_OVER_MAX = f"{{{QUOTED_MAX + 1},}}"
# A run without spaces is looked for only where one can start: tried at each of its
# characters, a run of 100 was read again from each (a 5 MB value of such runs between
# quotes took 3 s to quote in a 400; a 64 MB body, some 40).
_LONG = re.compile(rf"""'([^']{_OVER_MAX})'|"([^"]{_OVER_MAX})"|(?<![^\s'"])[^\s'"]{_OVER_MAX}""")


def _shortened(found: re.Match[str]) -> str:
    inner = found[1] or found[2]
    quote, value = (found[0][0], inner) if inner else ("", found[0])
    return f"{quote}{value[: QUOTED_MAX - 1]}…{quote} ({len(value):,} characters)"


def bounded(message: str) -> str:
    """A message with each long value it quotes shortened to its beginning and length,
    and cut itself past MESSAGE_MAX characters (an unquoted value with spaces). Bounding
    a bounded message changes nothing."""
    message = _LONG.sub(_shortened, message)
    if len(message) <= MESSAGE_MAX:
        return message
    cut = f"… (cut from {len(message):,} characters)"
    return message[: MESSAGE_MAX - len(cut)] + cut


def operation_outcome(
    severity: str, code: str, *diagnostics: str, expression: str | None = None
) -> dict[str, Any]:
    """An OperationOutcome of one issue per message, each of ``severity`` and ``code``."""
    issues: list[dict[str, Any]] = []
    for message in diagnostics:
        issue: dict[str, Any] = {"severity": severity, "code": code, "diagnostics": message}
        if expression:
            issue["expression"] = [expression]
        issues.append(issue)
    return {"resourceType": "OperationOutcome", "issue": issues}


def information(message: str) -> dict[str, Any]:
    """An OperationOutcome that says what was done."""
    return operation_outcome("information", "informational", message)


class CoffreError(Exception):
    """Base of every error Coffre raises on purpose."""


class FhirError(CoffreError):
    """A request Coffre refuses, with the OperationOutcome that says why.

    ``code`` is from the FHIR IssueType value set (invalid, structure, required, value,
    not-found, conflict, processing, not-supported, too-costly, security...), and
    ``expression`` the FHIRPath of the element at fault, where there is one.
    """

    def __init__(
        self,
        status: int,
        code: str,
        diagnostics: str,
        expression: str | None = None,
        severity: str = "error",
    ) -> None:
        diagnostics = bounded(diagnostics)
        super().__init__(diagnostics)
        self.status = status
        self.code = code
        self.diagnostics = diagnostics
        self.expression = expression
        self.severity = severity

    def outcome(self) -> dict[str, Any]:
        return operation_outcome(
            self.severity, self.code, self.diagnostics, expression=self.expression
        )


class SealError(CoffreError):
    """A sealed record does not open: altered, swapped, or under a key that is gone."""

    def __init__(self) -> None:
        super().__init__("the sealed record failed its integrity check")


class CustodyError(CoffreError):
    """The key custody could not provide, wrap or unwrap a key."""


class StorageError(CoffreError):
    """The storage backend failed."""


class StorageFullError(StorageError):
    """The storage's disk (or PostgreSQL's) is full: the write was undone, and none will
    succeed until the operator frees space."""


class TransactionUndoneError(StorageError):
    """The database undid a whole transaction of its own accord: every request that shared
    it failed with it."""


class CommitUnknownError(StorageError):
    """The connection to the database was lost once COMMIT was on its way: the database
    may have committed the transaction, or not."""

    def __init__(self) -> None:
        super().__init__(
            "the connection to the storage was lost while the transaction was being committed:"
            " it may have been saved"
        )


class IndexDamagedError(StorageError):
    """The index searches read candidates from (SQLite's FTS5 index, PostgreSQL's B-tree
    of tokens) does not find what the index tokens, which reads check against the log,
    say it must: the host damaged it. ``coffre repair-index`` rebuilds it from them."""

    def __init__(self, detail: str) -> None:
        super().__init__(
            f"the storage's search index failed its integrity check ({detail}): what needs"
            " it is refused until the operator rebuilds it with 'coffre repair-index'"
        )
        self.detail = detail


class LogDamagedError(StorageError):
    """The log's leaves or tree nodes have a gap in the storage: the host dropped some, or
    lost them. What needs them is refused as an integrity failure, not an outage to wait
    out; the message names the gap."""


class VaultStateError(StorageError):
    """The vault is not where it should be, or is already there."""


class RolledBackError(VaultStateError):
    """The storage does not hold the log this side last signed: rolled back or replaced."""

"""The ledger's errors, all under ``LedgerError`` (a ``CoffreError``).

    LedgerError
    ├── ProofShapeError    a proof of the wrong length, or sizes and indices that cannot be
    ├── RootMismatchError  a well-formed proof leads to a root other than the expected one
    │   └── ForkError      a consistency proof leads to the new root, and to another old one
    ├── NoteFormatError    a signed note, checkpoint or verifier key that does not parse
    └── SignatureError     a note lacks a valid signature from the keys it must carry

Asking for a proof of a leaf beyond the tree is a caller's mistake: a plain ``ValueError``.
"""

from __future__ import annotations

from coffre.exceptions import CoffreError


class LedgerError(CoffreError):
    """The ledger refused a proof, a note or a signature."""


class ProofShapeError(LedgerError):
    """A proof does not have the shape its tree sizes and index call for."""


class RootMismatchError(LedgerError):
    """A proof leads to a root other than the expected one."""

    def __init__(self, expected: bytes, computed: bytes, what: str = "root") -> None:
        super().__init__(f"computed {what} {computed.hex()} is not the expected {expected.hex()}")
        self.expected = expected
        self.computed = computed


class ForkError(RootMismatchError):
    """A consistency proof leads to the new tree's root, and from its first leaves to
    another root than the old tree's: its hashes are then the new tree's own (anything
    else is a collision), so the new tree does not extend the old one. A proof that leads
    nowhere shows no such thing: it may only be garbled."""


class NoteFormatError(LedgerError):
    """A signed note, checkpoint body or verifier key is malformed."""


class SignatureError(LedgerError):
    """A note is not signed as required: a known key's signature fails, or one is missing."""

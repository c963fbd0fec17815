"""What one leaf of the log says: a write or an access, bound to the sealed bytes it concerns.

The encoding is fixed-width and versioned, so that any auditor can decode a leaf without
Coffre's code and so that two different events never encode alike:

    format (1) | kind (1) | location (32) | version (8) | SHA-256 of the sealed body (32) | time, µs (8)
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

from coffre.ledger.errors import LedgerError

FORMAT = 1
_LAYOUT = struct.Struct(">BB32sQ32sQ")
NO_LOCATION = bytes(32)


class LeafKind(IntEnum):
    CREATE = 1
    UPDATE = 2
    DELETE = 3
    READ = 4
    SEARCH = 5
    HISTORY = 6
    IMPORT = 7
    EXPORT = 8
    ERASE = 9
    KEY_ROTATION = 10


@dataclass(frozen=True, slots=True)
class Leaf:
    kind: LeafKind
    loc: bytes
    version: int
    body_hash: bytes
    ts: int

    def encode(self) -> bytes:
        return _LAYOUT.pack(FORMAT, self.kind, self.loc, self.version, self.body_hash, self.ts)

    @classmethod
    def decode(cls, data: bytes) -> Leaf:
        if len(data) != _LAYOUT.size or data[0] != FORMAT:
            raise LedgerError(f"a leaf is {_LAYOUT.size} bytes of format {FORMAT}")
        _, kind, loc, version, body_hash, ts = _LAYOUT.unpack(data)
        try:
            return cls(LeafKind(kind), loc, version, body_hash, ts)
        except ValueError:
            raise LedgerError(f"a leaf names an unknown kind {kind}") from None

"""What one leaf of the log says: a write or an access, bound to the sealed bytes it concerns.

The encoding is fixed-width and versioned, so that any auditor can decode a leaf without
Coffre's code and so that two different events never encode alike:

    format (1) | kind (1) | location (32) | version (8) | SHA-256 of the sealed body (32)
    | index digest (32) | SHA-256 of the sealed AuditEvent (32) | time, µs (8) | gateway tag (16)

The index digest commits a write to the blind tokens the host must hold for that version
(SHA-256 of the sorted tokens; all zeros on an access leaf), so that a token the host
changes, adds or drops is caught. The AuditEvent says who acted, why and from where; it
is sealed under the compartment's data key and stored beside the log, one per request
and compartment, and every leaf of that request and compartment commits to it.

The tag is a MAC under a key of the sovereign side: the host, which stores the leaves,
cannot add one that the gateway would then sign into a checkpoint. Auditors treat it as
opaque bytes of the leaf.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Sequence
from enum import IntEnum
from typing import NamedTuple

from coffre.ledger.errors import LedgerError
from coffre.ledger.hashing import leaf_hash

FORMAT = 2
_LAYOUT = struct.Struct(">BB32sQ32s32s32sQ")
NO_DIGEST = bytes(32)
TAG_BYTES = 16
SIZE = _LAYOUT.size + TAG_BYTES


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
    INTEGRITY = 11
    """A request refused because what the host returned failed its integrity check."""
    DATA_KEY = 12
    """A patient's data key made: the location is their compartment token, the body hash
    the key's binding to it (``PurposeKeys.data_key_binding``), so that a wrapped key the
    host moves to another compartment, copies or plants is refused."""


class Leaf(NamedTuple):
    """A leaf's fields. A named tuple: made once or twice per write and per resource a
    read hands out, it costs a third of a frozen dataclass to build."""

    kind: LeafKind
    loc: bytes
    version: int
    body_hash: bytes
    ts: int
    index_digest: bytes = NO_DIGEST
    event_hash: bytes = NO_DIGEST

    def with_event(self, event_hash: bytes) -> Leaf:
        """This leaf committing to an AuditEvent (``_replace`` costs several
        times more, and a search logs a leaf per resource it hands out)."""
        return Leaf(
            self.kind,
            self.loc,
            self.version,
            self.body_hash,
            self.ts,
            self.index_digest,
            event_hash,
        )

    def encode(self) -> bytes:
        """The leaf's fields, without the tag (the part the tag authenticates)."""
        return _LAYOUT.pack(
            FORMAT,
            self.kind,
            self.loc,
            self.version,
            self.body_hash,
            self.index_digest,
            self.event_hash,
            self.ts,
        )

    @classmethod
    def decode(cls, data: bytes) -> Leaf:
        """The fields of a stored leaf (fields and tag)."""
        if len(data) != SIZE or data[0] != FORMAT:
            raise LedgerError(f"a leaf is {SIZE} bytes of format {FORMAT}")
        _, kind, loc, version, body_hash, index_digest, event_hash, ts = _LAYOUT.unpack(
            data[: _LAYOUT.size]
        )
        try:
            return cls(LeafKind(kind), loc, version, body_hash, ts, index_digest, event_hash)
        except ValueError:
            raise LedgerError(f"a leaf names an unknown kind {kind}") from None


_HEAD = struct.Struct(f">BB{SIZE - 2}x")
"""A stored leaf's format and kind, which lead ``_LAYOUT``; the rest skipped."""
_DECODABLE_HEADS = frozenset((FORMAT, kind) for kind in LeafKind)


def undecodable(entries: Sequence[bytes]) -> list[int]:
    """The positions of the entries that ``Leaf.decode`` refuses.

    For an auditor that checks millions: when every entry decodes (the usual case), their
    lengths, formats and kinds are checked in C, without building a Leaf of each, at a
    tenth of the cost; otherwise each is decoded to find which.
    """
    if set(map(len, entries)) <= {SIZE} and (
        set(_HEAD.iter_unpack(b"".join(entries))) <= _DECODABLE_HEADS
    ):
        return []
    return [position for position, entry in enumerate(entries) if not _decodes(entry)]


def kind_bytes(entries: Sequence[bytes]) -> bytes:
    """Each entry's kind byte, in order (0 for an entry too short to have one): for an
    auditor counting the kinds of millions of leaves, sliced in C when all are leaf-sized."""
    if set(map(len, entries)) <= {SIZE}:
        return b"".join(entries)[1::SIZE]
    return bytes(entry[1] if len(entry) > 1 else 0 for entry in entries)


WRITES = frozenset({LeafKind.CREATE, LeafKind.UPDATE, LeafKind.DELETE})


def in_map(kind: LeafKind, version: int) -> bool:
    """Whether a leaf is its record's latest write for the verifiable map: a write, or a
    record's erasure (``ERASE`` of version 0 is the compartment's erasure, whose location
    is the compartment token, not a record)."""
    return kind in WRITES or (kind is LeafKind.ERASE and version > 0)


_MAP_KINDS = frozenset(WRITES | {LeafKind.ERASE})


def map_updates(entries: Sequence[bytes]) -> dict[bytes, bytes]:
    """What stored leaves, in log order, set in the verifiable map: each location's latest
    write, to its leaf's hash. For an auditor that recomputes the map from millions of
    leaves, most of them accesses, only those whose kind byte says write or erasure are
    decoded; entries that are no leaf are ``undecodable``'s to report."""
    updates: dict[bytes, bytes] = {}
    for at, kind in enumerate(kind_bytes(entries)):
        if kind not in _MAP_KINDS:
            continue
        try:
            leaf = Leaf.decode(entries[at])
        except LedgerError:
            continue
        if in_map(leaf.kind, leaf.version):
            updates[leaf.loc] = leaf_hash(entries[at])
    return updates


def _decodes(data: bytes) -> bool:
    try:
        Leaf.decode(data)
    except LedgerError:
        return False
    return True


def split_tag(data: bytes) -> tuple[bytes, bytes]:
    """A stored leaf's fields and its tag."""
    return data[:-TAG_BYTES], data[-TAG_BYTES:]


def index_digest(tokens: Iterable[bytes]) -> bytes:
    """What a write's leaf commits to of its blind tokens: SHA-256 of the distinct tokens,
    sorted, so that it is the same whatever order the host keeps them in."""
    return hashlib.sha256(b"".join(sorted(set(tokens)))).digest()


NO_TOKENS = index_digest(())
"""The index digest of a write that leaves its record no tokens (a deletion, an erasure)."""

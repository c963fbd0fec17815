"""The log on the write path: a leaf per write, integration into the tree, signed
checkpoints, and the sovereign side's memory of the last checkpoint it signed.

Appending is part of each write's transaction, so a write is acknowledged only once its
leaf is durable. Integration (hashing new leaves into the tree, storing the new perfect
subtrees for proofs, signing a checkpoint) runs as a job of its own, like Tessera's
integrator: appends stay cheap, and one signature covers many writes.

The host could put back an older copy of the whole storage. The sovereign side therefore
keeps the last checkpoint it signed in a file beside the keyring, and refuses a storage
whose log is shorter than it, or whose checkpoint at that size differs.
"""

from __future__ import annotations

import hmac
import logging
import secrets
import struct
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from coffre.custody import KeyCustodian
from coffre.exceptions import LogDamagedError, RolledBackError, SealError
from coffre.files import replace_file
from coffre.ledger import (
    Checkpoint,
    Note,
    SparseMerkleMap,
    VerifierKey,
    map_extension,
    open_checkpoint,
    sign_checkpoint,
)
from coffre.ledger.errors import LedgerError, SignatureError
from coffre.ledger.hashing import leaf_hash
from coffre.ledger.leaf import NO_DIGEST, NO_TOKENS, Leaf, LeafKind, in_map, split_tag
from coffre.ledger.note import ALG_ED25519
from coffre.ledger.proofs import NodeHash
from coffre.ledger.smt import MapChanges, MapProof
from coffre.ledger.tree import CompactRange, root_of
from coffre.seal import PurposeKeys
from coffre.seal.keys import LOCATION_BYTES
from coffre.storage.base import Storage, StorageReader, StorageTxn

log = logging.getLogger("coffre.ledger")


def verifier_key_of(custodian: KeyCustodian) -> VerifierKey:
    """The key the log's checkpoints verify with, its origin and the custody's signer's."""
    return VerifierKey(custodian.log_origin(), ALG_ED25519, custodian.log_signer().public_key)


class Ledger:
    def __init__(self, custodian: KeyCustodian, keys: PurposeKeys, memory: Path | None) -> None:
        self._keys = keys
        self._signer = custodian.log_signer()
        self.origin = custodian.log_origin()
        self.verifier_key = verifier_key_of(custodian)
        self._memory = memory
        self._memory_failure: str | None = None  # said once in the server log, until it works
        # The last checkpoint verified, by its text: every transaction and every ledger
        # request starts from the storage's latest, which rarely changed in between.
        self._verified: tuple[str, Checkpoint] | None = None

    def record(self, txn: StorageTxn, leaves: Sequence[Leaf]) -> list[bytes]:
        """Append leaves, each tagged with its place in the log so that it cannot be
        replayed; return them as stored."""
        start = txn.leaf_count()
        stored = []
        for index, leaf in enumerate(leaves, start):
            fields = leaf.encode()
            stored.append(fields + self._keys.leaf_tag(_tagged(index, fields)))
        txn.append_leaves(start, stored)
        return stored

    def latest(self, reader: StorageReader) -> Checkpoint | None:
        """The newest checkpoint the storage holds, once its signature is checked."""
        note = reader.latest_checkpoint()
        if note is None:
            return None
        verified = self._verified
        if verified is not None and verified[0] == note:
            return verified[1]
        checkpoint = open_checkpoint(note, self.verifier_key)
        self._verified = (note, checkpoint)
        return checkpoint

    def integrate(
        self, txn: StorageTxn, latest_writes: LatestWrites, appended: Sequence[Appended]
    ) -> Integration | None:
        """Hash the leaves this transaction appended into the tree, compute the map root
        they give, and sign a new checkpoint carrying both.

        Every transaction integrates what it appended, so the log ends at the last
        checkpoint plus ``appended``; anything else is refused. The map follows the
        transaction's view only up to the last checkpoint: the write lock this
        transaction holds means that is exactly what is committed.
        """
        last = self.latest(txn)
        start = last.size if last else 0
        end = start + len(appended)
        if txn.leaf_count() != end:
            raise LedgerError(f"the log holds other leaves than its checkpoint ({start}) and ours")
        if not appended:
            return None
        latest_writes.catch_up(txn, until=start)
        if latest_writes.known != start:
            raise LedgerError(f"the log holds {latest_writes.known} leaves, its checkpoint {start}")
        if last is not None and last.map_root not in (None, latest_writes.map.root):
            raise LedgerError("the log's leaves do not give the map root its checkpoint signed")
        hashes = [leaf_hash(data) for _, data in appended]
        # The tree as followed from the leaves themselves, never from nodes the host stores.
        tree = latest_writes.tree.copy()
        txn.put_nodes(tree.extend_with_nodes(hashes, STORED_EVERY))
        root = tree.root()
        leaves = [leaf for leaf, _ in appended]
        map_changes = latest_writes.map_with(leaves, hashes)
        checkpoint = Checkpoint(self.origin, end, root, (map_extension(map_changes.root),))
        note = sign_checkpoint(checkpoint, self.origin, self._signer)
        text = note.serialize()
        txn.put_checkpoint(end, text)
        self._verified = (text, checkpoint)  # if the transaction rolls back, the text differs
        return Integration(note, start, leaves, hashes, tree, map_changes)

    def check_map(self, reader: StorageReader, latest_writes: LatestWrites) -> None:
        """Refuse a log whose leaves do not give the map root its newest checkpoint signed."""
        last = self.latest(reader)
        if last is None or last.size != latest_writes.known or last.map_root is None:
            return
        if last.map_root != latest_writes.map.root:
            raise LedgerError("the log's leaves do not give the map root its checkpoint signed")

    def remember(self, note: Note) -> None:
        """Keep the checkpoint just signed on the sovereign side, replaced atomically.

        No disk sync: after a power cut the file may hold an older checkpoint, which only
        lets through a rollback to a state newer than that one; it never refuses a
        storage that is really current.
        """
        if self._memory is None:
            return
        try:
            replace_file(self._memory, note.serialize(), sync=False)
        except OSError as error:
            # The write it follows is committed: failing it now would answer "nothing
            # changed" to a saved write, which a client would repeat.
            failure = (
                f"the checkpoint just signed could not be kept in {self._memory}"
                f" ({error.strerror or type(error).__name__})"
            )
            if self._memory_failure is None:
                log.warning(
                    "%s: the writes are saved, but until it can, a rollback of the storage to"
                    " a state after the checkpoint kept there would not be noticed at start;"
                    " free the space or fix the folder's permissions",
                    failure,
                )
            self._memory_failure = failure
            return
        if self._memory_failure is not None:
            log.warning("the checkpoint memory %s is kept up to date again", self._memory)
        self._memory_failure = None

    @property
    def memory_failure(self) -> str | None:
        """Why the last checkpoint signed could not be kept on the sovereign side; None
        when it was. A server goes on (its writes are saved); an import stops."""
        return self._memory_failure

    def check_signed_here(self, reader: StorageReader) -> None:
        """Refuse, before any other check, a storage whose newest checkpoint another key
        signed: the keyring and the storage are not one vault's, which the later checks
        would report as leaves not written here, or as a rollback."""
        note = reader.latest_checkpoint()
        try:
            if note is not None:  # kept as verified: the next ``latest`` reads the same
                self._verified = (note, open_checkpoint(note, self.verifier_key))
        except LedgerError as error:
            raise SignatureError(
                f"the storage's newest checkpoint does not verify with this keyring's key"
                f" ({error}): the keyring is another vault's, or the storage was altered"
            ) from None

    def check_not_rolled_back(self, reader: StorageReader, latest_writes: LatestWrites) -> None:
        """Refuse a storage older than the last checkpoint this side signed, or whose leaves
        up to it no longer hash to its root (altered, reordered, dropped).

        ``latest_writes`` (new, empty) follows the log up to that checkpoint on the way:
        the leaves are read and hashed once at start. A storage holding records but no
        log is refused without a memory too: every write adds a leaf in its transaction.
        """
        if reader.leaf_count() == 0 and reader.last_seq() > 0:
            raise LogDamagedError(  # no rollback a restore could accept: no log at all
                "the storage holds records but no log: a copy into it (coffre restore, coffre"
                " migrate) stopped before it copied the log, which running it again"
                " finishes, or the storage copied holds no log, or the host dropped it."
                " Refusing to serve it"
            )
        if self._memory is None or not self._memory.exists():
            return
        try:
            remembered = open_checkpoint(self._memory.read_bytes(), self.verifier_key)
        except LedgerError as error:
            raise LedgerError(
                f"the checkpoint memory {self._memory} holds no checkpoint of this vault's"
                f" log ({error}): is it this vault's keyring?"
            ) from None
        held = reader.checkpoint_at(remembered.size)
        stored = None if held is None else open_checkpoint(held, self.verifier_key)
        try:
            latest_writes.catch_up(reader, until=remembered.size)
            followed = latest_writes.known == remembered.size
        except LedgerError:  # a leaf that is not ours where ours was
            followed = False
        if stored != remembered or not followed or latest_writes.tree.root() != remembered.root:
            unfinished = (
                ", or a copy into it (coffre restore, coffre migrate) stopped before it copied"
                " the checkpoints, which running it again finishes"
                if reader.latest_checkpoint() is None
                else ""
            )
            raise RolledBackError(
                f"the storage does not hold the log this side last signed (size {remembered.size}):"
                f" it was rolled back or replaced{unfinished}; refusing to serve it"
            )


def _map_updates(leaves: list[Leaf], hashes: list[bytes]) -> dict[bytes, bytes]:
    """The map updates leaves (with their hashes) make: each location's latest write."""
    return {
        leaf.loc: hashed
        for leaf, hashed in zip(leaves, hashes, strict=True)
        if in_map(leaf.kind, leaf.version)
    }


def _new_events(event_hashes: set[bytes]) -> int:
    """The AuditEvents whole transactions add, from their leaves' event hashes: the leaves
    of one event are all in its transaction."""
    event_hashes.discard(NO_DIGEST)
    return len(event_hashes)


Appended = tuple[Leaf, bytes]
"""A leaf a transaction appended, and its bytes as stored."""


@dataclass(frozen=True, slots=True)
class Integration:
    """What one transaction added to the log, for the latest-writes record to take over
    once it commits instead of reading it back."""

    note: Note
    start: int
    leaves: list[Leaf]
    hashes: list[bytes]
    tree: CompactRange
    map_changes: MapChanges


FOLLOW_CHUNK = 65_536
"""Leaves read from the log at a time when following it. Opening a vault follows the
whole log, tens of millions of leaves after a year of reads: read at once, its bytes and
decoded leaves alone would take gigabytes, on top of what the gateway keeps."""


def shorter_than_followed(size: int, followed: int) -> RolledBackError:
    """The storage's log, or its newest checkpoint, is ``size`` leaves long, and this
    process followed ``followed``: the host put an older copy in place while it served."""
    return RolledBackError(
        f"the storage's log holds {size} leaves, fewer than the {followed} this gateway"
        " followed: it was rolled back or replaced; refusing to serve it"
    )


class LoggedWrite(NamedTuple):
    """What the log says of a record's latest write."""

    version: int
    body_hash: bytes
    index_digest: bytes


_LOGGED = struct.Struct(">Q32s32s")
"""A ``LoggedWrite`` as the latest-writes record keeps it."""
PICK_TRIES = 4
"""Records drawn for each one ``carrying_tokens`` picks, at most."""


class LatestWrites:
    """The gateway's own knowledge, from its log, of each record's latest write.

    Every read checks the version the storage hands back, and the index tokens it holds
    for it, against it, so that a host that puts back an older version, drops a record or
    changes its tokens is caught at the next read. The same
    knowledge, as a sparse Merkle map from location to the hash of the latest write leaf,
    gives the map root each checkpoint signs, so that anyone can check freshness too.
    It is rebuilt from the log when a vault opens and follows the log's new leaves after
    that (from the event loop and the commit thread alike, hence the lock); only leaves
    that carry this side's tag are believed.
    """

    def __init__(self, keys: PurposeKeys) -> None:
        self._keys = keys
        # Each value packed as bytes (``_LOGGED``): a third of the memory of a tuple of its
        # fields, and a dict of bytes the garbage collector never visits (a vault of a
        # million records took 26 full collections of 70 ms to open with tuples).
        self._latest: dict[bytes, bytes] = {}
        # Its keys in a list too, to pick records at random from (8 bytes a record).
        self._located: list[bytes] = []
        self._erased: dict[bytes, int] = {}  # compartment -> when Coffre erased it (µs)
        self._bindings: dict[bytes, bytes] = {}  # compartment -> its data key's binding
        self.map = SparseMerkleMap()
        self.tree = CompactRange()  # the log's tree as far as it was followed
        self.known = 0
        self.newest_write = 0  # the time of the newest write followed (µs since the epoch)
        self.newest_leaf = 0  # and of its newest leaf, an access as well as a write
        self._events = 0  # the AuditEvents the leaves followed commit to
        self._lock = threading.Lock()

    def catch_up(self, reader: StorageReader, until: int | None = None) -> None:
        """Follow the log up to its end, or up to ``until`` (a transaction's own new
        leaves are not committed, so the map must not follow them yet). A log shorter than
        the part followed is refused (RolledBackError): the host put an older copy of the
        storage in place while the gateway served."""
        with self._lock:
            count = reader.leaf_count() if until is None else until
            if count < self.known:
                raise shorter_than_followed(count, self.known)
            updates: dict[bytes, bytes] = {}
            events: set[bytes] = set()
            try:
                while self.known < count:
                    data = reader.leaves(self.known, min(count, self.known + FOLLOW_CHUNK))
                    leaves = [
                        authentic_leaf(self._keys, i, d) for i, d in enumerate(data, self.known)
                    ]
                    hashes = [leaf_hash(d) for d in data]
                    self.tree.extend(hashes)
                    self._follow(leaves)
                    events.update(leaf.event_hash for leaf in leaves)
                    updates.update(_map_updates(leaves, hashes))
                    if len(data) < FOLLOW_CHUNK:  # the log ends before ``count``, or here
                        break
            finally:
                # Whole transactions were followed, not whole chunks: an event's leaves may
                # fall in two. The map takes one batch: chunk by chunk, its upper nodes
                # would be hashed again for each.
                self._events += _new_events(events)
                self.map.update(updates)

    def adopt(self, integration: Integration) -> None:
        """Take over what a committed transaction integrated, unless the log was already
        followed past it (or not yet up to it: ``catch_up`` then reads it back)."""
        with self._lock:
            if self.known == integration.start:
                self._follow(integration.leaves)
                self._events += _new_events({leaf.event_hash for leaf in integration.leaves})
                self.tree = integration.tree
                self.map.apply(integration.map_changes)

    def _follow(self, leaves: list[Leaf]) -> None:
        """Add leaves to the latest writes (the map follows with ``_map_updates``, the
        count of events with ``_new_events``)."""
        pack, latest = _LOGGED.pack, self._latest
        for leaf in leaves:
            if leaf.kind is LeafKind.ERASE and leaf.version == 0:
                self._erased.setdefault(leaf.loc, leaf.ts)
            elif leaf.kind is LeafKind.DATA_KEY:
                self._bindings.setdefault(leaf.loc, leaf.body_hash)
            elif in_map(leaf.kind, leaf.version):
                if leaf.loc not in latest:
                    self._located.append(leaf.loc)
                latest[leaf.loc] = pack(leaf.version, leaf.body_hash, leaf.index_digest)
                self.newest_write = max(self.newest_write, leaf.ts)
        if leaves:
            self.newest_leaf = max(self.newest_leaf, leaves[-1].ts)
        self.known += len(leaves)

    def check_events(self, storage: Storage) -> int:
        """Refuse a storage that lost a sealed AuditEvent of the log followed so far: each
        row is checked against its leaf when read, a missing one only by this count. The
        size of the log checked: events of later leaves are not vouched for."""
        with self._lock:
            known, events = self.known, self._events
        if storage.event_count(known) != events:
            raise SealError()
        return known

    def expected(self, loc: bytes) -> LoggedWrite | None:
        found = self._latest.get(loc)
        return None if found is None else LoggedWrite._make(_LOGGED.unpack(found))

    def carrying_tokens(self, count: int) -> list[bytes]:
        """Up to ``count`` records picked at random (a host cannot guess which) among those
        whose latest write gave them index tokens: deletions and erasures give none, and
        are passed over, a few tries a pick."""
        picked: set[bytes] = set()
        with self._lock:
            located = self._located
            for _ in range(count * PICK_TRIES if located else 0):
                loc = located[secrets.randbelow(len(located))]
                if LoggedWrite._make(_LOGGED.unpack(self._latest[loc])).index_digest != NO_TOKENS:
                    picked.add(loc)
                    if len(picked) == count:
                        break
        return sorted(picked)

    def erased_at(self, comp: bytes) -> int | None:
        """When Coffre erased a compartment (µs since the epoch), as far as the log was
        followed; None if it did not."""
        return self._erased.get(comp)

    def key_binding(self, comp: bytes) -> bytes | None:
        """The binding of a compartment's data key, as the log recorded it when the key was
        made, as far as the log was followed; None if it has none (yet)."""
        return self._bindings.get(comp)

    @property
    def keys_logged(self) -> bool:
        """Whether the log records data keys: then a key it does not record is the host's.
        Vaults keyed before it did log the keys they hold at their next opening."""
        return bool(self._bindings)

    def prove(self, reader: StorageReader, loc: bytes) -> tuple[int, bytes | None, MapProof]:
        """The log size the map is at, ``loc``'s value (its latest write leaf's hash, or
        None) and the proof of it, all of one moment."""
        self.catch_up(reader)
        with self._lock:
            return self.known, self.map.get(loc), self.map.prove(loc)

    def map_with(self, leaves: list[Leaf], hashes: list[bytes]) -> MapChanges:
        """The map nodes ``leaves`` (with their hashes) would write, and the root they
        give, leaving the map as it is."""
        return self.map.changes(_map_updates(leaves, hashes))


MAP_KEY_BYTES = LOCATION_BYTES
"""The map's keys are records' locations."""

STORED_EVERY = 4
"""The tree's perfect subtrees are stored every 4 levels (a tile's height is a multiple
of it, so hash tiles are read as stored); a node between is folded from the at most 8
stored below it, or the leaves. About one row every 15 leaves instead of one a leaf: a
proof costs some 70 hashes more. Vaults written before 2026-12-03 hold every level, and
the levels between are not read."""


def stored_nodes(reader: StorageReader, level: int, start: int, end: int) -> list[bytes]:
    """The perfect subtrees ``[start, end)`` of a stored ``level`` (a multiple of
    ``STORED_EVERY``), up to the first missing one; those of level 0 hash the leaves."""
    if level == 0:
        return [leaf_hash(data) for data in reader.leaves(start, end)]
    return reader.nodes(level, start, end)


def stored_node(reader: StorageReader) -> NodeHash:
    """The perfect subtrees a proof asks for, from those the storage holds."""

    def node(level: int, index: int) -> bytes:
        stored = level - level % STORED_EVERY
        width = 1 << (level - stored)
        below = stored_nodes(reader, stored, index * width, (index + 1) * width)
        if len(below) != width:
            raise LedgerError(f"the tree lacks its node ({level}, {index})")
        return root_of(below)

    return node


def _tagged(index: int, fields: bytes) -> bytes:
    return index.to_bytes(8, "big") + fields


def authentic_leaf(keys: PurposeKeys, index: int, data: bytes) -> Leaf:
    """A stored leaf, once its tag shows this side wrote it, at this place in the log."""
    fields, tag = split_tag(data)
    if not hmac.compare_digest(tag, keys.leaf_tag(_tagged(index, fields))):
        raise LedgerError(f"leaf {index} was not written by this gateway")
    return Leaf.decode(data)

"""What a storage backend offers: the protocol every driver implements."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

TOKEN_BYTES = 10
"""The length of every blind index token a storage holds."""
ORIGIN = "origin"
"""The key under which coffre_meta records the name of its vault's log."""
UNFINISHED_COPY = "unfinished_copy"
"""The key under which coffre_meta records, while a copy into the storage (``coffre
restore``, ``migrate``, ``backup``) is under way, the storage it copies: set before its
first row lands, cleared once the copy is proven. A vault refuses to open on it."""


@dataclass(frozen=True, slots=True)
class SealedVersion:
    """One version of one record, as the host sees it.

    ``loc``, ``kind`` and ``comp`` are opaque tokens; ``body`` is the sealed envelope;
    ``ts`` (microseconds since the epoch) is when the write happened, which the host
    witnesses anyway; ``seq`` is the storage's global write order.
    """

    loc: bytes
    version: int
    kind: bytes
    comp: bytes
    ts: int
    deleted: bool
    body: bytes
    seq: int = 0


@dataclass(frozen=True, slots=True)
class SealedEvent:
    """A sealed AuditEvent: ``digest`` (SHA-256 of ``body``) is what the log's leaves
    commit to, ``leaf`` the index of the first of them, ``comp`` its compartment."""

    digest: bytes
    comp: bytes
    leaf: int
    body: bytes


@dataclass(frozen=True, slots=True)
class HistoryQuery:
    """Which versions a history page lists, newest first.

    ``before_seq`` pins the page to a snapshot, so that paging links stay valid while
    new versions arrive.
    """

    loc: bytes | None = None
    kind: bytes | None = None
    since_ts: int | None = None
    before_seq: int | None = None
    limit: int = 50
    offset: int = 0

    def where(self, placeholder: str) -> tuple[str, list[Any]]:
        """The SQL ``WHERE`` clause over the versions table that selects these versions,
        and its arguments, in the driver's ``placeholder`` style (``?``, ``%s``)."""
        clauses, args = [], []
        for column, value in (
            ("loc =", self.loc),
            ("kind =", self.kind),
            ("ts >=", self.since_ts),
            ("seq <=", self.before_seq),
        ):
            if value is not None:
                clauses.append(f"{column} {placeholder}")
                args.append(value)
        return (" WHERE " + " AND ".join(clauses) if clauses else ""), args


class StorageReader(Protocol):
    def last_seq(self) -> int:
        """The newest version's sequence number (0 for none), as this reader sees it."""
        ...

    def latest(self, loc: bytes) -> SealedVersion | None: ...

    def version(self, loc: bytes, version: int) -> SealedVersion | None: ...

    def find(
        self, tokens: Sequence[bytes], after: bytes = b"", limit: int | None = None
    ) -> list[bytes]:
        """Locations of current, not deleted records that carry any of the index tokens,
        each once, in location order: those after ``after``, at most ``limit`` of them."""
        ...

    def carrying(self, tokens: Sequence[bytes], locs: Sequence[bytes]) -> set[bytes]:
        """Those of the locations whose records carry any of the index tokens."""
        ...

    def latest_each(self, locs: Sequence[bytes]) -> dict[bytes, SealedVersion]:
        """``latest`` of each location that has a version, in one read."""
        ...

    def kinds_present(self, kinds: Sequence[bytes]) -> set[bytes]:
        """Those of the kind tokens that some current, not deleted record has."""
        ...

    def tokens_of(self, loc: bytes) -> list[bytes]:
        """The index tokens the storage holds for a record."""
        ...

    def joined_tokens(self, locs: Sequence[bytes]) -> dict[bytes, bytes]:
        """For each location that has index tokens, all of them joined in token order (as
        ``index_digest`` joins them), in one read."""
        ...

    def wrapped_key(self, comp: bytes) -> tuple[str, bytes] | None: ...

    def wrapped_key_counts(self) -> dict[str, int]:
        """How many wrapped data keys each key-encryption key (by id) wraps."""
        ...

    def wrapped_keys_besides(
        self, kek_id: str, after: bytes, limit: int
    ) -> list[tuple[bytes, str, bytes]]:
        """Up to ``limit`` wrapped data keys that ``kek_id`` does not wrap (``""``: any of
        them), as (compartment, kek id, wrapped), in compartment order from just after
        ``after``."""
        ...

    def records_of(self, comp: bytes) -> list[bytes]:
        """Locations of the records whose latest version is in a compartment."""
        ...

    def leaf_count(self) -> int: ...

    def leaves(self, start: int, end: int) -> list[bytes]:
        """The log's leaves ``[start, end)`` (fewer at the end of the log); StorageError on a gap."""
        ...

    def nodes(self, level: int, start: int, end: int) -> list[bytes]:
        """The hashes of the perfect subtrees of 2**level leaves starting at leaf index *
        2**level, for index in ``[start, end)``, in one read (fewer at the end of the tree);
        StorageError on a gap."""
        ...

    def latest_checkpoint(self) -> str | None: ...

    def vault_origin(self) -> str | None:
        """The name of the log of the vault whose ``coffre init`` made this storage (None
        for one made before Coffre recorded it): another vault's keys are refused at once,
        where its checkpoints' signatures only could tell, once there are any."""
        ...

    def checkpoint_at(self, size: int) -> str | None: ...

    def meta(self, key: str) -> str | None:
        """What coffre_meta records under ``key``, or None."""
        ...


class StorageTxn(StorageReader, Protocol):
    """A write transaction: everything in it lands together or not at all."""

    def append(self, record: SealedVersion, tokens: Iterable[bytes]) -> None:
        """Add a version, make it current with its index tokens. A driver may send it
        without waiting: a failure can surface at a later statement of the transaction,
        and at the latest when the savepoint or transaction around it ends."""
        ...

    def put_wrapped_key(self, comp: bytes, kek_id: str, wrapped: bytes) -> tuple[str, bytes]:
        """Store a compartment's wrapped data key unless one exists; return the stored one."""
        ...

    def put_meta(self, key: str, value: str) -> str:
        """Record ``value`` under ``key`` in coffre_meta unless something is recorded
        there already; return what is recorded (of two processes, the first one's)."""
        ...

    def append_leaves(self, start: int, leaves: Sequence[bytes]) -> None:
        """Add leaves at ``start``, ``start + 1``...; ``start`` must be the log's end."""
        ...

    def append_events(self, events: Sequence[SealedEvent]) -> None:
        """Add sealed AuditEvents, in one round trip."""
        ...

    def put_nodes(self, nodes: Iterable[tuple[int, int, bytes]]) -> None: ...

    def put_checkpoint(self, size: int, note: str) -> None: ...

    def rewrap_key(self, comp: bytes, old: tuple[str, bytes], new: tuple[str, bytes]) -> bool:
        """Replace a compartment's wrapped data key by ``new`` only if it is still ``old``
        (compare-and-set); whether it did."""
        ...

    def erase_compartment(self, comp: bytes, locs: Iterable[bytes]) -> None:
        """Remove a compartment's wrapped data key, and the index tokens and current
        pointers of its records ``locs``, overwriting what the driver can overwrite."""
        ...

    def savepoint(self) -> AbstractContextManager[None]:
        """A nested transaction: what it wrote is undone if it raises, and only that."""
        ...


class Storage(StorageReader, Protocol):
    def transaction(self) -> AbstractContextManager[StorageTxn]: ...

    def history(self, query: HistoryQuery) -> Sequence[SealedVersion]: ...

    def count_history(self, query: HistoryQuery) -> int: ...

    def events_of(self, comp: bytes) -> Sequence[SealedEvent]:
        """A compartment's sealed AuditEvents, newest first."""
        ...

    def event_count(self, before: int) -> int:
        """How many sealed AuditEvents the storage holds for the leaves before ``before``."""
        ...

    def consolidate_index(self, pages: int) -> bool:
        """Some of the work that brings the index's look-ups to their cheapest (about
        ``pages`` pages of it, in one short write transaction); whether there was any."""
        ...

    def rebuild_index(self) -> None:
        """Make the index searches read anew from the index tokens that reads check (one
        write transaction on SQLite, which the others wait for): what repairs it once the
        host damaged it."""
        ...

    def current_of_kind(self, kind: bytes) -> Iterator[SealedVersion]:
        """Current, not deleted versions of one resource type."""
        ...

    def purge_erased(self) -> None:
        """After an erasure committed: make the rows it deleted unrecoverable from the
        storage's own files (SQLite's WAL, PostgreSQL's dead tuples)."""
        ...

    def check_writable(self) -> None:
        """StorageError where the storage takes no writes (a read-only database or file):
        every request of Coffre's writes, reads included, which log their access."""
        ...

    def close(self) -> None: ...

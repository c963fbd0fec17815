"""Sealed FHIR records: create, read, update, delete, history, conditional look-ups.

Every resource is sealed before it reaches the storage and opened after it leaves it.
A write happens inside a storage transaction (``Writer``), so that a transaction Bundle
can gather many writes into one all-or-nothing commit.
"""

from __future__ import annotations

import hashlib
import struct
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

from coffre import config
from coffre.custody import KeyCustodian, WrappedKey
from coffre.exceptions import FhirError, SealError, information
from coffre.fhir import json
from coffre.fhir.references import ID_PATTERN, parse_reference
from coffre.fhir.validation import check_url_type, validate
from coffre.fhir.values import whole_number
from coffre.ledger.leaf import NO_DIGEST, Leaf, LeafKind, index_digest
from coffre.seal import Envelope, PurposeKeys, random_key
from coffre.seal.entropy import random_bytes
from coffre.search import Criterion, check_criteria
from coffre.search.naming import sealing_patient
from coffre.search.parameters import parameters_for
from coffre.service.audit import OPERATOR, Access, audit_event
from coffre.service.indexing import index_tokens
from coffre.service.keycache import KeyCache
from coffre.service.ledger import Appended, LatestWrites, Ledger, authentic_leaf
from coffre.service.searching import Scope, Searcher
from coffre.storage.base import (
    HistoryQuery,
    SealedEvent,
    SealedVersion,
    Storage,
    StorageReader,
    StorageTxn,
)

KeySource = Callable[[bytes], bytes | None]


def instant(ts: int) -> str:
    """A FHIR instant from microseconds since the epoch."""
    return datetime.fromtimestamp(ts / 1_000_000, UTC).isoformat(timespec="microseconds")


def now_us() -> int:
    """Now, in microseconds since the epoch: the clock of versions, leaves and events."""
    return time.time_ns() // 1000


def erased(when: int) -> FhirError:
    """The answer for anything of a compartment that Coffre erased (crypto-shredding)."""
    return FhirError(
        410,
        "deleted",
        f"this patient's data were erased by Coffre on {instant(when)}: nothing of it remains",
    )


def not_found(resource_type: str, resource_id: str | None) -> FhirError:
    """The answer for a record that does not exist, and so for one that is hidden."""
    return FhirError(404, "not-found", f"{resource_type}/{resource_id} does not exist")


def gone(resource_type: str, resource_id: str) -> FhirError:
    """The answer for a read of a record whose latest version is a deletion."""
    return FhirError(410, "deleted", f"{resource_type}/{resource_id} was deleted")


@dataclass(frozen=True, slots=True)
class Stored:
    """A version of a record, opened: its JSON as sealed, and what the headers need."""

    resource_type: str
    id: str
    version: int
    ts: int
    deleted: bool
    body: bytes = field(repr=False)
    loc: bytes = field(repr=False, default=b"")
    sealed_digest: bytes = field(repr=False, default=b"")
    """SHA-256 of the sealed bytes, as the ledger's leaves commit to them."""
    comp: bytes = field(repr=False, default=b"")

    @property
    def last_updated(self) -> str:
        return instant(self.ts)

    @property
    def reference(self) -> str:
        return f"{self.resource_type}/{self.id}"

    @property
    def etag(self) -> str:
        """The version as HTTP's weak entity tag, as FHIR writes it (``W/"3"``)."""
        return f'W/"{self.version}"'

    @property
    def version_reference(self) -> str:
        return f"{self.resource_type}/{self.id}/_history/{self.version}"

    def resource(self, precise: bool = False) -> dict[str, Any]:
        """Its JSON, to look at: decimals as floats (``json.loads(body)`` keeps them as
        written, for a resource to write out again), or as written when ``precise`` (what
        a number's search needs: ``1.50`` or ``18446744073709551616`` as indexed)."""
        resource: dict[str, Any] = json.loads(self.body, precise=precise)
        return resource


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a write did: the version it left current, and whether it made one."""

    stored: Stored
    created: bool
    changed: bool = True


def written_outcome(outcome: Outcome) -> dict[str, Any]:
    """What a write did, as ``Prefer: return=OperationOutcome`` asks to be told: a
    conditional create that found its match, or an update that changed nothing, wrote
    no version."""
    stored = outcome.stored
    if outcome.created:
        done = "created at"
    elif outcome.changed:
        done = "updated to"
    else:
        done = "left as it was at"
    return information(f"{stored.reference} {done} version {stored.version}")


def nothing_deleted(reference: str) -> dict[str, Any]:
    """What a DELETE of a record that is not there did: nothing, and that is no error."""
    return information(f"{reference} did not exist or was already deleted")


def _stored(resource_type: str, resource_id: str, sealed: SealedVersion, body: bytes) -> Stored:
    digest = hashlib.sha256(sealed.body).digest()
    return Stored(
        resource_type,
        resource_id,
        sealed.version,
        sealed.ts,
        sealed.deleted,
        body,
        sealed.loc,
        digest,
        sealed.comp,
    )


def new_id() -> str:
    """A random (version 4) UUID, its bytes from the pool nonces come from."""
    return str(uuid.UUID(bytes=random_bytes(16), version=4))


def _id_mismatch(resource: dict[str, Any], resource_id: str) -> str:
    if "id" not in resource:
        return f'the body has no id; an update carries the id of its URL: "id": "{resource_id}"'
    return f"the body's id {resource['id']!r} differs from the id in the URL {resource_id!r}"


def check_id(resource_type: str, resource_id: str) -> None:
    if not ID_PATTERN.match(resource_id):
        raise FhirError(
            400,
            "invalid",
            f"{resource_id!r} is not a valid FHIR id (1-64 of A-Z a-z 0-9 - .)",
            f"{resource_type}.id",
        )
    if resource_id in (".", ".."):  # FHIR's pattern allows them; URLs do not keep them
        raise FhirError(
            400,
            "invalid",
            f"{resource_id!r} cannot be an id: clients and proxies read it in a URL as a path"
            f" step ({resource_type}/{resource_id} would become another address); choose another",
            f"{resource_type}.id",
        )


def _associated(loc: bytes, version: int, comp: bytes, ts: int, deleted: bool) -> bytes:
    return loc + struct.pack(">QQ?", version, ts, deleted) + comp


def _event_associated(comp: bytes) -> bytes:
    return b"AuditEvent" + comp


def _same_content(current: Stored, resource: dict[str, Any]) -> bool:
    """Whether a write would store what the current version holds, server meta aside;
    as written, so that a change of a decimal's precision (7.2 to 7.20) is a change. Most
    writes change a value, which the plain comparison tells; the written forms are
    compared only when the values are equal (a file imported again)."""
    trimmed = _without_server_meta(resource)
    if _without_server_meta(current.resource()) != trimmed:
        return False
    precise = _without_server_meta(json.loads(current.body))
    return json.canonical(precise) == json.canonical(trimmed)


def _without_server_meta(resource: dict[str, Any]) -> dict[str, Any]:
    meta = {
        k: v for k, v in resource.get("meta", {}).items() if k not in ("versionId", "lastUpdated")
    }
    trimmed = {k: v for k, v in resource.items() if k != "meta"}
    if meta:
        trimmed["meta"] = meta
    return trimmed


WRITE_SET_PARAMETERS = frozenset({"_id", "_lastUpdated"})
"""The search parameters whose values a write sets itself: the id (of a create), and
``meta.lastUpdated``."""


@cache
def _own_parameters(resource_type: str, later: frozenset[str]) -> frozenset[str]:
    return frozenset(parameters_for(resource_type)) - later


@dataclass(frozen=True, slots=True)
class OwnTokens:
    """The blind tokens of a resource's own values, all but those of the parameters
    ``later`` (the write-set ones at least), computed before its write: the write lock
    then only adds those of its id and time, and of any other parameter ``later`` names.

    The resource must not change before its write, besides its id, ``meta``'s server
    fields and the values of the parameters ``later``."""

    resource_type: str
    tokens: frozenset[bytes]
    later: frozenset[str] = WRITE_SET_PARAMETERS


LOOK_UPS = 8
"""How many times a read looks a record up while writes of it keep landing meanwhile."""


def no_version(resource_type: str, resource_id: str, version: str) -> FhirError:
    """The answer for a version that does not exist, and so for one that is hidden."""
    return FhirError(404, "not-found", f"{resource_type}/{resource_id} has no version {version}")


class RecordStore:
    """Sealed records over a storage, with keys from a custodian."""

    def __init__(
        self,
        storage: Storage,
        custodian: KeyCustodian,
        envelope: Envelope,
        checkpoint_memory: Path | None = None,
        *,
        verify_reads: bool = True,
        key_cache_size: int = int(config.DATA_KEY_CACHE.default),
    ) -> None:
        """``checkpoint_memory``: the sovereign side's file of the last checkpoint signed;
        ``verify_reads`` off is for benchmarks only (what checking reads costs);
        ``key_cache_size``: how many unwrapped data keys the process keeps."""
        self.verify_reads = verify_reads
        self.storage = storage
        self.keys = PurposeKeys.derive(custodian.root_secret())
        self.ledger = Ledger(custodian, self.keys, checkpoint_memory)
        self.latest_writes = LatestWrites(self.keys)
        self.ledger.check_signed_here(storage)
        self.ledger.check_not_rolled_back(storage, self.latest_writes)
        self.latest_writes.catch_up(storage)
        self.ledger.check_map(storage, self.latest_writes)
        self._custodian = custodian
        self.envelope = envelope
        self._data_keys = KeyCache(key_cache_size)

    # -- keys -----------------------------------------------------------------------------

    @property
    def custodian(self) -> KeyCustodian:
        return self._custodian

    def committed_key(self, comp: bytes) -> bytes | None:
        """A compartment's data key as committed storage holds it (cached for the process).

        Only committed keys are cached: a key made by a transaction that rolls back must
        never seal anything.
        """
        key = self._data_keys.get(comp)
        if key is None:
            stored = self.storage.wrapped_key(comp)
            if stored is None:
                return None
            key = self._custodian.unwrap(WrappedKey(*stored))
            self._data_keys.put(comp, key)
        return key

    def forget_key(self, comp: bytes) -> None:
        """Drop a compartment's data key from this process: it was erased."""
        self._data_keys.forget(comp)

    def own_tokens(
        self, resource: dict[str, Any], later: frozenset[str] = WRITE_SET_PARAMETERS
    ) -> OwnTokens:
        """The index tokens of a valid resource that its write will not change: all but
        those of the parameters ``later`` (and of the write-set ones)."""
        resource_type = resource["resourceType"]
        later = later | WRITE_SET_PARAMETERS
        only = _own_parameters(resource_type, later)
        tokens = frozenset(index_tokens(self.keys, resource, only))
        return OwnTokens(resource_type, tokens, later)

    def compartment(self, resource: dict[str, Any]) -> bytes:
        """The compartment a resource is sealed in: its patient's, else its type's shared one."""
        patient = sealing_patient(resource)
        if patient is None:
            return self.keys.shared_compartment(resource["resourceType"])
        return self.keys.patient_compartment(patient)

    # -- opening --------------------------------------------------------------------------

    def check_not_erased(self, comp: bytes) -> None:
        """410 Gone for a compartment Coffre erased, as far as the log was followed; its
        data key, if this process still held it, is dropped."""
        when = self.latest_writes.erased_at(comp)
        if when is not None:
            self.forget_key(comp)
            raise erased(when)

    def _open(self, sealed: SealedVersion, key_of: KeySource) -> bytes:
        """The plaintext of a sealed version; SealError if it was altered, moved or its key
        is gone, 410 if Coffre erased its compartment."""
        self.check_not_erased(sealed.comp)
        key = key_of(sealed.comp) or bytes(32)
        associated = _associated(sealed.loc, sealed.version, sealed.comp, sealed.ts, sealed.deleted)
        return self.envelope.open(key, sealed.body, associated)

    def open(
        self,
        resource_type: str,
        resource_id: str,
        sealed: SealedVersion,
        key_of: KeySource | None = None,
    ) -> Stored:
        body = self._open(sealed, key_of or self.committed_key)
        return _stored(resource_type, resource_id, sealed, body)

    def open_found(self, sealed: SealedVersion, key_of: KeySource | None = None) -> Stored:
        """Open a version found by token or history, where only the body says what it is."""
        body = self._open(sealed, key_of or self.committed_key)
        head = json.loads(body, precise=False)
        return _stored(head["resourceType"], head["id"], sealed, body)

    # -- reads ----------------------------------------------------------------------------

    def checked_latest(self, loc: bytes) -> SealedVersion | None:
        """The storage's latest version of a record, once the log confirms it is the latest.

        The version, the log and the tokens are read one after the other: a write of the
        record committed in between explains a mismatch, and moves the record in the log,
        so the record is looked up again. The record is declared tampered with once a
        look-up fails while the log shows no new write of it (or after
        ``LOOK_UPS`` look-ups, each overtaken by a write).
        """
        if not self.verify_reads:
            return self.storage.latest(loc)
        logged = self.latest_writes.expected(loc)
        for _ in range(LOOK_UPS):
            sealed = self.storage.latest(loc)
            self.latest_writes.catch_up(self.storage)
            if self.is_logged_latest(loc, sealed, self.storage):
                return sealed
            self.latest_writes.catch_up(self.storage)
            if self.latest_writes.expected(loc) == logged:
                break
            logged = self.latest_writes.expected(loc)
        raise SealError()

    def is_logged_latest(
        self,
        loc: bytes,
        sealed: SealedVersion | None,
        reader: StorageReader,
        joined: bytes | None = None,
    ) -> bool:
        """Whether ``sealed`` is the record's latest write as the log has it: same version,
        same sealed bytes, and the very index tokens that write committed to (``joined``:
        the tokens ``reader.joined_tokens`` gave with the version; otherwise read here)."""
        if not self.is_logged_version(loc, sealed):
            return False
        if sealed is None:
            return True
        if joined is not None:
            return self.has_logged_tokens(loc, hashlib.sha256(joined).digest())
        # One row joined by SQL, in the index's token order; the tokens one by one, sorted
        # here, only if that differs (SQL does not promise group_concat's order).
        joined = reader.joined_tokens([loc]).get(loc, b"")
        return self.has_logged_tokens(
            loc, hashlib.sha256(joined).digest()
        ) or self.has_logged_tokens(loc, index_digest(reader.tokens_of(loc)))

    def is_logged_version(self, loc: bytes, sealed: SealedVersion | None) -> bool:
        """Whether ``sealed`` is the record's latest write as the log has it, its index
        tokens aside: same version and sealed bytes (or nothing where the log has nothing)."""
        logged = self.latest_writes.expected(loc)
        if sealed is None or logged is None:
            return sealed is None and logged is None
        return (
            logged.version == sealed.version
            and logged.body_hash == hashlib.sha256(sealed.body).digest()
        )

    def has_logged_tokens(self, loc: bytes, digest: bytes) -> bool:
        """Whether ``digest`` (``index_digest`` of a record's tokens) is what the record's
        latest logged write committed to."""
        logged = self.latest_writes.expected(loc)
        return logged is not None and logged.index_digest == digest

    def read(self, resource_type: str, resource_id: str) -> Stored:
        stored = self.latest_version(resource_type, resource_id)
        if stored.deleted:
            raise gone(resource_type, resource_id)
        return stored

    def latest_version(self, resource_type: str, resource_id: str) -> Stored:
        """A record's latest version, a deletion's too; 404 if it never existed."""
        check_id(resource_type, resource_id)
        sealed = self.checked_latest(self.keys.location(resource_type, resource_id))
        if sealed is None:
            raise not_found(resource_type, resource_id)
        return self.open(resource_type, resource_id, sealed)

    def vread(
        self,
        resource_type: str,
        resource_id: str,
        version: str,
        reader: StorageReader | None = None,
        key_of: KeySource | None = None,
    ) -> Stored:
        """A version of a record, from the committed storage unless ``reader`` (a write
        transaction, with its own keys ``key_of``) is given."""
        check_id(resource_type, resource_id)
        number = whole_number(version)
        loc = self.keys.location(resource_type, resource_id)
        self.latest_writes.catch_up(self.storage)  # an erasure since the last request
        sealed = None if number is None else (reader or self.storage).version(loc, number)
        if number is not None and sealed is None:
            logged = self.latest_writes.expected(loc)
            if logged is not None and 1 <= number <= logged.version:
                raise SealError()  # the log has this version; the storage no longer does
        if sealed is None:
            raise no_version(resource_type, resource_id, version)
        stored = self.open(resource_type, resource_id, sealed, key_of)
        if stored.deleted:
            raise FhirError(
                410, "deleted", f"version {version} of {resource_type}/{resource_id} is a deletion"
            )
        return stored

    def deletion(
        self,
        resource_type: str,
        resource_id: str,
        version: int,
        reader: StorageReader | None = None,
        key_of: KeySource | None = None,
    ) -> Stored:
        """The version ``vread`` refused as a deletion (410), opened: whose record it ended
        is judged by it."""
        loc = self.keys.location(resource_type, resource_id)
        sealed = (reader or self.storage).version(loc, version)
        assert sealed is not None
        return self.open(resource_type, resource_id, sealed, key_of)

    def history(self, query: HistoryQuery) -> list[Stored]:
        """A page of versions; one record's history answers 410 once its patient was
        erased, a type's or the system's leaves the erased versions out."""
        self.latest_writes.catch_up(self.storage)
        versions = self.storage.history(query)
        if query.loc is None:
            versions = [s for s in versions if not self.is_erased(s.comp)]
        else:
            self._check_record_history(query, [sealed.version for sealed in versions])
        opened = [self.open_found(sealed) for sealed in versions]
        if query.kind is not None:  # the type token is the host's: the body says the type
            kinds = {self.keys.kind(t) for t in {stored.resource_type for stored in opened}}
            if kinds - {query.kind}:
                raise SealError()
        return opened

    def _check_record_history(self, query: HistoryQuery, numbers: list[int]) -> None:
        """Refuse a page of one record's history with a version missing or repeated: its
        versions are numbered from 1 without a gap, so as many are stored (as of the
        snapshot) as the highest says, and the page counts down from there, less its
        offset; with ``_since``, without a gap."""
        whole = replace(query, since_ts=None, limit=1, offset=0)
        stored = self.storage.count_history(whole)
        highest = [sealed.version for sealed in self.storage.history(whole)]
        if highest != ([stored] if stored else []):
            raise SealError()
        first = stored - query.offset if query.since_ts is None else numbers[0] if numbers else 0
        if numbers != list(range(first, first - len(numbers), -1)):
            raise SealError()

    def is_erased(self, comp: bytes) -> bool:
        return self.latest_writes.erased_at(comp) is not None

    def find(
        self,
        resource_type: str,
        criteria: tuple[Criterion, ...],
        scope: Scope | None = None,
    ) -> list[Stored]:
        """Current resources of a type matching every criterion (look-up, then exact filter);
        a parameter the type does not have is an error."""
        if not criteria:
            raise FhirError(
                400, "invalid", f"a search on {resource_type} needs at least one criterion"
            )
        checked, _ = check_criteria(resource_type, criteria)
        return Searcher(self, scope or Scope(self.storage)).find(resource_type, checked)

    def all_of_type(self, resource_type: str) -> list[Stored]:
        """Every current resource of a type, oldest write first."""
        rows = list(self.storage.current_of_kind(self.keys.kind(resource_type)))
        self.latest_writes.catch_up(self.storage)
        confirmed = [
            sealed
            if not self.verify_reads or self.is_logged_latest(sealed.loc, sealed, self.storage)
            else self.checked_latest(sealed.loc)
            for sealed in rows
        ]
        return [
            self.open_found(sealed)
            for sealed in confirmed
            if sealed and not sealed.deleted and not self.is_erased(sealed.comp)
        ]

    def log_followed(self) -> int:
        """How many leaves of the log this process has followed, caught up now: where a
        first page of an access history pins it."""
        self.latest_writes.catch_up(self.storage)
        return self.latest_writes.known

    def access_history(self, patient_id: str, before: int | None = None) -> list[dict[str, Any]]:
        """The AuditEvents of a patient's compartment as far as the log was followed (those
        written meanwhile are the next call's), and filed under leaves before ``before``
        if given (a page's snapshot), newest first, each checked against the log leaf that
        commits to it (SealError if one was altered or swapped, if the storage holds fewer
        events than the log commits to, or one twice: an event with several leaves checks
        against each of them, so a copy filed under another of its leaves would keep the
        count while another event is missing)."""
        check_id("Patient", patient_id)
        comp = self.keys.patient_compartment(patient_id)
        self.latest_writes.catch_up(self.storage)
        self.check_not_erased(comp)
        checked = self.latest_writes.check_events(self.storage)
        bound = checked if before is None else min(before, checked)
        events = []
        seen: set[bytes] = set()
        for sealed in self.storage.events_of(comp):
            if sealed.leaf >= bound:  # written since: the next look lists it
                continue
            digest = self._check_event(sealed)
            if digest in seen:
                raise SealError()
            seen.add(digest)
            body = self._open_event(sealed, self.committed_key)
            events.append(json.loads(body, precise=False))
        return events

    def _check_event(self, sealed: SealedEvent) -> bytes:
        """The event's digest, once the leaf it is filed under commits to it."""
        if not 0 <= sealed.leaf < self.latest_writes.known:
            raise SealError()
        data = self.storage.leaves(sealed.leaf, sealed.leaf + 1)
        leaf = authentic_leaf(self.keys, sealed.leaf, data[0]) if data else None
        digest = hashlib.sha256(sealed.body).digest()
        if leaf is None or leaf.event_hash != digest:
            raise SealError()
        return digest

    def _open_event(self, sealed: SealedEvent, key_of: KeySource) -> bytes:
        key = key_of(sealed.comp) or bytes(32)
        return self.envelope.open(key, sealed.body, _event_associated(sealed.comp))

    # -- writes ---------------------------------------------------------------------------

    @contextmanager
    def writer(self, access: Access = OPERATOR) -> Iterator[Writer]:
        """One storage transaction on behalf of ``access``; the data keys it made are
        cached once it commits."""
        with self.storage.transaction() as txn:
            writer = Writer(self, txn, access)
            yield writer
            writer.seal_events()
            integration = self.ledger.integrate(txn, self.latest_writes, writer.appended)
        self._data_keys.update(writer.fresh_keys)
        if integration is not None:
            self.latest_writes.adopt(integration)
            self.ledger.remember(integration.note)


def _index_tokens(
    keys: PurposeKeys, resource: dict[str, Any], own_tokens: OwnTokens | None
) -> list[bytes]:
    """A resource's index tokens, those of its own values taken from ``own_tokens`` if
    they were computed ahead."""
    if own_tokens is None:
        return index_tokens(keys, resource)
    if own_tokens.resource_type != resource["resourceType"]:
        raise ValueError("index tokens computed ahead for another resource type")
    written = index_tokens(keys, resource, own_tokens.later)
    return sorted(own_tokens.tokens.union(written))


@dataclass(frozen=True, slots=True)
class _Logged:
    """A leaf waiting for the AuditEvent of its request and compartment."""

    leaf: Leaf
    comp: bytes
    version_reference: str | None


class Writer:
    """The writes of one storage transaction.

    Leaves wait in ``_pending`` until the request that made them ends (``seal_events``):
    only then is its AuditEvent complete, and each leaf can commit to it.
    """

    def __init__(self, records: RecordStore, txn: StorageTxn, access: Access) -> None:
        self.records = records
        self.txn = txn
        self.access = access
        self.fresh_keys: dict[bytes, bytes] = {}
        self.written: set[bytes] = set()
        self.appended: list[Appended] = []
        self._pending: list[_Logged] = []
        # What each record's latest version is, as this transaction has checked or written
        # it (None: nothing there): under the write lock nothing else changes it.
        self._latest: dict[bytes, Stored | None] = {}
        self._newest = 0  # the time of this transaction's newest write
        # Nothing is written yet: the log's end is what is committed, under our lock.
        records.latest_writes.catch_up(txn)

    def key(self, comp: bytes) -> bytes | None:
        """A data key as this transaction sees it, its own new keys included."""
        key = self.fresh_keys.get(comp) or self.records.committed_key(comp)
        if key is None:
            stored = self.txn.wrapped_key(comp)
            if stored is not None:
                key = self.fresh_keys[comp] = self.records.custodian.unwrap(WrappedKey(*stored))
        return key

    def _key_for_write(self, comp: bytes) -> bytes:
        self.records.check_not_erased(comp)  # an erased patient takes no new records
        key = self.key(comp)
        if key is None:
            custodian = self.records.custodian
            wrapped = custodian.wrap(random_key())
            stored = self.txn.put_wrapped_key(comp, wrapped.kek_id, wrapped.wrapped)
            key = self.fresh_keys[comp] = custodian.unwrap(WrappedKey(*stored))
        return key

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        """Writes that fail together without failing the rest of the transaction."""
        keys_before, written_before = dict(self.fresh_keys), set(self.written)
        pending_before, appended_before = len(self._pending), len(self.appended)
        try:
            with self.txn.savepoint():
                yield
        except BaseException:
            self.fresh_keys, self.written = keys_before, written_before
            self._latest.clear()  # what the rolled-back writes left is not the latest
            del self._pending[pending_before:]
            del self.appended[appended_before:]
            raise

    @contextmanager
    def request(self, access: Access) -> Iterator[None]:
        """The writes and accesses of one request, all or nothing, audited as ``access``'s."""
        self.seal_events()
        with self.savepoint():
            self.access = access
            yield
            self.seal_events()

    def seal_events(self) -> None:
        """Seal an AuditEvent per kind and compartment of the leaves waiting, then append
        the leaves, in the order of the writes, each committing to its event."""
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        start = self.txn.leaf_count()
        groups: dict[tuple[LeafKind, bytes], list[int]] = {}
        for position, logged in enumerate(pending):
            groups.setdefault((logged.leaf.kind, logged.comp), []).append(position)
        recorded = instant(max(logged.leaf.ts for logged in pending))
        event_of: dict[int, bytes] = {}
        events: list[SealedEvent] = []
        for (kind, comp), positions in groups.items():
            versions = [
                reference
                for reference in (pending[position].version_reference for position in positions)
                if reference
            ]
            event = audit_event(self.access, kind, versions, recorded)
            sealed = self.records.envelope.close(
                self._key_for_write(comp), json.canonical(event), _event_associated(comp)
            )
            digest = hashlib.sha256(sealed).digest()
            events.append(SealedEvent(digest, comp, start + positions[0], sealed))
            event_of.update(dict.fromkeys(positions, digest))
        self.txn.append_events(events)
        self.record([logged.leaf.with_event(event_of[i]) for i, logged in enumerate(pending)])

    def record(self, leaves: list[Leaf]) -> None:
        """Append leaves to the log; the transaction integrates them when it ends."""
        stored = self.records.ledger.record(self.txn, leaves)
        self.appended.extend(zip(leaves, stored, strict=True))

    def find(
        self,
        resource_type: str,
        criteria: tuple[Criterion, ...],
        admit: Callable[[Stored], bool] | None = None,
    ) -> list[Stored]:
        """``admit``: what the search may use at all, matches, chains and ``_has`` alike
        (``Scope.admit``)."""
        return self.records.find(resource_type, criteria, self.scope(admit=admit))

    def scope(
        self,
        *,
        base: str | None = None,
        as_of: int | None = None,
        admit: Callable[[Stored], bool] | None = None,
        within: str | None = None,
    ) -> Scope:
        """This transaction's view of the records, for a search (the options: ``Scope``'s)."""
        return Scope(
            self.txn,
            self.key,
            frozenset(self.written),
            base=base,
            as_of=as_of,
            admit=admit,
            within=within,
        )

    def new_id(self, resource_type: str, drawn: str | None = None) -> str:
        """A server-chosen id, known to have nothing stored under it: a random UUID's
        location is a keyed hash the host cannot have planted a record at (a row there
        would make the insert fail, never be buried). ``drawn``: one that ``new_id()``
        drew before the write lock."""
        resource_id = drawn or new_id()
        self._latest[self.records.keys.location(resource_type, resource_id)] = None
        return resource_id

    def vread(self, resource_type: str, resource_id: str, version: str) -> Stored:
        """A version of a record as this transaction sees it, those it wrote included."""
        return self.records.vread(resource_type, resource_id, version, self.txn, self.key)

    def deletion(self, resource_type: str, resource_id: str, version: int) -> Stored:
        """The version ``vread`` refused as a deletion, as this transaction sees it."""
        return self.records.deletion(resource_type, resource_id, version, self.txn, self.key)

    def latest(self, resource_type: str, resource_id: str) -> Stored | None:
        """The current version a write builds on, checked against the log unless this
        transaction wrote it: a write must never bury a version the host put back."""
        loc = self.records.keys.location(resource_type, resource_id)
        if loc in self._latest:
            return self._latest[loc]
        sealed = self.txn.latest(loc)
        if loc not in self.written and not self.records.is_logged_latest(loc, sealed, self.txn):
            raise SealError()
        opened = (
            None
            if sealed is None
            else self.records.open(resource_type, resource_id, sealed, self.key)
        )
        self._latest[loc] = opened
        return opened

    def create(
        self,
        resource: dict[str, Any],
        resource_id: str | None = None,
        *,
        validated: bool = False,
        own_tokens: OwnTokens | None = None,
    ) -> Outcome:
        """A new resource, under an id of the server's choosing unless a bundle chose it.

        ``validated`` skips the schema check for a resource already checked with its
        Bundle; ``own_tokens``: its index tokens computed ahead (``RecordStore.own_tokens``).
        """
        resource_type = resource["resourceType"] if validated else validate(resource)
        resource["id"] = resource_id or self.new_id(resource_type)
        return self._put(resource_type, resource["id"], resource, None, own_tokens)

    def update(
        self,
        resource_type: str,
        resource_id: str,
        resource: dict[str, Any],
        if_match: int | None = None,
        *,
        validated: bool = False,
        own_tokens: OwnTokens | None = None,
    ) -> Outcome:
        """Update, or create at a client's id (update-as-create)."""
        check_id(resource_type, resource_id)
        check_url_type(resource["resourceType"] if validated else validate(resource), resource_type)
        if resource.get("id") != resource_id:
            raise FhirError(
                400, "invalid", _id_mismatch(resource, resource_id), f"{resource_type}.id"
            )
        return self._put(resource_type, resource_id, resource, if_match, own_tokens)

    def delete(
        self, resource_type: str, resource_id: str, if_match: int | None = None
    ) -> Outcome | None:
        """Delete (history kept); None when there was nothing to delete."""
        check_id(resource_type, resource_id)
        current = self.latest(resource_type, resource_id)
        self.check_version(resource_type, resource_id, current, if_match)
        if current is None or current.deleted:
            return None
        tombstone = {"resourceType": resource_type, "id": resource_id}
        return self._write(resource_type, resource_id, tombstone, current, deleted=True)

    def check_version(
        self, resource_type: str, resource_id: str, current: Stored | None, if_match: int | None
    ) -> None:
        """If-Match's precondition: 412 unless ``current`` is at version ``if_match``."""
        if if_match is None:
            return
        have = None if current is None else current.version
        if have != if_match:
            raise FhirError(
                412,
                "conflict",
                f"{resource_type}/{resource_id} is at version {have if have is not None else 'none'},"
                f" not {if_match} as If-Match expects: read it again and retry",
            )

    def _put(
        self,
        resource_type: str,
        resource_id: str,
        resource: dict[str, Any],
        if_match: int | None,
        own_tokens: OwnTokens | None,
    ) -> Outcome:
        current = self.latest(resource_type, resource_id)
        self.check_version(resource_type, resource_id, current, if_match)
        unchanged = current is not None and not current.deleted and _same_content(current, resource)
        if unchanged:
            assert current is not None
            return Outcome(current, created=False, changed=False)
        return self._write(
            resource_type, resource_id, resource, current, deleted=False, own_tokens=own_tokens
        )

    def _write(
        self,
        resource_type: str,
        resource_id: str,
        resource: dict[str, Any],
        current: Stored | None,
        *,
        deleted: bool,
        own_tokens: OwnTokens | None = None,
    ) -> Outcome:
        records, keys = self.records, self.records.keys
        loc = keys.location(resource_type, resource_id)
        version = 1 if current is None else current.version + 1
        ts = self._stamp(current)
        if deleted:
            assert current is not None  # only what exists is deleted
            comp = current.comp
            tokens: list[bytes] = []
        else:
            meta = {
                k: v
                for k, v in resource.get("meta", {}).items()
                if k not in ("versionId", "lastUpdated")
            }
            resource["meta"] = {"versionId": str(version), "lastUpdated": instant(ts), **meta}
            comp = records.compartment(resource)
            tokens = _index_tokens(keys, resource, own_tokens)
        body = json.canonical(resource)
        data_key = self._key_for_write(comp)
        sealed_body = records.envelope.close(
            data_key, body, _associated(loc, version, comp, ts, deleted)
        )
        self.written.add(loc)
        self.txn.append(
            SealedVersion(loc, version, keys.kind(resource_type), comp, ts, deleted, sealed_body),
            tokens,
        )
        kind = (
            LeafKind.DELETE if deleted else LeafKind.CREATE if current is None else LeafKind.UPDATE
        )
        digest = hashlib.sha256(sealed_body).digest()
        stored = Stored(resource_type, resource_id, version, ts, deleted, body, loc, digest, comp)
        self._latest[loc] = stored
        leaf = Leaf(kind, loc, version, digest, ts, index_digest(tokens))
        self._pending.append(_Logged(leaf, comp, stored.version_reference))
        return Outcome(stored, created=current is None or current.deleted)

    def _stamp(self, current: Stored | None) -> int:
        """A write's time: now, but never before the vault's newest write, nor at or before
        the record's own latest version. A clock stepped back (NTP, a virtual machine
        restored) must not date a change before what a client already holds: ``_since``,
        If-Modified-Since and the next export would miss it."""
        floor = max(self.records.latest_writes.newest_write, self._newest)
        if current is not None:
            floor = max(floor, current.ts + 1)
        self._newest = max(now_us(), floor)
        return self._newest

    def log_access(self, kind: LeafKind, accessed: Iterable[Stored]) -> None:
        """A leaf for each version a read, search or history hands out."""
        ts = now_us()
        for stored in accessed:
            leaf = Leaf(kind, stored.loc, stored.version, stored.sealed_digest, ts)
            self._pending.append(_Logged(leaf, stored.comp, stored.version_reference))

    def log_integrity_failure(self, reference: str | None) -> None:
        """A leaf saying a request was refused because what the storage returned failed its
        check, about ``reference`` (``Type/id``...) when the request named one. Its
        AuditEvent goes to the gateway's own compartment: the record's may be what the
        host tampered with."""
        parsed = parse_reference(reference) if reference else None
        loc = self.records.keys.location(*parsed) if parsed else NO_DIGEST
        self.log_to_gateway([Leaf(LeafKind.INTEGRITY, loc, 0, NO_DIGEST, now_us())], reference)

    def log_to_gateway(self, leaves: Iterable[Leaf], reference: str | None) -> None:
        """Leaves whose one AuditEvent, naming ``reference``, goes to the gateway's own
        compartment, which survives whatever happens to the records concerned."""
        comp = self.records.keys.shared_compartment("AuditEvent")
        for position, leaf in enumerate(leaves):
            self._pending.append(_Logged(leaf, comp, None if position else reference))

"""Sealed FHIR records: read, version read, history, conditional look-ups, access
history, each version opened and checked against the log; ``RecordStore.writer`` opens
a storage transaction whose ``Writer`` (coffre.service.writer) creates, updates and
deletes, so that a transaction Bundle can gather many writes into one all-or-nothing commit.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from coffre import config
from coffre.custody import KeyCustodian, WrappedKey
from coffre.exceptions import FhirError, SealError
from coffre.fhir import json
from coffre.fhir._definitions_r4 import RESOURCE_TYPES
from coffre.fhir.values import whole_number
from coffre.ledger.leaf import index_digest
from coffre.seal import Envelope, PurposeKeys
from coffre.seal.padding import unpad
from coffre.search import Criterion, check_criteria
from coffre.search.naming import sealing_patient
from coffre.service.audit import OPERATOR, Access
from coffre.service.indexcheck import IndexCheck
from coffre.service.keycache import KeyCache
from coffre.service.ledger import LatestWrites, Ledger, authentic_leaf
from coffre.service.proving import TreeProofs
from coffre.service.searching import Scope, Searcher
from coffre.service.stored import (
    KeySource,
    Stored,
    check_id,
    erased,
    event_associated,
    gone,
    no_version,
    not_found,
    stored_version,
    version_associated,
)
from coffre.service.writer import Writer
from coffre.storage.base import (
    HistoryQuery,
    SealedEvent,
    SealedVersion,
    Storage,
    StorageReader,
)

KEYS_LOGGED_AT_ONCE = 500
"""Data keys read at a time when a vault keyed before the log recorded them logs them."""

LOOK_UPS = 8
"""How many times a read looks a record up while writes of it keep landing meanwhile."""


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
        self.proofs = TreeProofs(storage)
        self.ledger.check_signed_here(storage)
        self.ledger.check_not_rolled_back(storage, self.latest_writes)
        self.latest_writes.catch_up(storage)
        self.ledger.check_map(storage, self.latest_writes)
        self._custodian = custodian
        self.envelope = envelope
        self._data_keys = KeyCache(key_cache_size)
        self._shared = frozenset(map(self.keys.shared_compartment, RESOURCE_TYPES))
        if not self.latest_writes.keys_logged and storage.wrapped_key_counts():
            self._log_keys_made_before()
        self.index_check = IndexCheck(self)
        if verify_reads:
            self.index_check.check_at_opening()

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
            key = self.opened_key(comp, self.storage.wrapped_key(comp))
            if key is not None:
                self._data_keys.put(comp, key)
        return key

    def is_shared(self, comp: bytes) -> bool:
        """Whether a compartment is a resource type's shared one, not a patient's."""
        return comp in self._shared

    def cached_key(self, comp: bytes) -> bytes | None:
        """A compartment's data key if this process holds it already."""
        return self._data_keys.get(comp)

    def opened_key(
        self, comp: bytes, stored: tuple[str, bytes] | None, *, followed: bool = False
    ) -> bytes | None:
        """A compartment's data key from its wrapping as the storage holds it (None: none),
        checked against the binding the log recorded when the key was made. SealError for
        a key that is not the compartment's own (moved from another, copied, planted: it
        would seal a patient's records under a key that outlives their erasure), or for a
        key the storage lost. ``followed``: the log was followed to its end already (a
        write transaction's, under the write lock). The shared compartments' keys, which
        no erasure shreds, are taken as they are."""
        if self.is_shared(comp):
            return None if stored is None else self._custodian.unwrap(WrappedKey(*stored))
        binding = self.latest_writes.key_binding(comp)
        if binding is None and not followed:  # another process may have made it since
            self.latest_writes.catch_up(self.storage)
            binding = self.latest_writes.key_binding(comp)
        if stored is None:
            if binding is not None:
                self.check_not_erased(comp)
                raise SealError()  # the storage lost the data key the log says was made
            return None
        key = self._custodian.unwrap(WrappedKey(*stored))
        if binding is None and self.latest_writes.keys_logged:
            raise SealError()  # a data key the log does not record: the host's
        if binding is not None and not hmac.compare_digest(
            binding, self.keys.data_key_binding(comp, key)
        ):
            raise SealError()  # not the key the log recorded: moved, copied or replaced
        return key

    def _log_keys_made_before(self) -> None:
        """A vault keyed before the log recorded data keys: log each one it holds now, as
        the storage holds it at this opening; from then on a key the log does not record
        is refused (docs/threat-model.md)."""
        reason = "data keys made before the log recorded them, recorded as the storage holds them"
        with self.writer(Access(OPERATOR.who, reason=reason)) as writer:
            if self.latest_writes.keys_logged:  # another process did, under the lock first
                return
            after = b""
            while rows := writer.txn.wrapped_keys_besides("", after, KEYS_LOGGED_AT_ONCE):
                for comp, kek_id, wrapped in rows:
                    if not self.is_shared(comp) and self.latest_writes.erased_at(comp) is None:
                        key = self._custodian.unwrap(WrappedKey(kek_id, wrapped))
                        writer.log_data_key(comp, key)
                after = rows[-1][0]

    def forget_key(self, comp: bytes) -> None:
        """Drop a compartment's data key from this process: it was erased."""
        self._data_keys.forget(comp)

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
        associated = version_associated(
            sealed.loc, sealed.version, sealed.comp, sealed.ts, sealed.deleted
        )
        return unpad(self.envelope.open(key, sealed.body, associated))

    def open(
        self,
        resource_type: str,
        resource_id: str,
        sealed: SealedVersion,
        key_of: KeySource | None = None,
    ) -> Stored:
        body = self._open(sealed, key_of or self.committed_key)
        return stored_version(resource_type, resource_id, sealed, body)

    def open_found(self, sealed: SealedVersion, key_of: KeySource | None = None) -> Stored:
        """Open a version found by token or history, where only the body says what it is."""
        body = self._open(sealed, key_of or self.committed_key)
        head = json.loads(body, precise=False)
        return stored_version(head["resourceType"], head["id"], sealed, body)

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
        if str(number) != version:  # a version id is an id: "01" is not version 1
            number = None
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
        offset. With ``_since`` too, since a record's versions are stamped in increasing
        time: the host could change the time of the version just outside the page, so
        that version is opened (its time is bound to its body) and must be older."""
        whole = replace(query, since_ts=None, limit=1, offset=0)
        stored = self.storage.count_history(whole)
        highest = [sealed.version for sealed in self.storage.history(whole)]
        if highest != ([stored] if stored else []):
            raise SealError()
        first = stored - query.offset
        if numbers != list(range(first, first - len(numbers), -1)):
            raise SealError()
        if query.since_ts is None or len(numbers) == query.limit:
            return
        outside = first - len(numbers)  # the newest version the page leaves out
        if outside >= 1 and self._version_time(query, outside) >= query.since_ts:
            raise SealError()

    def _version_time(self, query: HistoryQuery, version: int) -> int:
        """When a version of the record ``query`` lists was written, as its seal says."""
        assert query.loc is not None
        sealed = self.storage.version(query.loc, version)
        if sealed is None:
            raise SealError()
        self._open(sealed, self.committed_key)
        return sealed.ts

    def is_erased(self, comp: bytes) -> bool:
        return self.latest_writes.erased_at(comp) is not None

    def find(
        self,
        resource_type: str,
        criteria: tuple[Criterion, ...],
        scope: Scope | None = None,
        limit: int | None = None,
    ) -> list[Stored]:
        """Current resources of a type matching every criterion (look-up, then exact filter),
        ``limit`` at most; a parameter the type does not have is an error."""
        if not criteria:
            raise FhirError(
                400, "invalid", f"a search on {resource_type} needs at least one criterion"
            )
        checked, _ = check_criteria(resource_type, criteria)
        searcher = Searcher(self, scope or Scope(self.storage))
        return searcher.search(resource_type, checked, limit)[0]

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
        return self._events(self.keys.patient_compartment(patient_id), before)

    def gateway_events(self) -> list[dict[str, Any]]:
        """The AuditEvents of the gateway's own compartment, newest first, checked as a
        patient's are: what the research hub, erasures and integrity failures logged."""
        return self._events(self.keys.shared_compartment("AuditEvent"), None)

    def _events(self, comp: bytes, before: int | None) -> list[dict[str, Any]]:
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
        return unpad(self.envelope.open(key, sealed.body, event_associated(sealed.comp)))

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

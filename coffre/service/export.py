"""Bulk Data export (FHIR Bulk Data Access IG v2): what an export holds, and its NDJSON
made as it is downloaded, so that no plaintext ever lands on a disk and memory stays flat.

An export is pinned at kick-off to the storage's sequence number (``snapshot``), as
search pages are: a record created after it is left out, one updated after it is given
as it was then. A record deleted or erased by the time it is read is left out: a
deletion wins over an export still running.

Nothing of an export is stored: its description travels in its URLs as a token sealed
under a key of the sovereign side (``ExportJob.token``), so that every gateway process
serves it alike, however many there are. The only state is a cancellation, an EXPORT
leaf of the log whose sealed AuditEvent sits under the job's own compartment token,
which any process finds with one look-up (``is_cancelled``).
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

from coffre.exceptions import FhirError, SealError, operation_outcome
from coffre.fhir import json
from coffre.fhir._definitions_r4 import RESOURCE_TYPES
from coffre.fhir.compartment import compartment_patients
from coffre.fhir.references import parse_reference
from coffre.ledger.leaf import NO_DIGEST
from coffre.seal import PurposeKeys
from coffre.seal.siv import DeterministicSeal
from coffre.service.records import RecordStore
from coffre.service.searching import Scope, Searcher, compartment_types
from coffre.service.stored import Stored, gone, not_found, now_us
from coffre.service.type_filters import FilterTest, TypeFilters, read_type_filters
from coffre.storage.base import HistoryQuery, SealedVersion

LEVELS = ("system", "patient", "group")
# Versions read from the storage per query: each query is short, so no read holds a
# snapshot of the storage open while a client downloads slowly.
PAGE = 256
# How long an export's URLs stay valid.
LIFETIME_US = 24 * 3600 * 1_000_000
_FORMAT = 3
_READABLE_FORMATS = (2, 3)
"""Format 3 added the filters, the patients, the notes and the elements; a token of
format 2 (at most 24 hours old at an upgrade) reads as a job without them."""
_TOKEN_DATA = b"coffre export job"
_ELEMENT_NAME = re.compile(r"[a-z][A-Za-z0-9]*")
JOB_TYPE = "$export"
"""The pseudo-type of an export job's location and compartment tokens: never a FHIR type."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _job_seal(keys: PurposeKeys) -> DeterministicSeal:
    """What export tokens are sealed with: deterministic (a job always has the same
    token, whose hash names it), under a key derived from the vault's purpose keys as the
    short index key is: the host never holds it."""
    key = b"".join(keys.index_subkey(f"export job key {part}") for part in range(4))
    return DeterministicSeal(key, _TOKEN_DATA)


@dataclass(frozen=True, slots=True)
class ExportJob:
    """What one export is: its level, the types and ``_since`` asked for, its snapshot.

    ``types`` None: every type of the level. ``since`` and the times are microseconds
    since the epoch; ``request`` is the kick-off URL the manifest repeats.
    """

    level: str
    snapshot: int
    started: int
    request: str
    types: tuple[str, ...] | None = None
    since: int | None = None
    group: str | None = None
    ignored: tuple[str, ...] = ()
    """The names of the kick-off's parameters Coffre went on without (``handling=lenient``)."""
    client: str | None = None
    """The client that started it (its token's issuer and client id), the only one that may
    poll, download or cancel it; None when the server takes no tokens."""
    filters: TypeFilters = ()
    """Its ``_typeFilter``: each query's type and the criteria Coffre tests."""
    patients: tuple[str, ...] | None = None
    """Its ``patient`` parameter: the ids of the only patients whose compartments it holds."""
    notes: tuple[str, ...] = ()
    """Why each criterion of a filter was left out (``handling=lenient``), names only."""
    elements: tuple[str, ...] = ()
    """Its ``_elements``: each ``element`` (of every type) or ``Type.element``."""

    @property
    def expires(self) -> int:
        return self.started + LIFETIME_US

    def token(self, keys: PurposeKeys) -> str:
        """The job as a URL path segment: its fields sealed, so that nothing of the
        kick-off (a Group's id, its URL's values) can be read from the URLs."""
        payload = json.canonical({"f": _FORMAT, **asdict(self)})
        return _b64(_job_seal(keys).close(payload))

    @classmethod
    def from_token(cls, keys: PurposeKeys, token: str) -> ExportJob:
        """The job a token describes; 404 for a token this side did not make, or expired."""
        unknown = FhirError(404, "not-found", "no such export: the URL is unknown or expired")
        if "=" in token:  # a token is written unpadded: one with padding was altered
            raise unknown
        try:
            payload = _job_seal(keys).open(_unb64(token))
        except (ValueError, SealError):
            raise unknown from None
        fields: dict[str, Any] = json.loads(payload)
        if fields.pop("f") not in _READABLE_FORMATS:
            raise unknown
        job = cls(**fields | _tuples(fields))
        if now_us() > job.expires:
            raise unknown
        return job

    def job_id(self, keys: PurposeKeys) -> str:
        """A short name of the job, for AuditEvents and the count registry."""
        return hashlib.sha256(self.token(keys).encode()).hexdigest()[:32]

    def resource_types(self) -> list[str]:
        """The types this export covers, in a stable order."""
        return sorted(t for t in level_types(self.level) if self.types is None or t in self.types)


def _tuples(fields: dict[str, Any]) -> dict[str, Any]:
    """The fields a job holds as tuples, which its token's JSON gives back as lists."""
    listed = ("types", "ignored", "patients", "notes", "elements")
    tuples = {name: tuple(fields[name]) for name in listed if fields.get(name) is not None}
    if "filters" in fields:
        tuples["filters"] = tuple((name, query) for name, query in fields["filters"])
    return tuples


def level_types(level: str) -> frozenset[str]:
    """The types an export at ``level`` can hold."""
    return frozenset(RESOURCE_TYPES) if level == "system" else frozenset(compartment_types())


def check_types(level: str, types: list[str]) -> None:
    """Refuse a ``_type`` that names no FHIR R4 type, or one outside the level's types."""
    for name in types:
        if name not in RESOURCE_TYPES:
            raise FhirError(400, "invalid", f"_type names {name!r}, not a FHIR R4 resource type")
        if name not in level_types(level):
            raise FhirError(
                400,
                "not-supported",
                f"a {level}-level export holds no {name}: it is in no patient's compartment",
            )


def start_job(
    records: RecordStore,
    level: str,
    request: str,
    types: list[str],
    since: int | None,
    group: str | None = None,
    ignored: list[str] | None = None,
    client: str | None = None,
    *,
    type_filters: list[str] | None = None,
    lenient: bool = False,
    patients: list[str] | None = None,
    elements: list[str] | None = None,
) -> ExportJob:
    """A new export of ``level``, pinned to the storage as it is now; ``type_filters``
    its ``_typeFilter`` queries, whose criteria Coffre cannot answer are left out when
    ``lenient`` (and noted), else a 400.

    Its snapshot and its time (the manifest's ``transactionTime``, the next export's
    ``_since``) are read under the write lock, which no write then holds: a write stamped
    before that time but committed after the snapshot would be in neither this export nor
    the next. Every later write is stamped under the lock too, at or after that time (one
    clock: the gateways of a vault on several machines keep theirs in step)."""
    check_types(level, types)
    filters, notes = read_type_filters(type_filters or [], types or level_types(level), lenient)
    check_elements(elements or [])
    with records.storage.transaction() as txn:
        records.latest_writes.catch_up(txn)  # a clock behind it: never before the newest write
        snapshot = records.storage.last_seq()
        started = max(now_us(), records.latest_writes.newest_write)
    return ExportJob(
        level,
        snapshot=snapshot,
        started=started,
        request=request,
        types=tuple(sorted(set(types))) or None,
        since=since,
        group=group,
        ignored=tuple(sorted(set(ignored or ()))),
        client=client,
        filters=filters,
        patients=None if patients is None else tuple(sorted(set(patients))),
        notes=tuple(notes),
        elements=tuple(elements or ()),
    )


def check_elements(elements: list[str]) -> None:
    """Refuse an ``_elements`` entry that is not ``element`` or ``Type.element``: the IG
    takes a resource's root elements only."""
    for entry in elements:
        prefix, dot, name = entry.rpartition(".")
        if not _ELEMENT_NAME.fullmatch(name) or (dot and prefix not in RESOURCE_TYPES):
            message = (
                f"_elements names {entry!r}: give root elements, as element (of every type)"
                " or Type.element (Patient.birthDate)"
            )
            raise FhirError(400, "invalid", message)


def elements_of(job: ExportJob, resource_type: str) -> tuple[str, ...]:
    """The elements a type's file keeps: those ``_elements`` names alone or with the
    type's name; none when it names none of them (the file is then whole)."""
    prefix = f"{resource_type}."
    return tuple(
        entry.removeprefix(prefix)
        for entry in job.elements
        if "." not in entry or entry.startswith(prefix)
    )


def check_patients(records: RecordStore, job: ExportJob) -> None:
    """Refuse a ``patient`` parameter naming a patient the vault does not hold (404, 410
    once deleted) or, at Group level, one the Group does not name (422): the IG asks for
    an error rather than an export quietly without them."""
    if job.patients is None:
        return
    if job.level == "system":
        raise FhirError(
            400, "invalid", "patient narrows a Patient- or Group-level export, not a system one"
        )
    for patient_id in job.patients:
        records.read("Patient", patient_id)
    if job.group is None:
        return
    members = group_members(records.read("Group", job.group).resource())
    outside = [p for p in job.patients if p not in members]
    if outside:
        named = ", ".join(f"Patient/{p}" for p in outside[:5])
        message = f"{named} {'is' if len(outside) == 1 else 'are'} not a member of this Group"
        raise FhirError(422, "processing", message)


class CountStopped(Exception):
    """A count stopped before its end: its export was cancelled, or a gateway forgot it."""


def _go_on(stopped: Callable[[], bool]) -> None:
    if stopped():
        raise CountStopped("nobody waits for this count any more")


class Export:
    """One export's resources over a record store, read as of its snapshot."""

    def __init__(self, records: RecordStore, job: ExportJob, base: str | None = None) -> None:
        """``base``: the URL the server is reached at, which a filter's absolute
        references may be written on, as a search's."""
        self.records = records
        self.job = job
        self._members = self._chosen_patients()
        self._member_comps = (
            None
            if self._members is None
            else frozenset(map(records.keys.patient_compartment, self._members))
        )
        scope = Scope(records.storage, base=base, as_of=job.snapshot)
        self._filters = FilterTest(Searcher(records, scope), job.filters)

    # -- what belongs ---------------------------------------------------------------------

    def _as_of(self, loc: bytes) -> SealedVersion | None:
        """A record's version as of the snapshot, checked against the log when it is the
        latest (SealError if the host put back or dropped a version)."""
        records, storage = self.records, self.records.storage
        latest = storage.latest(loc)
        if not records.is_logged_latest(loc, latest, storage):
            latest = records.checked_latest(loc)
        if latest is None or latest.deleted or latest.seq <= self.job.snapshot:
            return latest  # a deletion wins, even one made after the snapshot
        older = storage.history(HistoryQuery(loc=loc, before_seq=self.job.snapshot, limit=1))
        return older[0] if older else None

    def _chosen_patients(self) -> frozenset[str] | None:
        """The patients whose compartments the export holds, None for all: the Group's
        members, and of them (or of all) those the ``patient`` parameter names."""
        chosen = None if self.job.patients is None else frozenset(self.job.patients)
        if self.job.level != "group":
            return chosen
        members = self._group_members()
        return members if chosen is None else members & chosen

    def _group_members(self) -> frozenset[str]:
        """The ids of the group's Patient members, as of the snapshot."""
        assert self.job.group is not None
        loc = self.records.keys.location("Group", self.job.group)
        self.records.latest_writes.catch_up(self.records.storage)
        sealed = self._as_of(loc)
        if sealed is None:
            raise not_found("Group", self.job.group)
        if sealed.deleted:
            raise gone("Group", self.job.group)
        group = self.records.open("Group", self.job.group, sealed).resource()
        return frozenset(group_members(group))

    def _belongs(self, resource_type: str, sealed: SealedVersion) -> bool:
        """Whether a version is in the export, from what the host holds of it: its
        compartment token (authenticated by the envelope) and whether Coffre erased that
        compartment, as the log says (a key the host removed is an integrity failure at
        the read, not a reason to leave records out). A version under its type's shared
        key, of no patient or of several, is opened to know whose it is."""
        if self.records.is_erased(sealed.comp):
            return False
        if sealed.comp != self.records.keys.shared_compartment(resource_type):
            return self._member_comps is None or sealed.comp in self._member_comps
        if self.job.level == "system":
            return True
        patients = compartment_patients(self.records.open_found(sealed).resource())
        if self._members is None:
            return len(patients) > 1
        return not self._members.isdisjoint(patients)

    def versions(self, resource_type: str) -> Iterator[SealedVersion]:
        """The versions of a type the export holds, newest write first, a page of the
        storage at a time.

        The storage lists every version of the type up to the snapshot (since ``_since``);
        a version is kept when it is its record's latest as of the snapshot and not a
        deletion. Nothing is remembered from one page to the next.
        """
        records = self.records
        kind = records.keys.kind(resource_type)
        before = self.job.snapshot
        while True:
            query = HistoryQuery(kind=kind, since_ts=self.job.since, before_seq=before, limit=PAGE)
            page = records.storage.history(query)
            records.latest_writes.catch_up(records.storage)
            for sealed in page:
                if sealed.deleted or not self._belongs(resource_type, sealed):
                    continue
                current = self._as_of(sealed.loc)
                if current is not None and current.version == sealed.version:
                    yield current
            if len(page) < PAGE:
                return
            before = page[-1].seq - 1

    # -- counting and reading ---------------------------------------------------------------

    def count(
        self,
        progress: Callable[[int, int], None] = lambda done, total: None,
        stopped: Callable[[], bool] = lambda: False,
    ) -> dict[str, int]:
        """How many resources of each type the export holds (types with none left out);
        ``progress`` hears of each type counted. Once ``stopped`` says so (nobody waits
        for the count any more), CountStopped at the next resource or type. A type with a
        ``_typeFilter`` is counted as its file is made, each resource opened and tested;
        the others from what the host holds, nothing decrypted."""
        types = self.job.resource_types()
        counts: dict[str, int] = {}
        for done, resource_type in enumerate(types, start=1):
            _go_on(stopped)
            found = 0
            held = self.resources if self._filters.filters(resource_type) else self.versions
            for _ in held(resource_type):
                _go_on(stopped)
                found += 1
            if found:
                counts[resource_type] = found
            progress(done, len(types))
        return counts

    def batches(self, resource_type: str, size: int, max_bytes: int) -> Iterator[list[Stored]]:
        """The type's resources, opened (each checked by its envelope), ``size`` at a time
        at most, and fewer when they reach ``max_bytes`` of JSON."""
        batch: list[Stored] = []
        held = 0
        for stored in self.resources(resource_type):
            batch.append(stored)
            held += len(stored.body)
            if len(batch) >= size or held >= max_bytes:
                yield batch
                batch, held = [], 0
        if batch:
            yield batch

    def resources(self, resource_type: str) -> Iterator[Stored]:
        """The type's resources the export holds, opened (each checked by its envelope),
        those its ``_typeFilter`` turns away left out."""
        for sealed in self.versions(resource_type):
            stored = self.records.open_found(sealed)
            if stored.resource_type == resource_type and self._filters.admits(stored):
                yield stored


def group_members(group: dict[str, Any]) -> list[str]:
    """The ids of the Patients a Group's ``member.entity`` names (local references)."""
    members = []
    for member in group.get("member", []):
        reference = member.get("entity", {}).get("reference")
        local = isinstance(reference, str) and "://" not in reference
        parsed = parse_reference(reference) if local else None
        if parsed is not None and parsed[0] == "Patient":
            members.append(parsed[1])
    return members


def ignored_outcome(parameter: str, criterion: str | None = None) -> dict[str, Any]:
    """The warning of the manifest's error file for a parameter the export went without,
    or (``criterion``: why, naming parameters only) for a filter's criterion: names only,
    never a value (a filter may name a patient)."""
    message = (
        f"{parameter} is not supported by Coffre's $export and was ignored"
        " (Prefer: handling=lenient): the files are not narrowed by it"
        if criterion is None
        else f"{criterion}; the criterion was ignored (Prefer: handling=lenient): the"
        " file of that type is not narrowed by it"
    )
    return operation_outcome("warning", "not-supported", message)


def job_stored(keys: PurposeKeys, job_id: str) -> Stored:
    """The job as a pseudo-record, so that its cancellation is logged like an access: an
    EXPORT leaf on the job's location, its AuditEvent under the job's compartment token."""
    return Stored(
        JOB_TYPE,
        job_id,
        0,
        now_us(),
        False,
        b"",
        keys.location(JOB_TYPE, job_id),
        NO_DIGEST,
        keys.shared_compartment(f"{JOB_TYPE}/{job_id}"),
    )


def is_cancelled(records: RecordStore, job_id: str) -> bool:
    """Whether the job was cancelled, by this or any other gateway process."""
    comp = records.keys.shared_compartment(f"{JOB_TYPE}/{job_id}")
    return bool(records.storage.events_of(comp))

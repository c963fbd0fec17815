"""Export jobs as URL tokens: what a token says comes back whole, and a token altered in
any way, made under another vault's keys, or expired, is refused."""

from __future__ import annotations

import threading
import time
from dataclasses import asdict

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coffre.exceptions import FhirError
from coffre.fhir import json
from coffre.fhir._definitions_r4 import RESOURCE_TYPES
from coffre.seal import PurposeKeys
from coffre.service import RecordStore, Stored
from coffre.service.export import (
    LIFETIME_US,
    CountStopped,
    Export,
    ExportJob,
    _b64,
    _job_seal,
    group_members,
    start_job,
)
from coffre.storage.base import HistoryQuery

KEYS = PurposeKeys.derive(bytes(range(32)))
OTHER = PurposeKeys.derive(bytes(32))

jobs = st.builds(
    ExportJob,
    level=st.sampled_from(("system", "patient", "group")),
    snapshot=st.integers(0, 2**62),
    started=st.just(time.time_ns() // 1000),
    request=st.text(max_size=80),
    types=st.none() | st.lists(st.sampled_from(sorted(RESOURCE_TYPES)), max_size=4).map(tuple),
    since=st.none() | st.integers(0, 2**62),
    group=st.none() | st.from_regex(r"[A-Za-z0-9\-.]{1,64}", fullmatch=True),
    ignored=st.lists(st.sampled_from(("_elements", "includeAssociatedData")), unique=True).map(
        tuple
    ),
    filters=st.lists(st.tuples(st.sampled_from(("Observation", "Patient")), st.text())).map(tuple),
    patients=st.none() | st.lists(st.from_regex(r"[a-z0-9]{1,64}", fullmatch=True)).map(tuple),
    notes=st.lists(st.text(max_size=40)).map(tuple),
    elements=st.lists(st.sampled_from(("id", "status", "Patient.gender"))).map(tuple),
)


@given(jobs)
def test_a_token_gives_back_its_job(job: ExportJob) -> None:
    assert ExportJob.from_token(KEYS, job.token(KEYS)) == job


@given(jobs, st.data())
def test_a_token_altered_anywhere_is_refused(job: ExportJob, data: st.DataObject) -> None:
    token = job.token(KEYS)
    position = data.draw(st.integers(0, len(token) - 1))
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_."
    replacement = data.draw(st.sampled_from(alphabet).filter(lambda c: c != token[position]))
    altered = token[:position] + replacement + token[position + 1 :]
    try:
        decoded = ExportJob.from_token(KEYS, altered)
    except FhirError as error:
        assert error.status == 404
    else:  # base64's unused low bits of a segment's last character may change nothing
        assert position in (token.index(".") - 1, len(token) - 1) and decoded == job


@given(jobs)
def test_a_token_of_another_vault_is_refused(job: ExportJob) -> None:
    with pytest.raises(FhirError):
        ExportJob.from_token(KEYS, job.token(OTHER))


def test_an_expired_token_is_refused() -> None:
    old = ExportJob("system", 1, time.time_ns() // 1000 - LIFETIME_US - 1, "x")
    with pytest.raises(FhirError):
        ExportJob.from_token(KEYS, old.token(KEYS))


def test_group_members_are_local_patient_references() -> None:
    group = {
        "resourceType": "Group",
        "member": [
            {"entity": {"reference": "Patient/a"}},
            {"entity": {"reference": "Practitioner/b"}},
            {"entity": {"reference": "https://elsewhere.example/fhir/Patient/c"}},
            {"entity": {"reference": "Patient/d/_history/2"}},
            {"entity": {"display": "nobody"}},
        ],
    }
    assert group_members(group) == ["a", "d"]


def test_a_count_nobody_waits_for_stops_at_the_next_type(records: RecordStore) -> None:
    """A cancelled export, or one a gateway forgot, must not go on reading the vault."""
    export = Export(records, start_job(records, "system", "$export", [], None))
    counted: list[int] = []
    with pytest.raises(CountStopped):
        export.count(lambda done, total: counted.append(done), stopped=lambda: bool(counted))
    assert counted == [1]


def test_a_write_under_way_at_the_kick_off_is_in_this_export_or_after_its_time(
    records: RecordStore,
) -> None:
    """A write stamped before the kick-off and committed after it was in neither this
    export (not in its snapshot) nor the next (``_since`` its time, which is later)."""
    stamped, release = threading.Event(), threading.Event()
    written: list[Stored] = []

    def write() -> None:
        with records.writer() as writer:
            written.append(writer.create({"resourceType": "Patient"}).stored)
            stamped.set()
            release.wait(10)

    writing = threading.Thread(target=write)
    writing.start()
    assert stamped.wait(10)
    kicked: list[ExportJob] = []
    kick_off = threading.Thread(
        target=lambda: kicked.append(start_job(records, "system", "$export", [], None))
    )
    kick_off.start()
    time.sleep(0.2)  # the kick-off waits for the write to commit
    release.set()
    writing.join(10)
    kick_off.join(10)
    [job], [version] = kicked, written
    in_snapshot = records.storage.history(HistoryQuery(loc=version.loc, before_seq=job.snapshot))
    assert in_snapshot or version.ts >= job.started


def test_a_token_made_before_filters_reads_as_a_job_without_them() -> None:
    """Tokens of format 2 (before ``_typeFilter`` and ``patient``) stay valid for their 24
    hours across an upgrade."""
    job = ExportJob("group", 7, time.time_ns() // 1000, "x", ("Patient",), group="g")
    added = ("filters", "patients", "notes", "elements")  # by format 3
    fields = {k: v for k, v in asdict(job).items() if k not in added}
    sealed = _job_seal(KEYS).close(json.canonical({"f": 2, **fields}))
    assert ExportJob.from_token(KEYS, _b64(sealed)) == job

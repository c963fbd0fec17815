"""``coffre import``: load files into a vault, with progress, and a report of what failed.

A transaction that names a resource not yet loaded (say, a patient bundle read before
the practitioners it refers to) is put aside and tried again once the rest is in, as many
rounds as load something (one put aside may wait for another), so the order of the files
does not matter.
"""

from __future__ import annotations

import hmac
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from coffre.api.search import search_page
from coffre.cli.sources import Batch, Unreadable, batches, with_source_ids
from coffre.exceptions import FhirError, VaultStateError
from coffre.service import RecordStore
from coffre.service.bundles import STORED_WITH_OTHER_CONTENT, BundleProcessor


@dataclass(slots=True)
class ImportReport:
    resources: int = 0
    versions_written: int = 0
    failures: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    """Entries whose id names a resource stored with other content, which is kept."""


Progress = Callable[[int], None]
IMPORT_BASE = "urn:coffre:import"


class Importer:
    def __init__(self, records: RecordStore, on_progress: Progress = lambda n: None) -> None:
        self._records = records
        self._processor = BundleProcessor(
            records,
            IMPORT_BASE,
            returning=None,
            # A search entry of a file is run as the API would, for the operator.
            search=lambda writer, kind, pairs: search_page(
                records, IMPORT_BASE, kind, pairs, writer=writer
            ),
            keep_source_ids=True,
            logs_found=False,
        )
        self._on_progress = on_progress
        self._id_key = records.keys.index_subkey("import id key")
        self.report = ImportReport()

    def _derived_id(self, content: bytes, occurrence: int) -> str:
        """An id for a resource its file gives none: the same for the same content in every
        run, keyed, so that it tells nothing of the content to whoever sees it."""
        digest = hmac.digest(self._id_key, b"%d\x00%s" % (occurrence, content), "sha256")
        return str(uuid.UUID(bytes=digest[:16], version=4))

    def run(self, files: list[Path]) -> ImportReport:
        deferred: list[Batch] = []
        first_seq = self._records.storage.last_seq()
        for path in files:
            seen: Counter[bytes] = Counter()  # equal resources of a file stay apart
            for batch in self._readable(path):
                with_source_ids(batch.bundle, self._derived_id, seen)
                if not self._load(batch, last_try=False):
                    deferred.append(batch)
        while deferred:  # each round loads what the previous one made resolvable
            waiting = [batch for batch in deferred if not self._load(batch, last_try=False)]
            if len(waiting) == len(deferred):
                break
            deferred = waiting
        for batch in deferred:
            self._load(batch, last_try=True)
        self.report.versions_written = self._records.storage.last_seq() - first_seq
        return self.report

    def _readable(self, path: Path) -> Iterator[Batch]:
        """The Bundles of a file, what cannot be read of it reported; a failure of the
        vault while one loads is not the file's, and stops the import."""
        try:
            for batch in batches(path):
                if isinstance(batch, Unreadable):
                    self.report.failures.append(f"{batch.origin}: {batch.diagnostics}")
                else:
                    yield batch
        except FhirError as error:
            self.report.failures.append(f"{path}: {error.diagnostics}")
        except OSError as error:
            self.report.failures.append(f"{path}: cannot be read: {error.strerror or error}")

    def _load(self, batch: Batch, *, last_try: bool) -> bool:
        """Run one Bundle; False when it should wait for the others."""
        try:
            with self._records.writer() as writer:
                response = self._processor.run(batch.bundle, writer)
            if (memory_failure := self._records.ledger.memory_failure) is not None:
                raise VaultStateError(memory_failure)  # the Bundle is saved: the import stops
        except FhirError as error:
            if error.status == 404 and not last_try:
                return False
            self.report.failures.append(f"{batch.label}: {error.diagnostics}")
            self._on_progress(batch.size)
            return True
        for index, entry in enumerate(response.get("entry", [])):
            status = entry["response"]["status"]
            issue = entry["response"].get("outcome", {}).get("issue", [{}])[0]
            if issue.get("code") == STORED_WITH_OTHER_CONTENT:
                self.report.conflicts.append(batch.failure(index, issue["diagnostics"]))
            elif status.startswith("2"):  # a DELETE's is 204
                self.report.resources += 1
            else:
                self.report.failures.append(batch.failure(index, issue.get("diagnostics", status)))
        self._on_progress(batch.size)
        return True

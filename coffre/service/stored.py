"""A version of a record as Coffre hands it out, opened (``Stored``), the data its sealing
is bound to, and the answers about records that are missing, hidden, deleted or erased.
"""

from __future__ import annotations

import hashlib
import struct
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from coffre.exceptions import FhirError, information
from coffre.fhir import json
from coffre.fhir.references import ID_PATTERN
from coffre.seal.entropy import random_bytes
from coffre.storage.base import (
    SealedVersion,
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


def stored_version(
    resource_type: str, resource_id: str, sealed: SealedVersion, body: bytes
) -> Stored:
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


def version_associated(loc: bytes, version: int, comp: bytes, ts: int, deleted: bool) -> bytes:
    return loc + struct.pack(">QQ?", version, ts, deleted) + comp


def event_associated(comp: bytes) -> bytes:
    return b"AuditEvent" + comp


def no_version(resource_type: str, resource_id: str, version: str) -> FhirError:
    """The answer for a version that does not exist, and so for one that is hidden."""
    return FhirError(404, "not-found", f"{resource_type}/{resource_id} has no version {version}")

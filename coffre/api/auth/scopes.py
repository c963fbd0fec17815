"""SMART App Launch v2 scopes as values, and the decision every FHIR interaction will take.

A resource scope is ``context/Type.permissions[?param=value&...]``: the context is
``patient``, ``user`` or ``system``, the type a FHIR R4 resource type or ``*``, the
permissions a non-empty subset of ``cruds`` written in that order. SMART v1's ``read``,
``write`` and ``*`` are read as ``rs``, ``cud`` and ``cruds``.

``decide`` is pure: given who asks (a ``Principal``) and what they ask (a ``Target``) it
says allow, forbid (403) or hide (404). The rule between the last two, which docs/access.md
explains: a refusal that follows from the token alone is a 403, since it would be the same
for any id; a refusal that depends on the record (whose compartment it is in) is a 404
answered exactly like a missing record, since a 403 would confirm that it exists.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum, StrEnum
from urllib.parse import parse_qsl, urlencode

from coffre.fhir._definitions_r4 import RESOURCE_TYPES


class ScopeError(ValueError):
    """A string that is not a scope Coffre understands."""


class Context(StrEnum):
    PATIENT = "patient"
    USER = "user"
    SYSTEM = "system"


class Role(StrEnum):
    PATIENT = "patient"
    CLINICIAN = "clinician"
    RESEARCHER = "researcher"
    ADMIN = "admin"
    SYSTEM = "system"


class Interaction(StrEnum):
    READ = "read"
    VREAD = "vread"
    SEARCH = "search"
    HISTORY = "history"
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"
    OPERATION = "operation"


PERMISSIONS = "cruds"
# What each interaction needs. An operation may hand out what a search would, so it
# needs both; an operation that writes is also checked as the write it makes.
_NEEDS: dict[Interaction, frozenset[str]] = {
    Interaction.READ: frozenset("r"),
    Interaction.VREAD: frozenset("r"),
    Interaction.HISTORY: frozenset("r"),
    Interaction.SEARCH: frozenset("s"),
    Interaction.CREATE: frozenset("c"),
    Interaction.UPDATE: frozenset("u"),
    Interaction.DELETE: frozenset("d"),
    Interaction.OPERATION: frozenset("rs"),
}
RESEARCH_READABLE = frozenset(
    {
        "CodeSystem",
        "ValueSet",
        "ConceptMap",
        "NamingSystem",
        "StructureDefinition",
        "SearchParameter",
        "OperationDefinition",
        "CapabilityStatement",
        "Organization",
        "Location",
        "HealthcareService",
        "Practitioner",
        "PractitionerRole",
        "Endpoint",
    }
)
"""What a researcher's token reaches through the FHIR API: the directory and the
terminology a project reads its data by. Any other type may hold a patient's record
without naming them (a Binary whose securityContext is a DocumentReference, a stored
Bundle, a Library's attachment), and research data goes through the hub."""
_WRITES = frozenset({Interaction.CREATE, Interaction.UPDATE, Interaction.DELETE})
_APPOINTMENT_WRITES = frozenset("cud")
CARE_RECORDS = (("Encounter", "participant"), ("CareTeam", "participant"))
"""The records that make a care relationship (docs/access.md, "Care relationships"): the
type, and the search parameter naming its practitioners; each is looked up with
``patient=Patient/<id>`` too."""
_CARE_TYPES = frozenset(kind for kind, _ in CARE_RECORDS)
CARE_WRITTEN_BY = (
    "care relationships are recorded by the admission or scheduling system, an administrator"
    " or a clinician under break-glass"
)


def writes_care_relationship(target: Target) -> bool:
    """Whether ``target`` makes, moves or ends a care relationship (an Encounter, a
    CareTeam): what opens a patient's whole record to the practitioners it names."""
    return target.interaction in _WRITES and target.resource_type in _CARE_TYPES


_V1 = {"read": "rs", "write": "cud", "*": "cruds"}
_SCOPE = re.compile(r"(patient|user|system)/([A-Za-z]+|\*)\.([a-z*]+)(?:\?(.+))?")
_PERMISSIONS = re.compile(r"c?r?u?d?s?")

LAUNCH_PATIENT = "launch/patient"
OPENID = "openid"
FHIR_USER = "fhirUser"
OFFLINE_ACCESS = "offline_access"
# Recognised scopes that are not about resources. Coffre issues no refresh tokens yet,
# so ``offline_access`` is understood and never granted (see docs/access.md).
OTHER_SCOPES = frozenset({LAUNCH_PATIENT, OPENID, FHIR_USER, OFFLINE_ACCESS, "online_access"})


@dataclass(frozen=True, slots=True, order=True)
class ResourceScope:
    """One resource scope; ``parameters`` (granular v2 scopes) is a sorted tuple of pairs."""

    context: Context
    resource_type: str
    permissions: frozenset[str]
    parameters: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if not self.permissions or not self.permissions <= frozenset(PERMISSIONS):
            raise ScopeError("a scope's permissions are a non-empty subset of c, r, u, d, s")
        if self.resource_type != "*" and self.resource_type not in RESOURCE_TYPES:
            raise ScopeError(f"{self.resource_type!r} is not a FHIR R4 resource type")
        if list(self.parameters) != sorted(set(self.parameters)):
            raise ScopeError("a scope's parameters are sorted and distinct")

    def __str__(self) -> str:
        letters = "".join(p for p in PERMISSIONS if p in self.permissions)
        text = f"{self.context}/{self.resource_type}.{letters}"
        return f"{text}?{urlencode(self.parameters)}" if self.parameters else text

    def covers_type(self, resource_type: str | None) -> bool:
        """``None`` stands for every type at once (system-level history, a batch)."""
        return self.resource_type == "*" or self.resource_type == resource_type


@dataclass(frozen=True, slots=True)
class ScopeSet:
    """What a token was granted: resource scopes, and the other scopes it carries."""

    resources: frozenset[ResourceScope] = frozenset()
    others: frozenset[str] = frozenset()

    def __str__(self) -> str:
        return " ".join(sorted([str(s) for s in self.resources] + list(self.others)))

    def __or__(self, other: ScopeSet) -> ScopeSet:
        return ScopeSet(self.resources | other.resources, self.others | other.others)

    def in_context(self, context: Context) -> ScopeSet:
        """Only the resource scopes of ``context``, with every other scope kept."""
        return ScopeSet(frozenset(s for s in self.resources if s.context == context), self.others)

    def without(self, context: Context) -> ScopeSet:
        """The resource scopes of every context but ``context``, every other scope kept."""
        return ScopeSet(frozenset(s for s in self.resources if s.context != context), self.others)


def parse_scope(text: str) -> ResourceScope:
    """One resource scope, v2 or v1; raises ScopeError for anything else."""
    match = _SCOPE.fullmatch(text)
    if not match:
        raise ScopeError(f"{text!r} is not a SMART resource scope")
    context, resource_type, permissions, query = match.groups()
    letters = _V1.get(permissions, permissions)
    if not letters or not _PERMISSIONS.fullmatch(letters):
        raise ScopeError(f"{text!r}: permissions are c, r, u, d, s in that order, or read/write/*")
    parameters: tuple[tuple[str, str], ...] = ()
    if query is not None:
        if permissions in _V1:
            raise ScopeError(f"{text!r}: only v2 scopes take parameters")
        try:
            pairs = parse_qsl(query, keep_blank_values=False, strict_parsing=True)
        except ValueError:
            raise ScopeError(f"{text!r}: its parameters are not name=value pairs") from None
        parameters = tuple(sorted(set(pairs)))
    return ResourceScope(Context(context), resource_type, frozenset(letters), parameters)


def parse_scopes(text: str) -> tuple[ScopeSet, list[str]]:
    """A space-separated scope string: what Coffre understands, and what it does not
    (which a server ignores, as SMART says)."""
    resources: set[ResourceScope] = set()
    others: set[str] = set()
    unknown: list[str] = []
    for word in text.split():
        if word in OTHER_SCOPES:
            others.add(word)
            continue
        try:
            resources.add(parse_scope(word))
        except ScopeError:
            unknown.append(word)
    return ScopeSet(frozenset(resources), frozenset(others)), unknown


def _narrow_one(wanted: ResourceScope, allowed: ResourceScope) -> ResourceScope | None:
    if wanted.context != allowed.context:
        return None
    if allowed.resource_type == "*":
        resource_type = wanted.resource_type
    elif wanted.resource_type in ("*", allowed.resource_type):
        resource_type = allowed.resource_type
    else:
        return None
    permissions = wanted.permissions & allowed.permissions
    # Granular filters are kept, never widened: both sides' filters must agree.
    if wanted.parameters and allowed.parameters and wanted.parameters != allowed.parameters:
        return None
    if not permissions:
        return None
    return ResourceScope(
        wanted.context, resource_type, permissions, wanted.parameters or allowed.parameters
    )


def narrow(requested: ScopeSet, allowed: ScopeSet) -> ScopeSet:
    """What to grant: each requested scope cut down to what an allowed scope permits.

    ``system/*.rs`` asked by a client allowed ``system/Observation.rs`` gives
    ``system/Observation.rs``; nothing granted is ever wider than either side.
    """
    resources = {
        narrowed
        for wanted in requested.resources
        for permitted in allowed.resources
        if (narrowed := _narrow_one(wanted, permitted)) is not None
    }
    return ScopeSet(frozenset(resources), requested.others & allowed.others)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a valid token speaks for.

    ``patient`` is the patient in context (from ``launch/patient``), ``fhir_user`` the
    FHIR resource of the person signed in (``Patient/123``, ``Practitioner/abc``).
    """

    subject: str
    client_id: str
    scopes: ScopeSet
    role: Role | None = None
    patient: str | None = None
    fhir_user: str | None = None
    purpose: str | None = None
    issuer: str = ""

    @property
    def actor(self) -> str:
        """How the audit log names this principal: the person, their role, the app."""
        who = self.fhir_user or self.subject or self.client_id
        about = [str(self.role)] if self.role else []
        if self.client_id:
            about.append(f"via client {self.client_id}")
        return f"{who} ({', '.join(about)})" if about else who

    def own_patient(self, context: Context) -> str | None:
        """The patient a scope of ``context`` is confined to: the one in context for
        patient scopes, the person signed in for the user scopes of a patient, or of a
        token that names no role; "" when it should be confined but there is nobody to
        confine it to; None: unconfined. A user scope reaches beyond one patient only
        for a role that says so (a clinician, within their care, an administrator...)."""
        if context == Context.PATIENT:
            return self.patient or ""  # "": confined to nobody, never unconfined
        if context == Context.USER and self.role in (Role.PATIENT, None):
            kind, _, patient_id = (self.fhir_user or "").partition("/")
            return patient_id if kind == "Patient" and patient_id else ""
        return None

    def acting_patient(self) -> str | None:
        """The patient this principal acts as, whom what a patient may do holds (her
        bookings: docs/booking.md): a patient's own token, or one of no role whose scopes
        that write Appointments are all confined to a patient (a SMART patient app's, as
        an OpenID Connect issuer may grant it, with a ``patient`` claim and no role); the
        patient it is confined to ("" for nobody). None for everyone else: a clinician,
        a system, an administrator, a token that writes any patient's appointments."""
        if self.role not in (Role.PATIENT, None):
            return None
        writing = [
            self.own_patient(scope.context)
            for scope in self.scopes.resources
            if scope.covers_type("Appointment") and scope.permissions & _APPOINTMENT_WRITES
        ]
        if self.role is None and (not writing or None in writing):
            return None
        return self.own_patient(Context.USER) or self.patient or ""


SEVERAL = "\x00several"
"""The ``patient`` of a record of several patients' compartments (a Group's members), the
record of no one of them alone: its target's ``named`` lists them."""


@dataclass(frozen=True, slots=True)
class Target:
    """What a request does: an interaction on a type (``None``: every type).

    ``patient`` names the patient whose compartment holds the one resource concerned;
    ``shared`` says that resource is in no patient's compartment (a Practitioner, an
    Organization); neither means the request reaches many resources (a search, a
    type-level history), which a confined principal only gets within its compartment.
    ``search`` holds the request's search parameters, for granular scopes. ``named``: the
    patients a shared resource names (a Task's ``for``), or those of a record of several
    patients' compartments (a Group's members), whose record it is judged as. ``sent``:
    the resource as the client sent it (a create, an update's new content), not as stored.
    """

    interaction: Interaction
    resource_type: str | None
    patient: str | None = None
    shared: bool = False
    search: tuple[tuple[str, str], ...] = ()
    named: tuple[str, ...] = ()
    sent: bool = False

    @property
    def chosen(self) -> bool:
        """Whether the client chose what the target holds: a refusal then tells it nothing
        of the records (403), where one of a stored record must look like its absence."""
        return self.sent or self.interaction is Interaction.CREATE

    def __post_init__(self) -> None:
        if self.patient is not None and self.shared:
            raise ValueError("a resource is in a patient's compartment or shared, not both")
        if self.named and not (self.shared or self.patient == SEVERAL):
            raise ValueError("only a shared resource, or a record of several, names patients")

    @property
    def one_resource(self) -> bool:
        return self.patient is not None or self.shared


class Outcome(Enum):
    ALLOW = 200
    FORBID = 403
    HIDE = 404


@dataclass(frozen=True, slots=True)
class Decision:
    """``within``: when allowed, the patient compartment the answer must stay inside
    (``None``: no confinement)."""

    outcome: Outcome
    reason: str
    within: str | None = None

    @property
    def allowed(self) -> bool:
        return self.outcome is Outcome.ALLOW


def _filter_holds(scope: ResourceScope, target: Target) -> bool:
    """A granular scope grants only a search that carries its filter itself, value for
    value, so that every result is within it; it grants no other interaction until the
    routes check the resource against the filter (docs/access.md)."""
    if not scope.parameters:
        return True
    return target.interaction is Interaction.SEARCH and set(scope.parameters) <= set(target.search)


def _grants(scope: ResourceScope, target: Target) -> bool:
    return (
        scope.covers_type(target.resource_type)
        and _NEEDS[target.interaction] <= scope.permissions
        and _filter_holds(scope, target)
    )


def _record_refusal(target: Target, reason: str) -> Decision:
    """A refusal the record decides: hidden (404, as a missing one), but forbidden (403)
    for content the client chose (a create, an update's new content)."""
    if target.chosen:
        return Decision(Outcome.FORBID, f"the resource sent is {reason}")
    return Decision(Outcome.HIDE, reason)


def _confined(patient: str, target: Target) -> Decision:
    """A scope confined to ``patient``'s compartment, before ``target``."""
    if not patient:
        return Decision(
            Outcome.FORBID, "these scopes are confined to a patient, and the token names none"
        )
    if target.shared:
        if target.interaction in _WRITES:
            return Decision(Outcome.FORBID, "a patient's scopes do not write shared resources")
        if any(named != patient for named in target.named):
            return _record_refusal(target, "another patient's record")
        return Decision(Outcome.ALLOW, "a shared resource, readable in patient context")
    if target.patient is None:
        if target.interaction is Interaction.CREATE:
            return Decision(Outcome.FORBID, "the new resource is in no patient's compartment")
        return Decision(Outcome.ALLOW, "confined to the patient in context", within=patient)
    if target.patient == patient:
        return Decision(Outcome.ALLOW, "within the patient in context")
    return _record_refusal(target, "another patient's record")


_RANK = {Outcome.ALLOW: 2, Outcome.HIDE: 1, Outcome.FORBID: 0}


def _best(decisions: Iterable[Decision]) -> Decision | None:
    """The widest of several allowances: unconfined beats confined; else the least refusal."""
    best: Decision | None = None
    for decision in decisions:
        if best is None or (_RANK[decision.outcome], decision.within is None) > (
            _RANK[best.outcome],
            best.within is None,
        ):
            best = decision
    return best


def decide(principal: Principal, target: Target) -> Decision:
    """Allow, forbid (403) or hide (404) ``target`` for ``principal``."""
    if principal.role == Role.RESEARCHER:
        if target.resource_type not in RESEARCH_READABLE:
            return Decision(Outcome.FORBID, "researchers get data through the research hub only")
        if target.named:
            return _record_refusal(target, "a patient's record, for the research hub only")
    granting = [s for s in principal.scopes.resources if _grants(s, target)]
    if writes_care_relationship(target):
        # A care relationship opens a patient's whole record to a practitioner: a patient's
        # own scopes never make, move or end one (nor does their app).
        granting = [s for s in granting if principal.own_patient(s.context) is None]
        if not granting:
            return Decision(
                Outcome.FORBID,
                f"a patient's own scopes do not {target.interaction} {target.resource_type}"
                f" records: {CARE_WRITTEN_BY}",
            )
    if not granting:
        kind = target.resource_type or "every type"
        return Decision(
            Outcome.FORBID, f"the token's scopes do not grant {target.interaction} on {kind}"
        )
    decisions = []
    for scope in granting:
        patient = principal.own_patient(scope.context)
        if patient is None:
            decisions.append(Decision(Outcome.ALLOW, f"granted by {scope}"))
        else:
            decisions.append(_confined(patient, target))
    best = _best(decisions)
    assert best is not None
    return best

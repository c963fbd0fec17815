"""Authorisation of each request: the SMART scope decision (``scopes.decide``), a
clinician's care relationships, break-glass, and the answer a refusal gets.

A hidden record is answered exactly as a missing one (``refusal``, or the route's own
``missing`` error), never with a 410 for a deleted one. docs/access.md states the rules.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any, NamedTuple
from urllib.parse import unquote

from starlette.requests import Request

from coffre.api.auth.scopes import (
    CARE_RECORDS,
    CARE_WRITTEN_BY,
    SEVERAL,
    Context,
    Decision,
    Interaction,
    Outcome,
    Principal,
    Role,
    Target,
    decide,
    writes_care_relationship,
)
from coffre.api.state import records_of
from coffre.exceptions import FhirError
from coffre.fhir._definitions_r4 import PATIENT_COMPARTMENT_PATHS
from coffre.search import Criterion
from coffre.search.naming import names_patients, record_patients
from coffre.service import RecordStore, Stored
from coffre.service.consent import is_research_choice
from coffre.service.stored import not_found
from coffre.service.writer import Writer

# A resource of a compartment type that names no patient: nobody's, so hidden from every
# principal confined to a patient rather than shared with all of them.
NOBODY = ""
# The patient of a record, when the principal's scopes make whose it is irrelevant.
SOMEONE = "\x00someone"
UNENFORCED = Decision(Outcome.ALLOW, "no token: COFFRE_AUTH is off and nothing is enforced")
BREAK_GLASS_HEADER = "x-break-glass"
MAX_REASON_CHARS = 500
Finder = Callable[[str, tuple[Criterion, ...]], list[Stored]]


def target_for(interaction: Interaction, resource: dict[str, Any], sent: bool = False) -> Target:
    """The target of ``interaction`` on a resource as stored, or as the client ``sent``
    it; a shared one, or a record of the compartment of several patients, carries the
    patients it names."""
    resource_type: str = resource["resourceType"]
    patients = record_patients(resource)
    if not _in_compartments(resource_type):
        return Target(interaction, resource_type, shared=True, named=patients, sent=sent)
    if len(patients) > 1:
        return Target(interaction, resource_type, patient=SEVERAL, named=patients, sent=sent)
    patient = patients[0] if patients else NOBODY
    return Target(interaction, resource_type, patient=patient, sent=sent)


def _patients(target: Target) -> tuple[str, ...]:
    """The patients whose records a target is judged as: its compartment's, or those a
    shared resource or a record of several patients names."""
    if target.named:
        return target.named
    if target.patient in (None, NOBODY, SOMEONE):
        return ()
    return (target.patient,)


def _in_compartments(resource_type: str) -> bool:
    return resource_type == "Patient" or resource_type in PATIENT_COMPARTMENT_PATHS


@lru_cache(maxsize=1024)
def _shared_comp(records: RecordStore, resource_type: str) -> bytes:
    return records.keys.shared_compartment(resource_type)


@lru_cache(maxsize=4096)
def _patient_comp(records: RecordStore, patient_id: str) -> bytes:
    return records.keys.patient_compartment(patient_id)


# The scope decision is pure: a token asks the same questions of request after request.
_decide = lru_cache(maxsize=1 << 16)(decide)


class _Profile(NamedTuple):
    """What a guard needs of a principal: the patient its records are confined to (and
    their compartment token); whether whose record it is matters to its decisions (not to
    a system's or an administrator's); whether it may be refused a record for naming a
    patient (``confinable``: not for its care relationships, which a clinician has)."""

    own: str | None
    own_comp: bytes | None
    whose_matters: bool
    confinable: bool


@lru_cache(maxsize=4096)
def _profile(records: RecordStore, principal: Principal) -> _Profile:
    """A principal's profile, worked out once per token."""
    own = principal.own_patient(Context.USER) or principal.patient or None
    whose_matters = principal.role in (Role.PATIENT, Role.CLINICIAN) or any(
        scope.context == Context.PATIENT for scope in principal.scopes.resources
    )
    confinable = principal.role in (Role.PATIENT, Role.RESEARCHER) or any(
        principal.own_patient(scope.context) is not None for scope in principal.scopes.resources
    )
    return _Profile(own, _patient_comp(records, own) if own else None, whose_matters, confinable)


_UNENFORCED_PROFILE = _Profile(None, None, False, False)


def principal_of(request: Request) -> Principal | None:
    """The principal the authentication middleware found, if the request had a token."""
    # The scope's state dict, as ``request.state`` would read it without its exceptions.
    principal: Principal | None = request.scope.get("state", {}).get("principal")
    return principal


def break_glass_reason(request: Request) -> str | None:
    """The reason a clinician states to break the glass (``X-Break-Glass``, UTF-8
    percent-encoded when it is not ASCII); None when the request does not break it.
    Only a clinician's request can: nobody else's access rests on care relationships."""
    raw = request.headers.get(BREAK_GLASS_HEADER)
    principal = principal_of(request)
    if raw is None or principal is None or principal.role != Role.CLINICIAN:
        return None
    reason = " ".join(unquote(raw).split())
    if not reason:
        raise FhirError(400, "required", f"{BREAK_GLASS_HEADER} needs a reason")
    if len(reason) > MAX_REASON_CHARS:
        raise FhirError(
            400, "too-long", f"a break-glass reason is {MAX_REASON_CHARS} chars at most"
        )
    return reason


def refusal(decision: Decision, resource_type: str, resource_id: str) -> FhirError | None:
    """The error a refused decision answers with, or None when it is allowed."""
    if decision.outcome is Outcome.FORBID:
        return FhirError(403, "forbidden", f"this token does not allow it: {decision.reason}")
    if decision.outcome is Outcome.HIDE:
        return not_found(resource_type, resource_id)
    return None


def _care_criteria(practitioner: str, patient: str, parameter: str) -> tuple[Criterion, ...]:
    return (Criterion("patient", (f"Patient/{patient}",)), Criterion(parameter, (practitioner,)))


@dataclass(frozen=True, slots=True)
class Reached:
    """A patient's record a clinician opened in a request, and whether by break-glass:
    what a first-access notice needs (``coffre.api.access.add_access_hook``)."""

    patient: str
    practitioner: str
    break_glass: str | None


class Guard:
    """One request's authorisation: who asks, whether they break the glass, and the care
    relationships already looked up (a search touches many records of few patients)."""

    def __init__(self, records: RecordStore, principal: Principal | None, reason: str | None):
        self.records = records
        self.principal = principal
        self.break_glass = reason
        self._related: dict[str, bool] = {}
        self.reached: dict[str, Reached] = {}
        profile = _profile(records, principal) if principal is not None else _UNENFORCED_PROFILE
        self._own, self._own_comp, self._whose_matters, self._confinable = profile
        # Whom a shared resource names matters to a confined principal, and to a clinician
        # (care relationships, the first-access notice): not to a system or administrator.
        self._names_matter = self._confinable or (
            principal is not None and principal.role == Role.CLINICIAN
        )

    @property
    def enforced(self) -> bool:
        return self.principal is not None

    @property
    def practitioner(self) -> str | None:
        """Whose care relationships limit this request: a clinician's fhirUser, unless
        they break the glass."""
        if self.principal is None or self.principal.role != Role.CLINICIAN or self.break_glass:
            return None
        return self.principal.fhir_user or ""

    # -- decisions --------------------------------------------------------------------------

    def decide(self, target: Target, find: Finder | None = None) -> Decision:
        """``scopes.decide``, then a clinician's care relationship with the patient, or
        with every patient a shared resource names."""
        if self.principal is None:
            return UNENFORCED
        decision = _decide(self.principal, target)
        if not decision.allowed or self.practitioner is None:
            return decision
        if writes_care_relationship(target):  # a clinician would open records to others
            message = f"a clinician does not {target.interaction} care relationships alone:"
            return Decision(Outcome.FORBID, f"{message} {CARE_WRITTEN_BY}")
        if all(self.related(patient, find) for patient in _patients(target)):
            return decision
        if target.chosen:
            return Decision(Outcome.FORBID, "no care relationship with this patient")
        return Decision(Outcome.HIDE, "no care relationship with this patient")

    def note(self, handed_out: Iterable[Stored]) -> None:
        """Remember whose records a clinician is handed, for the access hooks (the
        first-access notice): only what leaves, never what a search merely looked at."""
        principal = self.principal
        if principal is None or principal.role != Role.CLINICIAN:
            return
        for stored in handed_out:
            for patient in _patients(self.target(Interaction.READ, stored)):
                if patient not in self.reached:
                    practitioner = principal.fhir_user or ""
                    self.reached[patient] = Reached(patient, practitioner, self.break_glass)

    def check(
        self,
        target: Target,
        resource_id: str = "",
        missing: FhirError | None = None,
        find: Finder | None = None,
    ) -> Decision:
        """Raise the refusal of ``target`` (``missing`` for a hidden record when the route
        answers a missing one otherwise); else the decision."""
        decision = self.decide(target, find)
        error = refusal(decision, target.resource_type or "", resource_id)
        if error is not None:
            raise missing if missing is not None and decision.outcome is Outcome.HIDE else error
        return decision

    def check_type(
        self, interaction: Interaction, resource_type: str, search: tuple[tuple[str, str], ...] = ()
    ) -> Decision:
        """What the token alone says of ``interaction`` on a type, before any record is
        touched, so that a 403 never depends on whether a record exists."""
        shared = not _in_compartments(resource_type)
        return self.check(Target(interaction, resource_type, shared=shared, search=search))

    def unconfined(self, decision: Decision, resource_type: str | None) -> bool:
        """Whether a decision on a type (None: every type) reaches every record its
        scopes cover, with no compartment or care relationship to keep to; for a shared
        type whose records can name patients, nor any patient they name."""
        if decision.within is not None:
            return False
        if resource_type is not None and not _in_compartments(resource_type):
            if not names_patients(resource_type):
                return True
            if self._confinable:
                return False
        return self.practitioner is None

    def related(self, patient: str, find: Finder | None = None) -> bool:
        """Whether the clinician has a care relationship with ``patient``: an Encounter
        with them as participant, or a CareTeam with them as member, found by the blind
        search (``find``: the committed records, or a write transaction's view)."""
        known = self._related.get(patient)
        if known is not None:
            return known
        practitioner = self.principal.fhir_user if self.principal else None
        found = False
        if practitioner:
            look = find or self.records.find
            found = any(
                look(kind, _care_criteria(practitioner, patient, parameter))
                for kind, parameter in CARE_RECORDS
            )
        self._related[patient] = found
        return found

    # -- records ----------------------------------------------------------------------------

    def target(self, interaction: Interaction, stored: Stored) -> Target:
        """The target a stored version makes. A patient's compartment token says whether
        it is the principal's own patient's record, without opening its JSON; a record
        under its type's shared key (of nobody, or of several patients) or of a shared
        type (sealed in a patient's compartment when it names only them) is read for whom
        it names, when that matters to the principal; a deletion is judged by the version
        before it."""
        kind = stored.resource_type
        if not _in_compartments(kind):
            if not (self._names_matter and names_patients(kind)):
                return Target(interaction, kind, shared=True)
        elif stored.comp == _shared_comp(self.records, kind):  # nobody's, or several's
            if not self._names_matter:
                return Target(interaction, kind, patient=NOBODY)
        elif self._own_comp is not None and stored.comp == self._own_comp:
            assert self._own is not None
            return Target(interaction, kind, patient=self._own)
        elif not self._whose_matters:
            return Target(interaction, kind, patient=SOMEONE)
        if stored.deleted:
            return self._deleted_target(interaction, stored)
        return target_for(interaction, stored.resource())

    def _deleted_target(self, interaction: Interaction, stored: Stored) -> Target:
        if stored.version > 1:
            before = self.records.storage.version(stored.loc, stored.version - 1)
            if before is not None and not before.deleted:
                opened = self.records.open(stored.resource_type, stored.id, before)
                return target_for(interaction, opened.resource())
        return Target(interaction, stored.resource_type, patient=NOBODY)

    def check_stored(
        self,
        interaction: Interaction,
        stored: Stored,
        missing: FhirError,
        find: Finder | None = None,
    ) -> Decision:
        if self.principal is None:
            return UNENFORCED
        return self.check(self.target(interaction, stored), stored.id, missing, find)

    def admits(
        self,
        stored: Stored,
        interaction: Interaction = Interaction.SEARCH,
        search: tuple[tuple[str, str], ...] = (),
        find: Finder | None = None,
    ) -> bool:
        """Whether ``stored`` may be handed out. ``search``: the search parameters, which
        a granular scope is judged by; they count for the searched type only."""
        if self.principal is None:
            return True
        target = self.target(interaction, stored)
        if search:
            target = replace(target, search=search)
        return self.decide(target, find).allowed

    def search_filter(
        self, search: tuple[tuple[str, str], ...] = (), find: Finder | None = None
    ) -> Callable[[Stored], bool] | None:
        """What a search keeps of the resources it opens; None when nothing is enforced.
        ``search``: the search's parameters, which a granular scope is judged by: only
        for the search's own matches, which the criteria hold to the filter, never for
        what its includes, chains and ``_has`` bring in, even of the same type. ``find``:
        where care relationships are looked up (``related``)."""
        if self.principal is None:
            return None

        def admit(stored: Stored) -> bool:
            return self.admits(stored, Interaction.SEARCH, search, find)

        return admit


def guard_of(request: Request) -> Guard:
    """The request's guard, made once."""
    state = request.scope.setdefault("state", {})
    guard: Guard | None = state.get("guard")
    if guard is None:
        records = records_of(request)
        guard = state["guard"] = Guard(records, principal_of(request), break_glass_reason(request))
    return guard


def refuse_research_choice(kind: Interaction, what: Stored | dict[str, Any]) -> None:
    """A patient's research Consent is changed by ``$research-consent`` alone: a PUT,
    PATCH or DELETE of it would change her choice out of her sight, her answer still
    saying what she chose (a patched purpose no longer refuses research)."""
    if kind not in (Interaction.CREATE, Interaction.UPDATE, Interaction.DELETE):
        return
    resource_type, resource_id = (
        (what.resource_type, what.id)
        if isinstance(what, Stored)
        else (what.get("resourceType"), what.get("id"))
    )
    if isinstance(resource_id, str) and is_research_choice(str(resource_type), resource_id):
        raise FhirError(
            403,
            "forbidden",
            f"Consent/{resource_id} is a patient's choice about research: it changes through"
            " Patient/<id>/$research-consent only",
        )


class GuardGate:
    """A guard as the shared rules of writes check it (``coffre.service.interactions.Gate``):
    each REST write or Bundle entry as its own interaction, its care relationships looked up in the
    transaction's own view of the records."""

    def __init__(self, guard: Guard) -> None:
        self.guard = guard

    def check(
        self,
        writer: Writer,
        interaction: str,
        what: Stored | dict[str, Any] | str,
        missing: FhirError | None = None,
    ) -> bool:
        kind, guard = Interaction(interaction), self.guard
        if not guard.enforced:
            return True
        if isinstance(what, str):
            guard.check_type(kind, what)
            return True
        if isinstance(what, dict):
            guard.check(target_for(kind, what, sent=True), what.get("id", ""), find=writer.find)
            refuse_research_choice(kind, what)
            return True
        decision = guard.decide(guard.target(kind, what), writer.find)
        if decision.outcome is Outcome.HIDE:
            if missing is None:
                return False
            raise missing
        error = refusal(decision, what.resource_type, what.id)
        if error is not None:
            raise error
        refuse_research_choice(kind, what)  # after the 404 of a record it may not see
        if kind in (Interaction.READ, Interaction.VREAD):
            guard.note([what])
        return True

    def find(
        self, writer: Writer, resource_type: str, criteria: tuple[Criterion, ...]
    ) -> list[Stored]:
        guard = self.guard

        def admit(stored: Stored) -> bool:
            return guard.admits(stored, find=writer.find)

        visible = writer.find(resource_type, criteria, admit)
        guard.note(visible)
        return visible

"""SMART scopes as values, narrowing a request to what a client may get, and the access
decision: a matrix of exact outcomes, and properties over generated scope sets."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coffre.api.auth.scopes import (
    PERMISSIONS,
    SEVERAL,
    Context,
    Decision,
    Interaction,
    Outcome,
    Principal,
    ResourceScope,
    Role,
    ScopeError,
    ScopeSet,
    Target,
    decide,
    narrow,
    parse_scope,
    parse_scopes,
)

Do = Interaction


def scopes(text: str) -> ScopeSet:
    parsed, unknown = parse_scopes(text)
    assert not unknown
    return parsed


# -- parsing ------------------------------------------------------------------------------


def test_a_v2_scope_parses_into_its_parts() -> None:
    scope = parse_scope("patient/Observation.rs")
    assert scope == ResourceScope(Context.PATIENT, "Observation", frozenset("rs"))
    assert str(scope) == "patient/Observation.rs"


@pytest.mark.parametrize(
    ("v1", "v2"),
    [
        ("user/*.read", "user/*.rs"),
        ("patient/Observation.write", "patient/Observation.cud"),
        ("system/Patient.*", "system/Patient.cruds"),
    ],
)
def test_v1_scopes_read_as_their_v2_equivalents(v1: str, v2: str) -> None:
    assert parse_scope(v1) == parse_scope(v2)


def test_a_granular_scope_keeps_its_filter_sorted() -> None:
    scope = parse_scope(
        "patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory"
    )
    assert scope.parameters == (
        ("category", "http://terminology.hl7.org/CodeSystem/observation-category|laboratory"),
    )
    assert parse_scope(str(scope)) == scope


@pytest.mark.parametrize(
    "text",
    [
        "patient/Observation.sr",  # out of order
        "patient/Observation.rr",
        "patient/Observation.x",
        "patient/Observation.",
        "clinic/Observation.rs",
        "patient/Nonsense.rs",
        "patient/Observation.read?code=x",  # v1 takes no filter
        "patient/Observation.rs?",
        "patient/Observation.rs?code",
        "launch/patient",
    ],
)
def test_what_is_not_a_resource_scope_is_refused(text: str) -> None:
    with pytest.raises(ScopeError):
        parse_scope(text)


def test_a_scope_string_keeps_what_it_understands_and_names_the_rest() -> None:
    parsed, unknown = parse_scopes(
        "launch/patient openid fhirUser offline_access patient/*.rs launch made/up.rs"
    )
    assert parsed.others == {"launch/patient", "openid", "fhirUser", "offline_access"}
    assert parsed.resources == {parse_scope("patient/*.rs")}
    assert unknown == ["launch", "made/up.rs"]


# -- narrowing ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("requested", "allowed", "granted"),
    [
        ("system/*.rs", "system/Observation.rs", "system/Observation.rs"),
        ("system/Observation.cruds", "system/*.rs", "system/Observation.rs"),
        ("system/Observation.rs", "system/Patient.rs", ""),
        ("user/*.rs", "system/*.rs", ""),
        ("system/*.c", "system/*.rs", ""),
        (
            "system/Observation.rs",
            "system/Observation.rs?category=lab",
            "system/Observation.rs?category=lab",
        ),
        ("system/Observation.rs?category=a", "system/Observation.rs?category=b", ""),
        ("openid fhirUser patient/*.rs", "openid patient/*.cruds", "openid patient/*.rs"),
    ],
)
def test_narrowing_grants_what_both_sides_permit(
    requested: str, allowed: str, granted: str
) -> None:
    assert narrow(scopes(requested), scopes(allowed)) == scopes(granted)


# -- the decision matrix ------------------------------------------------------------------

ALICE = "alice"  # the patient in context
BOB = "bob"  # another patient

PATIENT_APP = Principal(
    "alice", "portal", scopes("patient/*.rs launch/patient"), Role.PATIENT, ALICE, "Patient/alice"
)
PATIENT_USER = Principal(
    "alice", "portal", scopes("user/*.cruds"), Role.PATIENT, None, "Patient/alice"
)
CLINICIAN = Principal("dr", "ehr", scopes("user/*.cruds"), Role.CLINICIAN, None, "Practitioner/dr")
OBSERVER = Principal(
    "dr", "ehr", scopes("user/Observation.rs"), Role.CLINICIAN, None, "Practitioner/dr"
)
SYSTEM = Principal("lab", "lab", scopes("system/*.rs"), Role.SYSTEM)
RESEARCHER = Principal("r", "hub", scopes("user/*.rs"), Role.RESEARCHER, None, "Practitioner/r")
NO_CONTEXT = Principal("x", "app", scopes("patient/*.rs"), Role.CLINICIAN, None, "Practitioner/x")

OWN_READ = Target(Do.READ, "Observation", patient=ALICE)
OTHERS_READ = Target(Do.READ, "Observation", patient=BOB)
OTHERS_UPDATE = Target(Do.UPDATE, "Observation", patient=BOB)
OWN_CREATE = Target(Do.CREATE, "Observation", patient=ALICE)
OTHERS_CREATE = Target(Do.CREATE, "Observation", patient=BOB)
SEARCH = Target(Do.SEARCH, "Observation")
SHARED_READ = Target(Do.READ, "Practitioner", shared=True)
# Shared types that hold what was put in them, a patient's included, without naming them.
BINARY_READ = Target(Do.READ, "Binary", shared=True)
BUNDLE_SEARCH = Target(Do.SEARCH, "Bundle", shared=True)
SHARED_UPDATE = Target(Do.UPDATE, "Practitioner", shared=True)
SYSTEM_HISTORY = Target(Do.HISTORY, None)
OWN_DELETE = Target(Do.DELETE, "Observation", patient=ALICE)
OWN_EVERYTHING = Target(Do.OPERATION, "Patient", patient=ALICE)
# Shared resources (outside the patient compartment) that name patients: a Task for alice...
NAMING_OWN = Target(Do.READ, "Task", shared=True, named=(ALICE,))
NAMING_OTHERS = Target(Do.READ, "Task", shared=True, named=(BOB,))
NAMING_BOTH = Target(Do.READ, "Task", shared=True, named=(ALICE, BOB))
# A record of the compartment of several patients: a Group of alice and bob.
OF_BOTH = Target(Do.READ, "Group", patient=SEVERAL, named=(ALICE, BOB))
OF_BOTH_CREATE = Target(Do.CREATE, "Group", patient=SEVERAL, named=(ALICE, BOB))
NAMING_OWN_UPDATE = Target(Do.UPDATE, "Task", shared=True, named=(ALICE,))
NAMING_OWN_CREATE = Target(Do.CREATE, "Task", shared=True, named=(ALICE,))

ALLOW, FORBID, HIDE = Outcome.ALLOW, Outcome.FORBID, Outcome.HIDE
MATRIX = [
    # principal, target, outcome, confined to
    (PATIENT_APP, OWN_READ, ALLOW, None),
    (PATIENT_APP, OTHERS_READ, HIDE, None),
    (PATIENT_APP, OTHERS_UPDATE, FORBID, None),  # rs grants no update: the token alone says so
    (PATIENT_APP, OWN_CREATE, FORBID, None),
    (PATIENT_APP, SEARCH, ALLOW, ALICE),
    (PATIENT_APP, SHARED_READ, ALLOW, None),
    (PATIENT_APP, SHARED_UPDATE, FORBID, None),
    (PATIENT_APP, SYSTEM_HISTORY, ALLOW, ALICE),
    (PATIENT_APP, OWN_EVERYTHING, ALLOW, None),
    (PATIENT_USER, OWN_READ, ALLOW, None),
    (PATIENT_USER, OTHERS_READ, HIDE, None),
    (PATIENT_USER, OTHERS_UPDATE, HIDE, None),
    (PATIENT_USER, OWN_CREATE, ALLOW, None),
    (PATIENT_USER, OTHERS_CREATE, FORBID, None),
    (PATIENT_USER, OWN_DELETE, ALLOW, None),
    (PATIENT_USER, SEARCH, ALLOW, ALICE),
    (PATIENT_USER, SHARED_UPDATE, FORBID, None),
    (CLINICIAN, OTHERS_READ, ALLOW, None),
    (CLINICIAN, OTHERS_UPDATE, ALLOW, None),
    (CLINICIAN, SEARCH, ALLOW, None),
    (CLINICIAN, SHARED_UPDATE, ALLOW, None),
    (OBSERVER, OTHERS_READ, ALLOW, None),
    (OBSERVER, OTHERS_UPDATE, FORBID, None),
    (OBSERVER, SHARED_READ, FORBID, None),
    (OBSERVER, SYSTEM_HISTORY, FORBID, None),
    (SYSTEM, OTHERS_READ, ALLOW, None),
    (SYSTEM, SEARCH, ALLOW, None),
    (SYSTEM, OWN_CREATE, FORBID, None),
    (SYSTEM, SYSTEM_HISTORY, ALLOW, None),
    (RESEARCHER, OWN_READ, FORBID, None),
    (RESEARCHER, SEARCH, FORBID, None),
    (RESEARCHER, SHARED_READ, ALLOW, None),
    (RESEARCHER, BINARY_READ, FORBID, None),
    (RESEARCHER, BUNDLE_SEARCH, FORBID, None),
    (CLINICIAN, BINARY_READ, ALLOW, None),
    (PATIENT_APP, NAMING_OWN, ALLOW, None),
    (PATIENT_APP, NAMING_OTHERS, HIDE, None),
    (PATIENT_APP, NAMING_BOTH, HIDE, None),
    (PATIENT_USER, NAMING_OWN_UPDATE, FORBID, None),  # shared: patients do not write it
    (PATIENT_USER, NAMING_OWN_CREATE, FORBID, None),
    (CLINICIAN, NAMING_BOTH, ALLOW, None),  # the guard then checks each care relationship
    (SYSTEM, NAMING_BOTH, ALLOW, None),
    (RESEARCHER, NAMING_OWN, FORBID, None),  # a Task: not a type of the directory
    (RESEARCHER, NAMING_OTHERS, FORBID, None),
    (RESEARCHER, Target(Do.READ, "Library", shared=True), FORBID, None),  # attachments
    (RESEARCHER, NAMING_OWN_CREATE, FORBID, None),
    (PATIENT_APP, OF_BOTH, HIDE, None),
    (PATIENT_USER, OF_BOTH_CREATE, FORBID, None),
    (CLINICIAN, OF_BOTH, ALLOW, None),  # the guard then checks each care relationship
    (SYSTEM, OF_BOTH, ALLOW, None),
    (RESEARCHER, OF_BOTH, FORBID, None),  # as any record of the compartment
    (NO_CONTEXT, OWN_READ, FORBID, None),
    (NO_CONTEXT, SEARCH, FORBID, None),
]


@pytest.mark.parametrize(("principal", "target", "outcome", "within"), MATRIX)
def test_the_decision_matrix(
    principal: Principal, target: Target, outcome: Outcome, within: str | None
) -> None:
    decision = decide(principal, target)
    assert (decision.outcome, decision.within) == (outcome, within), decision.reason


def test_a_granular_scope_grants_only_a_search_carrying_its_filter() -> None:
    lab = "http://terminology.hl7.org/CodeSystem/observation-category|laboratory"
    principal = Principal(
        "lab", "lab", scopes(f"system/Observation.rs?category={lab}"), Role.SYSTEM
    )
    filtered = Target(Do.SEARCH, "Observation", search=(("category", lab), ("date", "ge2020")))
    assert decide(principal, filtered).outcome is ALLOW
    broader = Target(Do.SEARCH, "Observation", search=(("category", lab + ",vital-signs"),))
    assert decide(principal, broader).outcome is FORBID
    assert decide(principal, Target(Do.SEARCH, "Observation")).outcome is FORBID
    assert decide(principal, OTHERS_READ).outcome is FORBID


def test_a_target_is_one_patients_or_shared_not_both() -> None:
    with pytest.raises(ValueError):
        Target(Do.READ, "Observation", patient=ALICE, shared=True)
    with pytest.raises(ValueError):
        Target(Do.READ, "Observation", patient=ALICE, named=(ALICE,))
    with pytest.raises(ValueError):
        Target(Do.READ, "Group", patient=SEVERAL, shared=True, named=(ALICE, BOB))


def test_hide_and_forbid_are_404_and_403() -> None:
    assert (Outcome.HIDE.value, Outcome.FORBID.value) == (404, 403)
    assert not Decision(Outcome.HIDE, "").allowed


# -- properties ---------------------------------------------------------------------------

TYPES = ["Observation", "Patient", "Practitioner", "*"]
resource_scopes = st.builds(
    ResourceScope,
    st.sampled_from(list(Context)),
    st.sampled_from(TYPES),
    st.sets(st.sampled_from(PERMISSIONS), min_size=1).map(frozenset),
    st.sampled_from([(), (("category", "laboratory"),)]),
)
scope_sets = st.frozensets(resource_scopes, max_size=4).map(ScopeSet)
targets = st.builds(
    Target,
    st.sampled_from(list(Interaction)),
    st.sampled_from([*TYPES[:3], None]),
    st.sampled_from([None, ALICE, BOB]),
    st.just(False),
    st.sampled_from([(), (("category", "laboratory"),)]),
) | st.builds(
    Target,
    st.sampled_from(list(Interaction)),
    st.sampled_from(TYPES[:3]),
    st.none(),
    st.just(True),
    st.just(()),
    st.sampled_from([(), (ALICE,), (BOB,), (ALICE, BOB)]),
)
principals = st.builds(
    Principal,
    st.just("s"),
    st.just("c"),
    scope_sets,
    st.sampled_from([*Role, None]),
    st.sampled_from([None, ALICE]),
    st.sampled_from([None, "Patient/alice", "Practitioner/dr"]),
)


def _with(principal: Principal, scope_set: ScopeSet) -> Principal:
    return Principal(
        principal.subject,
        principal.client_id,
        scope_set,
        principal.role,
        principal.patient,
        principal.fhir_user,
    )


@given(resource_scopes)
def test_a_scope_prints_as_it_parses(scope: ResourceScope) -> None:
    assert parse_scope(str(scope)) == scope


@given(principals, targets)
def test_a_scope_set_allows_nothing_no_single_scope_of_it_allows(
    principal: Principal, target: Target
) -> None:
    if decide(principal, target).allowed:
        assert any(
            decide(_with(principal, ScopeSet(frozenset({s}))), target).allowed
            for s in principal.scopes.resources
        )


@given(principals, targets, scope_sets)
def test_more_scopes_never_take_an_allowance_away(
    principal: Principal, target: Target, more: ScopeSet
) -> None:
    before = decide(principal, target)
    after = decide(_with(principal, principal.scopes | more), target)
    if before.allowed:
        assert after.allowed
        assert before.within is None or after.within in (None, before.within)


@given(principals, targets)
def test_no_scope_allows_nothing(principal: Principal, target: Target) -> None:
    assert not decide(_with(principal, ScopeSet()), target).allowed


@given(principals, targets)
def test_hiding_happens_only_for_another_patients_record(
    principal: Principal, target: Target
) -> None:
    if decide(principal, target).outcome is HIDE:
        own = (principal.patient, (principal.fhir_user or "").partition("/")[2])
        if target.named:  # a shared resource naming someone else, or any patient (research)
            assert principal.role == Role.RESEARCHER or set(target.named) - set(own)
        else:
            assert target.patient is not None and target.patient not in own


@given(scope_sets, scope_sets, principals, targets)
def test_what_is_granted_is_allowed_by_both_the_request_and_the_client(
    requested: ScopeSet, allowed: ScopeSet, principal: Principal, target: Target
) -> None:
    if decide(_with(principal, narrow(requested, allowed)), target).allowed:
        assert decide(_with(principal, requested), target).allowed
        assert decide(_with(principal, allowed), target).allowed


@given(principals, targets)
def test_patient_scopes_never_reach_another_patient(principal: Principal, target: Target) -> None:
    decision = decide(_with(principal, principal.scopes.in_context(Context.PATIENT)), target)
    if decision.allowed:
        assert principal.patient
        assert target.patient in (None, principal.patient)
        assert set(target.named) <= {principal.patient}
        assert target.one_resource or decision.within == principal.patient


@pytest.mark.parametrize(
    ("principal", "actor"),
    [
        (CLINICIAN, "Practitioner/dr (clinician, via client ehr)"),
        (SYSTEM, "lab (system, via client lab)"),
        (Principal("nurse-17", "", ScopeSet()), "nurse-17"),
        (Principal("", "app", ScopeSet()), "app (via client app)"),
    ],
)
def test_the_audit_log_names_the_principal(principal: Principal, actor: str) -> None:
    assert principal.actor == actor


ISSUERS_APP = Principal("alice-idp", "app", scopes("patient/Appointment.cu"), None, ALICE)


@pytest.mark.parametrize(
    ("principal", "patient"),
    [
        (PATIENT_APP, ALICE),
        (PATIENT_USER, ALICE),
        (ISSUERS_APP, ALICE),  # no role, confined by its scopes: a patient's app
        (Principal("x", "app", scopes("user/*.cruds"), None, None, "Patient/alice"), ALICE),
        (Principal("x", "app", scopes("patient/*.rs system/Appointment.u"), None, ALICE), None),
        (Principal("lab", "lab", scopes("system/*.cruds"), None), None),
        (CLINICIAN, None),
        (NO_CONTEXT, None),  # a clinician's patient scopes: confined, but a clinician acts
        (SYSTEM, None),
    ],
)
def test_a_principal_acts_as_the_patient_its_appointment_writes_are_confined_to(
    principal: Principal, patient: str | None
) -> None:
    assert principal.acting_patient() == patient

"""What routes will call to enforce scopes: the target a resource makes, and the
decision turned into the answer the client gets.

Not wired into the routes yet (docs/access.md). A hidden record must be answered exactly
as a missing one, so ``refusal`` builds the very 404 the read path gives for an id that
does not exist, never a 410 for a deleted one.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from coffre.api.auth.scopes import Decision, Interaction, Outcome, Principal, Target, decide
from coffre.exceptions import FhirError
from coffre.fhir._definitions_r4 import PATIENT_COMPARTMENT_PATHS
from coffre.fhir.compartment import patient_of

# A resource of a compartment type that names no patient: nobody's, so hidden from every
# principal confined to a patient rather than shared with all of them.
NOBODY = ""
UNENFORCED = Decision(Outcome.ALLOW, "no token: COFFRE_AUTH is off and nothing is enforced")


def target_for(interaction: Interaction, resource: dict[str, Any]) -> Target:
    """The target of ``interaction`` on a resource as stored (or, for a create, as sent)."""
    resource_type: str = resource["resourceType"]
    patient = patient_of(resource)
    if patient is not None:
        return Target(interaction, resource_type, patient=patient)
    if resource_type == "Patient" or resource_type in PATIENT_COMPARTMENT_PATHS:
        return Target(interaction, resource_type, patient=NOBODY)
    return Target(interaction, resource_type, shared=True)


def principal_of(request: Request) -> Principal | None:
    """The principal the authentication middleware found, if the request had a token."""
    principal: Principal | None = getattr(request.state, "principal", None)
    return principal


def refusal(decision: Decision, resource_type: str, resource_id: str) -> FhirError | None:
    """The error a refused decision answers with, or None when it is allowed."""
    if decision.outcome is Outcome.FORBID:
        return FhirError(403, "forbidden", f"this token does not allow it: {decision.reason}")
    if decision.outcome is Outcome.HIDE:
        return FhirError(404, "not-found", f"{resource_type}/{resource_id} does not exist")
    return None


def check(request: Request, target: Target, resource_id: str = "") -> Decision:
    """Raise the refusal of ``target`` for the request's principal; else the decision,
    whose ``within`` a search or history must keep to."""
    principal = principal_of(request)
    if principal is None:
        return UNENFORCED
    decision = decide(principal, target)
    error = refusal(decision, target.resource_type or "", resource_id)
    if error is not None:
        raise error
    return decision

"""``Patient/{id}/$research-consent``: a patient's refusal of research use in one call.

GET answers the patient's research Consent, or, when none was ever recorded, the
default: the same Consent unsaved (no id), ``inactive``, no refusal in force.
PUT (or POST, as FHIR invokes operations) takes the operation's input the FHIR way, a
Parameters resource with one boolean, ``optOut``, and answers the Consent as stored:
``active`` for a refusal, ``inactive`` once withdrawn. docs/access.md has the details.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from coffre.api.access import access_of, announce
from coffre.api.auth.enforce import guard_of, principal_of
from coffre.api.auth.scopes import Interaction, Role, Target
from coffre.api.negotiation import (
    check_format,
    query_pairs,
    read_json,
    refuse_parameters,
    write_conditions,
)
from coffre.api.responses import fhir_response, resource_response
from coffre.api.state import committer_of, records_of
from coffre.exceptions import FhirError
from coffre.fhir.parameters import operation_parameters
from coffre.fhir.validation import validate
from coffre.ledger.leaf import LeafKind
from coffre.service.consent import consent_resource, current_consent, record_research_consent
from coffre.service.stored import not_found

OPT_OUT = "optOut"
_SHAPE = '{"resourceType": "Parameters", "parameter": [{"name": "optOut", "valueBoolean": true}]}'
_NOT_UNDERSTOOD = (
    "Coffre does not know these rules, which may change what was meant: send the choice"
    " without them"
)


def opt_out_of(body: Any) -> bool:
    """The ``optOut`` boolean of the operation's Parameters; 400 or 422 for anything
    else, rather than a choice read from a part of what was sent."""
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        raise FhirError(400, "invalid", f"send a Parameters resource: {_SHAPE}")
    validate(body)  # the R4 schema: unknown elements, wrong types, each named
    if "implicitRules" in body:
        raise FhirError(400, "not-supported", _NOT_UNDERSTOOD, "Parameters.implicitRules")
    given = operation_parameters(body, "$research-consent", {OPT_OUT: "valueBoolean"}, _SHAPE)
    if len(given) != 1:
        raise FhirError(400, "required", f"the Parameters need exactly one optOut: {_SHAPE}")
    value: bool = given[0][1]
    return value


def _authorise(request: Request, interaction: Interaction, patient_id: str) -> None:
    """What the token says of reading or writing the patient's Consent (403), then
    whether it reaches this patient (else the 404 of a missing patient)."""
    guard = guard_of(request)
    guard.check_type(interaction, "Consent")
    target = Target(interaction, "Consent", patient=patient_id)
    guard.check(target, patient_id, missing=not_found("Patient", patient_id))


WITHDRAWN_BY = frozenset({Role.PATIENT, Role.ADMIN, Role.SYSTEM})


def _check_withdrawal(request: Request) -> None:
    """A refusal of research is withdrawn by the patient, or by an administrator or a
    system acting on their written word; a clinician records one (she said so at the
    desk) but does not withdraw it, which would put her back in every project's data."""
    principal = principal_of(request)
    if principal is not None and principal.role not in WITHDRAWN_BY:
        raise FhirError(
            403,
            "forbidden",
            "a refusal of research is withdrawn by the patient (the portal, their app), or"
            " by an administrator on their written request; this token may record one",
        )


async def research_consent(request: Request) -> Response:
    check_format(request)
    patient_id: str = request.path_params["id"]
    committer = committer_of(request)
    refuse_parameters(query_pairs(request), "$research-consent", "no parameter in its URL")
    if request.method in ("GET", "HEAD"):
        _authorise(request, Interaction.READ, patient_id)
        records = records_of(request)
        patient = records.read("Patient", patient_id)
        stored = current_consent(records, patient_id)
        opened = [patient] if stored is None else [patient, stored]
        await committer.run(
            lambda writer: writer.log_access(LeafKind.READ, opened), access_of(request)
        )
        await announce(request)
        if stored is None:
            return fhir_response(consent_resource(patient_id, False, None))
        return resource_response(stored)
    _authorise(request, Interaction.UPDATE, patient_id)
    if_match, if_none_match = write_conditions(request)
    opt_out = opt_out_of(await read_json(request, request.app.state.max_body_bytes))
    if not opt_out:
        _check_withdrawal(request)
    outcome = await committer.run(
        lambda writer: record_research_consent(
            writer, patient_id, opt_out, if_match, if_none_match
        ),
        access_of(request),
    )
    return resource_response(outcome.stored, 201 if outcome.created else 200)

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
from coffre.api.auth.enforce import guard_of, not_found
from coffre.api.auth.scopes import Interaction, Target
from coffre.api.negotiation import check_format, read_json
from coffre.api.responses import fhir_response, resource_response
from coffre.exceptions import FhirError
from coffre.ledger.leaf import LeafKind
from coffre.service import RecordStore
from coffre.service.commits import GroupCommitter
from coffre.service.consent import consent_resource, current_consent, record_research_consent

OPT_OUT = "optOut"


def opt_out_of(body: Any) -> bool:
    """The ``optOut`` boolean of the operation's Parameters; 400 for anything else."""
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        raise FhirError(
            400,
            "invalid",
            'send a Parameters resource: {"resourceType": "Parameters", "parameter":'
            ' [{"name": "optOut", "valueBoolean": true}]}',
        )
    parameters = body.get("parameter", [])
    if not isinstance(parameters, list) or not all(isinstance(p, dict) for p in parameters):
        raise FhirError(400, "structure", "Parameters.parameter must be a list of objects")
    values = [p.get("valueBoolean") for p in parameters if p.get("name") == OPT_OUT]
    if len(values) != 1 or not isinstance(values[0], bool):
        raise FhirError(400, "required", "the Parameters need exactly one optOut, a valueBoolean")
    return values[0]


def _authorise(request: Request, interaction: Interaction, patient_id: str) -> None:
    """What the token says of reading or writing the patient's Consent (403), then
    whether it reaches this patient (else the 404 of a missing patient)."""
    guard = guard_of(request)
    guard.check_type(interaction, "Consent")
    target = Target(interaction, "Consent", patient=patient_id)
    guard.check(target, patient_id, missing=not_found("Patient", patient_id))


def _records(request: Request) -> RecordStore:
    records: RecordStore = request.app.state.records
    return records


async def research_consent(request: Request) -> Response:
    check_format(request)
    patient_id: str = request.path_params["id"]
    committer: GroupCommitter = request.app.state.committer
    if request.method == "GET":
        _authorise(request, Interaction.READ, patient_id)
        records = _records(request)
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
    opt_out = opt_out_of(await read_json(request, request.app.state.max_body_bytes))
    outcome = await committer.run(
        lambda writer: record_research_consent(writer, patient_id, opt_out), access_of(request)
    )
    return resource_response(outcome.stored, 201 if outcome.created else 200)

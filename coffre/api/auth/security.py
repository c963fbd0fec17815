"""What the CapabilityStatement says of authorisation when tokens are required: where
SMART clients find the OAuth endpoints (fhirclient looks only here). Without it, as with
``COFFRE_AUTH=off``, clients such as fhirclient take the server for an open one."""

from __future__ import annotations

from typing import Any

OAUTH_URIS = "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"
SERVICES = "http://terminology.hl7.org/CodeSystem/restful-security-service"


def smart_security(authorize: str, token: str) -> dict[str, Any]:
    """``rest.security``: the oauth-uris extension, the SMART-on-FHIR service, and CORS
    for the registered apps' origins (``coffre.api.auth.cors``)."""
    return {
        "cors": True,
        "extension": [
            {
                "url": OAUTH_URIS,
                "extension": [
                    {"url": "authorize", "valueUri": authorize},
                    {"url": "token", "valueUri": token},
                ],
            }
        ],
        "service": [
            {
                "coding": [{"system": SERVICES, "code": "SMART-on-FHIR"}],
                "text": "OAuth2 using SMART-on-FHIR profile (see http://docs.smarthealthit.org)",
            }
        ],
        "description": "Every request but /metadata needs a SMART bearer token.",
    }

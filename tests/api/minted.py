"""Access tokens as Coffre's authorisation server would issue them, minted directly with
the app's signing key: for tests of what a role may do, without the OAuth dance."""

from __future__ import annotations

from coffre.api.auth import Authority

ORIGIN = "http://testserver"


def bearer(authority: Authority, role: str, fhir_user: str, scope: str) -> dict[str, str]:
    """The Authorization header of a token for ``fhir_user`` in ``role``, via client ehr."""
    claims = {
        "iss": f"{ORIGIN}/auth",
        "aud": f"{ORIGIN}/fhir",
        "sub": fhir_user,
        "client_id": "ehr",
        "role": role,
        "fhirUser": fhir_user,
        "scope": scope,
    }
    return {"Authorization": f"Bearer {authority.signer.sign(claims, 300)}"}

"""The access-token signing key of a vault, derived on the sovereign side from its root."""

from __future__ import annotations

from coffre.seal.tokenkey import access_token_jwk
from coffre.service.records import RecordStore


def access_token_key(records: RecordStore) -> dict[str, str]:
    """The private JWK (ES256) the gateway signs access tokens with; every gateway process
    of the vault derives the same one from the root secret in the key custody, through
    the custodian its records already hold (a token's session is not opened twice)."""
    return access_token_jwk(records.custodian.root_secret())

"""The access-token signing key of a vault, derived on the sovereign side from its root."""

from __future__ import annotations

from coffre.custody import open_custody
from coffre.seal.tokenkey import access_token_jwk
from coffre.service.vault import Vault


def access_token_key(vault: Vault) -> dict[str, str]:
    """The private JWK (ES256) the gateway signs access tokens with; every gateway process
    of the vault derives the same one from the root secret in the key custody."""
    return access_token_jwk(open_custody(vault.keyring).root_secret())

"""The token signing keys of a vault, on the sovereign side: the access-token key derived
from the root, the ID-token key kept in the storage sealed under the root."""

from __future__ import annotations

import base64
import binascii

from coffre.exceptions import SealError, StorageError
from coffre.seal.tokenkey import (
    access_token_jwk,
    new_id_token_key,
    open_id_token_key,
    seal_id_token_key,
)
from coffre.service.records import RecordStore

ID_TOKEN_KEY = "id token key"
"""The name under which the storage's coffre_meta keeps the sealed ID-token key."""


def access_token_key(records: RecordStore) -> dict[str, str]:
    """The private JWK (ES256) the gateway signs access tokens with; every gateway process
    of the vault derives the same one from the root secret in the key custody, through
    the custodian its records already hold (a token's session is not opened twice)."""
    return access_token_jwk(records.custodian.root_secret())


def id_token_key(records: RecordStore) -> bytes:
    """The RSA private key (PEM) the gateway signs ID tokens with (RS256). The first
    gateway process of the vault makes it and stores it sealed under the root; every other
    one, on this machine or another, and after any restart, opens that one (of two
    starting together, the first one's is kept). The host sees only its ciphertext."""
    root = records.custodian.root_secret()
    stored = records.storage.meta(ID_TOKEN_KEY)
    if stored is None:
        made = base64.b64encode(seal_id_token_key(root, new_id_token_key())).decode()
        with records.storage.transaction() as txn:
            stored = txn.put_meta(ID_TOKEN_KEY, made)
    try:
        return open_id_token_key(root, base64.b64decode(stored, validate=True))
    except (SealError, binascii.Error):
        raise StorageError(
            f"the ID-token key the storage holds (coffre_meta '{ID_TOKEN_KEY}') does not"
            " open under this vault's root: the host altered it (without that row, the next"
            " start makes a new key)"
        ) from None

"""A vault's ID-token key: made by the first gateway process, kept in the storage sealed
under the root, the same for every later process (after a restart, on another machine),
never in the storage in plaintext, and refused once the host altered it. On both storages,
with the keyring file and a PKCS#11 token."""

from __future__ import annotations

import base64

import pytest
from joserfc.jwk import RSAKey
from pg import HostDatabase, stored_bytes

from coffre.exceptions import StorageError
from coffre.service import Vault
from coffre.service.tokenkey import ID_TOKEN_KEY, id_token_key


def test_every_process_of_the_vault_signs_id_tokens_with_the_key_the_first_made(
    vault: Vault,
) -> None:
    first = vault.open()
    made = id_token_key(first)
    first.storage.close()  # the gateway restarts, or another one starts
    assert id_token_key(vault.open()) == made
    assert RSAKey.import_key(made).is_private


def test_the_storage_holds_the_id_token_key_sealed_only(vault: Vault) -> None:
    records = vault.open()
    pem = id_token_key(records)
    records.storage.close()
    key = RSAKey.import_key(pem)
    der = key.as_der(private=True)
    held = stored_bytes(vault)
    for form in (pem, der):  # as made, and every encoding a storage might write it in
        assert form not in held
        assert base64.b64encode(form) not in held
    private = key.as_dict(private=True)
    for name in ("d", "p", "q"):
        assert private[name].encode() not in held
        assert base64.urlsafe_b64decode(private[name] + "==") not in held
    with HostDatabase.of(vault) as host:
        (stored,) = host.execute(
            "SELECT value FROM coffre_meta WHERE key = ?", (ID_TOKEN_KEY,)
        ).fetchone()
    assert b"PRIVATE KEY" not in base64.b64decode(stored)


def test_an_id_token_key_the_host_altered_is_refused(vault: Vault) -> None:
    records = vault.open()
    id_token_key(records)
    with HostDatabase.of(vault) as host:
        (stored,) = host.execute(
            "SELECT value FROM coffre_meta WHERE key = ?", (ID_TOKEN_KEY,)
        ).fetchone()
        altered = bytearray(base64.b64decode(stored))
        altered[-1] ^= 1
        host.execute(
            "UPDATE coffre_meta SET value = ? WHERE key = ?",
            (base64.b64encode(altered).decode(), ID_TOKEN_KEY),
        )
    with pytest.raises(StorageError, match="the host altered it"):
        id_token_key(records)

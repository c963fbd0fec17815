"""Configuration, not code, chooses the custody: ``COFFRE_CUSTODY`` is keyring or pkcs11."""

from __future__ import annotations

from contextlib import closing
from pathlib import Path

from coffre import config
from coffre.custody.base import KeyCustodian, NewKeys
from coffre.custody.keyring import KeyringCustodian, NewKeyring
from coffre.custody.pkcs11 import NewTokenKeys, Pkcs11Custodian, pin_from_settings
from coffre.exceptions import CustodyError

KEYRING = "keyring"
PKCS11 = "pkcs11"


def chosen_custody() -> str:
    """``keyring`` or ``pkcs11``, as the setting names it."""
    chosen = config.CUSTODY.value()
    if chosen not in (KEYRING, PKCS11):
        raise CustodyError(f"{config.CUSTODY.env} is '{chosen}': use {KEYRING} or {PKCS11}")
    return chosen


def new_keys(keyring: Path) -> NewKeys:
    """A new vault's keys, not made yet: a keyring file at ``keyring``, or objects in the
    token; refused at once where there are keys already, or the token cannot be used."""
    if chosen_custody() == PKCS11:
        return NewTokenKeys(
            config.PKCS11_MODULE.value(), config.PKCS11_TOKEN.value(), pin_from_settings()
        )
    return NewKeyring(keyring)


def create_custody(keyring: Path) -> None:
    """Make a new vault's keys: a keyring file at ``keyring``, or objects in the token."""
    with closing(new_keys(keyring)) as keys:
        keys.make()


def open_custody(keyring: Path) -> KeyCustodian:
    """The custodian of an existing vault's keys."""
    if chosen_custody() == PKCS11:
        return Pkcs11Custodian.from_settings()
    return KeyringCustodian(keyring)

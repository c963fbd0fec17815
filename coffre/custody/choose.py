"""Configuration, not code, chooses the custody: ``COFFRE_CUSTODY`` is keyring or pkcs11."""

from __future__ import annotations

from pathlib import Path

from coffre import config
from coffre.custody.base import KeyCustodian
from coffre.custody.keyring import KeyringCustodian
from coffre.custody.pkcs11 import Pkcs11Custodian, pin_from_settings
from coffre.exceptions import CustodyError

KEYRING = "keyring"
PKCS11 = "pkcs11"


def _custody() -> str:
    chosen = config.CUSTODY.value()
    if chosen not in (KEYRING, PKCS11):
        raise CustodyError(f"{config.CUSTODY.env} is '{chosen}': use {KEYRING} or {PKCS11}")
    return chosen


def create_custody(keyring: Path) -> None:
    """Make a new vault's keys: a keyring file at ``keyring``, or objects in the token."""
    if _custody() == PKCS11:
        Pkcs11Custodian.create(
            config.PKCS11_MODULE.value(), config.PKCS11_TOKEN.value(), pin_from_settings()
        )
    else:
        KeyringCustodian.create(keyring)


def open_custody(keyring: Path) -> KeyCustodian:
    """The custodian of an existing vault's keys."""
    if _custody() == PKCS11:
        return Pkcs11Custodian.from_settings()
    return KeyringCustodian(keyring)

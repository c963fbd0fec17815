"""Key custody: where the root secret and the key-encryption keys live.

The host never sees them. A custodian gives the root secret (from which purpose keys
are derived) and wraps and unwraps data keys; a keyring file is the embedded default, a
PKCS#11 token (an HSM) the production one, chosen by ``COFFRE_CUSTODY``.
"""

from coffre.custody.base import KeyCustodian, LogSigner, NewKeys, WrappedKey
from coffre.custody.choose import (
    KEYRING,
    PKCS11,
    chosen_custody,
    create_custody,
    new_keys,
    open_custody,
)
from coffre.custody.keyring import KeyringCustodian
from coffre.custody.memory import MemoryCustodian
from coffre.custody.pkcs11 import Pkcs11Custodian

__all__ = [
    "KEYRING",
    "PKCS11",
    "KeyCustodian",
    "KeyringCustodian",
    "LogSigner",
    "MemoryCustodian",
    "NewKeys",
    "Pkcs11Custodian",
    "WrappedKey",
    "chosen_custody",
    "create_custody",
    "new_keys",
    "open_custody",
]

"""Key custody: where the root secret and the key-encryption keys live.

The host never sees them. A custodian gives the root secret (from which purpose keys
are derived) and wraps and unwraps data keys; a keyring file is the embedded default.
"""

from coffre.custody.base import KeyCustodian, WrappedKey
from coffre.custody.keyring import KeyringCustodian
from coffre.custody.memory import MemoryCustodian

__all__ = ["KeyCustodian", "KeyringCustodian", "MemoryCustodian", "WrappedKey"]

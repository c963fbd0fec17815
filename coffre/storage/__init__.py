"""Storage of opaque bytes on the untrusted host.

Storage knows nothing of FHIR, keys or sealing: it keeps versions of sealed records under
opaque locations, blind index tokens, and wrapped data keys.
"""

from coffre.storage.base import HistoryQuery, SealedVersion, Storage, StorageTxn
from coffre.storage.sqlite import SqliteStorage

__all__ = ["HistoryQuery", "SealedVersion", "SqliteStorage", "Storage", "StorageTxn"]

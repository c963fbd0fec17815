"""The write path and the read path, composed from seal, custody, storage and search."""

from coffre.service.records import Outcome, RecordStore, Stored
from coffre.service.vault import Vault

__all__ = ["Outcome", "RecordStore", "Stored", "Vault"]

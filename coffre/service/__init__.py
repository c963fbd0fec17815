"""The write path and the read path, composed from seal, custody, storage and search."""

from coffre.service.records import RecordStore
from coffre.service.stored import Outcome, Stored
from coffre.service.vault import Vault

__all__ = ["Outcome", "RecordStore", "Stored", "Vault"]

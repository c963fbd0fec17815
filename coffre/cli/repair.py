"""``coffre repair-index``: the search index rebuilt from the index tokens the log vouches
for, once the host damaged it."""

from __future__ import annotations

import time
from pathlib import Path

from coffre import config
from coffre.cli.access import KeyringOption, VaultOption
from coffre.cli.output import console, fail
from coffre.exceptions import CoffreError, SealError
from coffre.service import Vault


def repair_index(
    vault: VaultOption = Path(config.VAULT.default),
    keyring: KeyringOption = None,
) -> None:
    """Rebuild the search index from the records' index tokens (after the host damaged it).

    Searches are refused while it fails its check.
    Running servers take it back within a second of the repair.
    See docs/operations.md (Repairing the search index)."""
    try:
        records = Vault.at(vault, keyring).open()
    except CoffreError as error:
        raise fail(error) from None
    try:
        started = time.monotonic()
        records.storage.rebuild_index()
        seconds = time.monotonic() - started
        records.index_check.check()
    except SealError:
        raise fail(
            "the search index was rebuilt, but the storage does not hold the index tokens"
            " the log commits to (the host changed or deleted them): restore the storage"
            " from a backup"
        ) from None
    except CoffreError as error:
        raise fail(error) from None
    finally:
        records.storage.close()
    console.print(
        f"the search index was rebuilt in {seconds:.1f} s and passes its check: running"
        " servers take it back within a second"
    )

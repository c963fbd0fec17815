"""The keyring file: created private, refused when exposed or damaged."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from coffre.custody import KeyringCustodian, WrappedKey
from coffre.exceptions import CustodyError, SealError, VaultStateError
from coffre.seal import random_key


def test_a_new_keyring_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "keyring.json"
    KeyringCustodian.create(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_keyring_is_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "keyring.json"
    KeyringCustodian.create(path)
    before = path.read_bytes()
    with pytest.raises(VaultStateError):
        KeyringCustodian.create(path)
    assert path.read_bytes() == before


def test_data_keys_wrapped_today_unwrap_after_a_reload(tmp_path: Path) -> None:
    path = tmp_path / "keyring.json"
    KeyringCustodian.create(path)
    data_key = random_key()
    wrapped = KeyringCustodian(path).wrap(data_key)
    reloaded = KeyringCustodian(path)
    assert reloaded.unwrap(wrapped) == data_key
    assert reloaded.root_secret() == KeyringCustodian(path).root_secret()


def test_a_key_wrapped_by_an_unknown_kek_does_not_unwrap(tmp_path: Path) -> None:
    path = tmp_path / "keyring.json"
    KeyringCustodian.create(path)
    wrapped = KeyringCustodian(path).wrap(random_key())
    with pytest.raises(SealError):
        KeyringCustodian(path).unwrap(WrappedKey("kek-9", wrapped.wrapped))


def test_a_keyring_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "keyring.json"
    KeyringCustodian.create(path)
    path.chmod(0o644)
    with pytest.raises(CustodyError, match="chmod 600"):
        KeyringCustodian(path)


@pytest.mark.parametrize(
    "content",
    [
        b"not json",
        json.dumps({"format": "other"}).encode(),
        json.dumps({"format": "coffre-keyring/1"}).encode(),
    ],
)
def test_a_damaged_keyring_is_refused_without_quoting_it(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "keyring.json"
    path.write_bytes(content)
    path.chmod(0o600)
    with pytest.raises(CustodyError) as caught:
        KeyringCustodian(path)
    assert "not json" not in str(caught.value)


def test_a_missing_keyring_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(VaultStateError, match="coffre init"):
        KeyringCustodian(tmp_path / "absent.json")


def test_a_keyring_that_cannot_be_rewritten_is_named_and_left_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rotation on a keyring it could not write was a PermissionError traceback."""
    path = tmp_path / "keyring.json"
    KeyringCustodian.create(path)
    before = path.read_bytes()

    def refused(target: Path, text: str) -> None:
        raise PermissionError(13, "Permission denied", str(target))

    monkeypatch.setattr("coffre.custody.keyring.replace_file", refused)
    with pytest.raises(CustodyError, match=f"cannot write the keyring {path}: Permission denied"):
        KeyringCustodian(path).add_kek()
    assert path.read_bytes() == before

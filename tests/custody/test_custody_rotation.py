"""Key-encryption keys added and retired in every custody, and taken up by the other
processes (here: other custodians of the same keyring or token) without a restart."""

from __future__ import annotations

import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from coffre.custody import (
    KeyCustodian,
    KeyringCustodian,
    MemoryCustodian,
    create_custody,
    open_custody,
)
from coffre.custody.memory import next_kek_id
from coffre.exceptions import CustodyError, SealError
from coffre.seal import random_key

Opener = Callable[[], KeyCustodian]


@pytest.fixture(params=["keyring", "pkcs11"])
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Opener:
    """Opens a custodian of one vault's keys, as each gateway process does."""
    if request.param == "pkcs11":
        request.getfixturevalue("pkcs11_token")
    path = tmp_path / "keyring.json"
    create_custody(path)
    return lambda: open_custody(path)


def test_a_new_kek_wraps_from_now_on_and_the_old_one_still_unwraps(opener: Opener) -> None:
    custodian = opener()
    data_key = random_key()
    before = custodian.wrap(data_key)
    old = custodian.active_kek()
    new = custodian.add_kek()
    after = custodian.wrap(data_key)
    assert (before.kek_id, after.kek_id) == (old, new) and old != new
    assert custodian.kek_ids() == [old, new]
    assert custodian.unwrap(before) == custodian.unwrap(after) == data_key


def test_another_process_takes_up_a_new_kek_at_its_next_wrap_or_unknown_id(
    opener: Opener,
) -> None:
    serving, rotating = opener(), opener()
    data_key = random_key()
    new = rotating.add_kek()
    rewrapped = rotating.wrap(data_key)
    assert serving.unwrap(rewrapped) == data_key  # an id it did not know: it looked again
    assert serving.wrap(data_key).kek_id == new


def test_a_retired_kek_is_gone_for_every_process(opener: Opener) -> None:
    serving, rotating = opener(), opener()
    old_wrapped = serving.wrap(random_key())
    old = rotating.active_kek()
    new = rotating.add_kek()
    rotating.retire_kek(old)
    assert rotating.kek_ids() == [new] and serving.kek_ids() == [new]
    with pytest.raises(SealError):
        opener().unwrap(old_wrapped)


def test_the_active_kek_or_an_unknown_one_cannot_be_retired(opener: Opener) -> None:
    custodian = opener()
    active = custodian.active_kek()
    with pytest.raises(CustodyError, match="is the active key-encryption key"):
        custodian.retire_kek(active)
    # Named as the listing names them: a token's are pkcs11:kek-N, which kek-N missed.
    with pytest.raises(CustodyError, match=f"holds no key-encryption key .*; it holds {active}"):
        custodian.retire_kek(active + "0")
    assert custodian.kek_ids() == [active]


def test_an_id_is_never_given_twice(opener: Opener) -> None:
    custodian = opener()
    first = custodian.active_kek()
    second = custodian.add_kek()
    custodian.retire_kek(first)
    third = custodian.add_kek()
    assert len({first, second, third}) == 3 and third.endswith("kek-3")


def test_the_rewritten_keyring_stays_private_and_keeps_the_root(tmp_path: Path) -> None:
    path = tmp_path / "keyring.json"
    KeyringCustodian.create(path)
    custodian = KeyringCustodian(path)
    custodian.add_kek()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left beside it
    assert KeyringCustodian(path).root_secret() == custodian.root_secret()


def test_a_keyring_swapped_for_another_vaults_is_refused(tmp_path: Path) -> None:
    path, other = tmp_path / "keyring.json", tmp_path / "other.json"
    KeyringCustodian.create(path)
    KeyringCustodian.create(other)
    serving = KeyringCustodian(path)
    other.replace(path)
    with pytest.raises(CustodyError, match="another vault"):
        serving.wrap(random_key())


def test_the_memory_custody_rotates_too() -> None:
    custodian = MemoryCustodian()
    wrapped = custodian.wrap(random_key())
    custodian.add_kek()
    custodian.retire_kek("kek-1")
    assert custodian.kek_ids() == ["kek-2"]
    with pytest.raises(SealError):
        custodian.unwrap(wrapped)


@pytest.mark.parametrize(
    ("held", "expected"),
    [([], "kek-1"), (["kek-1"], "kek-2"), (["kek-2", "kek-10"], "kek-11"), (["old"], "kek-1")],
)
def test_the_next_kek_id_is_one_past_the_highest(held: list[str], expected: str) -> None:
    assert next_kek_id(held) == expected

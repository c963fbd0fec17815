"""Keys in a PKCS#11 token, for real against SoftHSM2: made there, used there, never read out."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import httpx
import pkcs11
import pytest
from conftest import FHIR_JSON, RunningServer
from hypothesis import given, settings
from hypothesis import strategies as st
from pkcs11 import Attribute, ObjectClass
from pkcs11 import exceptions as p11
from softhsm import CREDENTIALS, PIN, SoftHsm
from starlette.testclient import TestClient
from typer.testing import CliRunner

from coffre import config
from coffre.cli.main import app
from coffre.custody import Pkcs11Custodian, WrappedKey, create_custody, open_custody
from coffre.custody.pkcs11 import PRIVATE_KEY, TRANSIENT_KEY, _token_of
from coffre.exceptions import CustodyError, SealError, VaultStateError
from coffre.ledger.leaf import Leaf, LeafKind
from coffre.seal import random_key, unwrap_key
from coffre.seal.signing import Ed25519Verifier
from coffre.service import RecordStore, Vault


def _custodian(token: str) -> Pkcs11Custodian:
    """A custodian of a token whose keys it has just made."""
    create_custody(Path("unused-keyring.json"))
    custodian = open_custody(Path("unused-keyring.json"))
    assert isinstance(custodian, Pkcs11Custodian)
    return custodian


def _raw_session(softhsm: SoftHsm, token: str) -> pkcs11.Session:
    """A session of the token's user, as anyone holding the PIN could open one."""
    found = pkcs11.lib(str(softhsm.module)).get_token(token_label=token)
    try:
        return found.open(rw=True, user_pin=PIN)
    except p11.UserAlreadyLoggedIn:
        return found.open(rw=True)


def test_a_data_key_round_trips_through_the_token_and_names_its_kek(pkcs11_token: str) -> None:
    custodian = _custodian(pkcs11_token)
    data_key = random_key()
    wrapped = custodian.wrap(data_key)
    assert wrapped.kek_id == "pkcs11:kek-1"
    assert len(wrapped.wrapped) == 40 and data_key not in wrapped.wrapped
    assert custodian.unwrap(wrapped) == data_key
    assert Pkcs11Custodian.from_settings().unwrap(wrapped) == data_key


def test_the_same_token_gives_the_same_root_secret_log_key_and_origin(pkcs11_token: str) -> None:
    first = _custodian(pkcs11_token)
    again = Pkcs11Custodian.from_settings()
    assert len(first.root_secret()) == 32
    assert again.root_secret() == first.root_secret()
    assert again.log_signer().public_key == first.log_signer().public_key
    assert again.log_origin() == first.log_origin()
    assert first.log_origin().startswith("coffre.vault/")


def test_the_log_key_signs_in_the_token_with_plain_ed25519(pkcs11_token: str) -> None:
    signer = _custodian(pkcs11_token).log_signer()
    signature = signer.sign(b"coffre.vault/x\n1\nroot\n")
    verifier = Ed25519Verifier(signer.public_key)
    assert verifier.verify(b"coffre.vault/x\n1\nroot\n", signature)
    assert not verifier.verify(b"coffre.vault/x\n2\nroot\n", signature)


@pytest.mark.parametrize(
    ("object_class", "label"),
    [
        (ObjectClass.SECRET_KEY, "coffre/kek-1"),
        (ObjectClass.SECRET_KEY, "coffre/root"),
        (ObjectClass.PRIVATE_KEY, "coffre/log"),
    ],
)
def test_no_key_of_the_vault_can_be_read_out_of_the_token(
    softhsm: SoftHsm, pkcs11_token: str, object_class: ObjectClass, label: str
) -> None:
    _custodian(pkcs11_token)
    session = _raw_session(softhsm, pkcs11_token)
    key = session.get_key(object_class, label=label)
    assert key[Attribute.SENSITIVE] is True
    assert key[Attribute.EXTRACTABLE] is False
    with pytest.raises(p11.AttributeSensitive):
        key[Attribute.VALUE]
    # Not even wrapped under a key of the PIN holder's choosing.
    mine = session.generate_key(pkcs11.KeyType.AES, 256, label="mine")
    with pytest.raises(p11.KeyUnextractable):
        mine.wrap_key(key, mechanism=pkcs11.Mechanism.AES_KEY_WRAP_PAD)


def test_the_newest_kek_wraps_and_the_older_ones_still_unwrap(
    softhsm: SoftHsm, pkcs11_token: str
) -> None:
    custodian = _custodian(pkcs11_token)
    data_key = random_key()
    before = custodian.wrap(data_key)
    _raw_session(softhsm, pkcs11_token).generate_key(
        pkcs11.KeyType.AES,
        256,
        label="coffre/kek-2",
        store=True,
        capabilities=pkcs11.MechanismFlag.WRAP | pkcs11.MechanismFlag.UNWRAP,
        template=PRIVATE_KEY,
    )
    rotated = Pkcs11Custodian.from_settings()
    after = rotated.wrap(data_key)
    assert (before.kek_id, after.kek_id) == ("pkcs11:kek-1", "pkcs11:kek-2")
    assert after.wrapped != before.wrapped
    assert rotated.unwrap(before) == rotated.unwrap(after) == data_key


def test_a_data_key_wrapped_by_one_token_does_not_unwrap_in_another(
    softhsm: SoftHsm, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = softhsm.new_tokens(2)
    softhsm.use(monkeypatch, first)
    wrapped = _custodian(first).wrap(random_key())
    softhsm.use(monkeypatch, second)
    other = _custodian(second)
    assert wrapped.kek_id == other.wrap(random_key()).kek_id
    with pytest.raises(SealError):
        other.unwrap(wrapped)


def test_an_altered_or_unknown_wrapped_key_does_not_unwrap(pkcs11_token: str) -> None:
    custodian = _custodian(pkcs11_token)
    wrapped = custodian.wrap(random_key())
    altered = bytes([wrapped.wrapped[0] ^ 1]) + wrapped.wrapped[1:]
    with pytest.raises(SealError):
        custodian.unwrap(WrappedKey(wrapped.kek_id, altered))
    with pytest.raises(SealError):
        custodian.unwrap(WrappedKey("pkcs11:kek-2", wrapped.wrapped))
    with pytest.raises(SealError):
        custodian.unwrap(WrappedKey("kek-1", wrapped.wrapped))


def test_data_keys_round_trip_whatever_their_bytes(pkcs11_token: str) -> None:
    custodian = _custodian(pkcs11_token)
    sizes = st.sampled_from([16, 24, 32, 40, 48, 56, 64])

    @settings(max_examples=60, deadline=None)
    @given(sizes.flatmap(lambda size: st.binary(min_size=size, max_size=size)))
    def round_trip(data_key: bytes) -> None:
        assert custodian.unwrap(custodian.wrap(data_key)) == data_key

    round_trip()


@pytest.mark.parametrize("size", [16, 32, 64])
def test_the_tokens_key_wrap_is_rfc_5649_as_in_the_keyring_custody(
    softhsm: SoftHsm, pkcs11_token: str, size: int
) -> None:
    session = _raw_session(softhsm, pkcs11_token)
    # A throw-away wrapping key that can be read out, to check the token's output with.
    kek = session.generate_key(
        pkcs11.KeyType.AES, 256, template={Attribute.SENSITIVE: False, Attribute.EXTRACTABLE: True}
    )
    data_key = random_key() * 2
    key = session.create_object(
        {
            Attribute.CLASS: ObjectClass.SECRET_KEY,
            Attribute.KEY_TYPE: pkcs11.KeyType.GENERIC_SECRET,
            Attribute.VALUE: data_key[:size],
            **TRANSIENT_KEY,
        }
    )
    wrapped = kek.wrap_key(key, mechanism=pkcs11.Mechanism.AES_KEY_WRAP_PAD)
    assert unwrap_key(kek[Attribute.VALUE], wrapped) == data_key[:size]


@pytest.mark.parametrize("size", [0, 8, 17, 31, 72])
def test_a_data_key_the_token_cannot_wrap_faithfully_is_refused(
    pkcs11_token: str, size: int
) -> None:
    with pytest.raises(CustodyError, match="multiple of 8"):
        _custodian(pkcs11_token).wrap(bytes(size))


def test_a_wrong_pin_is_refused_with_what_to_check(
    pkcs11_token: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    create_custody(Path("unused"))
    wrong = tmp_path / "wrong-pin"
    wrong.write_text("0000-not-it\n")
    wrong.chmod(0o600)
    monkeypatch.setenv(config.PKCS11_PIN_FILE.env, str(wrong))
    with pytest.raises(
        CustodyError, match=r"PIN .* is wrong: check the file COFFRE_PKCS11_PIN_FILE names"
    ) as caught:
        Pkcs11Custodian.from_settings()
    assert "0000-not-it" not in str(caught.value) and PIN not in str(caught.value)


def test_the_pin_can_come_from_the_environment(
    pkcs11_token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    create_custody(Path("unused"))
    monkeypatch.delenv(config.PKCS11_PIN_FILE.env)
    monkeypatch.setenv(config.PKCS11_PIN.env, PIN)
    custodian = Pkcs11Custodian.from_settings()
    assert PIN not in repr(custodian) and pkcs11_token in repr(custodian)


def test_no_pin_at_all_says_where_to_put_it(
    pkcs11_token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(config.PKCS11_PIN_FILE.env)
    with pytest.raises(CustodyError, match="set COFFRE_PKCS11_PIN_FILE"):
        Pkcs11Custodian.from_settings()


def test_a_pin_file_readable_by_others_is_refused(
    softhsm: SoftHsm, pkcs11_token: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    exposed = tmp_path / "pin"
    exposed.write_text(PIN)
    exposed.chmod(0o644)
    monkeypatch.setenv(config.PKCS11_PIN_FILE.env, str(exposed))
    with pytest.raises(CustodyError, match="chmod 600"):
        Pkcs11Custodian.from_settings()


@pytest.mark.parametrize(
    ("setting", "value", "advice"),
    [
        (config.PKCS11_TOKEN, "no-such-token", "check COFFRE_PKCS11_TOKEN"),
        (config.PKCS11_MODULE, "/nowhere/libpkcs11.so", "set COFFRE_PKCS11_MODULE"),
        (config.PKCS11_MODULE, "/etc/passwd", "is no PKCS#11 library: set COFFRE_PKCS11_MODULE"),
        (config.CUSTODY, "vaultwarden", "use keyring or pkcs11"),
    ],
)
def test_a_misconfigured_custody_says_which_setting_to_fix(
    pkcs11_token: str,
    monkeypatch: pytest.MonkeyPatch,
    setting: config.Setting,
    value: str,
    advice: str,
) -> None:
    monkeypatch.setenv(setting.env, value)
    with pytest.raises(CustodyError, match=advice):
        open_custody(Path("unused"))


def test_a_token_without_the_vaults_keys_says_to_run_init(pkcs11_token: str) -> None:
    with pytest.raises(CustodyError, match="coffre init"):
        Pkcs11Custodian.from_settings()


def test_a_token_that_lost_one_of_the_vaults_keys_says_to_restore_it(pkcs11_token: str) -> None:
    """Not 'run coffre init', which then refuses the token as holding a vault's keys."""
    create_custody(Path("unused"))
    session = (
        pkcs11.lib(config.PKCS11_MODULE.value())
        .get_token(token_label=pkcs11_token)
        .open(rw=True, user_pin=PIN)
    )
    try:
        session.get_key(ObjectClass.PRIVATE_KEY, label="coffre/log").destroy()
    finally:
        session.close()
    with pytest.raises(CustodyError, match=r"or not all of them .* restore the token"):
        Pkcs11Custodian.from_settings()


def test_two_tokens_of_one_label_are_named_as_such(softhsm: SoftHsm, pkcs11_token: str) -> None:
    softhsm._util("--init-token", "--free", "--label", pkcs11_token, *CREDENTIALS)
    pkcs11.lib(str(softhsm.module)).reinitialize()
    with pytest.raises(CustodyError, match=f"several PKCS#11 tokens are labelled '{pkcs11_token}'"):
        Pkcs11Custodian.from_settings()
    twin = next(pkcs11.lib(str(softhsm.module)).get_tokens(token_label=pkcs11_token))
    softhsm._util("--delete-token", "--serial", twin.serial.decode().strip())


@pytest.mark.parametrize(
    ("content", "said"),
    [
        (b"", "is empty"),
        (b"\n", "is empty"),
        ("Pässwörd\n".encode("latin-1"), "is not UTF-8 text"),
        (None, "is no regular file"),  # a named pipe, which each server process would wait on
    ],
)
def test_a_pin_file_that_cannot_hold_the_pin_says_what_is_wrong_with_it(
    pkcs11_token: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    content: bytes | None,
    said: str,
) -> None:
    path = tmp_path / "pin"
    if content is None:
        os.mkfifo(path, 0o600)
    else:
        path.write_bytes(content)
        path.chmod(0o600)
    monkeypatch.setenv(config.PKCS11_PIN_FILE.env, str(path))
    with pytest.raises(CustodyError, match=f"the PIN file {path} {said}") as caught:
        Pkcs11Custodian.from_settings()
    assert "Pässwörd" not in str(caught.value)


def test_a_token_holding_a_vaults_keys_is_never_given_new_ones(pkcs11_token: str) -> None:
    custodian = _custodian(pkcs11_token)
    with pytest.raises(VaultStateError, match="already holds"):
        create_custody(Path("unused"))
    assert Pkcs11Custodian.from_settings().root_secret() == custodian.root_secret()


def test_a_vault_in_pkcs11_custody_keeps_no_key_beside_its_storage(
    pkcs11_token: str, tmp_path: Path
) -> None:
    vault = Vault.at(tmp_path / "vault")
    vault.create()
    records = vault.open()
    with records.writer() as writer:
        patient = writer.create({"resourceType": "Patient", "gender": "female"}).stored.id
    records.storage.close()
    assert not vault.keyring.exists()
    reopened = vault.open()
    assert reopened.read("Patient", patient).resource()["gender"] == "female"
    reopened.storage.close()
    kek_ids = sqlite3.connect(vault.storage_path).execute("SELECT kek_id FROM data_keys")
    assert {row[0] for row in kek_ids} == {"pkcs11:kek-1"}


def test_coffre_init_makes_the_keys_in_the_token_and_writes_no_keyring(
    pkcs11_token: str, tmp_path: Path
) -> None:
    result = CliRunner().invoke(app, ["init", str(tmp_path / "vault")])
    assert result.exit_code == 0, result.output
    assert f"keys in the PKCS#11 token '{pkcs11_token}'" in " ".join(result.output.split())
    assert not (tmp_path / "vault" / "keyring.json").exists()
    again = CliRunner().invoke(app, ["init", str(tmp_path / "other")])
    assert again.exit_code == 1 and "already holds" in " ".join(again.output.split())


@pytest.mark.slow
def test_server_processes_each_log_in_to_the_token_and_serve_its_records(
    pkcs11_token: str, tmp_path: Path
) -> None:
    vault = Vault.at(tmp_path / "vault")
    vault.create()
    server = RunningServer(vault, workers=2)
    try:
        created = httpx.post(
            f"{server.base_url}/Patient",
            json={"resourceType": "Patient", "gender": "female"},
            headers=FHIR_JSON,
        )
        assert created.status_code == 201, created.text
        location = created.headers["Location"].split("/_history")[0]
        # Several reads, so that both processes unwrap the data key in the token.
        for _ in range(6):
            read = httpx.get(location, headers=FHIR_JSON)
            assert read.status_code == 200 and read.json()["gender"] == "female"
    finally:
        server.stop()


# python-pkcs11 ends a search of the lost session's objects when it is collected, and the
# token refuses that too: an "exception ignored" on stderr, nothing a request sees.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("vault", ["pkcs11"], indirect=True)
def test_a_session_the_token_lost_is_a_503_and_the_next_request_opens_a_new_one(
    client: TestClient, records: RecordStore
) -> None:
    """A token reset or removed ends the process's session: its requests are told to come
    back (not a 500, nor an integrity failure), readiness fails, and once the token answers
    the process serves again without a restart."""
    patient = {"resourceType": "Patient", "name": [{"family": "Tremblay"}]}
    assert client.post("/fhir/Patient", json=patient, headers=FHIR_JSON).status_code == 201
    leaves = records.storage.leaf_count()
    custodian = records.custodian
    assert isinstance(custodian, Pkcs11Custodian)

    custodian._session.close()  # what a token reset does to it
    lost = client.get("/health/ready")
    assert lost.status_code == 503 and "key custody is unavailable" in lost.text
    assert client.get("/health/ready").status_code == 200

    custodian._session.close()
    refused = client.post("/fhir/Patient", json=patient, headers=FHIR_JSON)
    assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
    assert "key custody is unavailable" in refused.json()["issue"][0]["diagnostics"]
    assert client.post("/fhir/Patient", json=patient, headers=FHIR_JSON).status_code == 201
    kinds = {
        Leaf.decode(data).kind
        for data in records.storage.leaves(leaves, records.storage.leaf_count())
    }
    assert LeafKind.INTEGRITY not in kinds


def _token_folder(softhsm: SoftHsm, label: str) -> Path:
    """Where SoftHSM2 keeps the token's files (its token.object holds its label, padded
    to 32 bytes with spaces: coffre-test-1 is not coffre-test-12)."""
    return next(
        found.parent
        for found in (softhsm.folder / "tokens").glob("*/token.object")
        if label.encode().ljust(32) in found.read_bytes()
    )


@pytest.mark.slow
def test_a_token_taken_away_then_put_back_serves_again_without_a_restart(
    pkcs11_token: str, softhsm: SoftHsm, tmp_path: Path
) -> None:
    """As an operator restoring SoftHSM2's token folder from its backup does, under two
    server processes: while it is away, 503s; once it is back, each process's session,
    which no longer saw the vault's keys, is opened again, and they serve."""
    vault = Vault.at(tmp_path / "vault")
    vault.create()
    server = RunningServer(vault, workers=2)
    patient = {"resourceType": "Patient", "gender": "female"}

    def create() -> httpx.Response:
        return httpx.post(f"{server.base_url}/Patient", json=patient, headers=FHIR_JSON)

    try:
        assert create().status_code == 201
        folder = _token_folder(softhsm, pkcs11_token)
        away = tmp_path / "away"
        folder.rename(away)
        try:
            refused = [create().status_code for _ in range(6)]
        finally:
            away.rename(folder)
        assert set(refused) == {503}
        served = [create().status_code for _ in range(12)]
        assert served == [201] * 12, served
    finally:
        server.stop()


def test_a_token_missing_at_first_is_looked_for_again_after_initialising_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """SoftHSM2 leaves out a token whose files another process is writing as it starts
    (server processes starting together): found at the next try, not refused."""
    token = object()

    class Library:
        def __init__(self) -> None:
            self.answers: list[object] = [p11.NoSuchToken(), token]
            self.reinitialised = 0

        def get_token(self, token_label: str) -> object:
            answer = self.answers.pop(0)
            if isinstance(answer, Exception):
                raise answer
            return answer

        def reinitialize(self) -> None:
            self.reinitialised += 1

    monkeypatch.setattr("coffre.custody.pkcs11.TOKEN_LOOKUP_PAUSE_SECONDS", 0)
    library = Library()
    assert _token_of(library, "coffre") is token and library.reinitialised == 1
    library.answers = [p11.NoSuchToken()] * 3
    with pytest.raises(p11.NoSuchToken):
        _token_of(library, "coffre")

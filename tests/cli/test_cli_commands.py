"""The coffre command: init, synth, import, as a user runs them."""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import pytest
import typer
from pg import tables_in
from pgserver import Cluster
from softhsm import SoftHsm
from typer.testing import CliRunner

from coffre.api.auth import AuthSettings
from coffre.cli.main import (
    app,
    clock_behind_warning,
    public_url_warning,
    sovereign_files_warning,
    storage_in_clear_warning,
)
from coffre.custody import create_custody
from coffre.custody.keyring import KeyringCustodian
from coffre.service import Vault
from coffre.service.vault import STORAGE_URL_FILE

runner = CliRunner()


def _run(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


def test_init_makes_a_vault_and_refuses_to_overwrite_it(tmp_path: Path) -> None:
    folder = tmp_path / "v"
    assert _run("init", str(folder))[0] == 0
    assert (folder / "storage.sqlite").exists() and (folder / "keyring.json").exists()
    keyring = (folder / "keyring.json").read_bytes()
    code, output = _run("init", str(folder))
    assert code == 1 and "already exists" in output
    assert (folder / "keyring.json").read_bytes() == keyring


@pytest.mark.parametrize(
    "command",
    [
        ("init",),
        ("witness", "init", "--name", "w1"),
        ("synth", "1", "--out"),
        ("synth-campaign", "--out"),
    ],
)
@pytest.mark.parametrize("name", ["", " "])
def test_an_empty_folder_name_is_refused_not_read_as_the_current_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: tuple[str, ...], name: str
) -> None:
    """``coffre init "$VAULT"`` with the variable unset made a vault where it was run."""
    monkeypatch.chdir(tmp_path)
    code, output = _run(*command, name)
    assert code == 2 and "the folder's name is empty" in output
    assert not list(tmp_path.iterdir())


def test_the_keyring_can_live_apart_from_the_storage(tmp_path: Path) -> None:
    assert (
        _run("init", str(tmp_path / "v"), "--keyring", str(tmp_path / "sovereign" / "k.json"))[0]
        == 0
    )
    assert not (tmp_path / "v" / "keyring.json").exists()
    records = Vault.at(tmp_path / "v", tmp_path / "sovereign" / "k.json").open()
    assert records.storage.last_seq() == 0


def _one_line(output: str) -> str:
    assert len(output.strip().splitlines()) == 1, output
    return output


def test_a_refused_init_leaves_no_folder_and_the_retry_succeeds(tmp_path: Path) -> None:
    keyring = tmp_path / "k.json"
    KeyringCustodian.create(keyring)  # another vault's
    before = keyring.read_bytes()
    output = _refused("init", str(tmp_path / "v1"), "--keyring", str(keyring))
    assert "a keyring already exists" in _one_line(output)
    assert not (tmp_path / "v1").exists() and keyring.read_bytes() == before
    keyring.unlink()
    assert _run("init", str(tmp_path / "v1"), "--keyring", str(keyring))[0] == 0


def test_a_keyring_whose_folder_cannot_be_made_leaves_no_vault_folder(tmp_path: Path) -> None:
    (tmp_path / "sovereign").write_text("a file where the keyring's folder should be")
    args = ("init", str(tmp_path / "a" / "v1"), "--keyring", str(tmp_path / "sovereign" / "k"))
    assert "sovereign" in _one_line(_refused(*args))
    assert sorted(path.name for path in tmp_path.iterdir()) == ["sovereign"]
    (tmp_path / "sovereign").unlink()
    assert _run(*args)[0] == 0


def test_an_init_refused_in_a_folder_that_existed_leaves_it_as_it_was(tmp_path: Path) -> None:
    folder = tmp_path / "v1"
    folder.mkdir()
    (folder / "notes.txt").write_text("the operator's")
    KeyringCustodian.create(tmp_path / "k.json")
    _refused("init", str(folder), "--keyring", str(tmp_path / "k.json"))
    assert [path.name for path in folder.iterdir()] == ["notes.txt"]


def test_init_on_postgresql_refused_by_the_token_leaves_the_database_empty(
    pkcs11_token: str,
    softhsm: SoftHsm,
    postgres: Cluster,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The production pairing: a token that already holds a vault's keys is refused before
    the tables are made, and the same init on a fresh token then succeeds."""
    create_custody(Path("unused"))  # another vault's keys
    url = postgres.new_storage_url()
    args = ("init", str(tmp_path / "v1"), "--storage", url)
    assert "already holds a Coffre vault's keys" in _one_line(_refused(*args))
    assert not (tmp_path / "v1").exists() and tables_in(url) == []
    [fresh] = softhsm.new_tokens()
    softhsm.use(monkeypatch, fresh)
    code, output = _run(*args)
    assert code == 0, output


def test_synth_then_import_twice_changes_nothing_the_second_time(tmp_path: Path) -> None:
    _run("init", str(tmp_path / "v"))
    code, output = _run("synth", "3", "--out", str(tmp_path / "s"), "--seed", "7")
    assert code == 0 and "3 patients" in output
    code, first = _run("import", "--vault", str(tmp_path / "v"), str(tmp_path / "s"))
    assert code == 0 and "0 failures" in first
    code, second = _run("import", "--vault", str(tmp_path / "v"), str(tmp_path / "s"))
    assert code == 0 and "0 new versions written" in second


def test_synth_campaign_opens_tomorrow_and_writes_a_bundle_a_centre_and_day(
    tmp_path: Path,
) -> None:
    tomorrow = date.today() + timedelta(days=1)
    args = ("--sites", "2", "--days", "2", "--seats", "3", "--out", str(tmp_path / "c"))
    code, output = _run("synth-campaign", *args)
    assert code == 0, output
    assert "2 centres, 3 seats a centre, 144 turns a day: 1,728 free Slots in 4 Bundles" in output
    opened = date.fromisoformat(output.split("a campaign from ", 1)[1][:10])
    assert opened in {tomorrow, date.today() + timedelta(days=1)}  # the test ran at midnight
    assert sorted(path.name for path in (tmp_path / "c").iterdir()) == sorted(
        f"campaign-{site}-{opened + timedelta(days=n)}.json"
        for site in ("qc-stade-olympique", "fr-paris-expo")
        for n in range(2)
    )
    code, output = _run("synth-campaign", "--opens", "3000-01-01", "--out", str(tmp_path / "d"))
    assert code == 1 and "--opens is a day from 1900 to 2999" in output


def test_synth_as_of_a_day_gives_the_same_files_on_any_day(tmp_path: Path) -> None:
    """A benchmark or a bug report names the patients by seed and day."""
    for run in ("a", "b"):
        args = ("synth", "2", "--out", str(tmp_path / run), "--seed", "7", "--as-of", "2025-03-01")
        assert _run(*args)[0] == 0
    names = sorted(path.name for path in (tmp_path / "a").iterdir())
    assert names == ["patient-0000001.json", "patient-0000002.json", "shared.json"]
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert (
        _run("synth", "2", "--out", str(tmp_path / "d"), "--seed", "7", "--as-of", "2020-03-01")[0]
        == 0
    )
    earlier = (tmp_path / "d" / "patient-0000001.json").read_text()
    assert earlier != (tmp_path / "a" / "patient-0000001.json").read_text()
    years = {int(year) for year in re.findall(r'"(\d{4})-\d\d-\d\d', earlier)}
    assert max(years) <= 2020
    code, output = _run("synth", "1", "--out", str(tmp_path / "c"), "--as-of", "2025-02-30")
    assert code == 2 and "--as-of" in output


def test_a_bad_file_is_named_with_its_entry_and_the_others_load(tmp_path: Path) -> None:
    _run("init", str(tmp_path / "v"))
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a-broken.json").write_text("{not json")
    deep = {"resourceType": "Patient", "extension": [{"url": "x", "valueString": "y"}]}
    node = deep["extension"][0]
    for _ in range(300):  # deeper than a resource may nest, not than JSON may
        node["extension"] = [{"url": "x"}]
        node = node["extension"][0]
    (folder / "a-deep.ndjson").write_text(json.dumps(deep) + "\n")
    bad_entry = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {
                "resource": {"resourceType": "Patient", "id": "ok-1"},
                "request": {"method": "POST", "url": "Patient"},
            },
            {
                "resource": {"resourceType": "Patient", "gender": "x"},
                "request": {"method": "POST", "url": "Patient"},
            },
        ],
    }
    (folder / "b-batch.json").write_text(json.dumps(bad_entry))
    (folder / "c-good.ndjson").write_text(
        '{"resourceType":"Patient","id":"ok-2"}\n{"resourceType":"Patient","id":"ok-3"}\n'
    )
    code, output = _run("import", "--vault", str(tmp_path / "v"), str(folder))
    assert code == 1
    assert "a-broken.json" in output and "not valid JSON" in output
    assert "a-deep.ndjson" in output and "more than 128 deep" in output
    assert "b-batch.json: entry[1]" in output and "Patient.gender" in output
    records = Vault.at(tmp_path / "v").open()
    assert {records.read("Patient", pid).id for pid in ("ok-1", "ok-2", "ok-3")} == {
        "ok-1",
        "ok-2",
        "ok-3",
    }


def test_commands_on_a_missing_vault_say_how_to_make_one(tmp_path: Path) -> None:
    code, output = _run("import", "--vault", str(tmp_path / "none"), str(tmp_path))
    assert code == 1 and "coffre init" in output


def _refused(*args: str) -> str:
    """The output of a command that must end on a message, not a traceback."""
    result = runner.invoke(app, list(args))
    assert isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == 1, result.output
    return result.output


def test_paths_holding_brackets_are_printed_as_they_are(tmp_path: Path) -> None:
    folder = tmp_path / "[/x]"
    code, output = _run("init", str(folder))
    assert code == 0 and "[/x]" in output
    code, output = _run("synth", "1", "--out", str(tmp_path / "[/y]"))
    assert code == 0 and "[/y]" in output
    output = _refused("init", str(folder))
    assert "already exists" in output and "[/x]" in output


def test_a_folder_that_is_a_file_is_named_not_a_traceback(tmp_path: Path) -> None:
    file = tmp_path / "notes.txt"
    file.write_text("not a folder")
    assert "notes.txt" in _refused("init", str(file))
    assert "notes.txt" in _refused("init", str(file / "v"))
    assert "notes.txt" in _refused("synth", "1", "--out", str(file))
    assert "notes.txt" in _refused("clients", "list", "--vault", str(file))
    (tmp_path / "blocked" / "patient-0000001.json").mkdir(parents=True)  # a folder in its place
    assert "patient-0000001.json" in _refused("synth", "2", "--out", str(tmp_path / "blocked"))
    assert "notes.txt" in _refused("users", "list", "--vault", str(file))
    assert file.read_text() == "not a folder"


def test_synth_refuses_more_patients_than_its_file_names_number(tmp_path: Path) -> None:
    """A count typed with a few zeros too many is refused, not run until the disk is full."""
    code, output = _run("synth", "10000000", "--out", str(tmp_path / "s"))
    assert code == 2 and "9999999" in output
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize(
    ("url", "warned"),
    [
        ("postgresql://coffre@db.example.org/coffre", True),
        ("postgresql://coffre@db.example.org/coffre?sslmode=require", True),
        ("postgresql://coffre@db.example.org/coffre?sslmode=verify-full&sslrootcert=ca.crt", False),
        ("postgresql://coffre@localhost:5432/coffre", False),
        ("postgresql://coffre@/coffre?host=/run/postgresql", False),
    ],
)
def test_serve_warns_when_the_storage_is_reached_in_clear(
    tmp_path: Path, url: str, warned: bool
) -> None:
    (tmp_path / STORAGE_URL_FILE).write_text(url)
    warning = storage_in_clear_warning(Vault.at(tmp_path))
    assert (warning is not None) is warned
    assert warning is None or "without sslmode=verify-full" in warning


def test_a_storage_url_with_an_unknown_parameter_names_it(tmp_path: Path) -> None:
    code, output = _run(
        "init", str(tmp_path / "v"), "--storage", "postgresql://coffre@db/coffre?sslmod=verify-full"
    )
    assert code == 1 and "libpq takes no parameter 'sslmod'" in output, output


def test_serve_warns_when_the_clock_reads_earlier_than_the_newest_write() -> None:
    now = 1_800_000_000_000_000
    warning = clock_behind_warning(now + 3_600_000_000, now)
    assert warning is not None and "3,600 s earlier than the vault's newest write" in warning
    assert clock_behind_warning(now + 500_000, now) is None  # two processes' writes
    assert clock_behind_warning(now - 1, now) is None


def test_serve_warns_when_a_token_vault_keeps_its_sovereign_files_beside_its_storage(
    pkcs11_token: str, tmp_path: Path
) -> None:
    vault = Vault.at(tmp_path / "v")
    vault.create()
    warning = sovereign_files_warning(vault)
    assert warning is not None and "set COFFRE_KEYRING to a path on the sovereign side" in warning
    assert sovereign_files_warning(Vault.at(vault.folder, tmp_path / "secure" / "k.json")) is None


@pytest.mark.parametrize(
    ("mode", "public_url", "host", "warned"),
    [
        ("required", "", "0.0.0.0", True),
        ("required", "", "fhir.example.org", True),
        ("required", "https://fhir.example.org", "0.0.0.0", False),
        ("required", "", "127.0.0.1", False),  # only this machine reaches it
        ("required", "", "::1", False),
        ("required", "", "localhost", False),
        ("off", "", "0.0.0.0", False),  # no tokens to bind
    ],
)
def test_serve_warns_when_tokens_would_follow_the_host_header(
    mode: str, public_url: str, host: str, warned: bool
) -> None:
    warning = public_url_warning(AuthSettings(mode=mode, public_url=public_url), host)
    assert (warning is not None) is warned
    assert warning is None or "COFFRE_PUBLIC_URL is not set" in warning


@pytest.mark.parametrize(
    ("variable", "value", "said"),
    [
        (
            "COFFRE_SQLITE_SYNCHRONOUS",
            "FULLL",
            "it takes 'OFF' or 'NORMAL' or 'FULL' or 'EXTRA' (any case)",
        ),
        ("COFFRE_STORAGE_REQUIRE_TLS", "yes", "it takes '1', or nothing"),
        ("COFFRE_BENCH_PLAINTEXT", "true", "it takes '1', or nothing"),
        ("COFFRE_MAX_BODY_BYTES", "abc", "it takes a whole number"),
        ("COFFRE_DATA_KEY_CACHE", "-1", "it takes a whole number"),
        ("COFFRE_AUTH", "yes", "it takes 'off' or 'required' (any case)"),
        ("COFFRE_METRICS", "yes", "it takes 'open' (any case), or nothing"),
        ("COFFRE_ACCESS_TOKEN_SECONDS", "abc", "it takes a whole number"),
        ("COFFRE_WITNESS_QUORUM", "two", "it takes a whole number"),
        ("COFFRE_NOTICE_WEBHOOK", "http://[::1", "it takes an http or https URL"),
        ("COFFRE_OIDC_JWKS_URL", "idp.example.org/jwks", "it takes an http or https URL"),
        ("COFFRE_PUBLIC_URL", "https://fhir.example.org:84x3", "it takes an http or https URL"),
        ("COFFRE_PUBLIC_URL", "https://fhir.example.org/fhir", "it takes a scheme and a host"),
    ],
)
def test_a_mistyped_setting_is_refused_before_any_command_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variable: str, value: str, said: str
) -> None:
    """SQLite read FULLL as NORMAL (durability lowered without a word), 'yes' asked for no
    TLS at all, and a body size of 'abc' crashed the server's workers again and again."""
    monkeypatch.setenv(variable, value)
    code, output = _run("init", str(tmp_path / "vault"))
    assert code == 1 and f"{variable}={value!r}: {said}" in output, output
    assert not (tmp_path / "vault").exists()


def test_a_setting_s_case_and_an_empty_default_are_taken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COFFRE_SQLITE_SYNCHRONOUS", "normal")
    monkeypatch.setenv("COFFRE_AUTH", "Required")
    monkeypatch.setenv("COFFRE_WITNESS_QUORUM", "")
    monkeypatch.setenv("COFFRE_PUBLIC_URL", "https://fhir.example.org:8443/")
    monkeypatch.setenv("COFFRE_NOTICE_WEBHOOK", "http://[::1]:9000/notices?to=sms")
    code, output = _run("init", str(tmp_path / "vault"))
    assert code == 0, output


def test_synth_refuses_a_day_its_histories_cannot_run_up_to(tmp_path: Path) -> None:
    """9999-12-31 was an OverflowError traceback, after some files were written."""
    for day in ("9999-12-31", "0001-06-01"):
        code, output = _run("synth", "2", "--out", str(tmp_path / "out"), "--as-of", day)
        assert code == 1 and "--as-of is a day from 1900 to 2999" in output, output
    assert not (tmp_path / "out").exists()


def _commands(typer_app: typer.Typer) -> Iterator[tuple[str, str]]:
    for command in typer_app.registered_commands:
        yield command.callback.__name__, command.help or inspect.getdoc(command.callback) or ""
    for group in typer_app.registered_groups:
        yield from _commands(group.typer_instance)


@pytest.mark.parametrize(("name", "text"), list(_commands(app)), ids=lambda v: str(v)[:20])
def test_every_commands_help_reads_without_a_break_in_mid_sentence(name: str, text: str) -> None:
    """Typer shows a command's first paragraph in the list of commands and keeps the line
    breaks of the others: the first is one line, each of the others' lines a sentence."""
    first, *others = text.split("\n\n")
    assert first and "\n" not in first
    assert all(line.endswith((".", ":", ")")) for other in others for line in other.splitlines())


@pytest.mark.parametrize(
    ("command", "environment"),
    [
        (("serve", "--port", "0"), {}),
        (("serve",), {"COFFRE_PORT": "0"}),
        (("witness", "serve", "w", "--log", "x", "--port", "0"), {}),
    ],
)
def test_port_0_is_refused_not_served_on_a_port_never_named(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    command: tuple[str, ...],
    environment: dict[str, str],
) -> None:
    """The system chose a free port, which the server never said."""
    monkeypatch.chdir(tmp_path)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    code, output = _run(*command)
    assert code == 2 and "Invalid value for '--port'" in output, output
    assert "equal to 1" in output, output

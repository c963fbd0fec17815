"""SoftHSM2 tokens for the PKCS#11 custody tests, in a temporary SOFTHSM2_CONF folder.

A pytest plugin of tests/conftest.py: ``pkcs11_token`` makes a fresh token and points
Coffre's settings at it. Where SoftHSM2 is not installed the tests skip, and fail under
CI=true (``make test`` installs it).
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pkcs11
import pytest

from coffre import config

MODULES = (
    Path("/usr/lib/softhsm/libsofthsm2.so"),
    Path("/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so"),
)
PIN = "2718-coffre"
SO_PIN = "3141-officer"
CREDENTIALS = ("--pin", PIN, "--so-pin", SO_PIN)
BOTH_CUSTODIES = pytest.mark.parametrize("vault", ["keyring", "pkcs11"], indirect=True)


class SoftHsm:
    """A SoftHSM2 configuration of its own: its tokens live in a temporary folder."""

    def __init__(self, folder: Path, module: Path) -> None:
        self.module = module
        self.folder = folder
        (folder / "tokens").mkdir()
        self.conf = folder / "softhsm2.conf"
        self.conf.write_text(
            f"directories.tokendir = {folder / 'tokens'}\n"
            "objectstore.backend = file\nlog.level = ERROR\n"
        )
        self.pin_file = folder / "pin"
        self.pin_file.write_text(PIN + "\n")
        self.pin_file.chmod(0o600)
        self._labels = (f"coffre-test-{n}" for n in itertools.count(1))
        self._made: list[str] = []

    def new_tokens(self, count: int = 1) -> list[str]:
        """Fresh empty tokens; sessions opened before on any token of the process end."""
        labels = [next(self._labels) for _ in range(count)]
        for label in labels:
            self._util("--init-token", "--free", "--label", label, *CREDENTIALS)
        self._made.extend(labels)
        # A loaded module sees tokens made after it only once initialised again.
        pkcs11.lib(str(self.module)).reinitialize()
        return labels

    def delete_tokens(self) -> None:
        """Delete the tokens made so far: SoftHSM2 reads every token at each start, so
        those a test leaves behind slow down every later one."""
        while self._made:
            self._util("--delete-token", "--token", self._made.pop())

    def _util(self, *arguments: str) -> None:
        subprocess.run(
            ["softhsm2-util", *arguments],
            check=True,
            capture_output=True,
            env={**os.environ, "SOFTHSM2_CONF": str(self.conf)},
        )

    def labels(self, token: str) -> list[str]:
        """The labels of every object in ``token``, as its user sees them (sorted)."""
        found = pkcs11.lib(str(self.module)).get_token(token_label=token)
        try:
            session = found.open(user_pin=PIN)
        except pkcs11.exceptions.UserAlreadyLoggedIn:  # a session of the test's is open
            session = found.open()
        try:
            return sorted(str(found[pkcs11.Attribute.LABEL]) for found in session.get_objects())
        finally:
            session.close()

    def use(self, monkeypatch: pytest.MonkeyPatch, token: str) -> None:
        """Point Coffre's settings at ``token``, with the PIN in a file."""
        for setting, value in (
            (config.CUSTODY, "pkcs11"),
            (config.PKCS11_MODULE, str(self.module)),
            (config.PKCS11_TOKEN, token),
            (config.PKCS11_PIN_FILE, str(self.pin_file)),
        ):
            monkeypatch.setenv(setting.env, value)


def _installed_module() -> Path:
    found = next((module for module in MODULES if module.is_file()), None)
    if found is None or shutil.which("softhsm2-util") is None:
        message = "SoftHSM2 is not installed: 'apt-get install softhsm2' (make test does it)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return found


@pytest.fixture(scope="session")
def softhsm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SoftHsm]:
    module = _installed_module()
    hsm = SoftHsm(tmp_path_factory.mktemp("softhsm"), module)
    before = os.environ.get("SOFTHSM2_CONF")
    # SoftHSM2 reads its configuration when the module is initialised, in this process.
    os.environ["SOFTHSM2_CONF"] = str(hsm.conf)
    yield hsm
    if before is None:
        os.environ.pop("SOFTHSM2_CONF", None)
    else:
        os.environ["SOFTHSM2_CONF"] = before


@pytest.fixture
def pkcs11_token(softhsm: SoftHsm, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh token, and Coffre's settings choosing it (COFFRE_CUSTODY=pkcs11); deleted
    after the test with any other the test made."""
    [token] = softhsm.new_tokens()
    softhsm.use(monkeypatch, token)
    yield token
    softhsm.delete_tokens()

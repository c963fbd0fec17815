"""What ``make demo`` sets up so that people and programs can sign in to the demo vault.

``python scripts/demo_access.py setup --vault .demo/vault`` registers, once, a patient
user for the first patient of the vault (a random password, kept in
``.demo/portal-password``, mode 0600) and a SMART backend service ``demo-backend``
(``system/*.rs``, its private key in ``.demo/backend-key.json``, mode 0600), then prints
how to use both. ``python scripts/demo_access.py token`` gets an access token for the
backend service from the running demo server (client_credentials with private_key_jwt)
and prints it.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import time
from pathlib import Path

import httpx
from joserfc import jwt
from joserfc.jwk import ECKey

from coffre.api.auth.registry import (
    access_file,
    backend_client,
    load,
    new_user,
    save,
    with_client,
    with_user,
    without_client,
    without_user,
)
from coffre.service import Vault

DEMO = Path(".demo")
USERNAME = "demo-patient"
CLIENT_ID = "demo-backend"
DEFAULT_URL = "http://127.0.0.1:8080"
ALGORITHM = "ES384"
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def _private(path: Path, text: str) -> None:
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as file:
        file.write(text)


def _password_file(vault: Vault) -> Path:
    """Beside the vault's folder, in the demo's folder (never in the storage)."""
    return vault.folder.parent / "portal-password"


def _key_file(vault: Vault) -> Path:
    return vault.folder.parent / "backend-key.json"


def _first_patient(vault: Vault) -> str:
    records = vault.open()
    try:
        patients = records.all_of_type("Patient")
    finally:
        records.storage.close()
    if not patients:
        raise SystemExit("the demo vault holds no patient")
    return patients[0].id


def setup(vault: Vault, url: str) -> None:
    registry_path = access_file(vault.keyring)
    registry = load(registry_path)
    password_file, key_file = _password_file(vault), _key_file(vault)
    if USERNAME not in registry.users or not password_file.exists():
        password = secrets.token_urlsafe(12)
        user = new_user(USERNAME, "patient", f"Patient/{_first_patient(vault)}", password)
        if USERNAME in registry.users:
            registry = without_user(registry, USERNAME)
        registry = with_user(registry, user)
        _private(password_file, password)
    if CLIENT_ID not in registry.clients or not key_file.exists():
        key = ECKey.generate_key("P-384", private=True)
        _private(key_file, json.dumps(key.as_dict(private=True)))
        public = json.dumps({**key.as_dict(private=False), "kid": key.thumbprint()})
        if CLIENT_ID in registry.clients:
            registry = without_client(registry, CLIENT_ID)
        registry = with_client(
            registry, backend_client(CLIENT_ID, public, "system/*.rs", "Coffre demo")
        )
    save(registry_path, registry)
    patient = registry.users[USERNAME].fhir_user
    print(
        f"\nPatient portal: {url}/portal/  (user {USERNAME}, password"
        f" {password_file.read_text()}, {patient})\n"
        "API token (SMART backend services, client_credentials with private_key_jwt):\n"
        f"  TOKEN=$(.venv/bin/python scripts/demo_access.py token{_url_option(url)})\n"
        f'  curl -H "Authorization: Bearer $TOKEN" "{url}/fhir/Patient?_count=1"\n'
    )


def _url_option(url: str) -> str:
    """The token command's ``--url``, when the demo serves elsewhere than by default."""
    return "" if url == DEFAULT_URL else f" --url {url}"


def token(vault: Vault, url: str) -> str:
    key = ECKey.import_key(json.loads(_key_file(vault).read_text()))
    token_url = f"{url}/auth/token"
    now = int(time.time())
    claims = {
        "iss": CLIENT_ID,
        "sub": CLIENT_ID,
        "aud": token_url,
        "exp": now + 240,
        "jti": secrets.token_hex(16),
    }
    header = {"alg": ALGORITHM, "kid": key.thumbprint(), "typ": "JWT"}
    assertion = jwt.encode(header, claims, key, algorithms=[ALGORITHM])
    form = {
        "grant_type": "client_credentials",
        "scope": "system/*.rs",
        "client_assertion_type": JWT_BEARER,
        "client_assertion": assertion,
    }
    response = httpx.post(token_url, data=form)
    response.raise_for_status()
    return str(response.json()["access_token"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("setup", "token"))
    parser.add_argument("--vault", type=Path, default=DEMO / "vault")
    parser.add_argument("--url", default=DEFAULT_URL)
    args = parser.parse_args()
    if args.action == "setup":
        setup(Vault.at(args.vault), args.url)
    else:
        print(token(Vault.at(args.vault), args.url))


if __name__ == "__main__":
    main()

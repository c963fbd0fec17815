"""The application as each server process builds it from the settings."""

from __future__ import annotations

from starlette.applications import Starlette

from coffre import config
from coffre.api.app import create_app
from coffre.service import Vault


def app_from_settings() -> Starlette:
    return create_app(
        Vault.from_settings().open(), max_body_bytes=int(config.MAX_BODY_BYTES.value())
    )

"""The application as each server process builds it from the settings."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from starlette.applications import Starlette

from coffre import config
from coffre.api.admission import WaitingRoom
from coffre.api.app import create_app
from coffre.api.auth import Authority, AuthSettings
from coffre.api.metrics import RoomMetrics
from coffre.api.scraping import ScrapeAccess
from coffre.api.workers import end_with_the_supervisor
from coffre.research.folder import ResearchFolder
from coffre.service import Vault
from coffre.service.background import in_background
from coffre.service.tokenkey import access_token_key, id_token_key
from coffre.service.upkeep import consolidate_when_quiet
from coffre.service.witnessing import Witnessing, witnesses_from_settings


def app_from_settings() -> Starlette:
    end_with_the_supervisor()
    # The modules imported so far live as long as the process: the collector leaves them
    # out of the full collections that following a long log at the vault's opening sets off.
    gc.freeze()
    vault = Vault.from_settings()
    records = vault.open()
    authority = Authority.for_keyring(
        vault.keyring,
        access_token_key(records),
        id_token_key(records),
        AuthSettings.from_settings(),
    )
    serving = max(1, int(config.BOOKING_SERVING.value()))
    room = WaitingRoom(serving, int(config.BOOKING_WAITING.value()), RoomMetrics())
    app = create_app(
        records,
        max_body_bytes=int(config.MAX_BODY_BYTES.value()),
        authority=authority,
        waiting_room=room,
        research=ResearchFolder(vault.keyring),
        scrape_access=ScrapeAccess.from_settings(authority.required),
    )
    _while_serving(app, lambda: in_background(consolidate_when_quiet(records.storage)))
    witnesses, quorum = witnesses_from_settings()
    if witnesses:
        with_witnessing(app, Witnessing(records, witnesses, quorum, vault.folder))
    # What the process built at start lives as long as it does (the log's latest writes
    # and map): the collector leaves it out of its full collections, which took 57 ms for
    # 100,000 records, set off every few hundred searches.
    gc.freeze()
    return app


def with_witnessing(app: Starlette, witnessing: Witnessing) -> Starlette:
    """Gather the witnesses' cosignatures in the background for as long as ``app`` serves,
    and publish them under /ledger."""
    app.state.witnessing = witnessing
    _while_serving(app, witnessing.running)
    return app


def _while_serving(
    app: Starlette, running: Callable[[], AbstractAsyncContextManager[None]]
) -> None:
    """Keep a context of ``running()`` open for as long as ``app`` serves."""
    serve = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[Any]:
        async with running(), serve(app) as state:
            yield state

    app.router.lifespan_context = lifespan

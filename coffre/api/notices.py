"""First-access notices on the API's side: the access hook that writes them once a
clinician's read is durable, and the outbound hook (``COFFRE_NOTICE_WEBHOOK``) posted in
the background, so that neither ever delays or fails the read."""

from __future__ import annotations

import asyncio
import logging

from starlette.requests import Request

from coffre import config
from coffre.api.auth.enforce import Reached
from coffre.api.state import committer_of, records_of
from coffre.exceptions import CoffreError
from coffre.fhir.references import parse_reference
from coffre.service.audit import Access
from coffre.service.notices import Notice, notice_first_access, noticed, post_notice_hook
from coffre.service.writer import Writer

NOTIFIER = Access("Coffre gateway, telling the patient of a professional's first access")
log = logging.getLogger("coffre.notices")
# Hook deliveries under way: the event loop keeps only weak references to its tasks.
_deliveries: set[asyncio.Task[bool]] = set()


def _write(writer: Writer, reached: list[Reached]) -> list[Notice]:
    notices = []
    for access in reached:
        notice = notice_first_access(
            writer, access.practitioner, access.patient, break_glass=access.break_glass is not None
        )
        if notice is not None:
            notices.append(notice)
    return notices


async def tell_patients(request: Request, reached: list[Reached]) -> None:
    """The access hook: a notice for each patient this clinician opens for the first
    time, then the outbound hook for each, in the background. Pairs that met before
    (the usual case) cost one look-up and no write; a clinician whose token names no FHIR
    resource has nobody to name. A notice that cannot be written is logged, and written
    at the pair's next access instead."""
    records = records_of(request)
    committer = committer_of(request)
    try:
        first = [
            access
            for access in reached
            if parse_reference(access.practitioner) is not None
            and not noticed(records, access.practitioner, access.patient)
        ]
        notices = (
            await committer.run(lambda writer: _write(writer, first), NOTIFIER) if first else []
        )
    except CoffreError as error:
        log.error("a first-access notice could not be written: %s", type(error).__name__)
        return
    url = config.NOTICE_WEBHOOK.value()
    for notice in notices if url else []:
        task = asyncio.get_running_loop().create_task(post_notice_hook(url, notice))
        _deliveries.add(task)
        task.add_done_callback(_deliveries.discard)

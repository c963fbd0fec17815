"""The Content-Type of a FHIR answer: the JSON media type the client asked for.

Coffre answers FHIR R4 JSON, labelled ``application/fhir+json``; a client that asks for
``application/json`` rather (in ``Accept``, or ``_format``) gets the same bytes labelled
so (http.html#mime-type: the server answers in the format asked for). Relabelling here,
around the whole application, covers every answer alike: resources, Bundles, errors.
"""

from __future__ import annotations

from starlette.datastructures import Headers, QueryParams
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from coffre.api.negotiation import JSON_TYPES, answers_plain_json

FHIR_JSON = JSON_TYPES[0].encode()
PLAIN_JSON = f"{JSON_TYPES[1]}; charset=utf-8".encode()
_FHIR_LABELLED = frozenset({"", "*/*", JSON_TYPES[0]})


class LabelAsAsked:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _asks_plain_json(scope):
            await self.app(scope, receive, send)
            return

        async def relabelled(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [_label(h) for h in message["headers"]]}
            await send(message)

        await self.app(scope, receive, relabelled)


def _asks_plain_json(scope: Scope) -> bool:
    query: bytes = scope.get("query_string", b"")
    requested = QueryParams(query).get("_format") if b"_format" in query else None
    accept = Headers(scope=scope).get("accept", "")
    if requested is None and accept in _FHIR_LABELLED:
        return False  # the common case, without parsing anything
    return answers_plain_json(accept, requested)


def _label(header: tuple[bytes, bytes]) -> tuple[bytes, bytes]:
    name, value = header
    if name == b"content-type" and value.startswith(FHIR_JSON):
        return name, PLAIN_JSON
    return header

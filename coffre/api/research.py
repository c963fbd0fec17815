"""The research hub for researchers' tokens: their projects, the extracts kept for them,
and counts over those extracts that disclose no small cell (docs/research.md).

A researcher is a user with the researcher role whose username a project lists among its
members; nobody else reaches these endpoints, whatever their scopes, and a researcher
sees only their own projects. The extracts are made by the operator (``coffre research
extract``) and stay on the sovereign side; a count answered here is logged before it is
sent, as the command line's is.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from coffre.api.auth.enforce import principal_of
from coffre.api.auth.middleware import unauthorised
from coffre.api.auth.scopes import Principal, Role
from coffre.api.responses import NO_STORE
from coffre.api.state import committer_of, records_of
from coffre.exceptions import FhirError
from coffre.research.folder import NoExtract, ResearchFolder
from coffre.research.projects import OverBudget, Project, ProjectError
from coffre.search.results import single

if TYPE_CHECKING:
    from coffre.research.privacy import Privacy

PRIVACY_PARAMETERS = ("epsilon", "delta", "max-cells")
COUNT_PARAMETERS = frozenset({"table", "by", "where", "extract", *PRIVACY_PARAMETERS})
log = logging.getLogger("coffre.api")


def research_routes() -> list[Route]:
    return [
        Route("/projects", projects, methods=["GET"]),
        Route("/projects/{project}/count", count, methods=["GET"]),
    ]


def _folder(request: Request) -> ResearchFolder:
    folder: ResearchFolder | None = request.app.state.research
    if folder is None:
        raise FhirError(404, "not-found", "this server holds no research projects")
    return folder


def _researcher(request: Request) -> Principal:
    """The researcher the token speaks for (the middleware asks every request here for a
    token); 403 for another role."""
    principal = principal_of(request)
    if principal is None:
        raise unauthorised(None)
    if principal.role != Role.RESEARCHER:
        raise FhirError(403, "forbidden", "the research hub answers researchers only")
    external = request.app.state.authority.external
    if external is not None and principal.issuer == external.issuer:
        # A project's members are usernames of Coffre's registry; another issuer's
        # subject of the same name is somebody else.
        raise FhirError(
            403,
            "forbidden",
            "the research hub answers the researchers Coffre registers (coffre users), who"
            " sign in here: a project's members are their usernames",
        )
    return principal


def _own_projects(folder: ResearchFolder, researcher: Principal) -> dict[str, Project]:
    try:
        projects = folder.projects()
    except ProjectError as error:
        log.error("the research projects cannot be read: %s", error)
        raise FhirError(503, "transient", "the research projects cannot be read") from None
    return {key: p for key, p in projects.items() if researcher.subject in p.members}


async def projects(request: Request) -> Response:
    """The researcher's projects, each with the extracts kept for it: their persons and
    rows are exact counts, which a project with a privacy budget answers no one here."""
    folder = _folder(request)
    researcher = _researcher(request)
    today = datetime.now(UTC).date()
    listed = [
        {
            **project.as_json(),
            "state": project.state(today),
            "extracts": [
                kept.as_json(exact=project.budget is None)
                for kept in folder.kept(project.project_id)
            ],
        }
        for project in _own_projects(folder, researcher).values()
    ]
    return JSONResponse({"projects": listed}, headers=NO_STORE)


def _count_query(request: Request) -> tuple[str, list[str], list[str], str | None]:
    """The table, the columns to count by, the filters and the extract a count names."""
    params = request.query_params
    unknown = sorted(set(params) - COUNT_PARAMETERS)
    if unknown:
        raise FhirError(
            400,
            "not-supported",
            f"a count takes {', '.join(sorted(COUNT_PARAMETERS))}; not {', '.join(unknown)}",
        )
    pairs = params.multi_items()
    table = single(pairs, "table")
    if not table:
        raise FhirError(400, "required", "name the table to count: ?table=person")
    return table, params.getlist("by"), params.getlist("where"), single(pairs, "extract")


def _privacy(request: Request, project: Project) -> Privacy | None:
    """The differential privacy a count asks (``epsilon``, ``delta``, ``max-cells``); a
    project with a privacy budget answers researchers no exact count."""
    from coffre.research.privacy import Privacy  # OpenDP: only where counts are asked

    params = request.query_params
    pairs = params.multi_items()
    epsilon = single(pairs, "epsilon")
    if epsilon is None:
        if project.budget is not None:
            raise FhirError(
                400,
                "required",
                f"project {project.project_id}'s counts are differentially private: give"
                " epsilon (and max-cells where a person may be in several cells)",
            )
        if any(name in params for name in PRIVACY_PARAMETERS):
            raise FhirError(400, "invalid", "delta and max-cells go with epsilon")
        return None
    delta, max_cells = single(pairs, "delta"), single(pairs, "max-cells")
    try:
        return Privacy(
            Decimal(epsilon),
            None if delta is None else Decimal(delta),
            None if max_cells is None else int(max_cells),
        )
    except (InvalidOperation, ValueError):
        raise FhirError(
            400, "invalid", "epsilon and delta are decimals, max-cells a whole number"
        ) from None
    except ProjectError as error:
        raise FhirError(400, "invalid", str(error)) from None


async def count(request: Request) -> Response:
    """Distinct persons of a table of one of the project's kept extracts (the latest by
    default), by columns, with filters; cells under 10 suppressed, and differentially
    private where asked or where the project has a privacy budget. Logged before sent."""
    from coffre.research import aggregate  # DuckDB and pyarrow: only where counts are asked

    folder = _folder(request)
    researcher = _researcher(request)
    project_id = request.path_params["project"]
    project = _own_projects(folder, researcher).get(project_id)
    if project is None:
        raise FhirError(404, "not-found", f"you are a member of no project {project_id!r}")
    today = datetime.now(UTC).date()
    try:
        project.check_open(today)
    except ProjectError as error:
        raise FhirError(403, "forbidden", str(error)) from None
    table, by, where, extract_id = _count_query(request)
    privacy = _privacy(request, project)
    try:
        query = aggregate.Query.of(table, by, where)
        kept = folder.find(project_id, extract_id)
    except NoExtract as error:
        raise FhirError(404, "not-found", str(error)) from None
    except ProjectError as error:
        raise FhirError(400, "invalid", str(error)) from None
    records = records_of(request)
    try:
        privately = None if privacy is None else (privacy, folder.projects_file)
        result, extract = await asyncio.to_thread(
            aggregate.answer, records, project, kept.folder, query, today, privately
        )
    except aggregate.ExtractAltered:
        log.error("a kept research extract failed its check against the log")
        raise FhirError(
            500, "exception", "the extract failed its check against the log: it was not used"
        ) from None
    except OverBudget as error:
        raise FhirError(403, "forbidden", str(error)) from None
    except ProjectError as error:
        raise FhirError(400, "invalid", str(error)) from None
    access = aggregate.count_access(researcher.actor, project, result)
    await committer_of(request).run(lambda w: aggregate.log_count(w, extract, result), access)
    return JSONResponse({"extract": extract, **result.as_json()}, headers=NO_STORE)

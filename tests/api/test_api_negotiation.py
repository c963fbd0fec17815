"""Content negotiation: what ``Accept``, ``_format`` and ``Content-Type`` ask of Coffre,
which serves and takes FHIR R4 JSON only (http.html#mime-type, #version-parameter; RFC 9110
§12.5.1)."""

from __future__ import annotations

import re
from random import Random

import httpx
import pytest
import requests
from deadline import within
from fhirclient import server as fhirclient_server
from hypothesis import example, given
from hypothesis import strategies as st
from starlette.testclient import TestClient
from test_api_errors import assert_outcome, create_patient

from coffre.api.media_types import MediaRange, MediaType, _elements, parse_accept
from coffre.api.negotiation import accepts_json

# -- Accept over HTTP -----------------------------------------------------------------------

REFUSED = [
    pytest.param("application/fhir+json;q=0", id="json-weighed-0"),
    pytest.param("application/fhir+json; Q=0.000", id="json-weighed-0-upper-q"),
    pytest.param("application/*;q=0, text/html", id="application-refused"),
    pytest.param("*/*;q=0", id="nothing"),
    pytest.param("application/fhir+json; fhirVersion=3.0", id="stu3"),
    pytest.param('application/fhir+json;fhirversion="5.0"', id="r5-quoted"),
    pytest.param("application/json; fhirVersion=1.0", id="dstu2-plain-json"),
    pytest.param("application/fhir+json; charset=iso-8859-1", id="latin-1"),
    pytest.param("application/fhir+json;fhirVersion=4.0;q=0, application/fhir+json", id="r4-0"),
]


@pytest.mark.parametrize("accept", REFUSED)
def test_an_accept_that_refuses_r4_json_is_406_saying_what_coffre_serves(
    client: TestClient, accept: str
) -> None:
    pid = create_patient(client)

    response = client.get(f"/fhir/Patient/{pid}", headers={"Accept": accept})

    assert_outcome(response, 406, accept, "FHIR R4", "fhirVersion=4.0", "application/fhir+json")


SERVED = [
    pytest.param("application/fhir+json; fhirVersion=4.0", id="r4"),
    pytest.param("application/fhir+json;fhirVersion=4.0.1", id="r4-patch"),
    pytest.param('application/fhir+json; fhirVersion="4.0"', id="r4-quoted"),
    pytest.param(
        "application/fhir+json; fhirVersion=3.0, application/fhir+json; fhirVersion=4.0; q=0.5",
        id="stu3-or-r4",
    ),
    pytest.param("application/fhir+xml, application/fhir+json;q=0.1", id="xml-preferred"),
    pytest.param("application/fhir+json; charset=UTF-8", id="utf-8"),
    pytest.param("  APPLICATION/FHIR+JSON ;  Q=1 ,text/html", id="spaces-and-case"),
    pytest.param("application/json;q=0, application/*", id="plain-json-refused"),
    pytest.param("application/*", id="application-anything"),
    pytest.param("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", id="a-browser"),
    pytest.param("text/html, image/gif, image/jpeg, *; q=.2, */*; q=.2", id="java-urlconnection"),
]


@pytest.mark.parametrize("accept", SERVED)
def test_an_accept_that_takes_r4_json_is_served(client: TestClient, accept: str) -> None:
    pid = create_patient(client)

    response = client.get(f"/fhir/Patient/{pid}", headers={"Accept": accept})

    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/fhir+json")


# -- _format --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        "_format=json",
        "_format=application/fhir%2Bjson",
        "_format=application/fhir+json;%20fhirVersion=4.0",
        "_format=application/json;fhirVersion=4.0.1",
    ],
)
def test_format_overrides_an_accept_coffre_cannot_meet(client: TestClient, query: str) -> None:
    pid = create_patient(client)

    for accept in ("application/fhir+xml", "application/fhir+json; fhirVersion=3.0"):
        response = client.get(f"/fhir/Patient/{pid}?{query}", headers={"Accept": accept})
        assert response.status_code == 200, (accept, response.text)


@pytest.mark.parametrize(
    "format_",
    ["application/fhir+json;fhirVersion=3.0", "json;fhirVersion=4.0", "xml", "application/*"],
)
def test_a_format_of_another_fhir_version_or_format_is_406(
    client: TestClient, format_: str
) -> None:
    pid = create_patient(client)

    response = client.get(
        f"/fhir/Patient/{pid}",
        params={"_format": format_},
        headers={"Accept": "application/fhir+json"},
    )

    assert_outcome(response, 406, f"_format={format_}", "FHIR R4", "_format=json")


# -- Content-Type -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [
        "application/fhir+json; fhirVersion=3.0",
        'application/json;FHIRVERSION="5.0"',
        "application/fhir+json; charset=iso-8859-1",
    ],
)
def test_a_body_of_another_fhir_version_or_charset_is_415(
    client: TestClient, content_type: str
) -> None:
    pid = create_patient(client)
    patient = {"resourceType": "Patient", "id": pid, "gender": "other"}

    for response in (
        client.post("/fhir/Patient", json=patient, headers={"Content-Type": content_type}),
        client.put(f"/fhir/Patient/{pid}", json=patient, headers={"Content-Type": content_type}),
    ):
        assert_outcome(response, 415, content_type, "FHIR R4", "fhirVersion=4.0")
    assert client.get(f"/fhir/Patient/{pid}").json()["meta"]["versionId"] == "1"


def test_a_body_that_says_it_is_r4_in_utf_8_is_taken(client: TestClient) -> None:
    for content_type in (
        "application/fhir+json; fhirVersion=4.0",
        "application/fhir+json;fhirVersion=4.0.1; charset=UTF-8",
    ):
        response = client.post(
            "/fhir/Patient",
            json={"resourceType": "Patient"},
            headers={"Content-Type": content_type},
        )
        assert response.status_code == 201, response.text


# -- the parser, and the decision, as properties ----------------------------------------------

_TOKEN = st.text("abcxyz019+-.", min_size=1, max_size=8)
_PARAMETER = st.tuples(
    _TOKEN.filter(lambda name: name != "q"), _TOKEN | st.text("ab ,;=x", max_size=6)
)
_TYPES = st.sampled_from(
    [
        ("application", "fhir+json"),
        ("application", "json"),
        ("application", "json+fhir"),
        ("application", "fhir+xml"),
        ("application", "*"),
        ("text", "html"),
        ("text", "*"),
        ("*", "*"),
    ]
)
_QUALITIES = st.sampled_from([0.0, 0.001, 0.5, 0.9, 1.0])


@st.composite
def media_ranges(draw: st.DrawFn) -> MediaRange:
    type_, subtype = draw(_TYPES)
    parameters = tuple(draw(st.lists(_PARAMETER, max_size=2)))
    return MediaRange(MediaType(type_, subtype, parameters), draw(_QUALITIES))


def written(media_range: MediaRange, spaces: str, upper: bool) -> str:
    """``media_range`` as a client may write it: any case, spaces around ``;``, values
    quoted when they must be (and only then, as the round trip needs)."""
    media = media_range.media
    name = f"{media.type}/{media.subtype}"
    parts = [name.upper() if upper else name]
    for key, value in media.parameters:
        quoted = value if value and all(c not in value for c in " ,;=") else f'"{value}"'
        parts.append(f"{key.upper() if upper else key}={quoted}")
    parts.append(f"{'Q' if upper else 'q'}={media_range.quality:g}")
    return f"{spaces};{spaces}".join(parts)


def header(ranges: list[MediaRange], spaces: str = "", upper: bool = False) -> str:
    return f"{spaces},{spaces}".join(written(r, spaces, upper) for r in ranges)


@given(st.lists(media_ranges(), max_size=5), st.sampled_from(["", " ", "  ", "\t"]), st.booleans())
def test_accept_parses_back_what_it_was_written_from(
    ranges: list[MediaRange], spaces: str, upper: bool
) -> None:
    assert parse_accept(header(ranges, spaces, upper)) == ranges


@given(st.text(max_size=60))
def test_any_accept_parses_into_ranges(text: str) -> None:
    for media_range in parse_accept(text):
        assert 0 <= media_range.quality <= 1
        assert media_range.media.type != "*" or media_range.media.subtype == "*"


@given(st.lists(media_ranges(), max_size=5), st.randoms(use_true_random=False), st.booleans())
def test_neither_order_nor_case_changes_the_decision(
    ranges: list[MediaRange], random: Random, upper: bool
) -> None:
    shuffled = list(ranges)
    random.shuffle(shuffled)

    assert accepts_json(parse_accept(header(shuffled, " ", upper))) == accepts_json(ranges)


@pytest.mark.parametrize(
    "header",
    [
        "application/fhir+json" + ";    " * 500 + "!",
        "application/fhir+json" + "; x=y   " * 500 + " !",
        'application/fhir+json;x="' + "\\\\" * 500,
    ],
)
def test_a_header_the_parser_fails_on_is_left_out_without_backtracking(header: str) -> None:
    """Spaces and parameters that a pattern could match in several ways made a header of
    ten of them take seconds, one of thirty years: each is now read in one pass."""
    assert parse_accept(header) == []
    assert parse_accept(f"{header}, application/json") == [
        MediaRange(MediaType("application", "json"))
    ]


_OLD_ELEMENTS = re.compile(r'(?:[^,"]++|"(?:[^"\\]|\\.)*+")++')
"""The expression the elements of a header were once found with, by ``findall``."""


@given(st.text(alphabet='"\\,; =a/\n', max_size=24) | st.text(max_size=24))
@example('a"\\"b,c"d')
@example('"\\\n"a"')
@example('x"\\')
def test_a_header_is_split_into_the_elements_findall_found(header: str) -> None:
    """Read in one pass, any text gives the elements it gave before, in their order."""
    assert list(_elements(header)) == _OLD_ELEMENTS.findall(header)


def test_a_quote_left_open_is_read_once() -> None:
    """Each of its escaped quotes was tried as the start of a string, and read on to the
    end: this header took minutes (200 KB, under the 256 KB a request's head may hold)."""
    header = '"' + '\\"' * 100_000 + ", application/json"
    with within(10):
        ranges = parse_accept(header)
    assert ranges == [MediaRange(MediaType("application", "json"))]


def _names_fhir_json(ranges: list[MediaRange]) -> bool:
    return any((r.media.type, r.media.subtype) == ("application", "fhir+json") for r in ranges)


def _may_take_json(ranges: list[MediaRange]) -> bool:
    """Whether a range could name application/json or application/json+fhir."""
    return any(
        r.media.type in ("*", "application") and r.media.subtype in ("*", "json", "json+fhir")
        for r in ranges
    )


@given(
    st.lists(media_ranges(), max_size=5).filter(
        lambda rs: not _names_fhir_json(rs) and not _may_take_json(rs)
    )
)
def test_refusing_fhir_json_by_name_and_taking_no_other_json_is_refusing_it(
    ranges: list[MediaRange],
) -> None:
    """Refused by name, FHIR JSON is still served as application/json to a client that
    takes that (tested in test_api_labelling); to one that takes no JSON, it is refused."""
    refused = MediaRange(MediaType("application", "fhir+json"), 0.0)
    taken = MediaRange(MediaType("application", "fhir+json", (("fhirversion", "4.0"),)), 0.1)

    assert not accepts_json([*ranges, refused])
    assert accepts_json([taken, *ranges])


@given(st.lists(media_ranges(), max_size=5))
def test_asking_only_for_another_fhir_version_is_refused(ranges: list[MediaRange]) -> None:
    stu3 = [
        MediaRange(MediaType(r.media.type, r.media.subtype, (("fhirversion", "3.0"),)), r.quality)
        for r in ranges
    ]

    assert not accepts_json(stu3)


@pytest.mark.parametrize(
    "accept",
    [
        pytest.param(httpx.Client().headers["accept"], id="httpx"),
        pytest.param(requests.utils.default_headers()["Accept"], id="requests"),
        pytest.param(fhirclient_server.FHIRJSONMimeType, id="fhirclient"),
        pytest.param("application/fhir+json", id="fhirpy"),  # fhirpy/base/client.py, a literal
    ],
)
def test_what_clients_send_by_default_is_served(client: TestClient, accept: str) -> None:
    pid = create_patient(client)

    assert client.get(f"/fhir/Patient/{pid}", headers={"Accept": accept}).status_code == 200

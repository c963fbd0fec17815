"""The patient portal, in process: signing in, the pages, the opt-out form and its CSRF
protection, both languages, and what each page leaves in the log."""

from __future__ import annotations

import re
from collections.abc import Iterator
from html import unescape
from pathlib import Path
from urllib.parse import quote

import pytest
from portal_kit import CLINICIAN, PATIENT, authority_with_users, hidden, patient_record, sign_in
from starlette.testclient import TestClient

from coffre.api import create_app
from coffre.api.auth.registry import load, new_user, save, with_user, without_user
from coffre.api.auth.throttle import FREE_FAILURES_PER_NAME
from coffre.api.portal.text import CODES, TEXT
from coffre.ledger.leaf import Leaf, LeafKind
from coffre.service import RecordStore
from coffre.service.audit import OPERATOR, Access
from coffre.service.consent import research_opt_out
from coffre.service.erasure import erase_patient
from coffre.service.notices import FIRST_ACCESS, NOTICE_CATEGORY


@pytest.fixture
def portal(records: RecordStore, tmp_path: Path) -> Iterator[TestClient]:
    patient_record(records)
    app = create_app(records, authority=authority_with_users(tmp_path))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def test_pages_need_a_session_and_signing_in_leads_back_to_the_page_asked_for(
    portal: TestClient,
) -> None:
    for path in ("/portal/access", "/portal/notices", "/portal/research?lang=fr"):
        response = portal.get(path, follow_redirects=False)
        assert response.status_code == 303
        assert response.headers["location"] == f"/portal/sign-in?next={quote(path, safe='')}"
    assert portal.get("/portal/", follow_redirects=False).headers["location"] == "/portal/sign-in"
    back = sign_in(portal, next_page="/portal/notices")
    assert back.headers["location"] == "/portal/notices"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "elsewhere",
    [
        "https://evil.example/portal/",
        "//evil.example/portal/",
        "/\\evil.example",
        "/fhir/Patient",
        "/portal/sign-out",
        "javascript:alert(1)",
        "/portal/../fhir/metadata",  # a browser resolves the dots: off the portal
        "/portal/%2e%2e/auth/authorize",
        "/portal/../..//evil.example/",
    ],
)
def test_signing_in_never_leads_off_the_portal(portal: TestClient, elsewhere: str) -> None:
    response = sign_in(portal, next_page=elsewhere)
    assert response.headers["location"] == "/portal/"  # type: ignore[attr-defined]


def test_the_language_switch_keeps_the_page_asked_for(portal: TestClient) -> None:
    page = portal.get("/portal/sign-in", params={"next": "/portal/notices", "lang": "fr"})
    switch = re.search(r'<a href="([^"]+)" lang="en"', page.text).group(1)  # type: ignore[union-attr]
    assert unescape(switch) == "/portal/sign-in?next=%2Fportal%2Fnotices&lang=en"


def test_signing_out_says_so_in_the_patients_language(portal: TestClient) -> None:
    sign_in(portal)
    csrf = hidden(portal.get("/portal/?lang=fr").text, "csrf")
    out = portal.post("/portal/sign-out", data={"csrf": csrf}, follow_redirects=True)
    assert '<p role="status">Vous êtes déconnecté.</p>' in out.text


@pytest.mark.parametrize(
    ("method", "path", "data", "status", "said"),
    [
        ("get", "/portal/nowhere", None, 404, "Cette page n'existe pas dans le portail."),
        (
            "post",
            "/portal/research",
            {"optOut": "maybe"},
            400,
            "La demande n'a pas pu être comprise.",
        ),
        (
            "post",
            "/portal/research",
            {"optOut": "x" * 5000},
            413,
            "Le formulaire envoyé est trop volumineux.",
        ),
        ("delete", "/portal/access", None, 405, "Cette page ne s'utilise pas ainsi."),
    ],
)
def test_an_error_in_the_portal_is_a_page_in_the_patients_language(
    portal: TestClient, method: str, path: str, data: dict[str, str] | None, status: int, said: str
) -> None:
    sign_in(portal)
    csrf = hidden(portal.get("/portal/?lang=fr").text, "csrf")
    form = None if data is None else {"csrf": csrf, **data}
    response = portal.request(method, path, data=form, headers={"Origin": "http://testserver"})
    assert response.status_code == status
    assert response.headers["content-type"].startswith("text/html")
    assert '<html lang="fr">' in response.text and said in unescape(response.text)
    assert 'href="/portal/"' in response.text
    if status == 405:
        assert response.headers["allow"] == "GET, HEAD"


def test_the_sign_in_form_is_labelled_and_sets_a_protected_session(portal: TestClient) -> None:
    form = portal.get("/portal/sign-in", headers={"Accept-Language": "fr-CA,fr;q=0.9"})
    assert '<html lang="fr">' in form.text
    assert '<label for="username">' in form.text and '<label for="password">' in form.text
    assert "<script" not in form.text
    assert "script-src" not in form.headers["content-security-policy"]
    response = sign_in(portal)
    assert response.status_code == 303
    cookie = response.headers["set-cookie"]
    assert "coffre_portal=" in cookie and "HttpOnly" in cookie and "SameSite=lax" in cookie
    assert "Secure" not in cookie  # plain HTTP on the loopback; over HTTPS it is set


def test_wrong_password_and_professionals_are_refused(portal: TestClient) -> None:
    assert sign_in(portal, password="pas le bon mot de passe").status_code == 401
    assert sign_in(portal, username="roy").status_code == 403
    assert portal.get("/portal/", follow_redirects=False).status_code == 303


def test_repeated_failures_make_the_next_sign_in_wait(portal: TestClient) -> None:
    for _ in range(FREE_FAILURES_PER_NAME):
        assert sign_in(portal, password="pas le bon mot de passe").status_code == 401
    portal.cookies.set("coffre_lang", "fr")
    response = sign_in(portal)
    assert response.status_code == 429  # type: ignore[attr-defined]
    waited = int(response.headers["retry-after"])  # type: ignore[attr-defined]
    assert 0 < waited <= 30  # from the last failure: a slow machine may have used some of it
    assert "réessayez dans 1 min" in response.text  # type: ignore[attr-defined]
    assert portal.get("/portal/", follow_redirects=False).status_code == 303


def test_a_sign_in_without_the_forms_token_is_refused(portal: TestClient) -> None:
    portal.get("/portal/sign-in")
    response = portal.post(
        "/portal/sign-in",
        data={"token": "forged", "username": "marie", "password": "un mot de passe assez long"},
        follow_redirects=False,
    )
    assert response.status_code == 403


@pytest.mark.parametrize("forged", ["\x80", "é" * 32, "💉"])
def test_a_forms_token_that_is_not_ascii_is_refused_as_a_forged_one(
    portal: TestClient, records: RecordStore, forged: str
) -> None:
    portal.get("/portal/sign-in")
    signing_in = portal.post(
        "/portal/sign-in",
        data={"token": forged, "username": "marie", "password": "un mot de passe assez long"},
        follow_redirects=False,
    )
    assert signing_in.status_code == 403, signing_in.text
    sign_in(portal)
    opting_out = portal.post("/portal/research", data={"csrf": forged, "optOut": "true"})
    assert opting_out.status_code == 403, opting_out.text
    assert not research_opt_out(records, PATIENT)


def test_my_record_shows_the_summary_escaped_and_logs_what_it_showed(
    portal: TestClient, records: RecordStore
) -> None:
    sign_in(portal)
    before = records.storage.leaf_count()
    page = portal.get("/portal/?lang=en")
    assert page.status_code == 200
    assert '<html lang="en">' in page.text
    assert "Diabète de type 2 &lt;b&gt;" in page.text
    assert "Hemoglobin A1c" in page.text and "7.1 %" in page.text
    assert "Marie Gagnon" in page.text
    logged = [Leaf.decode(d) for d in records.storage.leaves(before, records.storage.leaf_count())]
    assert len(logged) == 3 and {leaf.kind for leaf in logged} == {LeafKind.SEARCH}
    assert '<html lang="en">' in portal.get("/portal/notices").text  # the choice is kept


def test_a_records_words_are_shown_as_written_and_its_statuses_in_her_language(
    portal: TestClient, records: RecordStore
) -> None:
    """An Observation's value "failed" is hers, not the portal's message about a wrong
    password; a status coded "resolved" with an English display reads "résolu"."""
    subject = {"reference": f"Patient/{PATIENT}"}
    with records.writer() as writer:
        for value in ("failed", "erased"):
            writer.create(
                {
                    "resourceType": "Observation",
                    "status": "final",
                    "code": {"text": f"Note {value}"},
                    "subject": subject,
                    "effectiveDateTime": "2026-11-03",
                    "valueString": value,
                }
            )
        resolved = {"coding": [{"code": "resolved", "display": "Resolved"}]}
        writer.create(
            {
                "resourceType": "Condition",
                "code": {"text": "Grippe"},
                "subject": subject,
                "clinicalStatus": resolved,
            }
        )
    sign_in(portal)
    page = unescape(portal.get("/portal/?lang=fr").text)
    assert "<td>failed</td>" in page and "<td>erased</td>" in page
    assert "mot de passe" not in page and "{date}" not in page
    assert "<td>résolu</td>" in page and "Resolved" not in page


def test_the_portals_words_and_codes_are_in_both_languages() -> None:
    assert TEXT["fr"].keys() == TEXT["en"].keys()
    # The log names Coffre's own actors in English: only French needs their words.
    assert CODES["en"].keys() < CODES["fr"].keys()


def test_a_record_that_names_another_patient_too_is_shown_to_neither(
    portal: TestClient, records: RecordStore
) -> None:
    """The API hides a record of several patients from each one's own token; the portal,
    which acts with that token's rights, must not show it either; nor a notice an app
    made up, from a person in another patient's record or anyone."""
    both = [{"reference": f"Patient/{PATIENT}"}, {"reference": "Patient/p-other"}]
    with records.writer() as writer:
        writer.update("Patient", "p-other", {"resourceType": "Patient", "id": "p-other"})
        writer.update(
            "RelatedPerson",
            "rp-other",
            {
                "resourceType": "RelatedPerson",
                "id": "rp-other",
                "patient": {"reference": "Patient/p-other"},
                "name": [{"text": "Proche Inconnu"}],
            },
        )
        writer.create(
            {
                "resourceType": "Observation",
                "status": "final",
                "code": {"coding": [{"display": "Shared secret result"}]},
                "subject": {"reference": "Group/household"},
                "performer": both,
                "effectiveDateTime": "2026-11-03",
                "valueString": "valeur de l'autre patient",
            }
        )
        writer.create(
            {
                "resourceType": "Communication",
                "status": "completed",
                "category": [{"coding": [{"system": NOTICE_CATEGORY, "code": FIRST_ACCESS}]}],
                "recipient": both,
                "sent": "2026-11-04T10:00:00Z",
                "payload": [{"contentString": "avis commun"}],
            }
        )
        writer.create(
            {
                "resourceType": "Communication",
                "status": "completed",
                "category": [{"coding": [{"system": NOTICE_CATEGORY, "code": FIRST_ACCESS}]}],
                "recipient": [{"reference": f"Patient/{PATIENT}"}],
                "sender": {"reference": "RelatedPerson/rp-other"},
                "sent": "2026-11-05T10:00:00Z",
                "payload": [{"contentString": "avis du proche"}],
            }
        )
    sign_in(portal)
    record = portal.get("/portal/?lang=en").text
    assert "Hemoglobin A1c" in record  # her own results are still there
    assert "Shared secret result" not in record and "autre patient" not in record
    notices = portal.get("/portal/notices?lang=fr").text
    assert "Dr Jean Roy" in notices  # the notice Coffre wrote
    assert "avis commun" not in notices and "Proche Inconnu" not in notices
    assert "avis du proche" not in notices  # an app made it up: not Coffre's notice


def test_who_accessed_shows_the_clinician_not_the_patients_own_views(
    portal: TestClient, records: RecordStore
) -> None:
    sign_in(portal)
    portal.get("/portal/")
    page = portal.get("/portal/access?lang=en").text
    assert "Dr Jean Roy (Practitioner/dr-roy) — through the application ehr" in page
    french = unescape(portal.get("/portal/access?lang=fr").text)
    assert "Dr Jean Roy (Practitioner/dr-roy) — par l'application ehr" in french
    assert "via client" not in french and "<td>clinicien</td>" in french
    assert "l'opérateur du coffre, du côté souverain" in french  # patient_record's writes
    assert f"Patient/{PATIENT} (patient" not in page
    assert "Your own views of your record" in page
    own = [
        agent
        for event in records.access_history(PATIENT)
        for agent in event["agent"]
        if agent.get("who", {}).get("reference") == f"Patient/{PATIENT}"
    ]
    assert own and all(agent["role"] == [{"text": "patient"}] for agent in own)


def test_an_access_in_another_role_naming_the_patients_record_is_listed(
    portal: TestClient, records: RecordStore
) -> None:
    """Only the patient's own views are left out of the list: a party that is not acting
    as the patient is shown, even where its record or display names the patient's."""
    posing = Access(
        f"Patient/{PATIENT} (clinician, via client ehr)",
        fhir_user=f"Patient/{PATIENT}",
        role="clinician",
        client_id="ehr",
    )
    with records.writer() as writer, writer.request(posing):
        writer.log_access(LeafKind.READ, [records.read("Patient", PATIENT)])
    sign_in(portal)
    page = unescape(portal.get("/portal/access?lang=en").text)
    assert f"Patient/{PATIENT} — through the application ehr" in page


def test_the_opt_out_switch_records_a_consent(portal: TestClient, records: RecordStore) -> None:
    sign_in(portal)
    page = portal.get("/portal/research?lang=en").text
    assert "You do not refuse" in page
    switched = portal.post(
        "/portal/research",
        data={f: hidden(page, f) for f in ("csrf", "optOut", "version")},
        headers={"Origin": "http://testserver"},
        follow_redirects=True,
    )
    assert "You refuse the use of your data for research." in switched.text
    assert 'role="status"' in switched.text
    assert research_opt_out(records, PATIENT)
    consent = portal.get(f"/fhir/Patient/{PATIENT}/$research-consent").json()
    assert consent["status"] == "active"


def test_a_stale_opt_out_form_does_not_overwrite_a_choice_made_meanwhile(
    portal: TestClient, records: RecordStore
) -> None:
    """Two tabs: the patient refuses then withdraws in one; the other, still showing
    "refuse", must not silently record a refusal they no longer see."""
    sign_in(portal)
    stale = portal.get("/portal/research?lang=fr").text
    for _ in range(2):  # refuse, then withdraw, in the other tab
        fresh = portal.get("/portal/research").text
        portal.post(
            "/portal/research",
            data={f: hidden(fresh, f) for f in ("csrf", "optOut", "version")},
            headers={"Origin": "http://testserver"},
        )
    refused = portal.post(
        "/portal/research",
        data={f: hidden(stale, f) for f in ("csrf", "optOut", "version")},
        headers={"Origin": "http://testserver"},
        follow_redirects=False,
    )
    assert refused.status_code == 409 and refused.headers["content-type"].startswith("text/html")
    assert "Votre choix a changé entre-temps" in unescape(refused.text)
    assert 'role="alert"' in refused.text and "Vous ne refusez pas" in unescape(refused.text)
    assert hidden(refused.text, "version") != hidden(stale, "version")  # a form to review again
    assert not research_opt_out(records, PATIENT)


def test_the_opt_out_form_needs_the_sessions_token_and_origin(
    portal: TestClient, records: RecordStore
) -> None:
    sign_in(portal)
    csrf = hidden(portal.get("/portal/research").text, "csrf")
    forged = portal.post("/portal/research", data={"csrf": "x", "optOut": "true"})
    assert forged.status_code == 403
    assert '<p role="alert">This form has expired' in forged.text  # not just a heading
    assert "nothing was recorded" in forged.text and 'href="/portal/"' in forged.text
    elsewhere = portal.post(
        "/portal/research",
        data={"csrf": csrf, "optOut": "true"},
        headers={"Origin": "https://evil.example"},
    )
    assert elsewhere.status_code == 403
    assert not research_opt_out(records, PATIENT)


def test_the_session_is_no_access_token_and_signing_out_ends_it(portal: TestClient) -> None:
    cookie = sign_in(portal).cookies["coffre_portal"]  # type: ignore[attr-defined]
    bearer = {"Authorization": f"Bearer {cookie}"}
    assert portal.get(f"/fhir/Patient/{PATIENT}", headers=bearer).status_code == 401
    csrf = hidden(portal.get("/portal/").text, "csrf")
    out = portal.post("/portal/sign-out", data={"csrf": csrf}, follow_redirects=False)
    assert out.status_code == 303
    assert portal.get("/portal/", follow_redirects=False).status_code == 303
    # A copy of the cookie taken before signing out opens nothing either.
    portal.cookies.set("coffre_portal", cookie, path="/portal")
    assert portal.get("/portal/", follow_redirects=False).status_code == 303
    sign_in(portal)  # a new session is not caught by the old one's revocation
    assert portal.get("/portal/", follow_redirects=False).status_code == 200


def test_a_session_that_ended_says_so_and_leads_back_to_the_page(portal: TestClient) -> None:
    """A patient whose session ended (signed out elsewhere, user removed) while a form was
    open is told so, in their language, and that what they sent was not recorded."""
    cookie = sign_in(portal).cookies["coffre_portal"]  # type: ignore[attr-defined]
    page = portal.get("/portal/research?lang=fr").text
    portal.post("/portal/sign-out", data={"csrf": hidden(page, "csrf")})
    portal.cookies.set("coffre_portal", cookie, path="/portal")
    sent = portal.post(
        "/portal/research",
        data={f: hidden(page, f) for f in ("csrf", "optOut", "version")},
        follow_redirects=False,
    )
    assert sent.status_code == 303
    location = sent.headers["location"]
    assert location == f"/portal/sign-in?next={quote('/portal/research', safe='')}&ended=form"
    shown = unescape(portal.get(location).text)
    assert '<p role="alert">Votre session a pris fin' in shown
    assert "n'a pas été enregistré" in shown and 'name="next" value="/portal/research"' in shown
    portal.cookies.set("coffre_portal", cookie, path="/portal")
    asked = portal.get("/portal/notices", follow_redirects=False).headers["location"]
    assert asked == f"/portal/sign-in?next={quote('/portal/notices', safe='')}&ended=page"
    told = unescape(portal.get(asked).text)  # a page asked: no form is said lost
    assert "Votre session a pris fin" in told and "n'a pas été enregistré" not in told
    assert "Votre session a pris fin" not in portal.get("/portal/sign-in").text


def test_notices_name_the_professional_in_the_patients_language(
    portal: TestClient, records: RecordStore
) -> None:
    sign_in(portal)
    before = records.storage.leaf_count()
    page = portal.get("/portal/notices?lang=fr").text
    assert "Dr Jean Roy" in page
    assert "a ouvert votre dossier pour la première fois" in page
    assert "opened your record" in portal.get("/portal/notices?lang=en").text
    logged = [Leaf.decode(d) for d in records.storage.leaves(before, records.storage.leaf_count())]
    assert sorted(leaf.kind for leaf in logged[:2]) == [LeafKind.READ, LeafKind.SEARCH]


def test_removing_the_user_ends_their_session(portal: TestClient, tmp_path: Path) -> None:
    sign_in(portal)
    assert portal.get("/portal/", follow_redirects=False).status_code == 200
    path = tmp_path / "keyring.access.json"
    registered = load(path)
    save(path, without_user(registered, "marie"))
    assert portal.get("/portal/", follow_redirects=False).status_code == 303
    # Registered again, with a new password (a renewal): the old session stays ended.
    marie = registered.users["marie"]
    renewed = new_user("marie", "patient", marie.fhir_user, "un autre mot de passe")
    save(path, with_user(without_user(registered, "marie"), renewed))
    assert portal.get("/portal/", follow_redirects=False).status_code == 303


def _clinician_reads(records: RecordStore, times: int) -> None:
    for _ in range(times):
        with records.writer() as writer, writer.request(CLINICIAN):
            writer.log_access(LeafKind.READ, [records.read("Patient", PATIENT)])


def _rows(page: str) -> int:
    return page.count("<tr>") + page.count('<tr class="') - 1  # less the headings' row


def test_the_access_list_is_paged_and_its_pages_hold_still(
    portal: TestClient, records: RecordStore
) -> None:
    """A patient in hospital is read hundreds of times: 50 accesses a page, the links
    pinned to the first page's snapshot, so that accesses made meanwhile shift nothing."""
    _clinician_reads(records, 70)
    sign_in(portal)
    first = portal.get("/portal/access?lang=en").text
    total = int(re.findall(r"Accesses 1 to 50 of (\d+)\.", first)[0])
    assert _rows(first) == 50 and total > 70 and 'rel="prev"' not in first
    older = unescape(re.findall(r'href="([^"]+)" rel="next"', first)[0])
    _clinician_reads(records, 5)
    second = portal.get(older).text
    assert f"Accesses 51 to {total} of {total}." in second and _rows(second) == total - 50
    assert 'rel="next"' not in second and 'rel="prev"' in second
    assert f"Accesses 1 to 50 of {total + 5}." in portal.get("/portal/access?lang=en").text
    past = portal.get(f"/portal/access?lang=en&_offset={total + 100}").text
    assert f"Accesses 51 to {total + 5} of {total + 5}." in past
    ahead = portal.get(f"/portal/access?lang=en&_snapshot={10**9}").text  # past the log's end
    assert f"_snapshot={10**9}" not in ahead and f"Accesses 1 to 50 of {total + 5}." in ahead
    wrong = portal.get("/portal/access?_offset=many")
    assert wrong.status_code == 400 and wrong.headers["content-type"].startswith("text/html")


def test_an_erased_patient_is_told_so_on_every_page_and_can_sign_out(
    portal: TestClient, records: RecordStore
) -> None:
    """Not an empty record, "nobody opened it", or a research choice: the API's 410, in
    the patient's words and language; the opt-out form writes nothing."""
    sign_in(portal)
    csrf = hidden(portal.get("/portal/").text, "csrf")
    erasure = erase_patient(records, PATIENT, OPERATOR)
    leaves = records.storage.leaf_count()
    for path in ("/portal/", "/portal/access", "/portal/notices", "/portal/research"):
        response = portal.get(path)
        assert response.status_code == 410, path
        assert f"Your record was erased by Coffre on {erasure.when[:10]}" in response.text
        assert "Nothing recorded" not in response.text and "Nobody" not in response.text
    french = portal.get("/portal/access?lang=fr")
    assert f"Votre dossier a été effacé par Coffre le {erasure.when[:10]}" in french.text
    refused = portal.post("/portal/research", data={"csrf": csrf, "optOut": "true", "version": "0"})
    assert refused.status_code == 410 and "effacé" in refused.text
    assert records.storage.leaf_count() == leaves  # nothing was shown, nothing written
    out = portal.post("/portal/sign-out", data={"csrf": csrf}, follow_redirects=True)
    assert out.status_code == 200 and "Vous êtes déconnecté." in out.text


def test_my_record_shows_her_appointments_with_their_time_zone(
    portal: TestClient, records: RecordStore
) -> None:
    with records.writer() as writer:
        writer.create(
            {
                "resourceType": "Appointment",
                "status": "booked",
                "serviceType": [{"text": "Vaccination grippe"}],
                "start": "2031-03-01T09:00:00-05:00",
                "end": "2031-03-01T09:05:00-05:00",
                "participant": [
                    {"actor": {"reference": f"Patient/{PATIENT}"}, "status": "accepted"}
                ],
            }
        )
    sign_in(portal)
    page = portal.get("/portal/?lang=fr").text
    assert '<h2 id="appointments">Rendez-vous</h2>' in page
    assert "Vaccination grippe" in page and "2031-03-01 09:00 -05:00" in page
    assert "réservé" in page

"""The sign-in page of the authorisation endpoint: plain server-rendered HTML, French and
English, every field labelled, no script, no front-end build."""

from __future__ import annotations

import re
from html import escape
from urllib.parse import urlencode, urlsplit

from starlette.requests import Request
from starlette.responses import HTMLResponse

_TEXT = {
    "en": {
        "title": "Sign in to Coffre",
        "intro": "The application {app} asks to open your health record.",
        "username": "User name",
        "password": "Password",
        "submit": "Sign in",
        "failed": "The user name or the password is wrong.",
        "wait": "Too many failed sign-ins: please try again in {minutes} min.",
        "error": "This request cannot be served",
        "other": "Français",
    },
    "fr": {
        "title": "Connexion à Coffre",
        "intro": "L'application {app} demande à ouvrir votre dossier de santé.",
        "username": "Nom d'utilisateur",
        "password": "Mot de passe",
        "submit": "Se connecter",
        "failed": "Le nom d'utilisateur ou le mot de passe est erroné.",
        "wait": "Trop de tentatives de connexion échouées : réessayez dans {minutes} min.",
        "error": "Cette demande ne peut pas être servie",
        "other": "English",
    },
}
# Scripts, frames and any outside origin are refused; the form posts only here (and, for
# the sign-in form, on to the app it then redirects to).
_SOURCE = re.compile(r"[a-z][a-z0-9+.-]*:(//[A-Za-z0-9.\-\[\]:]+)?")


def _policy(form_targets: str = "") -> str:
    return (
        "default-src 'none'; style-src 'unsafe-inline'; "
        f"form-action 'self'{form_targets}; frame-ancestors 'none'"
    )


def _origin_source(uri: str) -> str:
    """The origin of a redirect URI as a CSP source (``https://app.example:8443``, or a
    native app's scheme, ``com.example.app:``); nothing for one it cannot write safely."""
    parts = urlsplit(uri)
    source = f"{parts.scheme.lower()}://{parts.netloc}" if parts.netloc else f"{parts.scheme}:"
    return f" {source}" if _SOURCE.fullmatch(source) and "@" not in parts.netloc else ""


HEADERS = {
    "Content-Security-Policy": _policy(),
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
    # Not "no-referrer": a browser then sends "Origin: null" with the form, which the
    # authorisation endpoint refuses as it would a form from another site.
    "Referrer-Policy": "same-origin",
}
_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:28rem;margin:3rem auto;padding:0 1rem;"
    "line-height:1.5}label{display:block;margin-top:1rem;font-weight:600}"
    "input{width:100%;padding:.5rem;font-size:1rem;box-sizing:border-box}"
    "button{margin-top:1.5rem;padding:.6rem 1.2rem;font-size:1rem}"
    "[role=alert]{color:#8b0000;border-left:4px solid #8b0000;padding-left:.6rem}"
)


def language(request: Request, asked: str | None) -> str:
    """French or English: as asked by ``lang``, else by the browser's Accept-Language."""
    if asked in _TEXT:
        return asked
    accept = request.headers.get("accept-language", "").lower()
    return "fr" if accept.startswith("fr") else "en"


def _page(lang: str, title: str, body: str, status: int) -> HTMLResponse:
    html = (
        f'<!doctype html><html lang="{lang}"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body><main>{body}</main></body></html>"
    )
    return HTMLResponse(html, status_code=status, headers=HEADERS)


def wait_minutes(seconds: int) -> int:
    """A wait as the sign-in pages say it: whole minutes, at least one."""
    return max(1, -(-seconds // 60))


def sign_in_page(
    lang: str,
    app_name: str,
    fields: dict[str, str],
    redirect_uri: str,
    *,
    failed: bool = False,
    wait: int = 0,
) -> HTMLResponse:
    """The form; ``fields`` are the authorisation request's parameters, carried along.
    ``failed``: the last attempt's password was wrong; ``wait``: seconds before the next
    attempt may be checked (429). The form's answer sends the browser on to the app's
    ``redirect_uri``, whose origin the page's ``form-action`` must therefore allow:
    browsers hold a form's redirects to it too."""
    text = _TEXT[lang]
    hidden = "".join(
        f'<input type="hidden" name="{escape(name)}" value="{escape(value)}">'
        for name, value in sorted(fields.items())
        if name != "lang"
    )
    message = (
        text["wait"].format(minutes=wait_minutes(wait))
        if wait
        else text["failed"]
        if failed
        else ""
    )
    alert = f'<p role="alert" id="failed">{escape(message)}</p>' if message else ""
    described = ' aria-describedby="failed" aria-invalid="true"' if message else ""
    other = "en" if lang == "fr" else "fr"
    body = (
        f"<h1>{escape(text['title'])}</h1>"
        f"<p>{escape(text['intro'].format(app=app_name))}</p>{alert}"
        f'<form method="post" action="authorize">{hidden}'
        f'<input type="hidden" name="lang" value="{lang}">'
        f'<label for="username">{escape(text["username"])}</label>'
        f'<input id="username" name="username" autocomplete="username" required{described}>'
        f'<label for="password">{escape(text["password"])}</label>'
        f'<input id="password" name="password" type="password" autocomplete="current-password" required{described}>'
        f'<button type="submit">{escape(text["submit"])}</button></form>'
        f'<p><a href="?{escape(_query(fields, other))}" lang="{other}">{text["other"]}</a></p>'
    )
    response = _page(lang, text["title"], body, 429 if wait else 401 if failed else 200)
    response.headers["Content-Security-Policy"] = _policy(_origin_source(redirect_uri))
    if wait:
        response.headers["Retry-After"] = str(wait)
    return response


def _query(fields: dict[str, str], lang: str) -> str:
    return urlencode({**fields, "lang": lang})


def error_page(lang: str, message: str) -> HTMLResponse:
    """A request that cannot be redirected back (unknown client, unregistered redirect)."""
    title = _TEXT[lang]["error"]
    return _page(lang, title, f'<h1>{escape(title)}</h1><p role="alert">{escape(message)}</p>', 400)

"""The portal's HTML: one layout, tables and forms, every value escaped, no script."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from html import escape

from starlette.responses import HTMLResponse

from coffre.api.auth.signin import HEADERS
from coffre.api.portal.text import word

_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:60rem;margin:0 auto;padding:1rem;"
    "line-height:1.5;color:#1a1a1a}a{color:#0b4f9c}"
    ".skip{position:absolute;left:-999px}.skip:focus{left:1rem;top:1rem;background:#fff}"
    "nav ul{list-style:none;padding:0;display:flex;flex-wrap:wrap;gap:1rem}"
    "table{border-collapse:collapse;width:100%;margin-bottom:1.5rem}"
    "th,td{text-align:left;padding:.35rem .5rem;border-bottom:1px solid #ccc;vertical-align:top;"
    "overflow-wrap:anywhere}"
    "caption{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0)}"
    "td:nth-child(2){white-space:nowrap}"
    "label{display:block;margin-top:1rem;font-weight:600}"
    "input[type=text],input[type=password],input[type=date],input[type=search],select{width:100%;max-width:24rem;padding:.5rem;font-size:1rem}"
    "button{margin-top:1rem;padding:.6rem 1.2rem;font-size:1rem}"
    "[role=alert]{color:#8b0000;border-left:4px solid #8b0000;padding-left:.6rem}"
    "[role=status]{border-left:4px solid #1b6e20;padding-left:.6rem}"
    ".glass{background:#fff3cd}"
    "header{display:flex;justify-content:space-between;align-items:baseline;flex-wrap:wrap}"
    "form.inline{display:inline}"
)
# The sign-in page's headers, but the Origin of the portal's own forms must reach it (a
# no-referrer policy makes browsers send "Origin: null").
_HEADERS = {**HEADERS, "Referrer-Policy": "same-origin"}
_SECTIONS = ("record", "access", "notices", "research", "booking")
_PATHS = {
    "record": "/portal/",
    "access": "/portal/access",
    "notices": "/portal/notices",
    "research": "/portal/research",
    "booking": "/portal/booking",
}


def table(
    caption: str,
    headings: Sequence[str],
    rows: Iterable[Sequence[str]],
    row_classes: Sequence[str] = (),
) -> str:
    """A table with a caption and column headings; each cell's text escaped."""
    head = "".join(f'<th scope="col">{escape(h)}</th>' for h in headings)
    body = ""
    for index, row in enumerate(rows):
        css = row_classes[index] if index < len(row_classes) else ""
        cells = "".join(f"<td>{escape(cell)}</td>" for cell in row)
        body += f'<tr class="{escape(css)}">{cells}</tr>' if css else f"<tr>{cells}</tr>"
    return (
        f"<table><caption>{escape(caption)}</caption><thead><tr>{head}</tr></thead>"
        f"<tbody>{body}</tbody></table>"
    )


def _nav(lang: str, current: str, csrf: str) -> str:
    current_page = ' aria-current="page"'
    items = "".join(
        f'<li><a href="{_PATHS[name]}"{current_page if name == current else ""}>'
        f"{escape(word(lang, name))}</a></li>"
        for name in _SECTIONS
    )
    sign_out = (
        '<form class="inline" method="post" action="/portal/sign-out">'
        f'<input type="hidden" name="csrf" value="{escape(csrf)}">'
        f'<button type="submit">{escape(word(lang, "sign_out"))}</button></form>'
    )
    return f'<nav aria-label="{escape(word(lang, "nav"))}"><ul>{items}</ul>{sign_out}</nav>'


def page(
    lang: str,
    title: str,
    body: str,
    *,
    path: str,
    current: str = "",
    csrf: str = "",
    status: int = 200,
) -> HTMLResponse:
    """A whole page: ``lang`` on the root, a skip link, the header with the language
    switch (a plain link to ``path``, which may hold a query, in the other language),
    the navigation when signed in, and ``body`` (already escaped) in ``main``."""
    other = "en" if lang == "fr" else "fr"
    there = f"{path}{'&' if '?' in path else '?'}lang={other}"
    switch = (
        f'<a href="{escape(there)}" lang="{other}" hreflang="{other}">'
        f"{escape(word(lang, 'other_language'))}</a>"
    )
    nav = _nav(lang, current, csrf) if csrf else ""
    html = (
        f'<!doctype html><html lang="{lang}"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)} — {escape(word(lang, 'portal'))}</title>"
        f"<style>{_STYLE}</style></head><body>"
        f'<a class="skip" href="#content">{escape(word(lang, "skip"))}</a>'
        f"<header><p><strong>{escape(word(lang, 'portal'))}</strong></p>{switch}</header>"
        f'{nav}<main id="content"><h1>{escape(title)}</h1>{body}</main></body></html>'
    )
    return HTMLResponse(html, status_code=status, headers=_HEADERS)

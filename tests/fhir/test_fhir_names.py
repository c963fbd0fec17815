"""Names as people write them."""

from __future__ import annotations

from datetime import date
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from coffre.fhir.names import human_name

NAME_PARTS = {
    "use": st.sampled_from(["usual", "official", "temp", "nickname", "anonymous", "old", "x"]),
    "text": st.text(max_size=5),
    "given": st.lists(st.text(max_size=5), max_size=2),
    "family": st.text(max_size=5),
    "period": st.fixed_dictionaries({}, optional={"end": st.sampled_from(["2001", "2099-01"])}),
}


def test_text_wins_then_prefix_given_family() -> None:
    assert human_name({"name": [{"text": "Élise Tremblay", "family": "X"}]}) == "Élise Tremblay"
    named = {"name": [{"prefix": ["Dr."], "given": ["Jean", "Luc"], "family": "Roy"}]}
    assert human_name(named) == "Dr. Jean Luc Roy"
    assert human_name({"name": [{}, {"family": "Roy"}]}) == "Roy"
    assert human_name({"resourceType": "Patient"}) == ""


def test_the_name_gone_by_today_comes_before_former_ones() -> None:
    """A former name (after a marriage, a transition) is shown only when there is no other."""
    today = date(2026, 12, 7)
    old = {"use": "old", "family": "Ancien-Nom", "given": ["Zoé"]}
    official = {"use": "official", "family": "Nouveau", "given": ["Zoé"]}
    assert human_name({"name": [old, official]}, today) == "Zoé Nouveau"
    ended = {"use": "official", "family": "Avant", "period": {"end": "2010-01-01"}}
    assert human_name({"name": [ended, {"family": "Après"}]}, today) == "Après"
    assert human_name({"name": [official, {"use": "usual", "text": "Zo"}]}, today) == "Zo"
    to_end = {"use": "official", "family": "Encore", "period": {"end": "2030-01-01"}}
    assert human_name({"name": [to_end, {"use": "nickname", "text": "Z"}]}, today) == "Encore"
    assert human_name({"name": [old]}, today) == "Zoé Ancien-Nom"  # better than nothing


@given(st.lists(st.fixed_dictionaries({}, optional=NAME_PARTS), max_size=4))
def test_a_name_is_one_of_the_names_written(names: list[dict[str, Any]]) -> None:
    shown = human_name({"name": names}, date(2026, 12, 7))
    assert shown == "" or any(shown == human_name({"name": [name]}) for name in names)

"""Names as people write them."""

from __future__ import annotations

from coffre.fhir.names import human_name


def test_text_wins_then_prefix_given_family() -> None:
    assert human_name({"name": [{"text": "Élise Tremblay", "family": "X"}]}) == "Élise Tremblay"
    named = {"name": [{"prefix": ["Dr."], "given": ["Jean", "Luc"], "family": "Roy"}]}
    assert human_name(named) == "Dr. Jean Luc Roy"
    assert human_name({"name": [{}, {"family": "Roy"}]}) == "Roy"
    assert human_name({"resourceType": "Patient"}) == ""

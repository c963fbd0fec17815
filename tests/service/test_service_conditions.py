"""The version ETags of If-Match and If-None-Match, read as RFC 9110 and FHIR write them."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coffre.exceptions import FhirError
from coffre.fhir.values import LARGEST
from coffre.service.conditions import none_match, parse_if_match

versions = st.integers(min_value=0, max_value=LARGEST)


@given(version=versions, form=st.sampled_from(['W/"{}"', '"{}"', "{}", ' W/"{}" ']))
def test_an_if_match_in_any_of_its_forms_names_its_version(version: int, form: str) -> None:
    assert parse_if_match(form.format(version)) == version


@given(text=st.text(max_size=20).filter(lambda t: not t.strip().strip('W/"').isdigit()))
def test_an_if_match_that_names_no_version_is_a_400(text: str) -> None:
    with pytest.raises(FhirError) as refused:
        parse_if_match(text)
    assert refused.value.status == 400


@given(version=versions, zeros=st.integers(min_value=1, max_value=3), weak=st.booleans())
def test_an_if_match_with_leading_zeros_names_no_version(
    version: int, zeros: int, weak: bool
) -> None:
    """``W/"01"`` is not version 1's ETag, as ``_history/01`` is not its URL: a 412."""
    with pytest.raises(FhirError) as refused:
        parse_if_match(f'{"W/" if weak else ""}"{"0" * zeros}{version}"')
    assert refused.value.status == 412


@given(version=versions, others=st.lists(versions, max_size=4), weak=st.booleans())
def test_if_none_match_names_a_version_anywhere_in_its_list(
    version: int, others: list[int], weak: bool
) -> None:
    tags = [f'{"W/" if weak else ""}"{n}"' for n in [*others, version]]
    assert none_match(", ".join(tags), version)
    assert none_match(", ".join(tags[:-1]), version) == (version in others)
    assert none_match("*", version)

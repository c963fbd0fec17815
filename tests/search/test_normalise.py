"""Properties of the normalisers every string, date and number index value goes through."""

from __future__ import annotations

import itertools
import unicodedata
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coffre.search.normalise import date_range, instant, number_range, phonetic, soundex, text

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_FORMATS = ("%Y", "%Y-%m", "%Y-%m-%d", "%Y-%m-%dT%H:%MZ", "%Y-%m-%dT%H:%M:%SZ")
moments = st.datetimes(
    min_value=datetime(1800, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
)


def _micros(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(microseconds=1)


@given(st.text())
def test_text_is_idempotent_and_leaves_no_accent(value: str) -> None:
    once = text(value)
    assert text(once) == once
    assert not any(unicodedata.combining(c) for c in once)


@given(st.text(alphabet=st.characters(codec="latin-1")))
def test_text_ignores_case_and_accents(value: str) -> None:
    assert text(value.upper()) == text(value.lower())
    plain = "".join(c for c in unicodedata.normalize("NFKD", value) if not unicodedata.combining(c))
    assert text(value) == text(plain)


def test_text_examples() -> None:
    assert text("  Bénédicte   du MARCHÉ ") == "benedicte du marche"
    assert text("Strasse") == text("STRAßE")
    assert text("\uff26\uff55\uff4c\uff4c") == "full"  # full-width letters


@given(moments, st.sampled_from(_FORMATS))
def test_a_date_range_holds_the_moment_it_was_written_from(moment: datetime, form: str) -> None:
    found = date_range(moment.strftime(form))
    assert found is not None
    low, high = found
    assert low <= _micros(moment.replace(microsecond=0)) < high


@given(moments)
def test_coarser_precisions_contain_finer_ones(moment: datetime) -> None:
    ranges = [date_range(moment.strftime(form)) for form in _FORMATS]
    for coarse, fine in itertools.pairwise(ranges):
        assert coarse is not None and fine is not None
        assert coarse[0] <= fine[0] < fine[1] <= coarse[1]


@given(moments, st.integers(min_value=-12 * 60, max_value=14 * 60))
def test_a_moment_has_one_range_whatever_its_zone(moment: datetime, minutes: int) -> None:
    shifted = moment + timedelta(minutes=minutes)
    sign = "+" if minutes >= 0 else "-"
    offset = f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"
    written = shifted.strftime("%Y-%m-%dT%H:%M:%S") + offset
    assert date_range(written) == date_range(moment.strftime("%Y-%m-%dT%H:%M:%SZ"))


def test_date_range_examples() -> None:
    assert date_range("2020-02") == (
        _micros(datetime(2020, 2, 1, tzinfo=UTC)),
        _micros(datetime(2020, 3, 1, tzinfo=UTC)),
    )
    low, high = date_range("2020-01-01T10:00:00.5+01:00") or (0, 0)
    assert high - low == 100_000 and low == _micros(
        datetime(2020, 1, 1, 9, 0, 0, 500_000, tzinfo=UTC)
    )
    assert date_range("2020-02-30") is None
    assert date_range("not a date") is None
    assert date_range("2020-01-01T10:00:00+14:00") is not None
    for zone in ("+25:00", "-14:30", "+01:75"):  # beyond the offsets FHIR allows
        assert date_range(f"2020-01-01T10:00:00{zone}") is None, zone


def test_dates_at_the_ends_of_the_calendar_have_a_range() -> None:
    year_9999 = _micros(datetime(9999, 1, 1, tzinfo=UTC))
    day = 86_400_000_000
    assert date_range("9999") == (year_9999, year_9999 + 365 * day)
    assert date_range("9999-12") == (year_9999 + 334 * day, year_9999 + 365 * day)
    assert date_range("9999-12-31") == (year_9999 + 364 * day, year_9999 + 365 * day)
    late = year_9999 + 365 * day + 30 * 60_000_000  # 23:30 at UTC-1 is past 9999
    assert date_range("9999-12-31T23:30:00-01:00") == (late, late + 1_000_000)
    first = _micros(datetime(1, 1, 1, tzinfo=UTC)) - 3_600_000_000  # before year 1 in UTC
    assert date_range("0001-01-01T00:00:00+01:00") == (first, first + 1_000_000)


@given(
    st.decimals(
        allow_nan=False, allow_infinity=False, places=3, min_value=-(10**6), max_value=10**6
    )
)
def test_a_number_stands_for_half_a_unit_of_its_last_digit_each_way(value: Decimal) -> None:
    low, high = number_range(value)
    assert low < value < high
    exponent = value.as_tuple().exponent
    assert isinstance(exponent, int)
    assert high - low == Decimal(1).scaleb(exponent)
    assert number_range(Decimal("100")) == (Decimal("99.5"), Decimal("100.5"))


@given(
    st.datetimes(
        min_value=datetime(1, 1, 2),
        max_value=datetime(9999, 12, 30),
        timezones=st.sampled_from(
            [UTC, timezone(timedelta(hours=14)), timezone(-timedelta(hours=13, minutes=59))]
        ),
    )
)
def test_an_instant_is_its_moment_in_microseconds(moment: datetime) -> None:
    written = moment.isoformat().replace("+00:00", "Z")
    assert instant(written) == _micros(moment)


def test_only_an_instant_is_an_instant() -> None:
    for value in (
        "2020-01-01",
        "2020-01-01T00:00Z",
        "2020-01-01T00:00:00",
        "20200101T000000Z",
        "2020-W01-1T00:00:00Z",
        "2020-01-01T00:00:00+15:00",
        "2020-02-30T00:00:00Z",
    ):
        assert instant(value) is None, value


@pytest.mark.parametrize(
    ("word", "code"),
    [
        ("robert", "r163"),
        ("rupert", "r163"),
        ("ashcraft", "a261"),  # h parts nothing: s and c are one code
        ("tymczak", "t522"),
        ("pfister", "p236"),  # f repeats the first letter's code
        ("honeyman", "h555"),
        ("lee", "l000"),
    ],
)
def test_soundex_gives_the_reference_codes(word: str, code: str) -> None:
    assert soundex(word) == code


@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=30))
def test_a_soundex_code_is_the_first_letter_and_three_digits(word: str) -> None:
    code = soundex(word)
    assert len(code) == 4 and code[0] == word[0] and code[1:].isdigit()
    assert phonetic(word.upper()) == code

"""NIR and RAMQ numbers, and the UTC offsets of French and Quebec local times."""

from __future__ import annotations

import re
from datetime import date, datetime, time
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coffre.synth.builders import Region
from coffre.synth.clock import stamp, utc_offset
from coffre.synth.identifiers import ascii_letters, nir, nir_key, ramq_number

sexes = st.sampled_from(["male", "female"])
births = st.dates(min_value=date(1900, 1, 1), max_value=date(2099, 12, 31))
# INSEE codes: metropolitan, Corsican, overseas (3-digit department), and born abroad (99).
birthplaces = st.one_of(
    st.from_regex(r"(0[1-9]|[1-8]\d|9[0-5])\d{3}", fullmatch=True),
    st.from_regex(r"2[AB]\d{3}", fullmatch=True),
    st.from_regex(r"97[1-6]\d{2}", fullmatch=True),
    st.from_regex(r"99\d{3}", fullmatch=True),
)
name_text = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZéèêëàâçôöîïùûüÉÈÇÔ -'",
    min_size=1,
    max_size=20,
).filter(lambda text: any(c.isalpha() for c in text))


def corsica_as_number(nir13: str) -> int:
    """The NIR as a number the other way round: 2A is 20 less 1, 2B is 20 less 2."""
    shift = {"2A": 1_000_000, "2B": 2_000_000}.get(nir13[5:7], 0)
    return int(nir13[:5] + ("20" if shift else nir13[5:7]) + nir13[7:]) - shift


def test_nir_key_of_a_published_example() -> None:
    assert nir_key("1800175056001") == 3  # the French core FHIR IG's example, 180017505600103


@given(sexes, births, birthplaces, st.integers(1, 999))
def test_nir_key_makes_the_number_divisible_by_97(
    sex: str, birth: date, birthplace: str, order: int
) -> None:
    value = nir(sex, birth, birthplace, order)
    assert len(value) == 15
    key = int(value[13:])
    assert 1 <= key <= 97
    assert (corsica_as_number(value[:13]) + key) % 97 == 0
    assert value[0] == ("1" if sex == "male" else "2")
    assert value[1:5] == birth.strftime("%y%m")
    assert value[5:10] == birthplace_at_birth(birthplace, birth)
    assert value[10:13] == f"{order:03d}"


def birthplace_at_birth(birthplace: str, birth: date) -> str:
    """Corsica was one department, 20, until 2A and 2B replaced it on 1 January 1976."""
    return (
        "20" + birthplace[2:]
        if birthplace[:2] in ("2A", "2B") and birth.year < 1976
        else birthplace
    )


def test_corsicans_born_before_1976_have_the_department_20() -> None:
    assert nir("male", date(1975, 12, 31), "2A004", 12) == "1751220004012" + "63"
    assert nir("female", date(1976, 1, 1), "2B033", 1) == "276012B033001" + "50"


def test_ramq_number_of_an_example() -> None:
    assert ramq_number("Tremblay", "Jean", "male", date(1985, 12, 3), 18) == "TREJ85120318"
    assert ramq_number("Côté", "Élodie", "female", date(1985, 12, 3), 7) == "COTE85620307"
    assert ramq_number("Roy", "Ève", "female", date(2001, 2, 9), 41) == "ROYE01520941"
    assert ramq_number("D'Amours", "Luc", "male", date(1950, 1, 1), 0) == "DAML50010100"
    assert ramq_number("Ba", "Awa", "female", date(1999, 5, 31), 12) == "BAXA99553112"


@given(name_text, name_text, sexes, births, st.integers(0, 99))
def test_ramq_number_encodes_name_birth_and_sex(
    family: str, given_name: str, sex: str, birth: date, serial: int
) -> None:
    value = ramq_number(family, given_name, sex, birth, serial)
    assert re.fullmatch(r"[A-Z]{3}[A-Z]?\d{8}", value)
    assert value[:3] == ascii_letters(family)[:3].ljust(3, "X")
    digits = value[-8:]
    month = int(digits[2:4])
    assert (month > 50) == (sex == "female")
    assert date(birth.year, month - 50 * (month > 50), int(digits[4:6])) == birth
    assert digits[:2] == f"{birth.year % 100:02d}"
    assert int(digits[6:]) == serial


@given(name_text)
def test_ascii_letters_keeps_only_plain_capitals(text: str) -> None:
    folded = ascii_letters(text)
    assert re.fullmatch(r"[A-Z]*", folded)


@pytest.mark.parametrize(
    ("region", "day", "offset"),
    [
        ("FR", date(2024, 7, 1), "+02:00"),
        ("FR", date(2024, 12, 1), "+01:00"),
        ("FR", date(2024, 3, 30), "+01:00"),
        ("FR", date(2024, 3, 31), "+02:00"),
        ("FR", date(2024, 10, 27), "+01:00"),
        ("FR", date(1970, 7, 1), "+01:00"),
        ("FR", date(1990, 10, 10), "+01:00"),
        ("QC", date(2024, 3, 9), "-05:00"),
        ("QC", date(2024, 3, 10), "-04:00"),
        ("QC", date(2024, 11, 3), "-05:00"),
        ("QC", date(1995, 4, 1), "-05:00"),
        ("QC", date(1995, 4, 2), "-04:00"),
    ],
)
def test_utc_offsets(region: Region, day: date, offset: str) -> None:
    assert utc_offset(region, day) == offset


def test_stamp_is_a_fhir_date_time() -> None:
    assert stamp("QC", datetime(2019, 4, 2, 10, 30)) == "2019-04-02T10:30:00-04:00"
    assert stamp("FR", datetime(2019, 1, 2, 8, 0)) == "2019-01-02T08:00:00+01:00"


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except ZoneInfoNotFoundError:
        pytest.skip("no time-zone database on this host")


@pytest.mark.parametrize(
    ("region", "name", "since"),
    [("FR", "Europe/Paris", date(1996, 1, 1)), ("QC", "America/Montreal", date(1987, 1, 1))],
)
@given(offset_days=st.integers(0, 365 * 40))
def test_offsets_agree_with_the_time_zone_database(
    region: Region, name: str, since: date, offset_days: int
) -> None:
    day = date.fromordinal(since.toordinal() + offset_days)
    noon = datetime.combine(day, time(12), zone(name))
    assert utc_offset(region, day) == noon.isoformat()[-6:]

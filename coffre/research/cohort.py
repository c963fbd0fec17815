"""Who is in a project's study: its cohort, as its authorisation names the population.

A cohort is a set of codes, of which a patient holds at least one in a record of the
project's period (or from an earlier day, ``codes_from``: a diagnosis made before the
data's period), in the element the extract's tables read as ``vocabulary`` and ``code``,
and a range of years of birth; each part left out admits everyone. The extract checks it
patient by patient (``coffre/research/extract.py``). docs/research.md says why a code may
name a type the project does not receive, and what the host learns.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from coffre.research.errors import ProjectError
from coffre.research.tables import TABLE_OF, Row

CODED = frozenset(
    name for name, (table, _) in TABLE_OF.items() if "code" in {c.name for c in table.columns}
)
"""The types whose rows carry a code: those a cohort's codes are looked for in."""
_SEPARATOR = "|"


@dataclass(frozen=True, slots=True)
class Cohort:
    codes: tuple[str, ...] = ()
    """``SYSTEM|CODE``s, a patient in when a record of the period carries one; none: all."""
    born_from: int | None = None
    born_to: int | None = None
    """Years of birth, inclusive; None: no bound."""
    codes_from: date | None = None
    """The first day a record carrying a code counts from; None: the period's first."""

    def __post_init__(self) -> None:
        for text in self.codes:
            if not isinstance(text, str) or not all(text.partition(_SEPARATOR)):
                raise ProjectError(f"a cohort's code is SYSTEM|CODE, not {text!r}")
        if self.codes_from is not None and not self.codes:
            raise ProjectError("a cohort's codes_from goes with its codes")
        first, last = self.born_from, self.born_to
        if first is not None and last is not None and first > last:
            raise ProjectError("the cohort's years of birth end before they start")

    @property
    def by_birth(self) -> bool:
        return self.born_from is not None or self.born_to is not None

    @property
    def types(self) -> frozenset[str]:
        """The types read to find a cohort's codes, whatever the project receives."""
        return CODED if self.codes else frozenset()

    def period(self, data: tuple[date, date]) -> tuple[date, date]:
        """Where its codes are looked for, given the project's period of ``data``."""
        return (self.codes_from or data[0]), data[1]

    def born_in(self, year: int | None) -> bool:
        """Whether a year of birth (None: unknown) is within the cohort's range."""
        if not self.by_birth:
            return True
        return (
            year is not None
            and (self.born_from is None or year >= self.born_from)
            and (self.born_to is None or year <= self.born_to)
        )

    def holds(self, row: Row) -> bool:
        """Whether a row carries one of the cohort's codes."""
        system, code = row.get("vocabulary"), row.get("code")
        if system is None or code is None:
            return False
        return f"{system}{_SEPARATOR}{code}" in self.codes

    def summary(self) -> str:
        """The cohort in a few words, for ``coffre research list``."""
        since = f" since {self.codes_from}" if self.codes_from else ""
        parts = [f"codes {','.join(self.codes)}{since}"] if self.codes else []
        if self.by_birth:
            parts.append(f"born {self.born_from or ''}..{self.born_to or ''}")
        return "; ".join(parts) or "everyone"

    def as_json(self) -> dict[str, Any]:
        since = None if self.codes_from is None else self.codes_from.isoformat()
        return {
            "codes": list(self.codes),
            "born_from": self.born_from,
            "born_to": self.born_to,
            "codes_from": since,
        }

    @classmethod
    def from_json(cls, fields: dict[str, Any]) -> Cohort:
        since = fields.get("codes_from")  # absent from a file of before it
        return cls(
            tuple(fields["codes"]),
            fields["born_from"],
            fields["born_to"],
            None if since is None else date.fromisoformat(since),
        )


EVERYONE = Cohort()
"""The cohort of a project that names none: every patient who did not refuse."""

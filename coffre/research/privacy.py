"""Differentially private counts of persons: OpenDP's Laplace mechanisms, calibrated to
each person's bounded contribution.

The unit of privacy is a person. A person's cells are bounded first (``bounded``: at most
K of them, chosen at random where they have more), so that adding or removing a person
changes at most K cells, each by one, and the total by one. The cells then go through
OpenDP's Laplace-threshold mechanism, which adds discrete Laplace noise to each and
publishes only those whose noisy count reaches a threshold: a cell that exists because of
one person's rare code comes out with probability at most δ. The total, a count of
public key, gets discrete Laplace noise of the same scale. The two losses add up
(sequential composition); OpenDP's privacy maps give each. docs/research.md.
"""

from __future__ import annotations

import math
import secrets
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from typing import Any

import opendp.prelude as dp

from coffre.research.projects import MOST_EPSILON, ProjectError

dp.enable_features("contrib")

Key = tuple[Any, ...]
_CHOICE = secrets.SystemRandom()
_LARGEST_COUNT = 2**31 - 1
"""OpenDP counts in 32-bit integers: the largest threshold there is."""
CONFIDENCE = 0.95
"""The share of noisy counts within the accuracy ``Noise.describe`` gives."""


@dataclass(frozen=True, slots=True)
class Privacy:
    """A count's differential privacy as asked: ε, and δ and K where the asker sets them."""

    epsilon: Decimal
    delta: Decimal | None = None
    max_cells: int | None = None
    """How many cells a person counts in at most (K)."""

    def __post_init__(self) -> None:
        delta = Decimal(0) if self.delta is None else self.delta
        if not (self.epsilon.is_finite() and 0 < self.epsilon <= MOST_EPSILON and 0 <= delta < 1):
            raise ProjectError(
                f"a count's ε is above 0, up to {MOST_EPSILON:,f}, and its δ from 0 to under 1"
            )
        if self.max_cells is not None and self.max_cells < 1:
            raise ProjectError("a person counts in one cell at least")


def kept(cells: Sequence[Key], most: int) -> list[Key]:
    """A person's distinct cells, at most ``most`` of them, chosen at random (a CSPRNG)."""
    return list(cells) if len(cells) <= most else _CHOICE.sample(list(cells), most)


def bounded(persons: Iterable[Sequence[Key]], most: int) -> tuple[dict[Key, int], int]:
    """The persons of each cell, each counted in ``most`` of their cells at most, and the
    persons in all, given each person's distinct cells."""
    counts: Counter[Key] = Counter()
    total = 0
    for cells in persons:
        counts.update(kept(cells, most))
        total += 1
    return dict(counts), total


@lru_cache(maxsize=256)
def _cells_mechanism(scale: float, threshold: int) -> dp.Measurement:
    """Counts by cell (a hashmap), noised, those under ``threshold`` left out."""
    return dp.m.make_laplace_threshold(
        dp.map_domain(dp.atom_domain(T=str), dp.atom_domain(T=int)),
        dp.l01inf_distance(dp.absolute_distance(T=int)),
        scale=scale,
        threshold=threshold,
    )


@lru_cache(maxsize=256)
def _total_mechanism(scale: float) -> dp.Measurement:
    return dp.m.make_laplace(dp.atom_domain(T=int), dp.absolute_distance(T=int), scale=scale)


def _mapped(mechanism: dp.Measurement, distance: object) -> Any:
    """The privacy loss of ``mechanism`` by its map (OpenDP's binding is untyped)."""
    return mechanism.map(distance)  # type: ignore[no-untyped-call]


def _boundary(passes: Callable[[Any], bool], bounds: tuple[Any, Any] | None, kind: type) -> Any:
    """The passing value nearest to where ``passes`` turns (OpenDP's search)."""
    return dp.binary_search(passes, bounds=bounds, T=kind)


@dataclass(frozen=True, slots=True)
class Noise:
    """The mechanisms of one count, calibrated: the total's, and the cells' where the
    count is by columns (``threshold`` is then set)."""

    epsilon: Decimal
    delta: Decimal
    max_cells: int
    """K: how many cells a person counts in at most (1 for the total alone)."""
    scale: float
    threshold: int | None

    def loss(self) -> tuple[float, float]:
        """(ε, δ) by OpenDP's privacy maps, for one person added or removed: the total
        changed by one, and K cells at most, each by one."""
        epsilon, delta = float(_mapped(_total_mechanism(self.scale), 1)), 0.0
        if self.threshold is not None:
            # OpenDP 0.16 publishes a noisy count equal to the threshold, but leaves its
            # chance out of δ (opendp/opendp#2922): the δ of a threshold is the map's of
            # the one below, which still holds once that is mended.
            k, below = self.max_cells, _cells_mechanism(self.scale, self.threshold - 1)
            cells = _mapped(below, (k, k, 1))
            epsilon, delta = epsilon + cells[0], cells[1]
        return epsilon, delta

    def release(self, cells: dict[Key, int], total: int) -> tuple[dict[Key, int], int]:
        """The noisy cells that reach the threshold, and the noisy total, at least 0."""
        noisy: dict[Key, int] = {}
        if self.threshold is not None:
            keys = list(cells)
            named = {str(index): cells[key] for index, key in enumerate(keys)}
            answer = _cells_mechanism(self.scale, self.threshold)(named)
            noisy = {keys[int(index)]: persons for index, persons in answer.items()}
        return noisy, max(0, _total_mechanism(self.scale)(total))

    def as_json(self) -> dict[str, Any]:
        return {
            "epsilon": str(self.epsilon),
            "delta": str(self.delta),
            "max_cells": self.max_cells,
            "scale": self.scale,
            "threshold": self.threshold,
        }

    def describe(self) -> str:
        """What the noise does to the answer, for the one who reads it."""
        within = dp.discrete_laplacian_scale_to_accuracy(self.scale, 1 - CONFIDENCE)
        text = (
            f"differentially private counts: ε {self.epsilon}, δ {self.delta}; discrete"
            f" Laplace noise of scale {self.scale:.3g} on each count, {CONFIDENCE:.0%} of"
            f" them within ±{within:.0f} of the exact count"
        )
        if self.threshold is None:
            return text
        return text + (
            f"; each person counts in {self.max_cells} of their cells at most (chosen at"
            " random where they have more: those cells then miss them), and a cell whose"
            f" noisy count is under {self.threshold} is not shown, nor is its existence"
        )


def _at_most(value: Decimal) -> float:
    """The largest float not above ``value``: the loss is never more than the one spent
    (``float(Decimal("0.1"))`` is a little more than 0.1)."""
    near = float(value)
    return math.nextafter(near, -math.inf) if Decimal(near) > value else near


def calibrated(privacy: Privacy, delta: Decimal, max_cells: int | None) -> Noise:
    """The noise of a count of privacy loss ``privacy.epsilon``, and ``delta`` where the
    count is by columns, in ``max_cells`` of which a person is at most (None: the total
    alone): the smallest scale whose ε, by OpenDP's maps, is within the one asked, then
    the smallest threshold whose δ is. ProjectError where there is none."""
    epsilon = _at_most(privacy.epsilon)
    by_cells = max_cells is not None
    cells, delta = (max_cells, delta) if max_cells is not None else (1, Decimal(0))

    def noise(scale: float, threshold: int | None) -> Noise:
        return Noise(privacy.epsilon, delta, cells, scale, threshold)

    # A cell's ε does not depend on the threshold, its δ does. No threshold under 2 is
    # (see Noise.loss): searching from 1, where none passes, finds 2 where it does.
    widest = _LARGEST_COUNT if by_cells else None
    try:
        scale = _boundary(lambda s: noise(s, widest).loss()[0] <= epsilon, None, float)
        threshold = (
            _boundary(
                lambda t: t > 1 and noise(scale, t).loss()[1] <= _at_most(delta),
                (1, _LARGEST_COUNT),
                int,
            )
            if by_cells
            else None
        )
    except (ValueError, dp.OpenDPException):
        raise ProjectError(f"no noise gives ε {privacy.epsilon} and δ {delta}") from None
    return noise(scale, threshold)

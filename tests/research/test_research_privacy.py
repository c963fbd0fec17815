"""Differentially private counts: the loss OpenDP's maps give is the one claimed, each
person's cells are bounded, and noise is drawn."""

from __future__ import annotations

import math
from dataclasses import replace
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coffre.research.privacy import Key, Noise, Privacy, bounded, calibrated, kept
from coffre.research.projects import ProjectError

CELLS = st.lists(st.tuples(st.sampled_from("abcdefgh"), st.integers(0, 3)), unique=True)


@pytest.mark.parametrize(
    ("epsilon", "delta", "most"),
    [("1", "1e-8", 1), ("0.3", "1e-8", 3), ("0.1", "1e-6", 5), ("2.5", "1e-9", 2)],
)
def test_the_loss_by_opendps_maps_is_the_one_claimed_for_k_cells_a_person(
    epsilon: str, delta: str, most: int
) -> None:
    noise = calibrated(Privacy(Decimal(epsilon)), Decimal(delta), most)
    spent, chance = noise.loss()
    assert Decimal(spent) <= Decimal(epsilon) and Decimal(chance) <= Decimal(delta)
    assert spent > float(epsilon) * (1 - 1e-9)  # no more noise than it takes
    # The total and each of K cells get the same scale: ε = (K + 1) / scale.
    assert noise.scale == pytest.approx((most + 1) / float(epsilon))
    assert noise.threshold is not None
    assert replace(noise, threshold=noise.threshold - 1).loss()[1] > float(delta)
    # A person in one cell more than K would cost more than ε.
    assert replace(noise, max_cells=most + 1).loss()[0] > float(epsilon)


def test_the_delta_claimed_covers_how_often_a_cell_of_one_person_shows() -> None:
    """At threshold T, a cell of one person shows when its noise is T - 1 or more: by
    the discrete Laplace distribution, p^(T - 1) / (1 + p) with p = exp(-1 / scale).
    OpenDP 0.16's map gives the chance of T instead (opendp/opendp#2922)."""
    noise = Noise(Decimal(1), Decimal("0.5"), 1, 1.0, 2)
    p = math.exp(-1)
    shows = p / (1 + p)
    assert noise.loss()[1] >= shows * (1 - 1e-9)
    draws = 2000
    shown = sum(("one",) in noise.release({("one",): 1}, 1)[0] for _ in range(draws))
    # Hoeffding: off by 0.1 with a chance of 2 exp(-2 * 2000 * 0.1**2) < 1e-17 at most.
    assert abs(shown / draws - shows) < 0.1


def test_the_total_alone_costs_no_delta() -> None:
    noise = calibrated(Privacy(Decimal("0.5")), Decimal("1e-8"), None)
    assert (noise.threshold, noise.delta, noise.scale) == (None, 0, pytest.approx(2.0))
    assert noise.loss() == (pytest.approx(0.5), 0.0)
    assert noise.loss()[0] <= 0.5


@pytest.mark.parametrize(
    ("epsilon", "delta", "most", "message"),
    [
        ("1e-9", "1e-8", 1, "no noise gives"),  # a threshold beyond 32 bits
        ("1", "0", 2, "no noise gives"),  # a threshold hides a cell with certainty never
    ],
)
def test_noise_that_cannot_be_had_is_refused(
    epsilon: str, delta: str, most: int, message: str
) -> None:
    with pytest.raises(ProjectError, match=message):
        calibrated(Privacy(Decimal(epsilon)), Decimal(delta), most)


@pytest.mark.parametrize(
    "asked",
    [
        {"epsilon": Decimal(0)},
        {"epsilon": Decimal(-1)},
        {"epsilon": Decimal(1), "delta": Decimal(1)},
        {"epsilon": Decimal(1), "max_cells": 0},
        {"epsilon": Decimal("1e999999999")},  # its spending overflowed Decimal: a traceback
    ],
)
def test_a_privacy_out_of_bounds_is_refused(asked: dict[str, object]) -> None:
    with pytest.raises(ProjectError):
        Privacy(**asked)  # type: ignore[arg-type]


@given(CELLS, st.integers(1, 5))
def test_a_person_keeps_k_of_their_own_cells_at_most(cells: list[Key], most: int) -> None:
    chosen = kept(cells, most)
    assert len(chosen) == len(set(chosen)) == min(most, len(cells))
    assert set(chosen) <= set(cells)
    if len(cells) <= most:  # one cell, or K: unaffected
        assert chosen == cells


@given(st.lists(CELLS), CELLS, st.integers(1, 4))
def test_one_person_changes_k_cells_by_one_and_the_total_by_one(
    others: list[list[Key]], one: list[Key], most: int
) -> None:
    """The sensitivity the noise is calibrated to: (K, K, 1) for the cells, 1 for the
    total. The others keep all their cells, so that only one person's choice is random."""
    others = [cells[:most] for cells in others]
    without, total = bounded(others, most)
    with_one, total_with_one = bounded([*others, one], most)
    changed = {key: with_one.get(key, 0) - without.get(key, 0) for key in with_one}
    changed = {key: by for key, by in changed.items() if by}
    assert len(changed) <= most and set(changed.values()) <= {1}
    assert set(changed) <= set(one)
    assert total_with_one == total + 1 == len(others) + 1


def _mean_bound(noise: Noise, draws: int) -> float:
    """How far the mean of ``draws`` noisy counts may be from the exact one, but with a
    chance under 1e-40: Chernoff's bound, with the moment generating function of the
    discrete Laplace distribution of that scale at λ = 1 / (2 scale)."""
    p, rate = math.exp(-1 / noise.scale), 1 / (2 * noise.scale)
    moment = (1 - p) ** 2 / ((1 - p * math.exp(rate)) * (1 - p * math.exp(-rate)))
    return (math.log(moment) + (40 * math.log(10) + math.log(2)) / draws) / rate


def test_noise_is_drawn_and_centred_on_the_exact_count() -> None:
    noise = calibrated(Privacy(Decimal(1)), Decimal("1e-8"), 2)
    exact = 1_000_000
    draws = [noise.release({("a",): exact, ("b",): 1}, exact) for _ in range(1000)]
    cells = [cells[("a",)] for cells, _ in draws]
    totals = [total for _, total in draws]
    bound = _mean_bound(noise, len(draws))
    assert bound < 2 * noise.scale
    for answers in (cells, totals):
        assert len(set(answers)) > 1
        assert abs(sum(answers) / len(answers) - exact) < bound


def test_a_cell_of_few_persons_does_not_show() -> None:
    """Its chance to show is δ at most, by draw: 1e-15 (OpenDP's maps give none under
    1.1e-16)."""
    noise = calibrated(Privacy(Decimal(1)), Decimal("1e-15"), 1)
    shown = [noise.release({("rare",): 1, ("common",): 500}, 501)[0] for _ in range(200)]
    assert all(list(cells) == [("common",)] for cells in shown)


def test_a_noisy_total_is_never_negative() -> None:
    """Half the noisy counts of nobody would be under 0 (of 200, all but with a chance of
    2^-200): they read 0."""
    noise = calibrated(Privacy(Decimal("0.01")), Decimal("1e-8"), None)
    assert min(noise.release({(): 0}, 0)[1] for _ in range(200)) == 0

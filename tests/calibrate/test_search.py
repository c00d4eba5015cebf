"""Selection and search rules (pure, no model)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compeft.calibrate.search import GridPoint, alpha_plan, coarse_alphas, select
from compeft.cliargs import UsageError
from compeft.config import PAPER_ALPHAS
from compeft.errors import CalibrationError, OptionError


def pt(density, alpha, score, nbytes):
    return GridPoint(density, alpha, score, None, nbytes, alpha * 0.01, 10, 0.0)


def test_highest_score_wins():
    points = [pt(0.1, 1, 0.5, 100), pt(0.1, 4, 0.9, 100), pt(0.2, 2, 0.8, 200)]
    assert select(points).alpha == 4


def test_tolerance_picks_smallest_artifact_within_t():
    points = [pt(0.05, 5, 0.86, 50), pt(0.1, 4, 0.9, 100), pt(0.2, 2, 0.91, 200)]
    assert select(points).density == 0.2
    assert select(points, tolerance=0.02).density == 0.1
    assert select(points, tolerance=0.05).density == 0.05


def test_ties_go_to_smaller_artifact_then_alpha_nearer_one():
    points = [pt(0.2, 1, 0.9, 200), pt(0.1, 6, 0.9, 100), pt(0.1, 2, 0.9, 100), pt(0.1, 0.5, 0.9, 100)]
    chosen = select(points)
    assert (chosen.density, chosen.alpha) == (0.1, 0.5)  # |0.5-1| < |2-1|
    assert select([pt(0.1, 3, 0.9, 100), pt(0.1, 2, 0.9, 100)]).alpha == 2


def test_nan_scores_are_ignored_and_empty_is_an_error():
    assert select([pt(0.1, 1, math.nan, 100), pt(0.1, 2, 0.1, 100)]).alpha == 2
    with pytest.raises(CalibrationError):
        select([])
    with pytest.raises(OptionError):
        select([pt(0.1, 1, 0.5, 1)], tolerance=-1)


def test_density_grid_is_checked_sorted_and_deduplicated():
    from compeft.calibrate.cli import build_parser
    from compeft.cliargs import config_from_args
    from compeft.config import CalibrationConfig

    def parsed(text):
        args = build_parser().parse_args(["src", "dst", "--base", "b", "--task", "t", "--densities", text])
        return config_from_args(CalibrationConfig, args, args.config_fields).densities

    assert parsed("0.2, 0.05,0.1,0.1") == (0.05, 0.1, 0.2)
    for bad in ("0", "1.5", "x", "", "nan"):
        with pytest.raises((OptionError, UsageError), match="--densities"):
            parsed(bad)


def test_coarse_grid_keeps_both_ends():
    assert coarse_alphas(PAPER_ALPHAS) == [0.5, 2.0, 4.0, 6.0, 10.0]
    assert coarse_alphas((1.0, 2.0)) == [1.0, 2.0]


def run_plan(alphas, mode, score):
    calls = []

    def evaluate(a):
        calls.append(a)
        return pt(0.1, a, score(a), 100)

    points = alpha_plan(alphas, mode, evaluate)
    return points, calls


def test_refine_finds_the_peak_with_fewer_evaluations():
    peak = 5.0
    points, calls = run_plan(PAPER_ALPHAS, "refine", lambda a: -abs(math.log(a / peak)))
    assert select(points).alpha == peak
    assert len(calls) < len(PAPER_ALPHAS) and len(set(calls)) == len(calls)
    _, grid_calls = run_plan(PAPER_ALPHAS, "grid", lambda a: -abs(math.log(a / peak)))
    assert sorted(grid_calls) == list(PAPER_ALPHAS)


@settings(max_examples=60, deadline=None)
@given(peak_index=st.integers(0, len(PAPER_ALPHAS) - 1), width=st.floats(0.3, 3.0))
def test_refine_agrees_with_grid_on_unimodal_curves(peak_index, width):
    peak = PAPER_ALPHAS[peak_index]

    def score(a):
        return math.exp(-((math.log(a) - math.log(peak)) / width) ** 2)

    refine, _ = run_plan(PAPER_ALPHAS, "refine", score)
    grid, _ = run_plan(PAPER_ALPHAS, "grid", score)
    assert select(refine).alpha == select(grid).alpha == peak


def test_refine_is_deterministic():
    table = {a: s for a, s in zip(PAPER_ALPHAS, [0.1, 0.3, 0.2, 0.6, 0.6, 0.5, 0.2, 0.1, 0.0])}
    first = run_plan(PAPER_ALPHAS, "refine", table.__getitem__)[1]
    assert first == run_plan(PAPER_ALPHAS, "refine", table.__getitem__)[1]


def test_unknown_search_mode():
    with pytest.raises(OptionError):
        run_plan(PAPER_ALPHAS, "random", lambda a: 0.0)

"""Which (density, α) points to evaluate, and which evaluated point to choose.

``grid`` evaluates every α at every density. ``refine`` (the default) evaluates every other α of the
sorted grid (ends included), then hill-climbs: the skipped grid neighbours of the best α so far are
evaluated until the best point's neighbours are all known. Selection: the highest score; with a
tolerance T, the smallest artifact among the points within T of the best; ties go to the smaller
artifact, then to α nearer 1, then to the higher score, then to the smaller α. Everything is
deterministic given the scores.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass

from compeft.config import SEARCH_MODES
from compeft.errors import CalibrationError, OptionError


@dataclass(frozen=True)
class GridPoint:
    """One evaluated compression setting."""

    density: float
    alpha: float
    score: float
    stderr: float | None
    bytes: int  # artifact bytes at this density (real codec)
    scale: float  # s = float32(α·σ)
    kept: int
    seconds: float  # evaluation wall time

    def to_dict(self) -> dict:
        return asdict(self)


def preference(point: GridPoint) -> tuple:
    """Sort key among equally acceptable points: smaller artifact, α nearer 1, higher score, smaller α."""
    return (point.bytes, abs(point.alpha - 1.0), -point.score, point.alpha, point.density)


def select(points: Sequence[GridPoint], tolerance: float = 0.0) -> GridPoint:
    """The chosen point: within ``tolerance`` of the best score, preferred by ``preference``."""
    if not points:
        raise CalibrationError("no point was evaluated")
    if tolerance < 0 or not math.isfinite(tolerance):
        raise OptionError(f"--tolerance {tolerance!r} must be a finite number >= 0")
    finite = [p for p in points if math.isfinite(p.score)]
    if not finite:
        raise CalibrationError("every evaluated point scored NaN")
    best = max(p.score for p in finite)
    # a tiny epsilon absorbs float noise in scores that are equal by construction (e.g. 0.3 vs 0.30000000000000004)
    eligible = [p for p in finite if p.score >= best - tolerance - 1e-12]
    return min(eligible, key=preference)


def coarse_alphas(alphas: Sequence[float]) -> list[float]:
    """Every other α of the sorted grid, always including both ends."""
    picked = list(alphas[::2])
    if alphas[-1] not in picked:
        picked.append(alphas[-1])
    return picked


def best_alpha(points: Iterable[GridPoint]) -> float:
    """The α that ``select`` would choose among points of one density (tolerance 0)."""
    return select(list(points)).alpha


def alpha_plan(alphas: Sequence[float], mode: str, evaluate: Callable[[float], GridPoint]) -> list[GridPoint]:
    """Evaluate the α of one density by the search mode; returns the points in evaluation order."""
    if mode not in SEARCH_MODES:
        raise OptionError(f"--search {mode!r} is not one of {', '.join(SEARCH_MODES)}")
    alphas = sorted(alphas)
    done: dict[float, GridPoint] = {}
    first = alphas if mode == "grid" or len(alphas) <= 3 else coarse_alphas(alphas)
    for a in first:
        done[a] = evaluate(a)
    if mode == "grid":
        return list(done.values())
    while True:
        i = alphas.index(best_alpha(done.values()))
        todo = [alphas[j] for j in (i - 1, i + 1) if 0 <= j < len(alphas) and alphas[j] not in done]
        if not todo:
            return list(done.values())
        for a in todo:
            done[a] = evaluate(a)

"""Similarity of compressed artifacts from their bit planes (ComPEFT §2.2), never from dense vectors.

Over the ternary patterns t_A, t_B (supports S_A, S_B) of artifacts with one record layout:
``cosine`` = t_A·t_B / √(|S_A|·|S_B|), ``overlap`` = |S_A ∩ S_B| / |S_A ∪ S_B|, ``common`` = |S_A ∩ S_B| and
``sign_agreement`` = the share of common positions whose signs agree. With common and disagree counted by
popcount (``compeft.ops.popcount``), t_A·t_B = common − 2·disagree. A value whose denominator is 0 is None.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from compeft.config import SimilarityConfig
from compeft.devices import resolve_device
from compeft.errors import InputError, OptionError
from compeft.ops.files import planes_of
from compeft.ops.planes import TernaryPlanes, check_same_layout
from compeft.ops.popcount import many_counts, pair_counts


@dataclass(frozen=True)
class Similarity:
    """The similarity of one pair of artifacts (``a``, ``b``: how they were named)."""

    a: str
    b: str
    cosine: float | None
    overlap: float | None
    common: int
    sign_agreement: float | None

    def to_dict(self) -> dict:
        return asdict(self)


def measures(kept_a: int, kept_b: int, common: int, disagree: int) -> tuple[float | None, float | None, float | None]:
    """(cosine, overlap, sign_agreement) from the four counts."""
    cosine = (common - 2 * disagree) / math.sqrt(kept_a * kept_b) if kept_a and kept_b else None
    union = kept_a + kept_b - common
    overlap = common / union if union else None
    agreement = (common - disagree) / common if common else None
    return cosine, overlap, agreement


def pair_similarity(a: TernaryPlanes, b: TernaryPlanes) -> Similarity:
    """The similarity of two artifacts' planes (same layout, same device)."""
    check_same_layout([a, b])
    common, disagree = pair_counts(a.support, a.negative, b.support, b.negative)
    return Similarity(a.label, b.label, *_ordered(measures(a.kept, b.kept, common, disagree), common))


def _ordered(values: tuple, common: int) -> tuple:
    cosine, overlap, agreement = values
    return cosine, overlap, common, agreement


def resolve(config: SimilarityConfig | None, options: dict) -> SimilarityConfig:
    if config is not None and options:
        raise OptionError(f"pass either a SimilarityConfig or its fields, not both ({', '.join(sorted(options))})")
    return config if config is not None else SimilarityConfig(**options)


def similarity(artifacts: Sequence[str | Path | TernaryPlanes], config: SimilarityConfig | None = None,
               **options) -> list[Similarity]:
    """Every pair (i < j) of the artifacts (directories, container files or opened planes), in input order.

    ``options`` are SimilarityConfig fields (device) when no ``config`` is given."""
    config = resolve(config, options)
    if len(artifacts) < 2:
        raise InputError("similarity needs at least two artifacts")
    device = resolve_device(config.device)
    planes = planes_of(artifacts, device)
    check_same_layout(planes)
    return [pair_similarity(planes[i], planes[j]) for i in range(len(planes)) for j in range(i + 1, len(planes))]


class PlaneBank:
    """Many artifacts' planes of one layout held on a device as [n, words] matrices, searched in one pass."""

    def __init__(self, planes: Sequence[TernaryPlanes]) -> None:
        if not planes:
            raise InputError("a plane bank needs at least one artifact")
        check_same_layout(list(planes))
        self.labels = [p.label for p in planes]
        self.support = torch.stack([p.support for p in planes])
        self.negative = torch.stack([p.negative for p in planes])
        self.kept = torch.tensor([p.kept for p in planes], dtype=torch.float64, device=self.support.device)
        self.layout, self.d = planes[0].layout, planes[0].d

    @classmethod
    def of_matrices(cls, support: torch.Tensor, negative: torch.Tensor, kept: torch.Tensor, labels: Sequence[str],
                    layout: str, d: int) -> PlaneBank:
        """A bank over planes already stacked (benchmarks, registries that keep them resident)."""
        bank = cls.__new__(cls)
        bank.support, bank.negative, bank.labels, bank.layout, bank.d = support, negative, list(labels), layout, d
        bank.kept = kept.to(device=support.device, dtype=torch.float64)
        return bank

    def __len__(self) -> int:
        return self.support.shape[0]

    def cosines(self, query: TernaryPlanes) -> torch.Tensor:
        """Cosine of the query with every artifact of the bank (float64, NaN where a support is empty)."""
        if query.d != self.d or query.layout != self.layout:
            raise InputError(f"{query.label}: record layout differs from the bank's artifacts")
        common, disagree = many_counts(query.support, query.negative, self.support, self.negative)
        return (common - 2 * disagree).to(torch.float64) / torch.sqrt(self.kept * query.kept)

    def top(self, query: TernaryPlanes, k: int = 10, *, min_cosine: float | None = None) -> list[tuple[int, float]]:
        """The k most similar artifacts (index into the bank, cosine), best first."""
        cos = self.cosines(query).nan_to_num(nan=-2.0)
        values, index = torch.topk(cos, min(k, len(self)))
        pairs = [(int(i), float(v)) for i, v in zip(index.tolist(), values.tolist()) if v > -2.0]
        return [(i, v) for i, v in pairs if min_cosine is None or v >= min_cosine]

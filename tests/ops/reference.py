"""Dense references the operations are checked against, computed from reconstructed tensors (compeft.load) in
float64, independently of the bit planes."""

from __future__ import annotations

import math
from pathlib import Path

import torch

import compeft
from compeft.artifact import open_artifact


def dense_tau(artifact: Path) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(t, τ̂ = s·t, s) of an artifact in τ order (sorted delta names), float64, from its reconstructed tensors."""
    info = compeft.inspect(artifact)
    state = compeft.load(artifact)
    records = open_artifact(artifact).records  # which tensors are deltas, from which θ_init
    delta = torch.cat([(state[n].to(torch.float64) - theta).reshape(-1) for n, theta in zip(records.names, records.theta_inits)])
    t = torch.sign(delta)
    return t, t * info.scale, info.scale


def dense_similarity(a: Path, b: Path) -> dict:
    ta, _, _ = dense_tau(a)
    tb, _, _ = dense_tau(b)
    sa, sb = ta != 0, tb != 0
    common = int((sa & sb).sum())
    union = int((sa | sb).sum())
    agree = int(((ta == tb) & sa).sum())
    na, nb = int(sa.sum()), int(sb.sum())
    return {"cosine": float(ta @ tb) / math.sqrt(na * nb) if na and nb else None,
            "overlap": common / union if union else None, "common": common,
            "sign_agreement": agree / common if common else None}


def dense_merge(artifacts: list[Path], method: str, weights: list[float], lam: float) -> torch.Tensor:
    """Task arithmetic and TIES exactly as issue 14 defines them, in float64."""
    taus = torch.stack([dense_tau(a)[1] for a in artifacts])
    w = torch.tensor(weights, dtype=torch.float64).unsqueeze(1)
    if method == "task_arithmetic":
        return lam * (w * taus).sum(0)
    gamma = torch.sign((w * taus).sum(0))
    agree = (torch.sign(taus) == gamma) & (taus != 0)
    count = agree.sum(0).to(torch.float64)
    total = (w * taus * agree).sum(0)
    return torch.where(count > 0, lam * total / count.clamp(min=1), torch.zeros_like(total))

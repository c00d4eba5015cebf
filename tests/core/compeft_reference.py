"""Independent reference implementation of the ComPEFT semantics of issue 2 (numpy, float64).

Nothing here imports compeft: τ, threshold, σ, scale and reconstruction are recomputed from the
rules in the issue, with a full sort for the threshold, so the library's radix select, streaming
moments and codecs are checked against plain arithmetic.

    τ        delta tensors (θ − θ_init) in sorted key order, flattened, concatenated
             θ_init = 0 for lora_A / lora_B / lora_embedding_A / lora_embedding_B, 1 for ia3_l
    m        ceil(k·d) (exact, k as written);  t = m-th largest |τ| (full sort);  mask = |τ| ≥ t
    σ        unbiased std of the dense τ;  s = float32(α·float32(σ))
    θ        θ_init + s·sign(τ)·mask, evaluated in float32 (the issue allows float32 or wider),
             then cast to the tensor's original dtype
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import torch

DELTA_PARTS = {"lora_A": 0.0, "lora_B": 0.0, "lora_embedding_A": 0.0, "lora_embedding_B": 0.0, "ia3_l": 1.0}


def theta_init(key: str) -> float | None:
    """θ_init of a delta tensor by key component, or None for a carried tensor."""
    for part in key.split("."):
        if part in DELTA_PARTS:
            return DELTA_PARTS[part]
    return None


def to_f64(t: torch.Tensor) -> np.ndarray:
    """A tensor (any float dtype, bf16 included) as a flat float64 numpy array, exactly."""
    return t.detach().cpu().to(torch.float64).reshape(-1).numpy()


def entropy_bits(k: float) -> float:
    """H(k) = −((1−k)·log2(1−k) + k·log2(k/2)) bits per parameter."""
    if k <= 0:
        return 0.0
    if k >= 1:
        return 1.0
    return -((1 - k) * math.log2(1 - k) + k * math.log2(k / 2))


def f32(x: float) -> float:
    return float(np.float32(x))


def ulp32(x: float) -> float:
    """One unit in the last place of float32 x."""
    x = np.float32(abs(x))
    return float(np.nextafter(x, np.float32(np.inf)) - x)


def kept_count(density: float, d: int) -> int:
    """m = ceil(k·d) with k the decimal the user wrote (its shortest repr), computed exactly.

    A float product can land just above an integer (0.07 * 100 == 7.000000000000001), which a
    plain ceil turns into one entry too many.
    """
    m = math.ceil(Fraction(repr(float(density))) * d)
    return max(1, min(d, m))


@dataclass
class Ternarized:
    tau: np.ndarray  # float64
    signs: np.ndarray  # int8 in {-1, 0, 1}
    m: int
    threshold: float
    sigma: float
    kept: int


def ternarize(tau: np.ndarray, density: float) -> Ternarized:
    """Global top-k by full sort; ties at the threshold are all kept."""
    d = tau.size
    m = kept_count(density, d)
    mags = np.abs(tau)
    t = float(np.sort(mags)[::-1][m - 1])
    mask = mags >= t
    signs = (np.sign(tau) * mask).astype(np.int8)
    sigma = float(np.std(tau, ddof=1))
    return Ternarized(tau, signs, m, t, sigma, int(np.count_nonzero(signs)))


def scale(alpha: float, sigma: float) -> float:
    """s as stored: float32(α·float32(σ))."""
    return f32(alpha * f32(sigma))


@dataclass
class AdapterReference:
    names: list[str]  # delta tensor names, sorted
    shapes: dict[str, tuple[int, ...]]
    dtypes: dict[str, torch.dtype]
    inits: dict[str, float]
    offsets: dict[str, int]
    carried: dict[str, torch.Tensor]
    tern: Ternarized
    density: float
    alpha: float

    @property
    def d(self) -> int:
        return int(self.tern.tau.size)

    @property
    def scale(self) -> float:
        return scale(self.alpha, self.tern.sigma)

    def signs_of(self, name: str) -> np.ndarray:
        o = self.offsets[name]
        n = int(np.prod(self.shapes[name], dtype=np.int64))
        return self.tern.signs[o : o + n]

    def reconstruct(self, s: float | None = None) -> dict[str, torch.Tensor]:
        """θ for every delta tensor (with scale s, default the reference s) plus carried tensors."""
        s = self.scale if s is None else s
        out = {}
        for name in self.names:
            values = np.float32(self.inits[name]) + np.float32(s) * self.signs_of(name).astype(np.float32)
            out[name] = torch.from_numpy(values.astype(np.float32)).reshape(self.shapes[name]).to(self.dtypes[name])
        out.update({k: v.clone() for k, v in self.carried.items()})
        return out


def reference_adapter(tensors: Mapping[str, torch.Tensor], density: float, alpha: float = 1.0,
                      theta: Callable[[str], float | None] | None = None) -> AdapterReference:
    """Reference compression of an adapter state dict (file key names); ``theta`` gives each key's θ_init (None:
    carried), LoRA's and (IA)3's rule when not given."""
    theta_init = theta or globals()["theta_init"]
    names = sorted(k for k in tensors if theta_init(k) is not None)
    parts, offsets, offset = [], {}, 0
    for name in names:
        # θ − θ_init computed exactly in float64 then rounded to float32 (a float32 subtraction is
        # exactly that rounding; for LoRA and (IA)3 values near 1 it is exact anyway). θ_init enters as a
        # float32, as in the reconstruction θ_init + s·t (VeRA's d_initial 0.1 is 0.1f on both sides).
        part = (to_f64(tensors[name]) - f32(theta_init(name))).astype(np.float32).astype(np.float64)
        parts.append(part)
        offsets[name] = offset
        offset += part.size
    tau = np.concatenate(parts) if parts else np.zeros(0)
    return AdapterReference(
        names=names,
        shapes={n: tuple(tensors[n].shape) for n in names},
        dtypes={n: tensors[n].dtype for n in names},
        inits={n: theta_init(n) for n in names},
        offsets=offsets,
        carried={k: v for k, v in tensors.items() if theta_init(k) is None},
        tern=ternarize(tau, density),
        density=density,
        alpha=alpha,
    )


@dataclass
class FullReference:
    names: list[str]  # τ tensor names, sorted
    base: dict[str, torch.Tensor]
    ft: dict[str, torch.Tensor]
    offsets: dict[str, int]
    carried: list[str]
    tern: Ternarized
    alpha: float

    @property
    def scale(self) -> float:
        return scale(self.alpha, self.tern.sigma)

    def reconstruct(self, s: float | None = None) -> dict[str, torch.Tensor]:
        """θ_base + s·sign·mask for τ tensors (float32 arithmetic, cast back); carried tensors from the fine-tune."""
        s = self.scale if s is None else s
        out = {}
        for name in self.names:
            t = self.ft[name]
            o = self.offsets[name]
            signs = self.tern.signs[o : o + t.numel()].astype(np.float32)
            base = self.base[name].to(torch.float32).reshape(-1).numpy()
            values = base + np.float32(s) * signs
            out[name] = torch.from_numpy(values.astype(np.float32)).reshape(t.shape).to(t.dtype)
        for name in self.carried:
            out[name] = self.ft[name].clone()
        return out


def reference_full(base: Mapping[str, torch.Tensor], ft: Mapping[str, torch.Tensor], density: float, alpha: float = 1.0) -> FullReference:
    """Reference residual compression: τ over floating tensors present in both with equal shapes."""
    names = sorted(
        k for k in ft if k in base and ft[k].is_floating_point() and base[k].is_floating_point() and ft[k].shape == base[k].shape
    )
    parts, offsets, offset = [], {}, 0
    for name in names:
        part = (to_f64(ft[name]) - to_f64(base[name])).astype(np.float32).astype(np.float64)
        parts.append(part)
        offsets[name] = offset
        offset += part.size
    tau = np.concatenate(parts)
    return FullReference(
        names=names,
        base=dict(base),
        ft=dict(ft),
        offsets=offsets,
        carried=sorted(k for k in ft if k not in set(names)),
        tern=ternarize(tau, density),
        alpha=alpha,
    )

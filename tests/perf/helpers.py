"""Random ternary vectors with uneven per-segment densities, for codec tests."""

from __future__ import annotations

import torch


def random_signs(segments: list[int], densities: list[float], seed: int, device: str = "cpu") -> torch.Tensor:
    """Concatenated int8 segments in {-1, 0, 1}, each with its own density of non-zeros."""
    g = torch.Generator().manual_seed(seed)
    parts = []
    for n, p in zip(segments, densities):
        x = torch.rand(n, generator=g)
        parts.append(torch.where(x < p / 2, -1, torch.where(x < p, 1, 0)).to(torch.int8))
    out = torch.cat(parts) if parts else torch.zeros(0, dtype=torch.int8)
    return out.to(device)


def random_case(seed: int, max_len: int = 5000) -> tuple[list[int], list[float]]:
    """Segment lengths and densities: very sparse, empty, over-half-full and full segments included."""
    g = torch.Generator().manual_seed(seed)
    k = int(torch.randint(1, 6, (1,), generator=g))
    segments = [int(torch.randint(1, max_len, (1,), generator=g)) for _ in range(k)]
    densities = [float(torch.rand(1, generator=g)) ** 3 for _ in range(k)]
    special = [0.0, 1.0, 0.75, 0.5, 1e-4]
    if seed % 3 == 0:
        densities[seed % k] = special[seed % len(special)]
    return segments, densities


def flipped_case(seed: int, max_len: int = 600) -> tuple[torch.Tensor, torch.Tensor]:
    """(signs, their reference golomb payload with one bit flipped), both chosen by ``seed``."""
    from tests.golomb_reference import encode_reference

    segments, densities = random_case(seed, max_len)
    signs = random_signs(segments, densities, seed)
    payload = encode_reference(signs, segments).clone()
    g = torch.Generator().manual_seed(seed)
    i = int(torch.randint(0, payload.numel(), (1,), generator=g))
    payload[i] ^= 1 << int(torch.randint(0, 8, (1,), generator=g))
    return signs, payload


def payload_span(data: torch.Tensor) -> tuple[int, int]:
    """(start, end) of the codec payload inside a container image (record columns may follow it)."""
    from pathlib import Path

    from compeft.container import parse_container

    payload = parse_container(data, Path("<memory>"), verify=False).payload
    start = payload.data_ptr() - data.data_ptr()
    return start, start + payload.numel()


def decode_with(payload: torch.Tensor, d: int, backend: str, device: str = "cpu", values: torch.Tensor | None = None,
                threads: int | None = None) -> torch.Tensor:
    """GolombCodec.decode through one backend (numpy, torch or triton), with ``threads`` for numpy's."""
    from compeft.codecs import get_codec
    from compeft.codecs.base import ternary_values
    from compeft.codecs.golomb import numpy_backend

    codec = get_codec("golomb")
    plan = codec.prepare(payload, d)
    values = ternary_values() if values is None else values
    out = torch.empty(d, dtype=values.dtype, device=device)
    if backend == "numpy" and threads:
        numpy_backend.decode_into(plan.table, payload, out, values, threads)
    else:
        codec.decode_into(plan, payload, out, values, backend=backend)()
    return out


def records_from(container, ternary: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every delta record rebuilt one by one from the int8 τ (artifact.reconstruct per slice)."""
    from compeft.artifact import reconstruct
    from compeft.document import check
    from compeft.dtypes import DTYPES_BY_NAME

    document, cols = check(container)
    return {r.name: reconstruct(ternary[r.offset : r.offset + r.numel], document.scale, r.theta_init,
                                DTYPES_BY_NAME[r.dtype]).reshape(r.shape) for r in cols.records()}

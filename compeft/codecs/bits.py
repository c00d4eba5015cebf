"""Bit packing shared by the codecs: bit i of a stream is bit (i mod 8) of byte i // 8 (LSB first).

CPU tensors go through numpy's packbits/unpackbits (bitorder="little" gives exactly these bytes);
other devices use torch ops. Both produce the same bytes.
"""

from __future__ import annotations

import numpy as np
import torch

_WEIGHTS = {}


def _weights(device: torch.device) -> torch.Tensor:
    w = _WEIGHTS.get(device)
    if w is None:
        w = _WEIGHTS[device] = (1 << torch.arange(8, device=device, dtype=torch.int32)).to(torch.uint8)
    return w


def pack_bits(bits: torch.Tensor) -> torch.Tensor:
    """Pack a 0/1 tensor (any integer or bool dtype) into uint8 bytes, LSB first, zero padded."""
    n = bits.numel()
    if n == 0:
        return torch.empty(0, dtype=torch.uint8, device=bits.device)
    if bits.device.type == "cpu":
        flat = bits.reshape(-1)
        if flat.dtype != torch.bool:
            flat = flat != 0
        return torch.from_numpy(np.packbits(flat.numpy(), bitorder="little"))
    padded = torch.zeros((n + 7) // 8 * 8, dtype=torch.uint8, device=bits.device)
    padded[:n] = bits.reshape(-1).to(torch.uint8)
    return (padded.view(-1, 8) * _weights(bits.device)).sum(1, dtype=torch.int32).to(torch.uint8)


def unpack_bits(data: torch.Tensor, n: int) -> torch.Tensor:
    """The first n bits of uint8 bytes (LSB first) as a uint8 0/1 tensor."""
    if n == 0:
        return torch.empty(0, dtype=torch.uint8, device=data.device)
    if data.device.type == "cpu":
        raw = data[: (n + 7) // 8].contiguous().numpy()
        return torch.from_numpy(np.unpackbits(raw, count=min(n, 8 * raw.size), bitorder="little"))
    bits = (data[: (n + 7) // 8].unsqueeze(1) & _weights(data.device)).ne(0).to(torch.uint8).reshape(-1)
    return bits[:n]


def padding_is_zero(data: torch.Tensor, n_bits: int) -> bool:
    """True when the bits after the first n_bits of the last byte are all zero (canonical padding)."""
    if n_bits % 8 == 0:
        return True
    return int(data[n_bits // 8].item()) >> (n_bits % 8) == 0

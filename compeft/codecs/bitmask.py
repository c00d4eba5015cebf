"""Codec ``bitmask``: two bit planes over τ, the form for fast compute (ComPEFT §2.2, second scheme).

Bitstream (normative): ``pos`` plane then ``neg`` plane, each ceil(d/8) bytes; bit i of a plane is
bit (i mod 8) of byte i // 8. Bit i of ``pos`` is 1 iff t_i = +1, of ``neg`` iff t_i = −1. Padding
bits are 0; no position is set in both planes. Exactly 2·ceil(d/8) bytes, random access by index.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from compeft.codecs.base import Codec
from compeft.codecs.bits import pack_bits, padding_is_zero, unpack_bits
from compeft.errors import CodecError


class BitmaskCodec(Codec):
    """Two uncompressed bit planes: 2 bits per parameter."""

    id = "bitmask"

    def encode(self, signs: torch.Tensor, segments: Sequence[int] = ()) -> torch.Tensor:
        signs = signs.reshape(-1)
        return torch.cat([pack_bits(signs > 0), pack_bits(signs < 0)]).cpu()

    def prepare(self, payload: torch.Tensor, d: int) -> int:
        """The plane size in bytes, once the payload is known to hold both planes for d entries."""
        plane = (d + 7) // 8
        if payload.numel() != 2 * plane:
            raise CodecError(f"bitmask payload has {payload.numel()} bytes; {2 * plane} expected for d={d}")
        return plane

    def decode_into(self, plan: int, payload: torch.Tensor, out: torch.Tensor, values: torch.Tensor, *,
                    staged=None) -> Callable[[], None]:
        d, plane = out.numel(), plan
        if staged is not None:
            staged.wait_all(torch.cuda.current_stream(out.device))
            data = staged.buf[: 2 * plane]
        else:
            data = payload.to(out.device, non_blocking=True)
        pos, neg = data[:plane], data[plane:]
        if bool((pos & neg).any()):
            raise CodecError("bitmask payload sets a position in both planes")
        if not (padding_is_zero(pos, d) and padding_is_zero(neg, d)):
            raise CodecError("bitmask payload has non-zero padding bits")
        p, n = unpack_bits(pos, d).bool(), unpack_bits(neg, d).bool()
        values = values.to(out.device)
        out.copy_(torch.where(p, values[2], torch.where(n, values[0], values[1])))
        return lambda: None

"""Codec ``bitmask``: two bit planes over τ, the form for fast compute (ComPEFT §2.2, second scheme).

Bitstream (normative): ``pos`` plane then ``neg`` plane, each ceil(d/8) bytes; bit i of a plane is
bit (i mod 8) of byte i // 8. Bit i of ``pos`` is 1 iff t_i = +1, of ``neg`` iff t_i = −1. Padding
bits are 0; no position is set in both planes. Exactly 2·ceil(d/8) bytes, random access by index.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from compeft.codecs.base import Codec
from compeft.codecs.bits import pack_bits, padding_is_zero, unpack_bits
from compeft.errors import CodecError


class _PlaneWriter:
    """A bit plane written LSB first to a spill file, chunk by chunk (the bits past the last whole byte carried)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.file = open(path, "wb")  # noqa: SIM115 - closed in finish
        self.carry = np.zeros(0, dtype=bool)

    def add(self, bits: np.ndarray) -> None:
        bits = np.concatenate([self.carry, bits]) if self.carry.size else bits
        whole = bits.size // 8 * 8
        self.file.write(np.packbits(bits[:whole], bitorder="little").tobytes())
        self.carry = bits[whole:].copy()

    def finish(self) -> Path:
        if self.carry.size:
            self.file.write(np.packbits(self.carry, bitorder="little").tobytes())
        self.file.close()
        return self.path


class BitmaskStreamEncoder:
    """The two planes spilled to two files as chunks come; the payload is one then the other."""

    def __init__(self, d: int, spill: Path) -> None:
        self.d, self.seen = d, 0
        self.pos, self.neg = _PlaneWriter(spill / "bitmask-pos"), _PlaneWriter(spill / "bitmask-neg")

    def add(self, length: int, positions: np.ndarray, negative: np.ndarray) -> None:
        pos, neg = np.zeros(length, dtype=bool), np.zeros(length, dtype=bool)
        negative = np.asarray(negative, dtype=bool)
        pos[positions[~negative]] = True
        neg[positions[negative]] = True
        self.pos.add(pos)
        self.neg.add(neg)
        self.seen += length

    def finish(self) -> tuple[bytes | Path, ...]:
        if self.seen != self.d:
            raise ValueError(f"bitmask stream: {self.seen} of {self.d} entries given")
        return self.pos.finish(), self.neg.finish()

    def close(self) -> None:
        self.pos.file.close()
        self.neg.file.close()


class BitmaskCodec(Codec):
    """Two uncompressed bit planes: 2 bits per parameter."""

    id = "bitmask"

    def encode(self, signs: torch.Tensor, segments: Sequence[int] = ()) -> torch.Tensor:
        signs = signs.reshape(-1)
        return torch.cat([pack_bits(signs > 0), pack_bits(signs < 0)]).cpu()

    def stream_encoder(self, d: int, segments: Sequence[int], spill: Path) -> BitmaskStreamEncoder:
        return BitmaskStreamEncoder(d, spill)

    def decode_span(self, plan: int, payload: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """τ[start:stop] as int8 from the bytes of both planes that cover it."""
        a, b = start // 8, -(-stop // 8)
        data = payload.reshape(-1).numpy()
        pos = np.unpackbits(data[a:b], bitorder="little")[start - 8 * a : stop - 8 * a]
        neg = np.unpackbits(data[plan + a : plan + b], bitorder="little")[start - 8 * a : stop - 8 * a]
        if (pos & neg).any():
            raise CodecError("bitmask payload sets a position in both planes")
        return torch.from_numpy(pos.astype(np.int8) - neg.astype(np.int8))

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

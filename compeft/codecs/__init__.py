"""Codec registry: an id names one bitstream forever; a new bitstream gets a new id.

A codec turns the ternary τ (int8 in {−1, 0, 1}) into a uint8 payload and back. ``segments`` are
the lengths of the tensors in τ, which a codec may use to adapt to each tensor's density.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

import torch

from compeft.codecs.bitmask import BitmaskCodec
from compeft.codecs.golomb import GolombCodec
from compeft.errors import UnknownCodecError


class Codec(Protocol):
    id: str

    def encode(self, signs: torch.Tensor, segments: Sequence[int] = ()) -> torch.Tensor: ...

    def decode(self, payload: torch.Tensor, d: int, device: torch.device | str = "cpu") -> torch.Tensor: ...


CODECS: Mapping[str, Codec] = {codec.id: codec for codec in (GolombCodec(), BitmaskCodec())}
DEFAULT_CODEC = "golomb"


def get_codec(codec_id: str) -> Codec:
    """The codec registered under codec_id, or UnknownCodecError naming the known ids."""
    try:
        return CODECS[codec_id]
    except KeyError:
        raise UnknownCodecError(f"unknown codec {codec_id!r} (known: {', '.join(sorted(CODECS))})") from None

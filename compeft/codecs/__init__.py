"""Codec registry: an id names one bitstream forever; a new bitstream gets a new id.

Plain data (id → class), loaded on first use so that the ids are known without importing torch. Each
codec implements ``compeft.codecs.base.Codec``.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import TYPE_CHECKING

from compeft.errors import UnknownCodecError

if TYPE_CHECKING:
    from compeft.codecs.base import Codec

CODECS: Mapping[str, str] = {
    "golomb": "compeft.codecs.golomb:GolombCodec",
    "bitmask": "compeft.codecs.bitmask:BitmaskCodec",
}
CODEC_IDS = tuple(CODECS)
DEFAULT_CODEC = "golomb"
_LOADED: dict[str, Codec] = {}


def get_codec(codec_id: str) -> Codec:
    """The codec registered under codec_id, or UnknownCodecError naming the known ids."""
    codec = _LOADED.get(codec_id) if isinstance(codec_id, str) else None
    if codec is None:
        if not isinstance(codec_id, str) or codec_id not in CODECS:
            raise UnknownCodecError(f"unknown codec {codec_id!r} (known: {', '.join(sorted(CODECS))})")
        module, name = CODECS[codec_id].split(":")
        codec = _LOADED[codec_id] = getattr(importlib.import_module(module), name)()
    return codec

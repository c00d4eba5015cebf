"""What every codec implements: encode the ternary τ into a payload; check a payload's structure once
(``prepare``, without decoding); decode into a caller's buffer through a value table (``decode_into``).

A value table (v₋₁, v₀, v₊₁) maps each ternary entry to its output value (θ_init − s, θ_init, θ_init + s
in the output dtype, or −1, 0, 1 as int8), so decoders write the reconstruction directly, with no int8
or float32 intermediate.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np
import torch

from compeft.limits import check_allocation

TERNARY_VALUES = (-1, 0, 1)


def ternary_values() -> torch.Tensor:
    """The value table of the int8 ternary τ itself."""
    return torch.tensor(TERNARY_VALUES, dtype=torch.int8)


class StreamEncoder(Protocol):
    """Encodes τ chunk by chunk, in order, into spill files (full fine-tunes: the payload is never held whole)."""

    def add(self, length: int, positions: np.ndarray, negative: np.ndarray) -> None:
        """The next chunk of τ (``length`` entries; its non-zero ``positions``, increasing, and their sign bits)."""

    def finish(self) -> tuple[bytes | Path, ...]:
        """The payload, as pieces (bytes and spill files) whose concatenation is what ``encode`` writes."""

    def close(self) -> None:
        """Release files and threads without finishing (after an error; finish releases them itself)."""


class DeviceStreamEncoder(StreamEncoder, Protocol):
    """A stream encoder that also codes several consecutive chunks on the device they live on (full fine-tunes
    compressed on a GPU: the kept entries never go to the host)."""

    def add_signs(self, signs: torch.Tensor, lengths: Sequence[int]) -> None:
        """The next chunks of τ, ``lengths`` entries each, as one flat int8 tensor of −1, 0, 1 on any device."""


class Codec(ABC):
    """A bitstream for the ternary τ; its ``id`` names that bitstream forever."""

    id: ClassVar[str]

    @abstractmethod
    def encode(self, signs: torch.Tensor, segments: Sequence[int] = ()) -> torch.Tensor:
        """The payload (uint8, on the CPU) of int8 signs in {−1, 0, 1}; ``segments`` are τ's tensor lengths."""

    @abstractmethod
    def prepare(self, payload: torch.Tensor, d: int) -> Any:
        """Check the payload's structure against d without decoding (CodecError if it is malformed);
        the result is what decode_into needs, reusable for any number of decodes of this payload."""

    @abstractmethod
    def decode_into(self, plan: Any, payload: torch.Tensor, out: torch.Tensor, values: torch.Tensor, *,
                    staged: Any = None) -> Callable[[], None]:
        """Write τ mapped through ``values`` into ``out`` (d entries of values' dtype, on any device). The
        returned ``finish()`` waits for the device and raises CodecError on a bad payload; ``out`` must not be
        used before. ``staged`` is the payload's copy to out's device already under way (staging)."""

    def decode(self, payload: torch.Tensor, d: int, device: torch.device | str = "cpu",
               values: torch.Tensor | None = None) -> torch.Tensor:
        """τ on ``device`` (int8, or mapped through ``values``)."""
        plan = self.prepare(payload, d)  # first: it checks d against the payload before d entries are allocated
        values = ternary_values() if values is None else values
        check_allocation(d * values.element_size(), f"decoding {d:,} entries")
        out = torch.empty(d, dtype=values.dtype, device=device)
        self.decode_into(plan, payload, out, values)()
        return out

    def stream_encoder(self, d: int, segments: Sequence[int], spill: Path) -> StreamEncoder:
        """An encoder fed chunk by chunk (chunks: ``golomb.format.chunk_lengths(d, segments)``), writing its
        spill files under the directory ``spill``; its payload equals ``encode`` of the whole τ."""
        raise NotImplementedError(f"codec {self.id} has no streaming encoder")

    def decode_span(self, plan: Any, payload: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """τ[start:stop] as int8 on the CPU, decoding only what covers the span (``plan``: from ``prepare``)."""
        raise NotImplementedError(f"codec {self.id} cannot decode a span")

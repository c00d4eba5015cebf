"""What every codec implements: encode the ternary τ into a payload; check a payload's structure once
(``prepare``, without decoding); decode into a caller's buffer through a value table (``decode_into``).

A value table (v₋₁, v₀, v₊₁) maps each ternary entry to its output value (θ_init − s, θ_init, θ_init + s
in the output dtype, or −1, 0, 1 as int8), so decoders write the reconstruction directly, with no int8
or float32 intermediate.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import torch

from compeft.limits import check_allocation

TERNARY_VALUES = (-1, 0, 1)


def ternary_values() -> torch.Tensor:
    """The value table of the int8 ternary τ itself."""
    return torch.tensor(TERNARY_VALUES, dtype=torch.int8)


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

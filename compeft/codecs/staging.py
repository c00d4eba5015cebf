"""The payload's copy to a CUDA device: a padded device buffer, filled on a long-lived side stream in pieces
with an event after each, so a decode can start on the chunks whose bytes have arrived (codec-independent;
the golomb device backends read whole words, hence the zero padding after the payload).
"""

from __future__ import annotations

import torch

PIECE_BYTES = 32 << 20  # StagedPayload's largest piece
PAD = 8  # zero bytes after the payload so that field reads (two 4-byte words) never run past the buffer

_SIDE_STREAMS: dict = {}


def side_stream(device: torch.device, role: str = "copy") -> torch.cuda.Stream:
    """One long-lived side stream per device and role (fresh streams would each grow their own allocator pool)."""
    stream = _SIDE_STREAMS.get((device, role))
    if stream is None:
        stream = _SIDE_STREAMS[(device, role)] = torch.cuda.Stream(device)
    return stream


class StagedPayload:
    """The payload's copy to a CUDA device, on a side stream, in equal pieces of at most PIECE_BYTES with an
    event after each: a decode can start on the chunks that have arrived while the rest is still being
    copied (each piece costs the decode one more set of kernel launches)."""

    def __init__(self, payload: torch.Tensor, device: torch.device) -> None:
        self.stream = side_stream(device)
        self.stream.wait_stream(torch.cuda.current_stream(device))
        n = payload.numel()
        pieces = max(1, -(-n // PIECE_BYTES))
        self.ends = [n * (i + 1) // pieces for i in range(pieces)]
        self.events = []
        payload = payload.reshape(-1)
        with torch.cuda.stream(self.stream):
            self.buf = _padded_empty(n, device)
            start = 0
            for end in self.ends:
                self.buf[start:end].copy_(payload[start:end], non_blocking=True)
                self.events.append(torch.cuda.Event())
                self.events[-1].record(self.stream)
                start = end

    def first_pending(self) -> int:
        """The first piece still being copied (the last one when all have arrived)."""
        return next((i for i, e in enumerate(self.events) if not e.query()), len(self.events) - 1)

    def wait_piece(self, i: int) -> None:
        """Make the current stream wait for pieces 0..i."""
        torch.cuda.current_stream(self.buf.device).wait_event(self.events[i])

    def wait_all(self, stream: torch.cuda.Stream) -> None:
        """Make ``stream`` wait for the whole copy (and keep the buffer alive for it)."""
        stream.wait_event(self.events[-1])
        self.buf.record_stream(stream)


def _padded_empty(n: int, device: torch.device) -> torch.Tensor:
    """A buffer for n payload bytes followed by at least PAD zero bytes, a whole number of 4-byte words."""
    buf = torch.empty((n + PAD + 3) // 4 * 4, dtype=torch.uint8, device=device)
    buf[n:].zero_()
    return buf


def padded_buffer(payload: torch.Tensor, device: torch.device) -> torch.Tensor:
    """The payload on ``device`` followed by at least PAD zero bytes, a whole number of 4-byte words."""
    n = payload.numel()
    buf = _padded_empty(n, device)
    buf[:n].copy_(payload.reshape(-1), non_blocking=True)
    return buf


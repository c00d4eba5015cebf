"""Resolve the --device option (auto, cpu, cuda, cuda:N) to a torch device."""

from __future__ import annotations

import torch

from compeft.errors import DeviceError


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """auto → cuda when available, else cpu; cuda without CUDA is an error, never a silent fallback."""
    if isinstance(device, torch.device):
        return device
    name = str(device).strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceError(f"device {device!r} requested but CUDA is not available")
        try:
            dev = torch.device(name)
        except RuntimeError as err:
            raise DeviceError(f"device {device!r} is not a valid CUDA device name") from err
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s)")
        return dev
    raise DeviceError(f"device {device!r} is not one of auto, cpu, cuda, cuda:N")

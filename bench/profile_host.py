"""Host-side stages of fastload.load_bytes on the CPU, for a LoRA with a real LLaMA layout and a small rank.

The Python cost of a load grows with the number of tensor records and chunks, not with the rank, so a
65B layout (1120 tensors) at rank 4 shows the 65B host overhead without 800M parameters. Usage:
``python -m bench.profile_host [shape] [rank] [density]``, or ``python -m bench.profile_host PATH`` for an
existing artifact (file or directory).
"""

from __future__ import annotations

import gc
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench.synth import SHAPES, write_adapter_dir


def small_rank_tensors(shape: str, rank: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """LoRA A/B tensors of ``shape``'s layout at ``rank`` (bf16, Gaussian; statistics do not matter here)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, fan_in, fan_out in SHAPES[shape].modules():
        out[f"{name}.lora_A.weight"] = torch.randn(rank, fan_in, generator=g).mul_(fan_in**-0.5).to(torch.bfloat16)
        out[f"{name}.lora_B.weight"] = torch.randn(fan_out, rank, generator=g).mul_(0.01).to(torch.bfloat16)
    return out


def artifact_bytes(shape: str = "65B", rank: int = 4, density: float = 0.1) -> torch.Tensor:
    """A compressed artifact of the small-rank adapter, as a uint8 CPU tensor."""
    from compeft import api
    from compeft.container import container_path, read_bytes

    with tempfile.TemporaryDirectory() as tmp:
        src = write_adapter_dir(Path(tmp) / "a", small_rank_tensors(shape, rank), SHAPES[shape])
        api.compress(src, Path(tmp) / "art", density=density, device="cpu")
        return read_bytes(container_path(Path(tmp) / "art"))


def stages(host: torch.Tensor, repeats: int = 30) -> dict[str, float]:
    """Median ms of each device-independent stage of load_bytes (decode replaced by an empty output)."""
    from compeft.codecs.golomb_fast import read_table_fast
    from compeft.kernels.golomb_plan import PlanColumns

    from compeft.container import parse_container
    from compeft.document import check_records
    from compeft.fastload import views_of

    rows: dict[str, list[float]] = {}
    for _ in range(repeats):
        gc.disable()
        t = [time.perf_counter()]
        c = parse_container(host, Path("<memory>"), verify=False)
        t.append(time.perf_counter())
        table = read_table_fast(c.payload, c.doc["d"])
        ids = (table.mode == 0).nonzero()[0]
        PlanColumns(table, ids, 1024, 512, torch.zeros(3, dtype=torch.bfloat16))
        t.append(time.perf_counter())
        records = check_records(c)
        t.append(time.perf_counter())
        flat = torch.empty(c.doc["d"], dtype=torch.bfloat16)
        out = views_of(flat, records)
        t.append(time.perf_counter())
        gc.enable()
        for name, a, b in zip(["parse container", "chunk table+plan", "check_records", "views"], t, t[1:]):
            rows.setdefault(name, []).append(b - a)
        rows.setdefault("total", []).append(t[-1] - t[0])
        del out, flat
    return {name: 1e3 * statistics.median(v) for name, v in rows.items()}


def main(shape: str = "65B", rank: int = 4, density: float = 0.1) -> None:
    if Path(shape).is_file() or Path(shape).is_dir():  # an existing artifact instead of a synthetic one
        from compeft.container import container_path, read_bytes

        host = read_bytes(container_path(shape))
        print(f"{shape}: {host.numel()} bytes")
    else:
        host = artifact_bytes(shape, rank, density)
        print(f"{shape} layout, rank {rank}, k={density}: {host.numel()} bytes")
    for name, ms in stages(host).items():
        print(f"stage {name:18s} {ms:7.2f} ms")


if __name__ == "__main__":
    args = sys.argv[1:]
    main(*(args[:1] or ["65B"]), *(int(x) for x in args[1:2]), *(float(x) for x in args[2:3]))

"""Per-repeat load times and allocator counters on one 65B-shape artifact, after a GPU compress (as bench.run)."""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import torch

from bench.synth import SHAPES, lora_tensors, write_adapter_dir


def main(density: float = 0.2) -> None:
    from compeft import api
    from compeft.container import container_path, read_bytes
    from compeft.fastload import ResidentArtifact, load_bytes

    dev = torch.device("cuda")
    with tempfile.TemporaryDirectory() as tmp:
        src = write_adapter_dir(Path(tmp) / "a", {k: v.cpu() for k, v in lora_tensors(SHAPES["65B"], seed=0, device=dev).items()}, SHAPES["65B"])
        for _ in range(2):
            api.compress(src, Path(tmp) / "art", density=density, device="cuda", overwrite=True)
        host = read_bytes(container_path(Path(tmp) / "art"), pin=True)
    art = ResidentArtifact(host, verify=False)
    for name, fn in (("resident", lambda: art.load(dev)), ("cold", lambda: load_bytes(host, dev, verify=False))) * 2:
        result = fn()
        times = []
        s0 = torch.cuda.memory_stats()
        for _ in range(12):
            result = None
            torch.cuda.synchronize()
            t = time.perf_counter()
            result = fn()
            torch.cuda.synchronize()
            times.append(1e3 * (time.perf_counter() - t))
        s1 = torch.cuda.memory_stats()
        grew = {k: s1.get(k, 0) - s0.get(k, 0) for k in ("num_device_alloc", "num_device_free", "num_alloc_retries", "num_sync_all_streams")}
        print(name, " ".join(f"{x:.2f}" for x in times), grew, flush=True)
        result = None




def cprofile_cold(density: float = 0.2) -> None:
    """cProfile of 20 cold loads (load_bytes), by own time and by cumulative time."""
    import cProfile
    import pstats

    from compeft import api
    from compeft.container import container_path, read_bytes
    from compeft.fastload import load_bytes

    dev = torch.device("cuda")
    with tempfile.TemporaryDirectory() as tmp:
        src = write_adapter_dir(Path(tmp) / "a", {k: v.cpu() for k, v in lora_tensors(SHAPES["65B"], seed=0, device=dev).items()}, SHAPES["65B"])
        api.compress(src, Path(tmp) / "art", density=density, device="cuda")
        host = read_bytes(container_path(Path(tmp) / "art"), pin=True)
    for _ in range(3):
        load_bytes(host, dev, verify=False)
    torch.cuda.synchronize()
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(20):
        load_bytes(host, dev, verify=False)
        torch.cuda.synchronize()
    prof.disable()
    pstats.Stats(prof).sort_stats("tottime").print_stats(22)
    pstats.Stats(prof).sort_stats("cumtime").print_stats(30)


if __name__ == "__main__":
    (cprofile_cold if "--cprofile" in sys.argv else main)(*(float(x) for x in sys.argv[1:2]))

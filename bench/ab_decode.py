"""A/B of the Triton decode's tile sizes and warps on one 65B-shape artifact (resident loads, medians)."""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench.synth import SHAPES, lora_tensors, write_adapter_dir


VARIANTS = [
    {},
    {"CODE_BLOCK": 2048},
    {"CODE_BLOCK": 512},
    {"BYTE_BLOCK": 256},
    {"BYTE_BLOCK": 1024, "SELECT_WARPS": 8},
    {"CODE_BLOCK": 2048, "CODE_WARPS": 8},
    {},
]


def main(density: float = 0.1) -> None:
    from compeft import api
    from compeft.container import container_path, read_bytes
    from compeft.fastload import ResidentArtifact
    from compeft.kernels import golomb_triton as gt

    dev = torch.device("cuda")
    with tempfile.TemporaryDirectory() as tmp:
        src = write_adapter_dir(Path(tmp) / "a", {k: v.cpu() for k, v in lora_tensors(SHAPES["65B"], seed=0, device=dev).items()}, SHAPES["65B"])
        api.compress(src, Path(tmp) / "art", density=density, device="cuda")
        host = read_bytes(container_path(Path(tmp) / "art"), pin=True)
    ref = None
    defaults = {name: getattr(gt, name) for name in ("CODE_BLOCK", "BYTE_BLOCK", "SELECT_WARPS", "CODE_WARPS")}
    for variant in VARIANTS:
        for name, value in {**defaults, **variant}.items():
            setattr(gt, name, value)
        art = ResidentArtifact(host, verify=False)
        out = art.load(dev)
        flat = torch.cat([t.reshape(-1) for t in out.values()])
        same = True if ref is None else torch.equal(flat, ref)
        ref = flat if ref is None else ref
        del out, flat
        times, gpu = [], []
        for _ in range(15):
            torch.cuda.synchronize()
            a = time.perf_counter()
            e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            e0.record()
            res = art.load(dev)
            e1.record()
            torch.cuda.synchronize()
            times.append(time.perf_counter() - a)
            gpu.append(e0.elapsed_time(e1))
            del res
        print(f"{variant or 'defaults'}: resident load median "
              f"{1e3 * statistics.median(times):.2f} ms (events {statistics.median(gpu):.2f} ms), same output {same}", flush=True)


if __name__ == "__main__":
    main(*(float(x) for x in sys.argv[1:2]))

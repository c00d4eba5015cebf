"""A/B of the Triton decode's tile sizes, warps and copy pieces on one 65B-shape artifact (resident loads, medians).

    python -m bench.ab_decode [k]
"""

from __future__ import annotations

import statistics
import sys
import time

import torch

from bench.synth import compressed_bytes

VARIANTS = [
    {},
    {"PIECE_BYTES": 1 << 40},
    {"PIECE_BYTES": 16 << 20},
    {"PIECE_BYTES": 24 << 20},
    {"SCAN_BLOCK": 256},
    {"RUN_SCAN_BLOCK": 128},
    {"CODE_BLOCK": 2048},
    {},
]


def main(density: float = 0.1) -> None:
    from compeft.kernels import golomb_triton as gt

    from compeft.codecs import golomb_fast as gf
    from compeft.fastload import ResidentArtifact

    dev = torch.device("cuda")
    host = compressed_bytes("65B", density)
    ref = None
    modules = {name: gt for name in ("CODE_BLOCK", "BYTE_BLOCK", "SCAN_BLOCK", "RUN_SCAN_BLOCK", "SELECT_WARPS", "CODE_WARPS")}
    modules["PIECE_BYTES"] = gf
    defaults = {name: getattr(module, name) for name, module in modules.items()}
    for variant in VARIANTS:
        for name, value in {**defaults, **variant}.items():
            setattr(modules[name], name, value)
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

"""Per-repeat load times (resident and cold) and allocator counters on one 65B-shape artifact, after GPU compressions.

    python -m bench.load_noise [k]
"""

from __future__ import annotations

import sys
import time

import torch

from bench.synth import compressed_bytes


def main(density: float = 0.2) -> None:
    from compeft.fastload import ResidentArtifact, load_bytes

    dev = torch.device("cuda")
    host = compressed_bytes("65B", density)
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
        grew = {k: s1.get(k, 0) - s0.get(k, 0) for k in ("num_device_alloc", "num_device_free", "num_alloc_retries",
                                                         "num_sync_all_streams")}
        print(name, " ".join(f"{x:.2f}" for x in times), grew, flush=True)
        del result


if __name__ == "__main__":
    main(*(float(x) for x in sys.argv[1:2]))
